package main

import (
	"fmt"

	"github.com/spf13/cobra"

	"github.com/largeforge/largeforge/internal/samples"
)

func newSamplesCmd() *cobra.Command {
	var out string
	var seed uint64
	cmd := &cobra.Command{
		Use:   "samples --output DIR",
		Short: "Write sample files for trying LargeForge: alpaca, sharegpt and dpo datasets (with a few bad rows), a batch job (prompts.jsonl), labeled routing rows (router.jsonl) and an experts file (experts.yaml)",
		Args:  cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			paths, err := samples.WriteAll(out, seed)
			if err != nil {
				return err
			}
			prompts, err := samples.WritePrompts(out, 24, seed)
			if err != nil {
				return err
			}
			router, err := samples.WriteRouter(out, 300, seed)
			if err != nil {
				return err
			}
			experts, err := samples.WriteExperts(out)
			if err != nil {
				return err
			}
			for _, p := range append(paths, prompts, router, experts) {
				fmt.Println(p)
			}
			return nil
		},
	}
	cmd.Flags().StringVar(&out, "output", "samples", "directory to write into")
	cmd.Flags().Uint64Var(&seed, "seed", 1, "random seed")
	return cmd
}
