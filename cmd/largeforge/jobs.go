package main

import (
	"bufio"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"text/tabwriter"
	"time"

	"github.com/schollz/progressbar/v3"
	"github.com/spf13/cobra"

	"github.com/largeforge/largeforge/jobs"
	"github.com/largeforge/largeforge/pipeline"
)

func newJobsCmd() *cobra.Command {
	cmd := &cobra.Command{
		Use:   "jobs list | status JOB | wait JOB | cancel JOB | results JOB",
		Short: "List, inspect, wait for, cancel batch jobs and read their results",
	}
	var asJSON bool
	list := &cobra.Command{
		Use:   "list",
		Short: "List the jobs, newest first",
		Args:  cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			return withJobStore(cmd.Context(), func(_ *pipeline.Bus, s *jobs.Store) error {
				list, err := s.List(cmd.Context())
				if err != nil {
					return err
				}
				if asJSON {
					return printJobJSON(os.Stdout, list)
				}
				printJobTable(os.Stdout, list)
				return nil
			})
		},
	}
	list.Flags().BoolVar(&asJSON, "json", false, "print JSON")

	status := &cobra.Command{
		Use:   "status JOB",
		Short: "Print a job's record (status, counts, timestamps, output locations; a training job's step, loss, learning rate, epoch and ETA) as JSON",
		Args:  cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			return withJobStore(cmd.Context(), func(_ *pipeline.Bus, s *jobs.Store) error {
				j, err := s.Get(cmd.Context(), args[0])
				if err != nil {
					return err
				}
				printTrainingLine(os.Stderr, j)
				return printJobJSON(os.Stdout, j)
			})
		},
	}

	var timeout time.Duration
	var progress string
	wait := &cobra.Command{
		Use:   "wait JOB",
		Short: "Wait until a job ends, with a progress bar (requests done; a training job's step, loss and ETA); exit non-zero unless it completed",
		Args:  cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			return withJobStore(cmd.Context(), func(_ *pipeline.Bus, s *jobs.Store) error {
				j, err := waitJob(cmd.Context(), s, args[0], timeout, progress)
				if err != nil {
					return err
				}
				printJobSummary(os.Stdout, j)
				return jobOutcome(j)
			})
		},
	}
	wait.Flags().DurationVar(&timeout, "timeout", 0, "give up after this long (0: never)")
	wait.Flags().StringVar(&progress, "progress", "auto", "progress bar: auto (on a terminal), on, off")

	cancel := &cobra.Command{
		Use:   "cancel JOB",
		Short: "Cancel a job: purge its queued requests; it ends cancelled with the results it has",
		Args:  cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			return withJobStore(cmd.Context(), func(bus *pipeline.Bus, s *jobs.Store) error {
				j, purged, err := jobs.Cancel(cmd.Context(), bus, s, args[0])
				if err != nil {
					return err
				}
				if j.Kind == jobs.KindTraining {
					fmt.Printf("job %s cancelling: its train worker stops at the next step\n", j.ID)
					return nil
				}
				fmt.Printf("job %s cancelling: %d queued requests purged; the results sink finalises it\n", j.ID, purged)
				return nil
			})
		},
	}

	var ro resultsOptions
	results := &cobra.Command{
		Use:   "results JOB [-o FILE] [--errors] [--format jsonl|parquet]",
		Short: "Stream a finished job's output.jsonl (errors.jsonl with --errors, results.parquet with --format parquet) from the bus to stdout or FILE",
		Long: `Stream a finished job's results from the artifacts object store (lf_artifacts), on any
machine that reaches the bus: output.jsonl (the OpenAI batch output shape), errors.jsonl
with --errors, or results.parquet with --format parquet. With -o the file appears whole
only once every byte has been read and checked against the object's digest.`,
		Args: cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			if err := ro.validate(); err != nil {
				return err
			}
			return withJobStore(cmd.Context(), func(bus *pipeline.Bus, s *jobs.Store) error {
				j, err := s.Get(cmd.Context(), args[0])
				if err != nil {
					return err
				}
				return writeResults(cmd.Context(), bus, os.Stdout, os.Stderr, j, ro)
			})
		},
	}
	results.Flags().BoolVar(&ro.errorsOnly, "errors", false, "errors.jsonl instead of output.jsonl")
	results.Flags().StringVar(&ro.format, "format", "jsonl", "jsonl (output.jsonl or errors.jsonl) or parquet (results.parquet: every row)")
	results.Flags().StringVarP(&ro.out, "output", "o", "", "write to FILE (whole, or not at all) instead of stdout")
	results.Flags().IntVar(&ro.limit, "limit", 0, "jsonl to stdout: at most this many lines (0: all)")

	cmd.AddCommand(list, status, wait, cancel, results)
	return cmd
}

// withJobStore connects to the bus and runs f with the job store.
func withJobStore(ctx context.Context, f func(*pipeline.Bus, *jobs.Store) error) error {
	log := newLogger(ctx)
	bus, err := connect(ctx, log)
	if err != nil {
		return err
	}
	defer bus.Close()
	s, err := jobs.Open(ctx, bus)
	if err != nil {
		return err
	}
	return f(bus, s)
}

func printJobJSON(w io.Writer, v any) error {
	enc := json.NewEncoder(w)
	enc.SetIndent("", "  ")
	return enc.Encode(v)
}

// printTrainingLine prints a training job's progress in one line
// ("step 12/40 loss 2.3100 learning_rate 5e-05 epoch 0.30 eta 42s").
func printTrainingLine(w io.Writer, j jobs.Job) {
	tp := j.Training
	if tp == nil {
		if j.Kind == jobs.KindTraining {
			fmt.Fprintf(w, "job %s %s: not started\n", j.ID, j.Status)
		}
		return
	}
	fmt.Fprintf(w, "job %s %s: step %d/%d loss %.4f learning_rate %.3g epoch %.2f eta %s (output_dir %s)\n", j.ID, j.Status,
		tp.Step, tp.MaxSteps, tp.Loss, tp.LearningRate, tp.Epoch, etaText(tp.ETASeconds), tp.OutputDir)
}

// etaText is a training job's ETA in whole seconds ("-" when not known, or
// at the end).
func etaText(seconds float64) string {
	if !(seconds > 0) {
		return "-"
	}
	return time.Duration(seconds * float64(time.Second)).Round(time.Second).String()
}

func printJobTable(w io.Writer, list []jobs.Job) {
	tw := tabwriter.NewWriter(w, 0, 4, 2, ' ', 0)
	fmt.Fprintln(tw, "ID\tSTATUS\tKIND\tMODEL\tTOTAL\tCOMPLETED\tFAILED\tCREATED")
	for _, j := range list {
		c := j.RequestCounts
		fmt.Fprintf(tw, "%s\t%s\t%s\t%s\t%d\t%d\t%d\t%s\n", j.ID, j.Status, j.Kind, j.Model, c.Total, c.Completed, c.Failed,
			time.Unix(j.CreatedAt, 0).UTC().Format(time.RFC3339))
	}
	_ = tw.Flush()
}

func printJobSummary(w io.Writer, j jobs.Job) {
	if j.Kind == jobs.KindTraining {
		printTrainingLine(w, j)
		for _, e := range j.Errors {
			fmt.Fprintf(w, "  error %s: %s\n", e.Code, e.Message)
		}
		return
	}
	c := j.RequestCounts
	fmt.Fprintf(w, "job %s %s: %d requests, %d completed, %d failed\n", j.ID, j.Status, c.Total, c.Completed, c.Failed)
	for _, e := range j.Errors {
		fmt.Fprintf(w, "  error %s: %s\n", e.Code, e.Message)
	}
	if o := j.Outputs; o.Output != "" {
		fmt.Fprintf(w, "  output   %s\n  errors   %s\n  parquet  %s\n  (in %s: largeforge jobs results %s)\n", o.Output, o.Errors, o.Parquet, pipeline.BucketArtifacts, j.ID)
		if o.LocalDir != "" {
			fmt.Fprintf(w, "  local copy %s\n", o.LocalDir)
		}
	}
}

// jobOutcome is nil for a completed job and an error naming the status otherwise.
func jobOutcome(j jobs.Job) error {
	if j.Status == jobs.StatusCompleted {
		return nil
	}
	return fmt.Errorf("job %s ended %s", j.ID, j.Status)
}

// waitProgress is what `jobs wait` shows of a job elapsed after it began
// waiting: the bar's position and its total (0: not known yet), and its
// description. A training job counts steps and says its loss and ETA; a
// batch or score job counts requests.
func waitProgress(j jobs.Job, elapsed time.Duration) (done, total int, desc string) {
	if j.Kind == jobs.KindTraining {
		tp := j.Training
		if tp == nil || tp.Step == 0 {
			return 0, 0, fmt.Sprintf("%s %s: no step yet", j.ID, j.Status)
		}
		return tp.Step, tp.MaxSteps, fmt.Sprintf("%s %s: step %d/%d loss %.4f eta %s", j.ID, j.Status, tp.Step, tp.MaxSteps, tp.Loss, etaText(tp.ETASeconds))
	}
	c := j.RequestCounts
	rate := float64(c.Done()) / max(elapsed.Seconds(), 1e-9)
	return c.Done(), c.Total, fmt.Sprintf("%s %s: %d completed, %d failed (%.0f/s)", j.ID, j.Status, c.Completed, c.Failed, rate)
}

// waitJob watches a job until it ends, showing a progress bar: a training
// job's steps, another job's requests (see waitProgress).
func waitJob(ctx context.Context, s *jobs.Store, id string, timeout time.Duration, progress string) (jobs.Job, error) {
	if timeout > 0 {
		var cancel context.CancelFunc
		ctx, cancel = context.WithTimeout(ctx, timeout)
		defer cancel()
	}
	var bar *progressbar.ProgressBar
	show := progress == "on" || (progress == "auto" && isTerminal(os.Stderr))
	start := time.Now()
	j, err := s.Watch(ctx, id, func(j jobs.Job) bool {
		if !show {
			return true
		}
		done, total, desc := waitProgress(j, time.Since(start))
		if bar == nil {
			bar = progressbar.NewOptions(-1, progressbar.OptionSetWriter(os.Stderr), progressbar.OptionShowCount(),
				progressbar.OptionThrottle(200*time.Millisecond), progressbar.OptionClearOnFinish())
		}
		if total > 0 && bar.GetMax() != total {
			bar.ChangeMax(total)
		}
		bar.Describe(desc)
		_ = bar.Set(done)
		return true
	})
	if bar != nil {
		_ = bar.Finish()
	}
	if err != nil && errors.Is(err, context.DeadlineExceeded) {
		return j, fmt.Errorf("job %s still %s after %v", id, j.Status, timeout)
	}
	return j, err
}

// resultsOptions are the flags of jobs results.
type resultsOptions struct {
	errorsOnly bool
	format     string
	out        string
	limit      int
}

func (o resultsOptions) validate() error {
	switch {
	case o.format != "jsonl" && o.format != "parquet":
		return fmt.Errorf("--format %q: want jsonl or parquet", o.format)
	case o.format == "parquet" && o.errorsOnly:
		return errors.New("--errors is a jsonl file; results.parquet holds every row (error_code is set on errors)")
	case o.limit < 0:
		return fmt.Errorf("--limit %d is negative", o.limit)
	case o.limit > 0 && (o.format != "jsonl" || o.out != ""):
		return errors.New("--limit applies to jsonl printed to stdout")
	}
	return nil
}

// writeResults streams one of a finished job's result objects from
// lf_artifacts to w, or to the file o.out (written whole or not at all).
func writeResults(ctx context.Context, bus *pipeline.Bus, w, ew io.Writer, j jobs.Job, o resultsOptions) error {
	if !j.Status.Terminal() {
		return fmt.Errorf("job %s is %s: its results are written when it ends (see `largeforge jobs wait %s`)", j.ID, j.Status, j.ID)
	}
	key := j.Outputs.Output
	switch {
	case o.format == "parquet":
		key = j.Outputs.Parquet
	case o.errorsOnly:
		key = j.Outputs.Errors
	}
	if key == "" {
		return fmt.Errorf("job %s has no result files", j.ID)
	}
	objects, err := bus.Objects(ctx, pipeline.BucketArtifacts)
	if err != nil {
		return err
	}
	r, err := objects.Get(ctx, key)
	if err != nil {
		return fmt.Errorf("job %s: %w", j.ID, err)
	}
	defer r.Close()
	if o.out != "" {
		n, err := writeFileWhole(o.out, r)
		if err != nil {
			return fmt.Errorf("job %s: %w", j.ID, err)
		}
		fmt.Fprintf(ew, "%s: %d bytes of %s/%s\n", o.out, n, pipeline.BucketArtifacts, key)
		return nil
	}
	if o.limit > 0 {
		sc := bufio.NewScanner(r)
		sc.Buffer(make([]byte, 0, 64<<10), 16<<20)
		for i := 0; i < o.limit && sc.Scan(); i++ {
			if _, err := fmt.Fprintf(w, "%s\n", sc.Bytes()); err != nil {
				return err
			}
		}
		return sc.Err()
	}
	_, err = io.Copy(w, r)
	return err
}

// writeFileWhole copies r into path through a temporary file renamed into
// place after the last byte (an object's digest is checked at its end).
func writeFileWhole(path string, r io.Reader) (int64, error) {
	f, err := os.CreateTemp(filepath.Dir(path), "."+filepath.Base(path)+".*")
	if err != nil {
		return 0, err
	}
	n, err := io.Copy(f, r)
	if cerr := f.Close(); err == nil {
		err = cerr
	}
	if err == nil {
		err = os.Rename(f.Name(), path)
	}
	if err != nil {
		os.Remove(f.Name())
		return n, err
	}
	return n, nil
}
