package main

import (
	"context"
	"encoding/json"
	"fmt"
	"os"
	"strings"
	"text/tabwriter"
	"time"

	"github.com/spf13/cobra"

	"github.com/largeforge/largeforge/model/checkpoint"
	"github.com/largeforge/largeforge/model/tokenizer"
	"github.com/largeforge/largeforge/storage/modelstore"
)

func newModelCmd() *cobra.Command {
	cmd := &cobra.Command{Use: "model", Short: "Create, import and describe Hugging Face model directories; push, pull, list and remove models in lf_models"}

	var preset, out, chatTemplate string
	var seed int64
	initCmd := &cobra.Command{
		Use:   "init --preset tiny|15m|k256|k256sharp --output DIR",
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
	var dequantize bool
	importCmd := &cobra.Command{
		Use:   "import-gguf FILE.gguf --output DIR [--dequantize]",
		Short: "Convert a llama-architecture GGUF file (F32, F16, BF16, Q8_0, Q4_0, Q4_K, Q6_K) into a Hugging Face directory, quantized tensors kept quantized unless --dequantize",
		Args:  cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			if gout == "" {
				return fmt.Errorf("--output is required")
			}
			imp := checkpoint.ImportGGUF
			if dequantize {
				imp = checkpoint.ImportGGUFDequantized
			}
			if err := imp(args[0], gout); err != nil {
				return err
			}
			return printInfo(gout, false)
		},
	}
	importCmd.Flags().StringVar(&gout, "output", "", "directory to write")
	importCmd.Flags().BoolVar(&dequantize, "dequantize", false, "write quantized tensors as F32 instead of keeping them quantized")

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
	cmd.AddCommand(initCmd, importCmd, infoCmd, newQuantizeCmd(), newExportGGUFCmd())
	cmd.AddCommand(modelStoreCmds()...)
	return cmd
}

// withModelStore connects to --nats and runs f with lf_models.
func withModelStore(ctx context.Context, f func(ctx context.Context, ms *modelstore.Store) error) error {
	bus, err := connect(ctx, newLogger(ctx))
	if err != nil {
		return err
	}
	defer bus.Close()
	ms, err := modelstore.New(ctx, bus)
	if err != nil {
		return err
	}
	return f(ctx, ms)
}

// modelStoreCmds are model push, pull, ls and rm: models in the lf_models
// object store of --nats.
func modelStoreCmds() []*cobra.Command {
	push := &cobra.Command{
		Use:   "push NAME DIR",
		Short: "Store a model directory in lf_models as a new version of NAME and make it current (admin)",
		Long: `Store every file of DIR (a Hugging Face checkpoint, a PEFT adapter, a quantized model;
subdirectories included, hidden files skipped) in the lf_models object store of --nats,
streamed, as a version of NAME identified by its digest (the SHA-256 of its manifest: every
file's path, size and SHA-256), then point NAME at it. Workers started with --model NAME,
an expert's model_path NAME and a training job's model_name NAME then fetch it, verified,
on any machine. Pushing the same files again makes no new version.`,
		Args: cobra.ExactArgs(2),
		RunE: func(cmd *cobra.Command, args []string) error {
			return withModelStore(cmd.Context(), func(ctx context.Context, ms *modelstore.Store) error {
				m, err := ms.Push(ctx, args[0], args[1])
				if err != nil {
					return err
				}
				fmt.Printf("pushed %s %s (%d files, %d bytes)\n", m.Name, m.Digest, len(m.Files), m.Size)
				return nil
			})
		},
	}
	pull := &cobra.Command{
		Use:   "pull NAME DIR",
		Short: "Write the current version of NAME from lf_models into DIR, verified",
		Long: `Write the current version of NAME into DIR (which must not exist, or be empty). Every file
is checked against the version's manifest (size and SHA-256) before DIR appears: a missing
name, a missing manifest or a truncated or tampered object is refused and leaves no DIR.`,
		Args: cobra.ExactArgs(2),
		RunE: func(cmd *cobra.Command, args []string) error {
			return withModelStore(cmd.Context(), func(ctx context.Context, ms *modelstore.Store) error {
				digest, err := ms.Pull(ctx, args[0], args[1])
				if err != nil {
					return err
				}
				fmt.Printf("pulled %s %s into %s\n", args[0], digest, args[1])
				return nil
			})
		},
	}
	var versions bool
	ls := &cobra.Command{
		Use:   "ls [--versions] [NAME...]",
		Short: "List the models of lf_models (name, current digest, size, files, updated), or every version",
		Args:  cobra.ArbitraryArgs,
		RunE: func(cmd *cobra.Command, args []string) error {
			return withModelStore(cmd.Context(), func(ctx context.Context, ms *modelstore.Store) error {
				return listModels(ctx, ms, args, versions)
			})
		},
	}
	ls.Flags().BoolVar(&versions, "versions", false, "list every stored version of each name, oldest first; * marks the current one")
	rm := &cobra.Command{
		Use:   "rm NAME",
		Short: "Remove the current version of NAME; NAME then serves its newest remaining version, or goes (admin)",
		Long: `Remove the current version of NAME from lf_models: NAME points at its newest remaining
version first, then the removed version's objects are deleted; removing the last version
removes NAME. Workers already serving the removed version keep it until they restart.`,
		Args: cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			return withModelStore(cmd.Context(), func(ctx context.Context, ms *modelstore.Store) error {
				removed, current, err := ms.Remove(ctx, args[0])
				if err != nil {
					return err
				}
				if current == "" {
					fmt.Printf("removed %s %s; no version left\n", args[0], removed)
				} else {
					fmt.Printf("removed %s %s; current %s\n", args[0], removed, current)
				}
				return nil
			})
		},
	}
	return []*cobra.Command{push, pull, ls, rm}
}

func listModels(ctx context.Context, ms *modelstore.Store, names []string, versions bool) error {
	models, err := ms.List(ctx)
	if err != nil {
		return err
	}
	want := map[string]bool{}
	for _, n := range names {
		want[n] = true
	}
	w := tabwriter.NewWriter(os.Stdout, 0, 4, 2, ' ', 0)
	fmt.Fprintln(w, "NAME\tDIGEST\tSIZE\tFILES\tUPDATED")
	for _, m := range models {
		if len(want) > 0 && !want[m.Name] {
			continue
		}
		delete(want, m.Name)
		if !versions {
			fmt.Fprintf(w, "%s\t%s\t%d\t%d\t%s\n", m.Name, m.Digest, m.Size, m.Files, m.Updated.Format(time.RFC3339))
			continue
		}
		vs, err := ms.Versions(ctx, m.Name)
		if err != nil {
			return err
		}
		for _, v := range vs {
			mark := ""
			if v.Current {
				mark = " *"
			}
			fmt.Fprintf(w, "%s\t%s%s\t%d\t%d\t%s\n", m.Name, v.Digest, mark, v.Size, len(v.Files), v.Created.Format(time.RFC3339))
		}
	}
	if err := w.Flush(); err != nil {
		return err
	}
	for n := range want {
		return fmt.Errorf("model %s: %w", n, modelstore.ErrNotFound)
	}
	return nil
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
