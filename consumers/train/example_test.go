package train_test

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"time"

	"github.com/rs/zerolog"

	"github.com/largeforge/largeforge/consumers/train"
	"github.com/largeforge/largeforge/jobs"
	"github.com/largeforge/largeforge/model/checkpoint"
	mtrain "github.com/largeforge/largeforge/model/train"
	"github.com/largeforge/largeforge/pipeline"
)

// A training job over the bus: Submit queues it, a train worker runs it and
// its record ends completed with the last step's progress.
func Example() {
	ctx := context.Background()
	dir, err := os.MkdirTemp("", "lf-train-example")
	if err != nil {
		fmt.Println(err)
		return
	}
	defer os.RemoveAll(dir)
	e, err := pipeline.StartEmbedded(ctx, pipeline.EmbeddedConfig{DataDir: filepath.Join(dir, "nats"), Listen: "127.0.0.1:-1"}, zerolog.Nop())
	if err != nil {
		fmt.Println(err)
		return
	}
	defer e.Shutdown()
	bus, err := pipeline.Connect(ctx, pipeline.ConnConfig{URL: e.ClientURL()}, zerolog.Nop())
	if err != nil {
		fmt.Println(err)
		return
	}
	defer bus.Close()
	if err := bus.EnsureTopology(ctx); err != nil {
		fmt.Println(err)
		return
	}

	// A tiny base model and two chat rows.
	base, data := filepath.Join(dir, "base"), filepath.Join(dir, "chat.jsonl")
	if err := checkpoint.Init("tiny", 1, base); err != nil {
		fmt.Println(err)
		return
	}
	rows := `{"conversations":[{"from":"human","value":"Sky?"},{"from":"gpt","value":"blue"}]}
{"conversations":[{"from":"human","value":"Grass?"},{"from":"gpt","value":"green"}]}
`
	if err := os.WriteFile(data, []byte(rows), 0o644); err != nil {
		fmt.Println(err)
		return
	}
	rc, err := mtrain.ParseRunConfig(fmt.Appendf(nil, "model_name: %s\ndata_files: [%s]\noutput_dir: %s\nmax_seq_length: 64\n"+
		"num_epochs: 2\nper_device_batch_size: 1\ngradient_accumulation_steps: 1\nbf16: false\neval_split: 0\n", base, data, filepath.Join(dir, "out")))
	if err != nil {
		fmt.Println(err)
		return
	}

	wctx, stop := context.WithCancel(ctx)
	defer stop()
	w, err := train.Start(wctx, bus, train.Config{MaxWait: 100 * time.Millisecond}, zerolog.Nop(), nil)
	if err != nil {
		fmt.Println(err)
		return
	}
	defer func() { stop(); _ = w.Wait() }()

	store, err := jobs.Open(ctx, bus)
	if err != nil {
		fmt.Println(err)
		return
	}
	j, err := train.Submit(ctx, bus, store, rc, "train_example")
	if err != nil {
		fmt.Println(err)
		return
	}
	wait, cancel := context.WithTimeout(ctx, time.Minute)
	defer cancel()
	end, err := store.Watch(wait, j.ID, func(jobs.Job) bool { return true })
	if err != nil {
		fmt.Println(err)
		return
	}
	fmt.Println(end.Kind, end.Status, end.Training.Step, "of", end.Training.MaxSteps, "steps")
	// Output: training completed 4 of 4 steps
}
