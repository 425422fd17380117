//go:build !purego

#include "textflag.h"

// ZERO_ACC clears the group's four accumulators Y1-Y4.
#define ZERO_ACC \
	VXORPS Y1, Y1, Y1 \
	VXORPS Y2, Y2, Y2 \
	VXORPS Y3, Y3, Y3 \
	VXORPS Y4, Y4, Y4

// CVT_FMA32 converts the 32 integers in Y5-Y8 to float32 and adds their
// products with x[0:32] (SI) to Y1-Y4.
#define CVT_FMA32 \
	VCVTDQ2PS   Y5, Y5 \
	VCVTDQ2PS   Y6, Y6 \
	VCVTDQ2PS   Y7, Y7 \
	VCVTDQ2PS   Y8, Y8 \
	VFMADD231PS (SI), Y5, Y1 \
	VFMADD231PS 32(SI), Y6, Y2 \
	VFMADD231PS 64(SI), Y7, Y3 \
	VFMADD231PS 96(SI), Y8, Y4

// SUM_ACC sets Y1 to Y1+Y2+Y3+Y4.
#define SUM_ACC \
	VADDPS Y2, Y1, Y1 \
	VADDPS Y4, Y3, Y3 \
	VADDPS Y3, Y1, Y1

// HSUM_Y0 sums Y0's eight lanes into X0's lowest.
#define HSUM_Y0 \
	VEXTRACTF128 $1, Y0, X1 \
	VADDPS       X1, X0, X0 \
	VHADDPS      X0, X0, X0 \
	VHADDPS      X0, X0, X0 \
	VZEROUPPER

// The quantized dot products of quant.go: one row of a weight, stored as
// small integers, against one float32 row of activations, the integers
// widened and converted to float32 in registers (never written back), one
// scale per group. AVX2 + FMA.

// func dotQ8(x *float32, q *int8, scales *float32, groups int, glen int) float32
//
// Σ over g < groups of scales[g] · Σ over i < glen of x[g*glen+i]·q[g*glen+i].
// glen is a positive multiple of 8.
TEXT ·dotQ8(SB), NOSPLIT, $0-44
	MOVQ   x+0(FP), SI
	MOVQ   q+8(FP), DI
	MOVQ   scales+16(FP), DX
	MOVQ   groups+24(FP), CX
	MOVQ   glen+32(FP), R8
	VXORPS Y0, Y0, Y0

group:
	ZERO_ACC
	MOVQ   R8, AX

loop32:
	CMPQ        AX, $32
	JLT         tail8
	VPMOVSXBD   (DI), Y5
	VPMOVSXBD   8(DI), Y6
	VPMOVSXBD   16(DI), Y7
	VPMOVSXBD   24(DI), Y8
	CVT_FMA32
	ADDQ        $32, DI
	ADDQ        $128, SI
	SUBQ        $32, AX
	JMP         loop32

tail8:
	TESTQ       AX, AX
	JE          gend
	VPMOVSXBD   (DI), Y5
	VCVTDQ2PS   Y5, Y5
	VFMADD231PS (SI), Y5, Y1
	ADDQ        $8, DI
	ADDQ        $32, SI
	SUBQ        $8, AX
	JMP         tail8

gend:
	SUM_ACC
	VBROADCASTSS (DX), Y9
	VFMADD231PS  Y9, Y1, Y0
	ADDQ         $4, DX
	DECQ         CX
	JNZ          group

	HSUM_Y0
	MOVSS        X0, ret+40(FP)
	RET

// func dotQ4(x *float32, q *byte, scales *float32, xsum *float32, groups int, glen int) float32
//
// q holds 4-bit values plus 8, each 32 values of a row as 16 bytes: value j
// in the low nibble of byte j, value j+16 in its high nibble. xsum[g] is
// Σ x over group g: Σ x·(u-8) is computed as Σ x·u - 8·Σ x, the eight
// lanes each taking xsum[g] off. glen is a positive multiple of 32.
TEXT ·dotQ4(SB), NOSPLIT, $0-52
	MOVQ         x+0(FP), SI
	MOVQ         q+8(FP), DI
	MOVQ         scales+16(FP), DX
	MOVQ         xsum+24(FP), BX
	MOVQ         groups+32(FP), CX
	MOVQ         glen+40(FP), R8
	MOVL         $15, AX
	VMOVD        AX, X14
	VPBROADCASTD X14, Y14
	VXORPS       Y0, Y0, Y0

group:
	ZERO_ACC
	MOVQ   R8, AX

loop32:
	VPMOVZXBD   (DI), Y5
	VPMOVZXBD   8(DI), Y6
	VPSRLD      $4, Y5, Y7
	VPSRLD      $4, Y6, Y8
	VPAND       Y14, Y5, Y5
	VPAND       Y14, Y6, Y6
	CVT_FMA32
	ADDQ        $16, DI
	ADDQ        $128, SI
	SUBQ        $32, AX
	JNZ         loop32

	SUM_ACC
	VBROADCASTSS (BX), Y10
	VSUBPS       Y10, Y1, Y1
	VBROADCASTSS (DX), Y9
	VFMADD231PS  Y9, Y1, Y0
	ADDQ         $4, DX
	ADDQ         $4, BX
	DECQ         CX
	JNZ          group

	HSUM_Y0
	MOVSS        X0, ret+48(FP)
	RET

// func dotQ8Q8(q *int8, scales *float32, xq *int8, xd *float32, blocks int) float32
//
// llama.cpp's AVX2 vec_dot of Q8_0 blocks (quant_llama.go): per block of
// 32, the int8 products summed four at a time into eight int32 lanes
// (VPMADDUBSW of |q| with x signed by q, then VPMADDWD by ones), converted
// and fused-multiply-added with scales[b]·xd[b] into eight float32 lanes;
// the lanes added as hsum_float_8 does.
TEXT ·dotQ8Q8(SB), NOSPLIT, $0-44
	MOVQ         q+0(FP), SI
	MOVQ         scales+8(FP), DX
	MOVQ         xq+16(FP), DI
	MOVQ         xd+24(FP), BX
	MOVQ         blocks+32(FP), CX
	MOVL         $1, AX
	VMOVD        AX, X15
	VPBROADCASTW X15, Y15
	VXORPS       Y0, Y0, Y0

block:
	VMOVDQU      (SI), Y1
	VMOVDQU      (DI), Y2
	VPSIGNB      Y1, Y1, Y3
	VPSIGNB      Y1, Y2, Y4
	VPMADDUBSW   Y4, Y3, Y5
	VPMADDWD     Y15, Y5, Y5
	VCVTDQ2PS    Y5, Y5
	VMOVSS       (DX), X6
	VMULSS       (BX), X6, X6
	VBROADCASTSS X6, Y6
	VFMADD231PS  Y5, Y6, Y0
	ADDQ         $32, SI
	ADDQ         $32, DI
	ADDQ         $4, DX
	ADDQ         $4, BX
	DECQ         CX
	JNZ          block

	VEXTRACTF128 $1, Y0, X1
	VADDPS       X0, X1, X1
	VMOVHLPS     X1, X1, X2
	VADDPS       X2, X1, X1
	VMOVSHDUP    X1, X2
	VADDSS       X2, X1, X1
	VZEROUPPER
	MOVSS        X1, ret+40(FP)
	RET
