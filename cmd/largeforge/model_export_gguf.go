package main

import (
	"fmt"

	"github.com/spf13/cobra"

	"github.com/largeforge/largeforge/model/checkpoint"
)

// newExportGGUFCmd is `model export-gguf`: a float model directory to a
// llama.cpp GGUF file (F32), which model quantize turns into Q8_0, Q4_0 or
// K-quants.
func newExportGGUFCmd() *cobra.Command {
	return &cobra.Command{
		Use:   "export-gguf DIR OUT.gguf",
		Short: "Write a float llama model directory (model init's byte-level tokenizer) as a llama.cpp GGUF file, every tensor F32",
		Args:  cobra.ExactArgs(2),
		RunE: func(cmd *cobra.Command, args []string) error {
			if err := checkpoint.ExportGGUF(args[0], args[1]); err != nil {
				return err
			}
			fmt.Fprintf(cmd.OutOrStdout(), "wrote %s\n", args[1])
			return nil
		},
	}
}
