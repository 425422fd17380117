package main

import (
	"context"
	"encoding/json"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	ctrain "github.com/largeforge/largeforge/consumers/train"
	"github.com/largeforge/largeforge/consumers/train/traintest"
	"github.com/largeforge/largeforge/jobs"
	mtrain "github.com/largeforge/largeforge/model/train"
	"github.com/largeforge/largeforge/pipeline"
	"github.com/largeforge/largeforge/pipeline/pipelinetest"
	"github.com/largeforge/largeforge/storage/modelstore"
)

// Training runs of the crash tests: 6 epochs of 4 steps, a checkpoint
// every 2 steps, so a process killed after the first checkpoint still has
// 22 of its 24 steps ahead (the test checks it had not finished).
const crashEpochs, crashSave, crashSteps = 6, 2, 24

// killAfterCheckpoint waits until output_dir holds a complete checkpoint,
// then kills p with SIGKILL, and checks the run had not finished.
func killAfterCheckpoint(t *testing.T, p *proc, out string) {
	t.Helper()
	deadline := time.Now().Add(60 * time.Second)
	for {
		if cks, _ := mtrain.CompleteCheckpoints(out); len(cks) > 0 {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("no checkpoint in time:\n%s", p.out)
		}
		time.Sleep(2 * time.Millisecond)
	}
	if err := p.cmd.Process.Signal(syscall.SIGKILL); err != nil {
		t.Fatal(err)
	}
	_ = p.cmd.Wait()
	if _, err := os.Stat(filepath.Join(out, mtrain.TrainerStateFile)); err == nil {
		t.Fatalf("the run finished before the kill:\n%s", p.out)
	}
	cks, _ := mtrain.ListCheckpoints(out)
	t.Logf("killed with checkpoints %v", cks)
}

// TestTrainingCrashes kills training processes with SIGKILL after a
// checkpoint exists: `largeforge train` rerun resumes (issue 6 part 7), and
// a training job whose `worker --role train` dies is taken over by another
// worker after --ack-wait (part 8), on the same machine or (issue 15 §4)
// on another one that shares only the NATS URL. Each ends with the
// per-step losses and final weights of an uninterrupted run, within 1e-5.
func TestTrainingCrashes(t *testing.T) {
	if testing.Short() {
		t.Skip("builds the binary and trains across crashes")
	}
	bin := buildBinary(t)
	fx := traintest.New(t, 8)
	ref := filepath.Join(fx.Dir, "ref")
	if _, err := mtrain.Run(context.Background(), fx.RunConfig(t, ref, crashEpochs, crashSave), pipelinetest.Logger(t)); err != nil {
		t.Fatal(err)
	}
	quiet := []string{"--log-format", "json", "--log-level", "warning"}

	t.Run("train SIGKILL and rerun", func(t *testing.T) {
		out := filepath.Join(fx.Dir, "cli")
		cfgPath := filepath.Join(fx.Dir, "cli.yaml")
		if err := os.WriteFile(cfgPath, []byte(fx.YAML(out, crashEpochs, crashSave)), 0o644); err != nil {
			t.Fatal(err)
		}
		p := start(t, bin, nil, append([]string{"train", "--config", cfgPath}, quiet...)...)
		killAfterCheckpoint(t, p, out)
		rerun, err := exec.Command(bin, append([]string{"train", "--config", cfgPath}, quiet...)...).CombinedOutput()
		if err != nil {
			t.Fatalf("rerun: %v\n%s", err, rerun)
		}
		if !strings.Contains(string(rerun), fmt.Sprintf("trained %d steps", crashSteps)) {
			t.Errorf("rerun said:\n%s", rerun)
		}
		traintest.SameTraining(t, ref, out, 1e-5)
	})

	t.Run("train worker SIGKILL and takeover", func(t *testing.T) {
		e, _ := pipelinetest.StartBus(t)
		env := []string{"LARGEFORGE_NATS=" + e.ClientURL()}
		out := filepath.Join(fx.Dir, "job")
		cfgPath := filepath.Join(fx.Dir, "job.yaml")
		if err := os.WriteFile(cfgPath, []byte(fx.YAML(out, crashEpochs, crashSave)), 0o644); err != nil {
			t.Fatal(err)
		}
		run := func(args ...string) (stdout, stderr string) {
			t.Helper()
			cmd := exec.Command(bin, append(args, quiet...)...)
			cmd.Env = append(os.Environ(), env...)
			var eb strings.Builder
			cmd.Stderr = &eb
			o, err := cmd.Output()
			if err != nil {
				t.Fatalf("%v: %v\n%s%s", args, err, o, eb.String())
			}
			return string(o), eb.String()
		}
		worker := func(id string) *proc {
			return start(t, bin, env, append([]string{"worker", "--role", "train", "--ack-wait", "2s", "--worker-id", id}, quiet...)...)
		}

		a := worker("a")
		o, _ := run("train", "--config", cfgPath, "--submit")
		id := strings.TrimSpace(o)
		if !strings.HasPrefix(id, "train_") {
			t.Fatalf("submit printed %q", o)
		}
		killAfterCheckpoint(t, a, out)
		b := worker("b")

		var j jobs.Job
		deadline := time.Now().Add(90 * time.Second)
		for {
			o, line := run("jobs", "status", id)
			if err := json.Unmarshal([]byte(o), &j); err != nil {
				t.Fatalf("jobs status: %v\n%s", err, o)
			}
			if j.Status.Terminal() {
				if !strings.Contains(line, fmt.Sprintf("step %d/%d", crashSteps, crashSteps)) {
					t.Errorf("jobs status line %q", line)
				}
				break
			}
			if time.Now().After(deadline) {
				t.Fatalf("job still %s; worker b:\n%s", j.Status, b.out)
			}
			time.Sleep(100 * time.Millisecond)
		}
		if j.Status != jobs.StatusCompleted {
			t.Fatalf("job ended %s %+v; worker b:\n%s", j.Status, j.Errors, b.out)
		}
		if tp := j.Training; tp == nil || tp.Worker != "b" || tp.Attempt != 2 || tp.ResumedFrom == "" || tp.Step != crashSteps {
			t.Errorf("final progress %+v: want worker b resuming on attempt 2", j.Training)
		}
		traintest.SameTraining(t, ref, out, 1e-5)
	})

	// Issue 15 §4: the machines share nothing but the NATS URL. Worker a
	// (its own --data-dir and --output-root) is killed once a checkpoint is
	// stored in lf_artifacts, and its directories are deleted; worker b,
	// with directories of its own, fetches that checkpoint, resumes and
	// finishes, and pushes the trained model under the job id.
	t.Run("train worker SIGKILL and takeover on another machine", func(t *testing.T) {
		e, bus := pipelinetest.StartBus(t)
		env := []string{"LARGEFORGE_NATS=" + e.ClientURL()}
		cfgPath := filepath.Join(fx.Dir, "remote.yaml")
		if err := os.WriteFile(cfgPath, []byte(fx.YAML(filepath.Join(fx.Dir, "remote-submitted"), crashEpochs, crashSave)), 0o644); err != nil {
			t.Fatal(err)
		}
		machine := func(id string) (dir string, p *proc) {
			dir = filepath.Join(fx.Dir, "machine-"+id)
			return dir, start(t, bin, env, append([]string{"worker", "--role", "train", "--ack-wait", "2s", "--worker-id", id,
				"--data-dir", filepath.Join(dir, "data"), "--output-root", filepath.Join(dir, "out")}, quiet...)...)
		}
		dirA, a := machine("a")
		cmd := exec.Command(bin, append([]string{"train", "--config", cfgPath, "--submit"}, quiet...)...)
		cmd.Env = append(os.Environ(), env...)
		o, err := cmd.Output()
		id := strings.TrimSpace(string(o))
		if err != nil || !strings.HasPrefix(id, "train_") {
			t.Fatalf("submit: %q %v", o, err)
		}
		ctx := context.Background()
		objs, err := bus.Objects(ctx, pipeline.BucketArtifacts)
		if err != nil {
			t.Fatal(err)
		}
		pipelinetest.CheckFor(t, 60*time.Second, 2*time.Millisecond, func() error {
			all, err := objs.List(ctx)
			for _, in := range all {
				if _, ok := ctrain.CheckpointManifest(id, in.Name); ok {
					return nil
				}
			}
			return fmt.Errorf("no checkpoint of %s stored (%v); worker a:\n%s", id, err, a.out)
		})
		if err := a.cmd.Process.Signal(syscall.SIGKILL); err != nil {
			t.Fatal(err)
		}
		_ = a.cmd.Wait()
		store, err := jobs.Open(ctx, bus)
		if err != nil {
			t.Fatal(err)
		}
		if j, err := store.Get(ctx, id); err != nil || j.Status != jobs.StatusInProgress {
			t.Fatalf("after the kill the job is %s (%v), want in progress", j.Status, err)
		}
		if err := os.RemoveAll(dirA); err != nil { // machine a is gone
			t.Fatal(err)
		}
		dirB, b := machine("b")

		var j jobs.Job
		pipelinetest.CheckFor(t, 90*time.Second, 20*time.Millisecond, func() error {
			if j, err = store.Get(ctx, id); err == nil && !j.Status.Terminal() {
				return fmt.Errorf("job still %s; worker b:\n%s", j.Status, b.out)
			}
			return err
		})
		if j.Status != jobs.StatusCompleted {
			t.Fatalf("job ended %s %+v; worker b:\n%s", j.Status, j.Errors, b.out)
		}
		out := filepath.Join(dirB, "out", id)
		tp := j.Training
		if tp == nil || tp.Worker != "b" || tp.Attempt != 2 || !strings.HasPrefix(tp.ResumedFrom, out+string(filepath.Separator)) ||
			tp.Step != crashSteps || tp.OutputDir != out || tp.FineTunedModel != id || tp.FineTunedDigest == "" {
			t.Errorf("final progress %+v: want worker b resuming on attempt 2 from a checkpoint fetched into %s, the model pushed as %s\n%s", tp, out, id, b.out)
		}
		traintest.SameTraining(t, ref, out, 1e-5)
		ms, err := modelstore.New(ctx, bus)
		if err != nil {
			t.Fatal(err)
		}
		pulled := filepath.Join(t.TempDir(), "pulled")
		if digest, err := ms.Pull(ctx, id, pulled); err != nil || digest != tp.FineTunedDigest {
			t.Fatalf("pull %s: %s %v, want %s", id, digest, err, tp.FineTunedDigest)
		}
		traintest.SameTraining(t, ref, pulled, 1e-5)
	})
}
