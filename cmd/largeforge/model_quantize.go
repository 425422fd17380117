package main

import (
	"fmt"
	"strings"

	"github.com/spf13/cobra"

	"github.com/largeforge/largeforge/model"
	"github.com/largeforge/largeforge/model/checkpoint"
)

// newQuantizeCmd is `model quantize`: a float model directory to a
// quantized one (DATA_DICTIONARY.md §4.3).
func newQuantizeCmd() *cobra.Command {
	var bits, group int
	var method, ggufType string
	cmd := &cobra.Command{
		Use:   "quantize --bits 8|4 [--group-size 32|64|128] [--method rtn|gptq] SRC DST  (or SRC.gguf DST.gguf [--gguf-type q8_0|q4_0|q4_k|q6_k|q4_k_m])",
		Short: "Quantize a float model directory (weight-only, symmetric: int8 per output channel, int4 per group) into DST in GPTQ's layout with quant_config.json",
		Args:  cobra.ExactArgs(2),
		RunE: func(cmd *cobra.Command, args []string) error {
			if strings.HasSuffix(args[0], ".gguf") { // a GGUF file to a GGUF file, in llama.cpp's blocks
				if method != "" && method != model.MethodRTN {
					return fmt.Errorf("quantize %s: --method %s: a GGUF file is quantized by ggml's reference rounding (rtn)", args[0], method)
				}
				quantize := func() error { return checkpoint.QuantizeGGUF(args[0], args[1], bits, group) }
				if ggufType != "" {
					if bits != 0 || group != 0 {
						return fmt.Errorf("quantize %s: --gguf-type %s names the blocks: give it without --bits or --group-size", args[0], ggufType)
					}
					quantize = func() error { return checkpoint.QuantizeGGUFType(args[0], args[1], ggufType) }
				}
				if err := quantize(); err != nil {
					return err
				}
				fmt.Fprintf(cmd.OutOrStdout(), "wrote %s\n", args[1])
				return nil
			}
			if ggufType != "" {
				return fmt.Errorf("quantize %s: --gguf-type is for a GGUF file (SRC.gguf DST.gguf)", args[0])
			}
			qc, err := model.QuantizeDir(cmd.Context(), args[0], args[1], bits, group, method)
			if err != nil {
				return err
			}
			fmt.Fprintf(cmd.OutOrStdout(), "quantized %d matrices to %d bits by %s (group size %d); per-channel fallback: %d; float: %d\n",
				len(qc.Modules), qc.Bits, qc.Method, qc.GroupSize, len(qc.PerChannel), len(qc.Float))
			return printInfo(args[1], false)
		},
	}
	cmd.Flags().IntVar(&bits, "bits", 0, "8 (one scale per output channel) or 4 (one scale per group)")
	cmd.Flags().IntVar(&group, "group-size", 0, "columns per scale for 4 bits: 32 (default), 64 or 128; rows it does not divide get one scale per channel")
	cmd.Flags().StringVar(&method, "method", "", "rtn (round to nearest) or gptq (GPTQ's error compensation, calibrated on the model's own samples); default gptq for 4 bits, rtn for 8")
	cmd.Flags().StringVar(&ggufType, "gguf-type", "", "for a GGUF file, llama.cpp's block type: "+strings.Join(checkpoint.GGUFQuantTypes, ", ")+" (q4_k_m: Q6_K for attn_v, ffn_down and the output, Q4_K for the rest)")
	return cmd
}
