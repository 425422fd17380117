package main

import (
	"fmt"
	"os"
	"time"

	"github.com/spf13/cobra"

	"github.com/largeforge/largeforge/routing/classifier"
)

// RouterTrainConfig is what `largeforge router train` runs with.
type RouterTrainConfig struct {
	Output  string
	Holdout float64 // share of each expert's rows held out for the accuracy report
	Train   classifier.Config
}

// Validate checks the flags of router train.
func (c RouterTrainConfig) Validate() error {
	if c.Output == "" {
		return fmt.Errorf("--output is required")
	}
	if c.Holdout < 0 || c.Holdout >= 1 {
		return fmt.Errorf("--holdout %v: want [0, 1)", c.Holdout)
	}
	// The classifier reads 0 as "the default"; on the command line a 0 is a
	// mistake, not a request for the default.
	switch {
	case c.Train.BatchSize < 1:
		return fmt.Errorf("--batch-size %d: want at least 1", c.Train.BatchSize)
	case !(c.Train.LearningRate > 0):
		return fmt.Errorf("--learning-rate %v: want more than 0", c.Train.LearningRate)
	case c.Train.Epochs < 1:
		return fmt.Errorf("--epochs %d: want at least 1", c.Train.Epochs)
	case c.Train.Dim < 1:
		return fmt.Errorf("--dim %d: want a power of two", c.Train.Dim)
	}
	return c.Train.Validate()
}

func newRouterCmd() *cobra.Command {
	cmd := &cobra.Command{
		Use:   "router",
		Short: "The learned stage of expert routing",
	}
	cmd.AddCommand(newRouterTrainCmd())
	return cmd
}

func newRouterTrainCmd() *cobra.Command {
	var rc RouterTrainConfig
	cmd := &cobra.Command{
		Use:   "train LABELED.jsonl --output DIR",
		Short: "Train the router's classifier from labeled prompts and save it as a model directory",
		Long: `Train the learned stage of expert routing from JSONL rows {"prompt": "...", "expert": "code"}
(largeforge samples writes router.jsonl): hashed word, bigram and character-trigram
features and a linear softmax over the expert names, trained with Adam in GoMLX on the
pure Go backend. --holdout of each expert's rows are kept out of training and the
accuracy on them is printed; then the model is trained on every row and saved to
--output (router.json and model.safetensors). Serve it with
largeforge gateway --experts FILE --router-model DIR (also up and route): prompts that no
keyword or domain rule decides go to the expert it finds most probable.`,
		Args: cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			if err := rc.Validate(); err != nil {
				return err
			}
			ex, err := classifier.LoadExamples(args[0])
			if err != nil {
				return err
			}
			ctx := cmd.Context()
			if rc.Holdout > 0 {
				tr, te := classifier.Holdout(ex, rc.Holdout, rc.Train.Seed+1)
				if len(te) > 0 {
					c, err := classifier.Train(ctx, tr, rc.Train)
					if err != nil {
						return err
					}
					acc, err := c.Accuracy(te)
					_ = c.Close()
					if err != nil {
						return err
					}
					fmt.Fprintf(os.Stderr, "held-out accuracy %.3f on %d rows (trained on %d)\n", acc, len(te), len(tr))
				}
			}
			t0 := time.Now()
			c, err := classifier.Train(ctx, ex, rc.Train)
			if err != nil {
				return err
			}
			defer c.Close()
			if err := c.Save(rc.Output); err != nil {
				return err
			}
			m := c.Meta()
			fmt.Fprintf(os.Stderr, "trained on %d rows, %d experts %v, %d epochs in %.2fs: loss %.4f, training accuracy %.3f\n",
				m.TrainRows, len(m.Labels), m.Labels, m.Epochs, time.Since(t0).Seconds(), m.FinalLoss, m.TrainAccuracy)
			fmt.Println(rc.Output)
			return nil
		},
	}
	f := cmd.Flags()
	f.StringVar(&rc.Output, "output", "", "model directory to write (required)")
	f.Float64Var(&rc.Holdout, "holdout", 0.2, "share of each expert's rows held out to report accuracy (0: none)")
	f.IntVar(&rc.Train.Dim, "dim", classifier.DefaultDim, "hashed feature buckets (a power of two)")
	f.IntVar(&rc.Train.Epochs, "epochs", classifier.DefaultEpochs, "passes over the rows")
	f.IntVar(&rc.Train.BatchSize, "batch-size", classifier.DefaultBatchSize, "rows per step")
	f.Float64Var(&rc.Train.LearningRate, "learning-rate", classifier.DefaultLearningRate, "Adam learning rate")
	f.Uint64Var(&rc.Train.Seed, "seed", classifier.DefaultSeed, "shuffling seed")
	_ = cmd.MarkFlagRequired("output")
	return cmd
}
