package main

import (
	"encoding/json"
	"fmt"
	"os"
	"strings"

	"github.com/spf13/cobra"

	"github.com/largeforge/largeforge/model/checkpoint"
	"github.com/largeforge/largeforge/model/tokenizer"
)

func newModelCmd() *cobra.Command {
	cmd := &cobra.Command{Use: "model", Short: "Create, import and describe Hugging Face model directories"}

	var preset, out, chatTemplate string
	var seed int64
	initCmd := &cobra.Command{
		Use:   "init --preset tiny|15m --output DIR",
		Short: "Write a randomly initialised Llama of a named preset, with a byte-level tokenizer",
		Args:  cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			if out == "" {
				return fmt.Errorf("--output is required")
			}
			if src, ok := tokenizer.NamedJinja(chatTemplate); ok {
				chatTemplate = src
			}
			if chatTemplate != "" {
				// Check the template renders before writing anything.
				msgs := []tokenizer.Message{{Role: "user", Content: "hi"}, {Role: "assistant", Content: "hello"}}
				if _, err := tokenizer.RenderJinjaTemplate(chatTemplate, msgs, true, "<s>", "</s>"); err != nil {
					return fmt.Errorf("--chat-template: %w", err)
				}
			}
			if err := checkpoint.Init(preset, seed, out); err != nil {
				return err
			}
			if chatTemplate != "" {
				if err := checkpoint.SetChatTemplate(out, chatTemplate); err != nil {
					return err
				}
			}
			return printInfo(out, false)
		},
	}
	initCmd.Flags().StringVar(&preset, "preset", "tiny", "preset: "+strings.Join(checkpoint.Presets(), ", "))
	initCmd.Flags().StringVar(&out, "output", "", "directory to write")
	initCmd.Flags().Int64Var(&seed, "seed", 1, "random seed (the same seed gives the same weights)")
	initCmd.Flags().StringVar(&chatTemplate, "chat-template", "", "a chat_template to write into tokenizer_config.json: chatml, or a Jinja template (default: none)")

	var gout string
	importCmd := &cobra.Command{
		Use:   "import-gguf FILE.gguf --output DIR",
		Short: "Convert an F32/F16 llama-architecture GGUF file into a Hugging Face directory",
		Args:  cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			if gout == "" {
				return fmt.Errorf("--output is required")
			}
			if err := checkpoint.ImportGGUF(args[0], gout); err != nil {
				return err
			}
			return printInfo(gout, false)
		},
	}
	importCmd.Flags().StringVar(&gout, "output", "", "directory to write")

	var asJSON bool
	infoCmd := &cobra.Command{
		Use:   "info DIR",
		Short: "Describe a model directory: architecture, sizes, parameters, dtypes, files",
		Args:  cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			return printInfo(args[0], asJSON)
		},
	}
	infoCmd.Flags().BoolVar(&asJSON, "json", false, "print JSON")
	cmd.AddCommand(initCmd, importCmd, infoCmd)
	return cmd
}

func printInfo(dir string, asJSON bool) error {
	info, err := checkpoint.Describe(dir)
	if err != nil {
		return err
	}
	if asJSON {
		enc := json.NewEncoder(os.Stdout)
		enc.SetIndent("", "  ")
		return enc.Encode(info)
	}
	c := info.Config
	fmt.Printf("model        %s\n", info.Dir)
	fmt.Printf("architecture %s (%s)\n", c.Architecture, c.ModelType)
	fmt.Printf("parameters   %d (%.2fM)\n", info.Parameters, float64(info.Parameters)/1e6)
	fmt.Printf("hidden %d  intermediate %d  layers %d  heads %d  kv heads %d  head dim %d\n", c.HiddenSize, c.IntermediateSize, c.NumLayers, c.NumHeads, c.NumKVHeads, c.HeadDim)
	fmt.Printf("vocab %d  context %d  rope theta %g  rms eps %g  tied embeddings %v\n", c.VocabSize, c.MaxPositionEmbeddings, c.RopeTheta, c.RMSNormEps, c.TieWordEmbeddings)
	fmt.Printf("dtypes       %s  (%d bytes of weights)\n", strings.Join(info.DTypes, ", "), info.WeightBytes)
	fmt.Printf("tokenizer    %v  generation config %v\n", info.HasTokenizer, info.HasGenerationConfig)
	fmt.Printf("files        %s\n", strings.Join(info.Files, ", "))
	return nil
}
