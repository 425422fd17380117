package main

import (
	"bufio"
	"context"
	"encoding/json"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"syscall"
	"testing"
	"time"

	ctrain "github.com/largeforge/largeforge/consumers/train"
	"github.com/largeforge/largeforge/consumers/train/traintest"
	"github.com/largeforge/largeforge/jobs"
	"github.com/largeforge/largeforge/pipeline"
	"github.com/largeforge/largeforge/pipeline/pipelinetest"
	"github.com/largeforge/largeforge/storage"
	"github.com/largeforge/largeforge/storage/modelstore"
)

// machine is a set of largeforge processes that share nothing with
// another machine's but the NATS URL and their roles' credentials: a
// working directory of its own, under which its data, model cache and
// training output directories lie.
type machine struct {
	t   *testing.T
	bin string
	url string // its --nats: one server's URL or several
	dir string
}

func newMachine(t *testing.T, bin, url, name string) machine {
	t.Helper()
	dir := filepath.Join(t.TempDir(), name)
	if err := os.MkdirAll(dir, 0o755); err != nil {
		t.Fatal(err)
	}
	return machine{t: t, bin: bin, url: url, dir: dir}
}

// path is rel under the machine's directory.
func (m machine) path(rel string) string { return filepath.Join(m.dir, rel) }

func (m machine) command(ctx context.Context, role string, args ...string) *exec.Cmd {
	cmd := exec.CommandContext(ctx, m.bin, append([]string{"--nats-user=" + role, "--log-level=warning"}, args...)...)
	cmd.Env = append(os.Environ(), roleURLEnv(m.url, role)...)
	cmd.Dir = m.dir
	return cmd
}

// start starts a long-running process (a worker) as role.
func (m machine) start(role string, args ...string) *proc {
	m.t.Helper()
	return startCmd(m.t, m.command(context.Background(), role, args...))
}

// run runs a command to its end as role: its stdout, and an error that
// holds its stderr.
func (m machine) run(ctx context.Context, role string, args ...string) (string, error) {
	cmd := m.command(ctx, role, args...)
	var stderr strings.Builder
	cmd.Stderr = &stderr
	out, err := cmd.Output()
	if err != nil {
		return string(out), fmt.Errorf("largeforge %s as %s: %w: %s", strings.Join(args, " "), role, err, stderr.String())
	}
	return string(out), nil
}

// must is run that fails the test on an error.
func (m machine) must(ctx context.Context, role string, args ...string) string {
	m.t.Helper()
	out, err := m.run(ctx, role, args...)
	if err != nil {
		m.t.Fatalf("%v\n%s", err, out)
	}
	return out
}

// TestTwoMachines is issue 15's proof: machines A and B (and C, which
// only reads) share nothing but the NATS URL and their roles' credentials
// of deploy/nats-roles.conf. A ingests a dataset and pushes a base model;
// B trains it from the dataset by name and is killed once a checkpoint is
// stored; A resumes the job and pushes the trained model; B serves it by
// name and A's results sink stores a batch job's results, which C reads.
// Then bad input: a pull of a missing name, a model file that does not
// match its manifest, truncated objects and claims with no upload never
// yield a model, a dataset part or a result file.
func TestTwoMachines(t *testing.T) {
	if testing.Short() {
		t.Skip("builds the binary, trains across a crash and serves the result")
	}
	var serverLog pipelinetest.Buffer
	e := pipelinetest.StartRolesServer(t, &serverLog)
	bin := buildBinary(t)
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Minute)
	defer cancel()
	a, b, c := newMachine(t, bin, e.ClientURL(), "a"), newMachine(t, bin, e.ClientURL(), "b"), newMachine(t, bin, e.ClientURL(), "c")
	if out := a.must(ctx, "admin", "topology", "apply"); !strings.Contains(out, "topology applied") {
		t.Fatalf("topology apply: %q", out)
	}
	admin := pipelinetest.ConnectRole(t, e, "admin", pipelinetest.Logger(t))
	store, err := jobs.Open(ctx, admin)
	if err != nil {
		t.Fatal(err)
	}

	// A: the dataset sink, ingest, the base model pushed.
	a.start("datasets", "worker", "--role", "dataset", "--data-dir", a.path("data"))
	const ds, rows = "colours", 8
	var alpaca strings.Builder
	answers := []string{"red", "blue", "green", "gold"}
	for i := range rows {
		fmt.Fprintf(&alpaca, `{"instruction":"Colour %d?","input":"","output":%q}`+"\n", i, answers[i%len(answers)])
	}
	if err := os.WriteFile(a.path("colours.jsonl"), []byte(alpaca.String()), 0o644); err != nil {
		t.Fatal(err)
	}
	if out := a.must(ctx, "ingest", "ingest", "--dataset", ds, "--format", "alpaca", "--wait", "60s", "colours.jsonl"); !strings.Contains(out, "accepted") {
		t.Fatalf("ingest: %q", out)
	}
	a.must(ctx, "admin", "model", "init", "--preset", "tiny", "--chat-template", "chatml", "--output", "tiny")
	pushed := strings.Fields(a.must(ctx, "admin", "model", "push", "base", "tiny"))
	if len(pushed) < 3 || pushed[0] != "pushed" {
		t.Fatalf("model push: %q", pushed)
	}
	baseDigest := pushed[2]

	// B: a train worker, and the job submitted by name (no data_dir, no
	// model directory); killed once a checkpoint is in lf_artifacts.
	trainWorker := func(m machine, id string) *proc {
		return m.start("train", "worker", "--role", "train", "--ack-wait", "2s", "--worker-id", id,
			"--data-dir", m.path("train-data"), "--output-root", m.path("out"), "--model-cache", m.path("cache"))
	}
	bTrain := trainWorker(b, "b")
	const epochs, saveSteps = 10, 2
	steps := epochs * rows / 2
	// traintest's train.yaml, with the model and the data by name.
	fx := traintest.New(t, 1)
	yaml := strings.NewReplacer("model_name: "+fx.Base, "model_name: base",
		"data_files: ["+fx.Data+"]", "dataset: "+ds+"\nprompt_template: chat").Replace(fx.YAML("submitted", epochs, saveSteps))
	if !strings.Contains(yaml, "model_name: base\n") || !strings.Contains(yaml, "dataset: "+ds) {
		t.Fatalf("train.yaml without the model and the dataset by name:\n%s", yaml)
	}
	if err := os.WriteFile(b.path("train.yaml"), []byte(yaml), 0o644); err != nil {
		t.Fatal(err)
	}
	id := strings.TrimSpace(b.must(ctx, "submit", "train", "--config", "train.yaml", "--submit"))
	if !strings.HasPrefix(id, "train_") {
		t.Fatalf("train --submit printed %q", id)
	}
	artifacts, err := admin.Objects(ctx, pipeline.BucketArtifacts)
	if err != nil {
		t.Fatal(err)
	}
	killOnceStored(t, ctx, artifacts, id, bTrain)
	killed, err := store.Get(ctx, id)
	if err != nil || killed.Status != jobs.StatusInProgress || killed.Training == nil || killed.Training.Worker != "b" || killed.Training.Step >= steps {
		t.Fatalf("after the kill the job is %s with progress %+v (%v), want in progress on worker b", killed.Status, killed.Training, err)
	}
	t.Logf("worker b killed at step %d of %d", killed.Training.Step, steps)

	// A: a train worker of its own resumes from the stored checkpoint.
	aTrain := trainWorker(a, "a")
	j := waitJobEnd(t, ctx, store, id, 3*time.Minute, aTrain.out)
	if j.Status != jobs.StatusCompleted {
		t.Fatalf("job ended %s %+v; worker a:\n%s", j.Status, j.Errors, aTrain.out)
	}
	tp := j.Training
	if tp == nil || tp.Worker != "a" || tp.Attempt != 2 || tp.Step != steps ||
		!strings.HasPrefix(tp.ResumedFrom, a.path(filepath.Join("out", id))+string(filepath.Separator)) ||
		tp.FineTunedModel != id || tp.FineTunedDigest == "" {
		t.Fatalf("final progress %+v: want worker a resuming on attempt 2 from a checkpoint fetched under %s, %d steps, the model pushed as %s\n%s",
			tp, a.path("out"), steps, id, aTrain.out)
	}
	// B read the dataset and A the checkpoint from the bus: neither
	// machine holds the other's files.
	noDir(t, b.path("submitted"))
	noDir(t, b.path(filepath.Join("train-data", "datasets")))
	noDir(t, a.path(filepath.Join("train-data", "datasets")))

	// B serves the trained model by name; A's results sink stores a batch
	// job's results; C reads them.
	a.start("results", "worker", "--role", "results", "--data-dir", a.path("data"))
	b.start("infer", "worker", "--role", "infer", "--model", tp.FineTunedModel, "--model-cache", b.path("cache"))
	waitLive(t, admin, tp.FineTunedModel, time.Minute)
	var batch strings.Builder
	customIDs := []string{"q0", "q1", "q2"}
	for i, cid := range customIDs {
		fmt.Fprintf(&batch, `{"custom_id":%q,"prompt":"Colour %d?","max_tokens":4,"temperature":0}`+"\n", cid, i)
	}
	if err := os.WriteFile(b.path("batch.jsonl"), []byte(batch.String()), 0o644); err != nil {
		t.Fatal(err)
	}
	job := strings.TrimSpace(b.must(ctx, "submit", "submit", "batch.jsonl", "--model", tp.FineTunedModel))
	b.must(ctx, "submit", "jobs", "wait", job, "--progress", "off")
	c.must(ctx, "submit", "jobs", "results", job, "-o", "out.jsonl")
	got := customIDsOf(t, c.path("out.jsonl"))
	slices.Sort(got)
	if !slices.Equal(got, customIDs) {
		t.Fatalf("jobs results from C: custom_ids %v, want one line for each of %v", got, customIDs)
	}
	// A part and a rejects object claimed in lf_claims by a writer that
	// died before uploading them are no part of the dataset.
	claims, err := admin.KV(ctx, pipeline.BucketClaims)
	if err != nil {
		t.Fatal(err)
	}
	unloaded := []string{"part-00099.parquet", "rejects-00099.jsonl"}
	for _, f := range unloaded {
		if _, err := claims.Create(ctx, storage.Dataset(ds)+f, []byte(storage.Dataset(ds)+f)); err != nil {
			t.Fatal(err)
		}
	}
	c.must(ctx, "api", "datasets", "export", ds, "export")
	c.must(ctx, "api", "datasets", "rejects", ds)
	for _, f := range unloaded {
		noDir(t, c.path(filepath.Join("export", f)))
	}
	exported, err := filepath.Glob(c.path("export/part-*.parquet"))
	if err != nil || len(exported) == 0 {
		t.Fatalf("datasets export from C wrote no part: %v %v", exported, err)
	}

	// Bad input. A pull of a name lf_models does not hold.
	out, err := c.run(ctx, "submit", "model", "pull", "nosuch", "nosuch")
	refused(t, "pull of a missing name", out, err, modelstore.ErrNotFound.Error())
	noDir(t, c.path("nosuch"))
	// A stored model file replaced behind its manifest (bypassing push):
	// the digests disagree.
	models, err := admin.Objects(ctx, pipeline.BucketModels)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := models.Put(ctx, "base/"+baseDigest+"/config.json", strings.NewReader(`{"tampered":true}`)); err != nil {
		t.Fatal(err)
	}
	out, err = c.run(ctx, "submit", "model", "pull", "base", "tampered")
	refused(t, "pull of a tampered model", out, err, modelstore.ErrCorrupt.Error())
	noDir(t, c.path("tampered"))
	// Partly written objects: the trained model's weights, a dataset part
	// and the job's output.jsonl each cut to half their bytes behind their
	// recorded size and digest.
	truncateObject(t, ctx, admin, pipeline.BucketModels, tp.FineTunedModel+"/"+tp.FineTunedDigest+"/model.safetensors")
	out, err = c.run(ctx, "submit", "model", "pull", tp.FineTunedModel, "truncated")
	refused(t, "pull of a truncated model", out, err, pipeline.ErrDigestMismatch.Error())
	noDir(t, c.path("truncated"))
	part := storage.Dataset(ds) + filepath.Base(exported[0])
	truncateObject(t, ctx, admin, pipeline.BucketArtifacts, part)
	out, err = c.run(ctx, "api", "datasets", "export", ds, "export2")
	refused(t, "export of a truncated part", out, err, pipeline.ErrDigestMismatch.Error())
	noDir(t, c.path(filepath.Join("export2", filepath.Base(part))))
	noDir(t, c.path(filepath.Join("export2", "manifest.json")))
	rec, err := store.Get(ctx, job)
	if err != nil {
		t.Fatal(err)
	}
	truncateObject(t, ctx, admin, pipeline.BucketArtifacts, rec.Outputs.Output)
	out, err = c.run(ctx, "submit", "jobs", "results", job, "-o", "cut.jsonl")
	refused(t, "results of a truncated output.jsonl", out, err, pipeline.ErrDigestMismatch.Error())
	noDir(t, c.path("cut.jsonl"))
	if left, _ := filepath.Glob(c.path(".cut.jsonl.*")); len(left) > 0 {
		t.Errorf("a refused results download left %v", left)
	}

	if log := serverLog.String(); strings.Contains(log, "Violation") {
		t.Errorf("the server logged a permissions violation:\n%s", log)
	}
}

// customIDsOf reads the custom_id of each line of an output.jsonl.
func customIDsOf(t *testing.T, path string) []string {
	t.Helper()
	f, err := os.Open(path)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	var ids []string
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		var row struct {
			CustomID string `json:"custom_id"`
		}
		if err := json.Unmarshal(sc.Bytes(), &row); err != nil {
			t.Fatalf("%s: %v: %s", path, err, sc.Bytes())
		}
		ids = append(ids, row.CustomID)
	}
	if err := sc.Err(); err != nil {
		t.Fatal(err)
	}
	return ids
}

// killOnceStored waits until one of training job id's checkpoints is
// complete in artifacts (its manifest stored), then kills p, its worker,
// with SIGKILL.
func killOnceStored(t *testing.T, ctx context.Context, artifacts *pipeline.Objects, id string, p *proc) {
	t.Helper()
	pipelinetest.CheckFor(t, 2*time.Minute, 5*time.Millisecond, func() error {
		all, err := artifacts.List(ctx)
		for _, in := range all {
			if _, ok := ctrain.CheckpointManifest(id, in.Name); ok {
				return nil
			}
		}
		return fmt.Errorf("no checkpoint of %s stored (%v); its worker:\n%s", id, err, p.out)
	})
	if err := p.cmd.Process.Signal(syscall.SIGKILL); err != nil {
		t.Fatal(err)
	}
	_ = p.cmd.Wait()
}

// waitJobEnd waits up to timeout for job id to end and returns its record;
// logs (nil: none) is shown while it has not.
func waitJobEnd(t *testing.T, ctx context.Context, store *jobs.Store, id string, timeout time.Duration, logs fmt.Stringer) jobs.Job {
	t.Helper()
	var j jobs.Job
	pipelinetest.CheckFor(t, timeout, 20*time.Millisecond, func() error {
		var err error
		if j, err = store.Get(ctx, id); err == nil && !j.Status.Terminal() {
			return fmt.Errorf("job %s still %s; logs:\n%v", id, j.Status, logs)
		}
		return err
	})
	return j
}

// refused fails the test unless a command failed (err) saying want, and
// logs what it said.
func refused(t *testing.T, what, out string, err error, want string) {
	t.Helper()
	if err == nil || !strings.Contains(err.Error(), want) {
		t.Errorf("%s: %v, want a refusal saying %q\n%s", what, err, want, out)
		return
	}
	t.Logf("%s refused: %v", what, err)
}

// noDir fails the test if path exists (a file or a directory).
func noDir(t *testing.T, path string) {
	t.Helper()
	if _, err := os.Stat(path); !os.IsNotExist(err) {
		t.Errorf("%s exists (%v)", path, err)
	}
}

// truncateObject cuts bucket/name to the first half of its bytes behind
// its recorded size and digest, as an upload that ended short would leave
// it: its chunks are purged and one chunk of half the bytes is published
// in their place.
func truncateObject(t *testing.T, ctx context.Context, admin *pipeline.Bus, bucket, name string) {
	t.Helper()
	obs, err := admin.JetStream().ObjectStore(ctx, bucket)
	if err != nil {
		t.Fatal(err)
	}
	info, err := obs.GetInfo(ctx, name)
	if err != nil {
		t.Fatalf("%s/%s: %v", bucket, name, err)
	}
	data, err := obs.GetBytes(ctx, name)
	if err != nil || len(data) < 2 {
		t.Fatalf("%s/%s: %d bytes, %v", bucket, name, len(data), err)
	}
	chunks := fmt.Sprintf("$O.%s.C.%s", bucket, info.NUID)
	if _, err := admin.Purge(ctx, "OBJ_"+bucket, chunks); err != nil {
		t.Fatal(err)
	}
	if _, err := admin.JetStream().Publish(ctx, chunks, data[:len(data)/2]); err != nil {
		t.Fatal(err)
	}
}
