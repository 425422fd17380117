//go:build !purego

#include "textflag.h"

// Constants of expSum8, each in the 8 lanes of a 256-bit vector: the
// Cephes expf reduction and polynomial (relative error about 1e-7).

DATA expLog2e<>+0(SB)/4, $0x3fb8aa3b
DATA expLog2e<>+4(SB)/4, $0x3fb8aa3b
DATA expLog2e<>+8(SB)/4, $0x3fb8aa3b
DATA expLog2e<>+12(SB)/4, $0x3fb8aa3b
DATA expLog2e<>+16(SB)/4, $0x3fb8aa3b
DATA expLog2e<>+20(SB)/4, $0x3fb8aa3b
DATA expLog2e<>+24(SB)/4, $0x3fb8aa3b
DATA expLog2e<>+28(SB)/4, $0x3fb8aa3b
GLOBL expLog2e<>(SB), RODATA|NOPTR, $32

DATA expLn2Hi<>+0(SB)/4, $0x3f318000
DATA expLn2Hi<>+4(SB)/4, $0x3f318000
DATA expLn2Hi<>+8(SB)/4, $0x3f318000
DATA expLn2Hi<>+12(SB)/4, $0x3f318000
DATA expLn2Hi<>+16(SB)/4, $0x3f318000
DATA expLn2Hi<>+20(SB)/4, $0x3f318000
DATA expLn2Hi<>+24(SB)/4, $0x3f318000
DATA expLn2Hi<>+28(SB)/4, $0x3f318000
GLOBL expLn2Hi<>(SB), RODATA|NOPTR, $32

DATA expLn2Lo<>+0(SB)/4, $0xb95e8083
DATA expLn2Lo<>+4(SB)/4, $0xb95e8083
DATA expLn2Lo<>+8(SB)/4, $0xb95e8083
DATA expLn2Lo<>+12(SB)/4, $0xb95e8083
DATA expLn2Lo<>+16(SB)/4, $0xb95e8083
DATA expLn2Lo<>+20(SB)/4, $0xb95e8083
DATA expLn2Lo<>+24(SB)/4, $0xb95e8083
DATA expLn2Lo<>+28(SB)/4, $0xb95e8083
GLOBL expLn2Lo<>(SB), RODATA|NOPTR, $32

DATA expP0<>+0(SB)/4, $0x39506967
DATA expP0<>+4(SB)/4, $0x39506967
DATA expP0<>+8(SB)/4, $0x39506967
DATA expP0<>+12(SB)/4, $0x39506967
DATA expP0<>+16(SB)/4, $0x39506967
DATA expP0<>+20(SB)/4, $0x39506967
DATA expP0<>+24(SB)/4, $0x39506967
DATA expP0<>+28(SB)/4, $0x39506967
GLOBL expP0<>(SB), RODATA|NOPTR, $32

DATA expP1<>+0(SB)/4, $0x3ab743ce
DATA expP1<>+4(SB)/4, $0x3ab743ce
DATA expP1<>+8(SB)/4, $0x3ab743ce
DATA expP1<>+12(SB)/4, $0x3ab743ce
DATA expP1<>+16(SB)/4, $0x3ab743ce
DATA expP1<>+20(SB)/4, $0x3ab743ce
DATA expP1<>+24(SB)/4, $0x3ab743ce
DATA expP1<>+28(SB)/4, $0x3ab743ce
GLOBL expP1<>(SB), RODATA|NOPTR, $32

DATA expP2<>+0(SB)/4, $0x3c088908
DATA expP2<>+4(SB)/4, $0x3c088908
DATA expP2<>+8(SB)/4, $0x3c088908
DATA expP2<>+12(SB)/4, $0x3c088908
DATA expP2<>+16(SB)/4, $0x3c088908
DATA expP2<>+20(SB)/4, $0x3c088908
DATA expP2<>+24(SB)/4, $0x3c088908
DATA expP2<>+28(SB)/4, $0x3c088908
GLOBL expP2<>(SB), RODATA|NOPTR, $32

DATA expP3<>+0(SB)/4, $0x3d2aa9c1
DATA expP3<>+4(SB)/4, $0x3d2aa9c1
DATA expP3<>+8(SB)/4, $0x3d2aa9c1
DATA expP3<>+12(SB)/4, $0x3d2aa9c1
DATA expP3<>+16(SB)/4, $0x3d2aa9c1
DATA expP3<>+20(SB)/4, $0x3d2aa9c1
DATA expP3<>+24(SB)/4, $0x3d2aa9c1
DATA expP3<>+28(SB)/4, $0x3d2aa9c1
GLOBL expP3<>(SB), RODATA|NOPTR, $32

DATA expP4<>+0(SB)/4, $0x3e2aaaaa
DATA expP4<>+4(SB)/4, $0x3e2aaaaa
DATA expP4<>+8(SB)/4, $0x3e2aaaaa
DATA expP4<>+12(SB)/4, $0x3e2aaaaa
DATA expP4<>+16(SB)/4, $0x3e2aaaaa
DATA expP4<>+20(SB)/4, $0x3e2aaaaa
DATA expP4<>+24(SB)/4, $0x3e2aaaaa
DATA expP4<>+28(SB)/4, $0x3e2aaaaa
GLOBL expP4<>(SB), RODATA|NOPTR, $32

DATA expP5<>+0(SB)/4, $0x3f000000
DATA expP5<>+4(SB)/4, $0x3f000000
DATA expP5<>+8(SB)/4, $0x3f000000
DATA expP5<>+12(SB)/4, $0x3f000000
DATA expP5<>+16(SB)/4, $0x3f000000
DATA expP5<>+20(SB)/4, $0x3f000000
DATA expP5<>+24(SB)/4, $0x3f000000
DATA expP5<>+28(SB)/4, $0x3f000000
GLOBL expP5<>(SB), RODATA|NOPTR, $32

DATA expOne<>+0(SB)/4, $0x3f800000
DATA expOne<>+4(SB)/4, $0x3f800000
DATA expOne<>+8(SB)/4, $0x3f800000
DATA expOne<>+12(SB)/4, $0x3f800000
DATA expOne<>+16(SB)/4, $0x3f800000
DATA expOne<>+20(SB)/4, $0x3f800000
DATA expOne<>+24(SB)/4, $0x3f800000
DATA expOne<>+28(SB)/4, $0x3f800000
GLOBL expOne<>(SB), RODATA|NOPTR, $32

DATA expLow<>+0(SB)/4, $0xc2ae0000
DATA expLow<>+4(SB)/4, $0xc2ae0000
DATA expLow<>+8(SB)/4, $0xc2ae0000
DATA expLow<>+12(SB)/4, $0xc2ae0000
DATA expLow<>+16(SB)/4, $0xc2ae0000
DATA expLow<>+20(SB)/4, $0xc2ae0000
DATA expLow<>+24(SB)/4, $0xc2ae0000
DATA expLow<>+28(SB)/4, $0xc2ae0000
GLOBL expLow<>(SB), RODATA|NOPTR, $32

DATA expBias<>+0(SB)/4, $0x0000007f
DATA expBias<>+4(SB)/4, $0x0000007f
DATA expBias<>+8(SB)/4, $0x0000007f
DATA expBias<>+12(SB)/4, $0x0000007f
DATA expBias<>+16(SB)/4, $0x0000007f
DATA expBias<>+20(SB)/4, $0x0000007f
DATA expBias<>+24(SB)/4, $0x0000007f
DATA expBias<>+28(SB)/4, $0x0000007f
GLOBL expBias<>(SB), RODATA|NOPTR, $32

DATA expHigh<>+0(SB)/4, $0x42b0999a
DATA expHigh<>+4(SB)/4, $0x42b0999a
DATA expHigh<>+8(SB)/4, $0x42b0999a
DATA expHigh<>+12(SB)/4, $0x42b0999a
DATA expHigh<>+16(SB)/4, $0x42b0999a
DATA expHigh<>+20(SB)/4, $0x42b0999a
DATA expHigh<>+24(SB)/4, $0x42b0999a
DATA expHigh<>+28(SB)/4, $0x42b0999a
GLOBL expHigh<>(SB), RODATA|NOPTR, $32

// EXP8 sets Y3 = e^Y0 for Y0 within float32's range of e^ (clamped by the
// caller): n = round(x·log2e), r = x - n·ln2 (in two parts), e^r by the
// Cephes polynomial, times 2^n built in the exponent bits. Clobbers Y0, Y1,
// Y4, Y5.
#define EXP8 \
	VMULPS expLog2e<>(SB), Y0, Y1; \
	VROUNDPS $0, Y1, Y1; \
	VFNMADD231PS expLn2Hi<>(SB), Y1, Y0; \
	VFNMADD231PS expLn2Lo<>(SB), Y1, Y0; \
	VMOVUPS expP0<>(SB), Y3; \
	VFMADD213PS expP1<>(SB), Y0, Y3; \
	VFMADD213PS expP2<>(SB), Y0, Y3; \
	VFMADD213PS expP3<>(SB), Y0, Y3; \
	VFMADD213PS expP4<>(SB), Y0, Y3; \
	VFMADD213PS expP5<>(SB), Y0, Y3; \
	VMULPS Y0, Y0, Y4; \
	VFMADD213PS Y0, Y4, Y3; \
	VADDPS expOne<>(SB), Y3, Y3; \
	VCVTPS2DQ Y1, Y5; \
	VPADDD expBias<>(SB), Y5, Y5; \
	VPSLLD $23, Y5, Y5; \
	VMULPS Y5, Y3, Y3

// func expSum8(x *float32, n int, shift float32) float64
//
// Σ e^(x[i]-shift) for i < n (n a multiple of 8; each x[i]-shift <= 0, as
// in a log-sum-exp shifted by its maximum), summed in float64 lanes.
// AVX2 + FMA.
TEXT ·expSum8(SB), NOSPLIT, $0-32
	MOVQ         x+0(FP), SI
	MOVQ         n+8(FP), CX
	VBROADCASTSS shift+16(FP), Y15
	VXORPD       Y9, Y9, Y9
	VXORPD       Y10, Y10, Y10
	SHRQ         $3, CX
	JE           done

loop:
	VMOVUPS      (SI), Y0
	VSUBPS       Y15, Y0, Y0
	VMAXPS       expLow<>(SB), Y0, Y0
	EXP8
	VCVTPS2PD    X3, Y7
	VEXTRACTF128 $1, Y3, X8
	VCVTPS2PD    X8, Y8
	VADDPD       Y7, Y9, Y9
	VADDPD       Y8, Y10, Y10
	ADDQ         $32, SI
	DECQ         CX
	JNZ          loop

done:
	VADDPD       Y10, Y9, Y9
	VEXTRACTF128 $1, Y9, X10
	VADDPD       X10, X9, X9
	VHADDPD      X9, X9, X9
	MOVSD        X9, ret+24(FP)
	VZEROUPPER
	RET

// func max8(x *float32, n int) float32
//
// The largest of x[:n], n a positive multiple of 8.
TEXT ·max8(SB), NOSPLIT, $0-20
	MOVQ         x+0(FP), SI
	MOVQ         n+8(FP), CX
	VMOVUPS      (SI), Y0
	VMOVAPS      Y0, Y1
	SHRQ         $3, CX

mloop:
	VMAXPS       (SI), Y0, Y0
	ADDQ         $32, SI
	DECQ         CX
	JNZ          mloop

	VEXTRACTF128 $1, Y0, X1
	VMAXPS       X1, X0, X0
	VPERMILPS    $0x4e, X0, X1
	VMAXPS       X1, X0, X0
	VPERMILPS    $0xb1, X0, X1
	VMAXPS       X1, X0, X0
	MOVSS        X0, ret+16(FP)
	VZEROUPPER
	RET

// func siluMul8(a, gate, up *float32, n int)
//
// a[i] = gate[i] / (1 + e^-gate[i]) * up[i] for i < n (a positive multiple of 8):
// SwiGLU's SiLU(gate)·up, e^ as in expSum8 (clamped to float32's range).
TEXT ·siluMul8(SB), NOSPLIT, $0-32
	MOVQ         a+0(FP), DI
	MOVQ         gate+8(FP), SI
	MOVQ         up+16(FP), DX
	MOVQ         n+24(FP), CX
	VXORPS       Y15, Y15, Y15
	SHRQ         $3, CX

sloop:
	VMOVUPS      (SI), Y6
	VSUBPS       Y6, Y15, Y0
	VMAXPS       expLow<>(SB), Y0, Y0
	VMINPS       expHigh<>(SB), Y0, Y0
	EXP8
	VADDPS       expOne<>(SB), Y3, Y3
	VDIVPS       Y3, Y6, Y6
	VMULPS       (DX), Y6, Y6
	VMOVUPS      Y6, (DI)
	ADDQ         $32, SI
	ADDQ         $32, DX
	ADDQ         $32, DI
	DECQ         CX
	JNZ          sloop
	VZEROUPPER
	RET
