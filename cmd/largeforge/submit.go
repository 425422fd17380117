package main

import (
	"context"
	"fmt"
	"io"
	"maps"
	"slices"
	"strings"
	"time"

	"github.com/spf13/cobra"

	"github.com/largeforge/largeforge/jobs"
	"github.com/largeforge/largeforge/logging"
	"github.com/largeforge/largeforge/pipeline"
	"github.com/largeforge/largeforge/producers/gateway"
	"github.com/largeforge/largeforge/producers/submit"
	"github.com/largeforge/largeforge/routing"
	"github.com/largeforge/largeforge/routing/classifier"
	"github.com/largeforge/largeforge/schemas"
)

// SubmitConfig is what `largeforge submit` runs with.
type SubmitConfig struct {
	Submit   submit.Config
	Wait     bool
	Timeout  time.Duration
	Progress string
	// Experts and RouterModel build the router of model "auto" (with the
	// experts of the lf_experts bucket).
	Experts     string
	RouterModel string
	// FileID submits a file uploaded with the gateway's POST /v1/files
	// (read from lf_artifacts) instead of a local FILE.
	FileID string
}

// Validate checks the flags of submit.
func (c SubmitConfig) Validate() error {
	sc := c.Submit
	if sc.Model == submit.AutoModel && sc.Router == nil {
		sc.Model = "x" // the router is built from --experts and lf_experts once connected
	}
	if err := sc.Validate(); err != nil {
		return err
	}
	switch c.Progress {
	case "auto", "on", "off":
	default:
		return fmt.Errorf("--progress %q: want auto, on or off", c.Progress)
	}
	return nil
}

func newSubmitCmd() *cobra.Command {
	var sc SubmitConfig
	cmd := &cobra.Command{
		Use:   "submit FILE|--file-id ID --model NAME [--kind completion|score] [--wait]",
		Short: "Submit a batch job file (.jsonl or .parquet) and print its job id",
		Long: `Create a batch job from FILE and publish one request per row to lf.req.<job>.<model>.
Completion jobs take CompletionRequest lines plus custom_id (missing: the line
number), OpenAI Batch API lines (custom_id, method POST, url /v1/completions or
/v1/chat/completions, body) or chat messages; score jobs (--kind score) take rows with
text, prompt+completion, or prompt+chosen+rejected (DPO). Parquet files use the same
column names. Bad rows and duplicate custom_ids become error rows; the job goes on.
With --model auto (or rows whose model is "auto") each row goes through the gateway's
router over the experts of --experts and the lf_experts bucket (rules, then the
--router-model classifier) to lf.req.<job>.<expert>, and the decision to lf.route.<job>.
--file-id file-… takes instead a JSONL file uploaded to the gateway (POST /v1/files,
purpose batch), read from lf_artifacts.
The job id is printed first on stdout; --wait then follows the job with a progress
bar and exits non-zero unless it completes.`,
		Args: cobra.MaximumNArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			if (len(args) == 1) == (sc.FileID != "") {
				return fmt.Errorf("give either FILE or --file-id, not both or neither")
			}
			if err := sc.Validate(); err != nil {
				return err
			}
			path := sc.FileID
			if len(args) == 1 {
				path = args[0]
			}
			return runSubmit(cmd.Context(), sc, path, cmd.ErrOrStderr())
		},
	}
	f := cmd.Flags()
	f.StringVar(&sc.Submit.Model, "model", "", "model name the workers serve (required)")
	f.StringVar(&sc.Submit.Kind, "kind", jobs.KindCompletion, "job kind: completion or score")
	f.StringVar(&sc.FileID, "file-id", "", "submit this file uploaded to the gateway (POST /v1/files, purpose batch) instead of FILE")
	f.StringVar(&sc.Submit.JobID, "job-id", "", "job id (default: a new batch_… id)")
	f.DurationVar(&sc.Submit.CompletionWindow, "completion-window", jobs.DefaultCompletionWindow, "the job expires if not done within this")
	f.IntVar(&sc.Submit.Window, "publish-window", submit.DefaultWindow, "asynchronous publishes in flight")
	f.BoolVar(&sc.Wait, "wait", false, "wait for the job to end, with a progress bar")
	f.DurationVar(&sc.Timeout, "timeout", 0, "with --wait: give up after this long (0: never)")
	f.StringVar(&sc.Progress, "progress", "auto", "progress bar: auto (on a terminal), on, off")
	f.StringVar(&sc.Experts, "experts", "", "experts file (YAML or JSON) for model auto, beside the lf_experts bucket")
	f.StringVar(&sc.RouterModel, "router-model", "", "router model directory (largeforge router train): the learned stage for model auto")
	_ = cmd.MarkFlagRequired("model")
	return cmd
}

func runSubmit(ctx context.Context, sc SubmitConfig, path string, stderr io.Writer) error {
	log := newLogger(ctx)
	bus, err := connect(ctx, log)
	if err != nil {
		return err
	}
	defer bus.Close()
	router, closeRouter, err := buildRouter(ctx, bus, sc.Experts, sc.RouterModel)
	if err != nil {
		return err
	}
	defer closeRouter()
	sc.Submit.Router = router
	sub, err := submit.New(ctx, bus, sc.Submit, logging.Named(log, "largeforge.submit"))
	if err != nil {
		return err
	}
	var sum submit.Summary
	if sc.FileID != "" {
		sum, err = submitUploaded(ctx, bus, sub, sc.FileID)
	} else {
		sum, err = sub.Submit(ctx, path, nil)
	}
	if sum.Job.ID != "" {
		fmt.Println(sum.Job.ID)
	}
	if err != nil {
		return err
	}
	fmt.Fprintf(stderr, "submitted %d rows in %.2fs (%.0f rows/s): %d requests, %d error rows\n",
		sum.Rows, sum.Elapsed.Seconds(), float64(sum.Rows)/max(sum.Elapsed.Seconds(), 1e-9), sum.Published, sum.Rejected)
	if len(sum.Routed) > 0 {
		fmt.Fprintf(stderr, "routed: %v\n", sum.Routed)
	}
	if !sc.Wait {
		return nil
	}
	models := []string{sum.Job.Model}
	if sum.Job.Model == submit.AutoModel {
		models = slices.Sorted(maps.Keys(sum.Routed))
	}
	stopWatch := watchWorkers(ctx, bus, sum.Job.ID, models, stderr)
	j, err := waitJob(ctx, sub.Store(), sum.Job.ID, sc.Timeout, sc.Progress)
	stopWatch()
	if err != nil {
		return err
	}
	printJobSummary(stderr, j)
	return jobOutcome(j)
}

// workerPoll is how often submit --wait looks for live workers while none serves the job.
const workerPoll = 2 * time.Second

// watchWorkers says on w, once, when no live infer worker (a heartbeat in
// lf_workers) serves one of the job's models, and once more when one starts:
// the job's requests wait in the work queue meanwhile, and so does submit
// --wait (until --timeout, if given). The returned func stops the watch.
func watchWorkers(ctx context.Context, bus *pipeline.Bus, job string, models []string, w io.Writer) func() {
	ctx, cancel := context.WithCancel(ctx)
	done := make(chan struct{})
	go func() {
		defer close(done)
		kv, err := bus.KV(ctx, pipeline.BucketWorkers)
		if err != nil {
			return
		}
		tick := time.NewTicker(workerPoll)
		defer tick.Stop()
		var warned []string
		for {
			live, err := routing.LiveWorkers(ctx, kv)
			if err == nil {
				var missing []string
				for _, m := range models {
					if live[m] == 0 {
						missing = append(missing, m)
					}
				}
				switch {
				case len(missing) > 0 && warned == nil:
					warned = missing
					fmt.Fprintf(w, "no live worker serves model %s (no heartbeat in %s): job %s waits in the queue until one starts (largeforge up --model NAME=DIR, or largeforge worker --role infer --model NAME=DIR)\n",
						strings.Join(missing, ", "), pipeline.BucketWorkers, job)
				case len(missing) == 0 && warned != nil:
					fmt.Fprintf(w, "a worker for model %s is live; job %s goes on\n", strings.Join(warned, ", "), job)
					return
				case len(missing) == 0:
					return
				}
			}
			select {
			case <-ctx.Done():
				return
			case <-tick.C:
			}
		}
	}()
	return func() { cancel(); <-done }
}

// buildRouter returns the router over the experts of file (may be "") and
// the lf_experts bucket, with the classifier of modelDir when set; nil when
// there are no experts. The returned func closes the classifier.
func buildRouter(ctx context.Context, bus *pipeline.Bus, file, modelDir string) (*routing.Router, func(), error) {
	var experts []schemas.ExpertConfig
	if file != "" {
		var err error
		if experts, err = schemas.LoadExperts(file); err != nil {
			return nil, nil, fmt.Errorf("--experts %s: %w", file, err)
		}
	}
	kv, err := bus.KV(ctx, pipeline.BucketExperts)
	if err != nil {
		return nil, nil, err
	}
	fromKV, _, err := routing.ReadExperts(ctx, kv)
	if err != nil {
		return nil, nil, err
	}
	experts = routing.MergeExperts(experts, fromKV)
	if len(experts) == 0 {
		if modelDir != "" {
			return nil, nil, fmt.Errorf("--router-model: no experts (--experts or the lf_experts bucket)")
		}
		return nil, func() {}, nil
	}
	var opts []routing.Option
	closeFn := func() {}
	if modelDir != "" {
		c, err := classifier.Load(modelDir, "")
		if err != nil {
			return nil, nil, fmt.Errorf("--router-model: %w", err)
		}
		closeFn = func() { _ = c.Close() }
		opts = append(opts, routing.WithClassifier(c))
	}
	r, err := routing.New(experts, opts...)
	if err != nil {
		closeFn()
		return nil, nil, err
	}
	return r, closeFn, nil
}

// submitUploaded submits file id of the gateway's Files API, read from
// lf_artifacts.
func submitUploaded(ctx context.Context, bus *pipeline.Bus, sub *submit.Submitter, id string) (submit.Summary, error) {
	obj, err := bus.Objects(ctx, pipeline.BucketArtifacts)
	if err != nil {
		return submit.Summary{}, err
	}
	r, fo, err := gateway.OpenFile(ctx, obj, id)
	if err != nil {
		return submit.Summary{}, fmt.Errorf("--file-id: %w (upload it with the gateway's POST /v1/files)", err)
	}
	defer r.Close()
	if fo.Purpose != gateway.PurposeBatch {
		return submit.Summary{}, fmt.Errorf("--file-id %s: purpose %q; a job's input needs purpose %q", id, fo.Purpose, gateway.PurposeBatch)
	}
	return sub.SubmitReader(ctx, id, r, nil)
}
