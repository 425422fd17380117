package main

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"maps"
	"math/rand/v2"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/largeforge/largeforge/consumers/resultsink"
	"github.com/largeforge/largeforge/consumers/train/traintest"
	"github.com/largeforge/largeforge/dataset"
	"github.com/largeforge/largeforge/internal/testenv"
	"github.com/largeforge/largeforge/jobs"
	"github.com/largeforge/largeforge/pipeline"
	"github.com/largeforge/largeforge/pipeline/pipelinetest"
	"github.com/largeforge/largeforge/schemas"
	"github.com/largeforge/largeforge/storage"
)

// chaosSize is how much a chaos run does: records ingested, batch requests,
// gateway requests, and processes killed.
type chaosSize struct {
	records, requests, gateway, kills int
	nodeKills                         int // of the kills, how many are of a cluster node
	epochs                            int
}

// chaosSizes: LF_CHAOS=short runs the short form (make test, after the
// packages); LF_CHAOS=long (make chaos) runs the long one.
var chaosSizes = map[string]chaosSize{
	"short": {records: 2000, requests: 100, gateway: 40, kills: 8, nodeKills: 1, epochs: 4},
	"long":  {records: 5000, requests: 400, gateway: 300, kills: 60, nodeKills: 6, epochs: 6},
}

// maxTrainKills bounds the kills of the train worker: each costs the
// training job a delivery, and past its consumer's MaxDeliver (5) the job is
// dead-lettered and fails by design (largeforge dlq replay gives it a new
// attempt), which is not what this test is about.
const maxTrainKills = 3

// chaosProcs are the long-running processes of a chaos run, each
// restartable by name and supervised: one that exits by itself (a worker
// whose start-up check timed out while a stream elected a leader) is
// started again, as a supervisor such as Kubernetes would.
type chaosProcs struct {
	t       *testing.T
	bin     string
	urls    string              // the cluster's client URLs, every process's --nats
	specs   map[string][]string // role -> args
	mu      sync.Mutex
	procs   map[string]*proc
	done    map[string]chan struct{} // closed when procs[role] has ended
	kills   map[string]int
	exits   map[string]int // ended by themselves and restarted
	starts  map[string]int // processes started per role (LF_CHAOS_LOGDIR's file names)
	stopped bool           // the test is ending: nothing is restarted
}

// start starts role's process and its supervisor; c.mu is held.
func (c *chaosProcs) start(role string) {
	p := c.startLogged(role, roleURLEnv(c.urls, role), append([]string{"--nats-user=" + role, "--log-level=" + cmpOr(os.Getenv("LF_CHAOS_LOG"), "error")}, c.specs[role]...)...)
	done := make(chan struct{})
	c.procs[role], c.done[role] = p, done
	go func() {
		_ = p.cmd.Wait()
		close(done)
		time.Sleep(200 * time.Millisecond) // a supervisor's back-off
		c.mu.Lock()
		defer c.mu.Unlock()
		if c.stopped || c.procs[role] != p {
			return // killed (and restarted) by the chaos, or the test ends
		}
		c.exits[role]++
		c.t.Logf("%s exited by itself (%v), restarted:\n%s", role, p.cmd.ProcessState, lastLines(p.out.String(), 3))
		c.start(role)
	}()
}

// startLogged starts role's process; with LF_CHAOS_LOGDIR=DIR its
// combined output is also appended to DIR/<role>-<n>.log (n counting the
// role's starts), where it outlives the test (a goroutine dump asked of a
// stuck process with SIGQUIT lands there).
func (c *chaosProcs) startLogged(role string, env []string, args ...string) *proc {
	dir := os.Getenv("LF_CHAOS_LOGDIR")
	if dir == "" {
		return start(c.t, c.bin, env, args...)
	}
	c.starts[role]++
	f, err := os.OpenFile(filepath.Join(dir, fmt.Sprintf("%s-%d.log", role, c.starts[role])), os.O_CREATE|os.O_APPEND|os.O_WRONLY, 0o644)
	if err != nil {
		c.t.Fatalf("LF_CHAOS_LOGDIR: %v", err)
	}
	c.t.Cleanup(func() { f.Close() })
	cmd := exec.Command(c.bin, args...)
	cmd.Env = append(os.Environ(), env...)
	var out bytes.Buffer
	w := io.MultiWriter(&out, f)
	cmd.Stdout, cmd.Stderr = w, w
	if err := cmd.Start(); err != nil {
		c.t.Fatal(err)
	}
	c.t.Cleanup(func() { _ = cmd.Process.Kill(); _, _ = cmd.Process.Wait() })
	return &proc{cmd: cmd, out: &out}
}

// stop ends the supervision: processes that end are not restarted.
func (c *chaosProcs) stop() {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.stopped = true
}

// killAndRestart SIGKILLs role's process, waits for its end and starts a
// new one.
func (c *chaosProcs) killAndRestart(role string) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.stopped {
		return
	}
	_ = c.procs[role].cmd.Process.Signal(syscall.SIGKILL)
	<-c.done[role]
	c.kills[role]++
	c.t.Logf("%s killed and restarted", role)
	c.start(role)
}

// lastLines is the last n lines of s.
func lastLines(s string, n int) string {
	lines := strings.Split(strings.TrimRight(s, "\n"), "\n")
	return strings.Join(lines[max(len(lines)-n, 0):], "\n")
}

// gatewayOutcome is what the client saw of one gateway request.
type gatewayOutcome struct {
	answered bool   // 200 with a completion
	failed   string // otherwise: the error the client saw (status and body, or the transport error)
}

// TestChaos runs a mixed workload (an ingest, a batch job, gateway
// traffic and a training job) on the binary's processes, each on its
// role's credential, attached to a three-node loopback cluster (every
// stream with three replicas, each node a process of its own), while
// random ones of them (the dataset and results sinks, the infer and train
// workers, the gateway, a cluster node) are SIGKILLed and restarted. At the end: every valid record is in the dataset's parts
// once, every custom_id once in the job's output, the training job
// completed, and every gateway request was answered or failed with an
// error the client saw (a connection error at a killed gateway). Loopback
// only; LF_CHAOS_SEED replays a run's choice of victims.
func TestChaos(t *testing.T) {
	mode := os.Getenv("LF_CHAOS")
	if mode == "" {
		t.Skip("LF_CHAOS=short|long runs it: make test runs the short form on its own after the packages, make chaos the long one")
	}
	size, ok := chaosSizes[mode]
	if !ok {
		t.Fatalf("LF_CHAOS=%q: want short or long", mode)
	}
	if testing.Short() {
		t.Skip("builds the binary and kills its processes under load")
	}
	model := filepath.Dir(testenv.SharedFile(t, "models/stories260K/model.safetensors"))
	seed := uint64(time.Now().UnixNano())
	if s := os.Getenv("LF_CHAOS_SEED"); s != "" {
		var err error
		if seed, err = strconv.ParseUint(s, 10, 64); err != nil {
			t.Fatalf("LF_CHAOS_SEED=%q: %v", s, err)
		}
	}
	t.Logf("chaos %s, LF_CHAOS_SEED=%d", mode, seed)
	rng := rand.New(rand.NewPCG(seed, 21))

	bin := buildBinary(t)
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Minute)
	defer cancel()
	nodes, urls, admin := startChaosCluster(t, ctx, bin)
	dataDir := t.TempDir()
	port := freePort(t)
	url := fmt.Sprintf("http://127.0.0.1:%d", port)
	cp := &chaosProcs{t: t, bin: bin, urls: urls, procs: map[string]*proc{}, done: map[string]chan struct{}{},
		kills: map[string]int{}, exits: map[string]int{}, starts: map[string]int{}, specs: map[string][]string{
			"datasets": {"worker", "--role", "dataset", "--data-dir", dataDir},
			"results":  {"worker", "--role", "results", "--data-dir", dataDir},
			"infer":    {"worker", "--role", "infer", "--model", "stories=" + model},
			"train":    {"worker", "--role", "train", "--data-dir", dataDir, "--ack-wait", "2s"},
			"api":      {"gateway", "--http", fmt.Sprintf("127.0.0.1:%d", port)},
		}}
	roles := slices.Sorted(maps.Keys(cp.specs))
	cp.mu.Lock()
	for _, r := range roles {
		cp.start(r)
	}
	cp.mu.Unlock()
	defer cp.stop()
	t.Cleanup(func() {
		if t.Failed() {
			cp.mu.Lock()
			defer cp.mu.Unlock()
			for _, r := range roles {
				t.Logf("%s (the last one started):\n%s", r, cp.procs[r].out)
			}
		}
	})
	// The gateway answers once the infer worker is live.
	pipelinetest.CheckFor(t, time.Minute, 100*time.Millisecond, func() error {
		if o := gatewayCompletion(ctx, url, 0); !o.answered {
			return errors.New(o.failed)
		}
		return nil
	})

	// The inputs.
	dir := t.TempDir()
	var records strings.Builder
	valid := 0
	for i := range size.records {
		if i%10 == 9 {
			fmt.Fprintf(&records, `{"instruction":"","output":"empty instruction %d"}`+"\n", i)
			continue
		}
		fmt.Fprintf(&records, `{"instruction":"Count to %d","input":"","output":"%d"}`+"\n", i, i)
		valid++
	}
	recordsFile := filepath.Join(dir, "records.jsonl")
	var batch strings.Builder
	for i := range size.requests {
		fmt.Fprintf(&batch, `{"custom_id":"c%d","prompt":"Once upon a time %d","max_tokens":4,"temperature":0}`+"\n", i, i)
	}
	batchFile := filepath.Join(dir, "batch.jsonl")
	fx := traintest.New(t, 8)
	trainFile := filepath.Join(fx.Dir, "train.yaml")
	for path, data := range map[string]string{recordsFile: records.String(), batchFile: batch.String(), trainFile: fx.YAML(filepath.Join(fx.Dir, "out"), size.epochs, 2)} {
		if err := os.WriteFile(path, []byte(data), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	store, err := jobs.Open(ctx, admin)
	if err != nil {
		t.Fatal(err)
	}

	// Chaos: kill and restart a random process until the workload is done
	// and the kills are spent; size.nodeKills of them, at random turns,
	// kill a random cluster node.
	chaosCtx, stopChaos := context.WithCancel(ctx)
	chaosDone := make(chan struct{})
	nodeTurns := map[int]bool{}
	for _, k := range rng.Perm(size.kills)[:size.nodeKills] {
		nodeTurns[k] = true
	}
	var nodeErr error
	go func() {
		defer close(chaosDone)
		for k := 0; k < size.kills; k++ {
			if nodeTurns[k] {
				down := time.Duration(500+rng.IntN(1500)) * time.Millisecond // pacing, not a wait for a state
				if nodeErr = cp.killNode(chaosCtx, admin, nodes[rng.IntN(len(nodes))], down); nodeErr != nil {
					return
				}
				continue
			}
			role := roles[rng.IntN(len(roles))]
			if role == "train" && cp.kills[role] >= maxTrainKills {
				continue
			}
			cp.killAndRestart(role)
			select {
			case <-chaosCtx.Done():
				return
			case <-time.After(time.Duration(50+rng.IntN(250)) * time.Millisecond): // pacing, not a wait for a state
			}
		}
	}()

	var wg sync.WaitGroup
	var ingestOut, jobID, trainID string
	var ingestErr, submitErr, trainErr error
	outcomes := make([]gatewayOutcome, size.gateway)
	wg.Add(3)
	go func() {
		defer wg.Done()
		ingestOut, ingestErr = runStarted(t, ctx, bin, urls, "ingest", "ingest", "--dataset", "chaos", "--format", "alpaca", "--wait", "5m", recordsFile)
	}()
	go func() {
		defer wg.Done()
		var out string
		if out, submitErr = runStarted(t, ctx, bin, urls, "submit", "submit", batchFile, "--model", "stories"); submitErr == nil {
			jobID = strings.TrimSpace(out)
		}
		if out, trainErr = runStarted(t, ctx, bin, urls, "submit", "train", "--config", trainFile, "--submit"); trainErr == nil {
			trainID = strings.TrimSpace(out)
		}
	}()
	go func() {
		defer wg.Done()
		for i := range outcomes {
			outcomes[i] = gatewayCompletion(ctx, url, i)
		}
	}()
	wg.Wait()
	if ingestErr != nil || submitErr != nil || trainErr != nil {
		t.Fatalf("ingest: %v\n%s\nsubmit: %v\ntrain --submit: %v", ingestErr, ingestOut, submitErr, trainErr)
	}
	ended := map[string]jobs.Job{}
	for _, id := range []string{jobID, trainID} {
		j := jobEnded(t, ctx, store, id, 8*time.Minute)
		if j.Status != jobs.StatusCompleted {
			t.Errorf("job %s (%s) ended %s: %+v", id, j.Kind, j.Status, j.Errors)
		}
		ended[id] = j
	}
	stopChaos()
	<-chaosDone
	cp.mu.Lock()
	t.Logf("kills: %v; exited by themselves and restarted: %v", cp.kills, cp.exits)
	cp.mu.Unlock()
	if nodeErr != nil {
		t.Fatal(nodeErr)
	}
	if len(cp.kills) == 0 {
		t.Error("the workload ended before any process was killed")
	}

	// Every valid record in the parts (in lf_artifacts, where the sinks
	// store them) once.
	objects, err := storage.OpenObjects(ctx, admin, t.TempDir())
	if err != nil {
		t.Fatal(err)
	}
	artifacts, err := admin.Objects(ctx, pipeline.BucketArtifacts)
	if err != nil {
		t.Fatal(err)
	}
	t.Logf("ingest: %s", ingestOut)
	seenRecords := map[string]bool{}
	pipelinetest.CheckFor(t, time.Minute, 100*time.Millisecond, func() error {
		parts, err := storedParts(ctx, artifacts, "chaos")
		if err != nil {
			return err
		}
		clear(seenRecords)
		for _, p := range parts {
			meta, err := dataset.LoadPartMeta(ctx, objects, p)
			if err != nil {
				return err
			}
			for _, id := range meta.IDs {
				if seenRecords[id] {
					t.Fatalf("record %s is in the parts twice", id)
				}
				seenRecords[id] = true
			}
		}
		if len(seenRecords) < valid {
			return fmt.Errorf("%d of %d records in the parts", len(seenRecords), valid)
		}
		return nil
	})
	if len(seenRecords) != valid {
		t.Errorf("the parts hold %d records, want each of the %d valid ones once", len(seenRecords), valid)
	}
	// Every custom_id once.
	r, _, err := objects.Open(ctx, ended[jobID].Outputs.Output)
	if err != nil {
		t.Fatalf("output of job %s: %v", jobID, err)
	}
	lines, err := resultsink.DecodeOutput(r)
	r.Close()
	if err != nil {
		t.Fatal(err)
	}
	seen := map[string]bool{}
	for _, l := range lines {
		if seen[l.CustomID] {
			t.Errorf("custom_id %s twice in the output", l.CustomID)
		}
		seen[l.CustomID] = true
	}
	if len(seen) != size.requests {
		t.Errorf("%d custom_ids in the output, want %d", len(seen), size.requests)
	}
	// Every gateway request answered or failed visibly.
	answered, failed := 0, 0
	reasons := map[string]int{}
	for i, o := range outcomes {
		switch {
		case o.answered:
			answered++
		case o.failed != "":
			failed++
			reasons[o.failed]++
		default:
			t.Errorf("gateway request %d: neither answered nor failed", i)
		}
	}
	t.Logf("gateway: %d answered, %d failed with an error the client saw: %v", answered, failed, reasons)
	if o := gatewayCompletion(ctx, url, size.gateway); !o.answered {
		// After the chaos the gateway serves again (within the worker wait).
		pipelinetest.CheckFor(t, time.Minute, 100*time.Millisecond, func() error {
			if o := gatewayCompletion(ctx, url, size.gateway); !o.answered {
				return errors.New(o.failed)
			}
			return nil
		})
	}
}

// runStarted runs a command as role to its end, as a user would: again
// when it failed before it did anything (its connection or its check of
// the topology timed out while a killed node's streams elected leaders).
// It returns the error instead of failing the test (it runs on a
// goroutine).
func runStarted(t *testing.T, ctx context.Context, bin, url, role string, args ...string) (string, error) {
	for attempt := 1; ; attempt++ {
		out, err := machine{bin: bin, url: url}.run(ctx, role, args...)
		if err == nil || attempt == 5 || !(strings.Contains(err.Error(), "check the topology as") || strings.Contains(err.Error(), "connect to NATS at")) {
			return out, err
		}
		t.Logf("attempt %d: %v; again", attempt, err)
	}
}

// gatewayCompletion sends one completion and says what the client saw.
func gatewayCompletion(ctx context.Context, url string, i int) gatewayOutcome {
	body, _ := json.Marshal(map[string]any{"model": "stories", "prompt": fmt.Sprintf("Once upon a time %d", i), "max_tokens": 4, "temperature": 0})
	ctx, cancel := context.WithTimeout(ctx, 2*time.Minute)
	defer cancel()
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, url+"/v1/completions", bytes.NewReader(body))
	if err != nil {
		return gatewayOutcome{failed: err.Error()}
	}
	req.Header.Set("Content-Type", "application/json")
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		return gatewayOutcome{failed: "transport: " + err.Error()}
	}
	defer resp.Body.Close()
	raw, err := io.ReadAll(resp.Body)
	if err != nil {
		return gatewayOutcome{failed: fmt.Sprintf("%s, body cut: %v", resp.Status, err)}
	}
	if resp.StatusCode == http.StatusOK {
		var c schemas.CompletionResponse
		if err := json.Unmarshal(raw, &c); err != nil || len(c.Choices) != 1 {
			return gatewayOutcome{failed: fmt.Sprintf("200 with a body that is no completion: %.200s", raw)}
		}
		return gatewayOutcome{answered: true}
	}
	var eb struct {
		Error struct {
			Message string `json:"message"`
		} `json:"error"`
	}
	if json.Unmarshal(raw, &eb) != nil || eb.Error.Message == "" {
		return gatewayOutcome{failed: fmt.Sprintf("%s without an error body: %.200s", resp.Status, raw)}
	}
	return gatewayOutcome{failed: resp.Status + ": " + eb.Error.Message}
}
