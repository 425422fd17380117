package main

import (
	"context"
	"fmt"
	"maps"
	"os"
	"os/exec"
	"os/signal"
	"path/filepath"
	"slices"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/rs/zerolog"

	"github.com/largeforge/largeforge/consumers/train/traintest"
	"github.com/largeforge/largeforge/internal/samples"
	"github.com/largeforge/largeforge/jobs"
	"github.com/largeforge/largeforge/pipeline"
	"github.com/largeforge/largeforge/pipeline/pipelinetest"
	"github.com/largeforge/largeforge/storage"
)

// clusterNodeEnv, set to a nats-server configuration file, makes the test
// binary a cluster node process (TestMain): a server that a test can kill
// with SIGKILL and start again on the same store.
const clusterNodeEnv = "LF_TEST_CLUSTER_NODE_CONF"

func TestMain(m *testing.M) {
	if conf := os.Getenv(clusterNodeEnv); conf != "" {
		os.Exit(runClusterNode(conf))
	}
	os.Exit(m.Run())
}

// runClusterNode serves conf's server until SIGTERM or SIGINT.
func runClusterNode(conf string) int {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	log := zerolog.New(os.Stderr).Level(zerolog.WarnLevel).With().Timestamp().Logger()
	sctx, cancel := context.WithTimeout(ctx, 30*time.Second)
	srv, err := pipeline.StartEmbedded(sctx, pipeline.EmbeddedConfig{ConfFile: conf}, log)
	cancel()
	if err != nil {
		fmt.Fprintf(os.Stderr, "start the node of %s: %v\n", conf, err)
		return 1
	}
	<-ctx.Done()
	srv.Shutdown()
	return 0
}

// nodeProc is a cluster node run as a process of its own (the test binary
// as runClusterNode), killed with SIGKILL and restarted on the same
// configuration, store and ports.
type nodeProc struct {
	*pipelinetest.ClusterNode
	t    *testing.T
	p    *proc         // nil while killed
	done chan struct{} // closed when p has ended
	runs []*proc       // every start's process, for its log
}

// start starts the node's process and waits until it serves as itself.
func (n *nodeProc) start() {
	n.t.Helper()
	if err := n.tryStart(); err != nil {
		n.t.Fatal(err)
	}
}

// tryStart starts the node's process and waits until a client connected to
// its port is served by its server_name; an error when the process ends
// first (its port taken meanwhile by another process) or in 30 s.
func (n *nodeProc) tryStart() error {
	exe, err := os.Executable()
	if err != nil {
		return err
	}
	cmd := exec.Command(exe)
	cmd.Env = append(os.Environ(), clusterNodeEnv+"="+n.ConfFile)
	n.p = startCmd(n.t, cmd)
	n.runs = append(n.runs, n.p)
	n.done = make(chan struct{})
	go func(p *proc, done chan struct{}) { _ = p.cmd.Wait(); close(done) }(n.p, n.done)
	deadline := time.Now().Add(30 * time.Second)
	for {
		select {
		case <-n.done:
			return fmt.Errorf("node %s exited at its start:\n%s", n.Name, n.p.out)
		default:
		}
		nc, err := nats.Connect(n.URL(), nats.UserInfo("admin", pipelinetest.RolePassword("admin")),
			nats.CustomInboxPrefix("_INBOX_admin"), nats.Timeout(time.Second))
		if err == nil {
			name := nc.ConnectedServerName()
			nc.Close()
			if name == n.Name {
				return nil
			}
			err = fmt.Errorf("%s is served by %q", n.URL(), name)
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("node %s does not serve: %w", n.Name, err)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// kill kills the node's process with SIGKILL.
func (n *nodeProc) kill() {
	n.t.Helper()
	if err := n.p.cmd.Process.Signal(syscall.SIGKILL); err != nil {
		n.t.Fatal(err)
	}
	<-n.done
	n.p = nil
}

// rejoin starts n again unless it runs: deferred after a kill, so that a
// subtest that fails while its node is down leaves the next one a cluster.
func (n *nodeProc) rejoin() {
	if n.p == nil {
		n.start()
	}
}

// killProc kills p with SIGKILL and reaps it.
func killProc(t *testing.T, p *proc) {
	t.Helper()
	if err := p.cmd.Process.Signal(syscall.SIGKILL); err != nil {
		t.Fatal(err)
	}
	_ = p.cmd.Wait()
}

// startNodes starts a three-node cluster on loopback with the users of
// deploy/nats-roles.conf, each node a process with its own store.
func startNodes(t *testing.T) []*nodeProc {
	t.Helper()
	pipelinetest.SetRoleHashes(t, 0)
	var nodes []*nodeProc
	// Ports free a moment ago may be taken by another process before a
	// node listens: then all start again on new ones.
	for attempt := 1; ; attempt++ {
		nodes = nil
		var err error
		for _, cn := range pipelinetest.ClusterConfs(t, 3, pipelinetest.RolesConf(t)) {
			n := &nodeProc{ClusterNode: cn, t: t}
			nodes = append(nodes, n)
			if err = n.tryStart(); err != nil {
				break
			}
		}
		if err == nil {
			break
		}
		if attempt == 3 {
			t.Fatal(err)
		}
		t.Logf("attempt %d: %v", attempt, err)
		for _, n := range nodes {
			_ = n.p.cmd.Process.Signal(syscall.SIGKILL) // an error: it had ended
			<-n.done
		}
	}
	t.Cleanup(func() {
		if !t.Failed() {
			return
		}
		for _, n := range nodes {
			for i, p := range n.runs {
				t.Logf("%s, run %d:\n%s", n.Name, i+1, p.out)
			}
		}
	})
	return nodes
}

// nodeNamed is the node whose server_name is name.
func nodeNamed(t *testing.T, nodes []*nodeProc, name string) *nodeProc {
	t.Helper()
	for _, n := range nodes {
		if n.Name == name {
			return n
		}
	}
	t.Fatalf("no node named %q", name)
	return nil
}

// streamLeader is the server that leads stream, once it has a leader and
// every other replica is current.
func streamLeader(ctx context.Context, bus *pipeline.Bus, stream string) (string, error) {
	s, err := bus.JetStream().Stream(ctx, stream)
	if err != nil {
		return "", fmt.Errorf("stream %s: %w", stream, err)
	}
	info, err := s.Info(ctx)
	if err != nil {
		return "", fmt.Errorf("stream %s: %w", stream, err)
	}
	c := info.Cluster
	if c == nil || c.Leader == "" {
		return "", fmt.Errorf("stream %s has no leader", stream)
	}
	if len(c.Replicas) != info.Config.Replicas-1 {
		return "", fmt.Errorf("stream %s: leader %s and %d other replicas, want %d", stream, c.Leader, len(c.Replicas), info.Config.Replicas-1)
	}
	for _, r := range c.Replicas {
		if !r.Current || r.Offline {
			return "", fmt.Errorf("stream %s: replica %s is not current (offline %t, lag %d)", stream, r.Name, r.Offline, r.Lag)
		}
	}
	return c.Leader, nil
}

// attemptTimeout bounds one look at the cluster while a condition is
// awaited: a request to a stream whose leader was just killed may hang
// until an election, the next attempt goes to the new leader.
const attemptTimeout = 5 * time.Second

// waitLeader waits until stream has a leader and all its replicas current.
func waitLeader(t *testing.T, ctx context.Context, bus *pipeline.Bus, stream string) string {
	t.Helper()
	var leader string
	pipelinetest.CheckFor(t, 2*time.Minute, 50*time.Millisecond, func() error {
		actx, cancel := context.WithTimeout(ctx, attemptTimeout)
		defer cancel()
		var err error
		leader, err = streamLeader(actx, bus, stream)
		return err
	})
	return leader
}

// exited waits up to timeout for p to end and returns its error.
func exited(t *testing.T, p *proc, timeout time.Duration) error {
	t.Helper()
	done := make(chan error, 1)
	go func() { done <- p.cmd.Wait() }()
	select {
	case err := <-done:
		return err
	case <-time.After(timeout):
		t.Fatalf("%s still runs after %v:\n%s", p.cmd, timeout, p.out)
		return nil
	}
}

// getJob is job id's record, read once the bus answers (while a client
// reconnects from a killed node, requests find no responders).
func getJob(t *testing.T, ctx context.Context, store *jobs.Store, id string) jobs.Job {
	t.Helper()
	var j jobs.Job
	pipelinetest.CheckFor(t, time.Minute, 20*time.Millisecond, func() error {
		actx, cancel := context.WithTimeout(ctx, attemptTimeout)
		defer cancel()
		var err error
		j, err = store.Get(actx, id)
		return err
	})
	return j
}

// storedParts is the names of dataset ds's parts in lf_artifacts.
func storedParts(ctx context.Context, artifacts *pipeline.Objects, ds string) ([]string, error) {
	ctx, cancel := context.WithTimeout(ctx, attemptTimeout)
	defer cancel()
	all, err := artifacts.List(ctx)
	if err != nil {
		return nil, err
	}
	var parts []string
	for _, in := range all {
		if rest, ok := strings.CutPrefix(in.Name, storage.Dataset(ds)); ok && strings.HasPrefix(rest, "part-") {
			parts = append(parts, in.Name)
		}
	}
	return parts, nil
}

// TestClusterNodeLoss is issue 16's proof: three nodes in one cluster,
// each a process with its own store directory, and every largeforge
// process on its own role's credential of deploy/nats-roles.conf, each
// machine's processes attached to their own node only (the others learnt
// from the cluster). (a) A 1,000-request job served by two infer workers
// on different nodes and submitted on the third: the node leading
// LF_REQUESTS and one worker are killed with SIGKILL mid-job and the node
// restarted later; the job completes with every custom_id exactly once,
// read back through every node. (b) An ingest whose LF_DATASETS leader is
// killed mid-run: every record in the parts exactly once. (c) A training
// job whose worker and that worker's node are killed: it resumes on the
// other worker and ends completed.
func TestClusterNodeLoss(t *testing.T) {
	if testing.Short() {
		t.Skip("builds the binary and runs three nodes through node and worker kills")
	}
	bin := buildBinary(t)
	nodes := startNodes(t)
	urls := (&pipelinetest.Cluster{Nodes: []*pipelinetest.ClusterNode{nodes[0].ClusterNode, nodes[1].ClusterNode, nodes[2].ClusterNode}}).URLs()
	ctx, cancel := context.WithTimeout(context.Background(), 8*time.Minute)
	defer cancel()
	var m [3]machine
	for i, n := range nodes {
		m[i] = newMachine(t, bin, n.URL(), "m"+n.Name)
	}
	// The cluster elects its first meta leader once all nodes run.
	pipelinetest.CheckFor(t, time.Minute, 100*time.Millisecond, func() error {
		_, err := m[0].run(ctx, "admin", "topology", "apply", "--replicas", "3")
		return err
	})
	admin, err := pipeline.Connect(ctx, pipeline.ConnConfig{URL: urls, Name: t.Name(), User: "admin",
		Password: pipelinetest.RolePassword("admin"), InboxPrefix: "_INBOX_admin", ReconnectWait: 100 * time.Millisecond}, pipelinetest.Logger(t))
	if err != nil {
		t.Fatal(err)
	}
	defer admin.Close()
	store, err := jobs.Open(ctx, admin)
	if err != nil {
		t.Fatal(err)
	}
	artifacts, err := admin.Objects(ctx, pipeline.BucketArtifacts)
	if err != nil {
		t.Fatal(err)
	}
	m[0].must(ctx, "admin", "model", "init", "--preset", "tiny", "--chat-template", "chatml", "--output", "tiny")
	m[0].must(ctx, "admin", "model", "push", "tiny", "tiny")
	// Three replicas of everything, all current (a command as admin, such
	// as model push, lowers none).
	topo := pipeline.DefaultTopology(3)
	if err := admin.WaitTopology(ctx, topo); err != nil {
		t.Fatal(err)
	}
	for _, name := range topo.StreamNames() {
		s, err := admin.JetStream().Stream(ctx, name)
		if err != nil {
			t.Fatal(err)
		}
		if r := s.CachedInfo().Config.Replicas; r != 3 {
			t.Fatalf("%s has %d replicas, want 3", name, r)
		}
	}
	// Sinks on two nodes share the work.
	var sinks, resultSinks [2]*proc
	for i, mc := range m[:2] {
		resultSinks[i] = mc.start("results", "worker", "--role", "results", "--data-dir", mc.path("data"))
		sinks[i] = mc.start("datasets", "worker", "--role", "dataset", "--data-dir", mc.path("data"))
	}

	t.Run("job", func(t *testing.T) {
		var infer [2]*proc
		for i, mc := range m[:2] {
			infer[i] = mc.start("infer", "worker", "--role", "infer", "--model", "tiny", "--model-cache", mc.path("cache"),
				"--worker-id", "infer-"+nodes[i].Name, "--ack-wait", "3s")
		}
		waitLive(t, admin, "tiny", time.Minute)
		const n, before, persisted = 1000, 600, 100
		lines := make([]string, n)
		want := make([]string, n)
		for i := range lines {
			want[i] = fmt.Sprintf("c%04d", i)
			lines[i] = fmt.Sprintf(`{"custom_id":%q,"prompt":"Once upon a time %d","max_tokens":2,"temperature":0}`, want[i], i)
		}
		pipe := m[2].path("requests.jsonl")
		if err := syscall.Mkfifo(pipe, 0o600); err != nil {
			t.Fatal(err)
		}
		const id = "batch_cluster"
		sub := m[2].start("submit", "submit", "requests.jsonl", "--model", "tiny", "--job-id", id)
		w, err := os.OpenFile(pipe, os.O_WRONLY, 0) // blocks until the submitter opens it
		if err != nil {
			t.Fatal(err)
		}
		defer w.Close()
		if _, err := w.WriteString(strings.Join(lines[:before], "\n") + "\n"); err != nil {
			t.Fatal(err)
		}
		// Mid-job: results persisted, the input still open (the job
		// validating: its total unknown, it cannot complete).
		progress := func(atLeast int) jobs.Job {
			t.Helper()
			j := waitJobOr(t, ctx, store, id, 2*time.Minute, fmt.Sprintf("%d completed", atLeast),
				func(j jobs.Job) bool { return j.RequestCounts.Completed >= atLeast },
				map[string]*proc{"submit": sub, "infer 1": infer[0], "infer 2": infer[1], "results 1": resultSinks[0], "results 2": resultSinks[1]})
			if j.Status != jobs.StatusValidating {
				t.Fatalf("job %s with its input still open: %+v", j.Status, j.RequestCounts)
			}
			return j
		}
		progress(persisted)
		leader := waitLeader(t, ctx, admin, pipeline.StreamRequests)
		killed := nodeNamed(t, nodes, leader)
		killed.kill()
		defer killed.rejoin()
		killProc(t, infer[0])
		j := getJob(t, ctx, store, id)
		t.Logf("killed %s (the leader of %s) and infer-%s with the job %s %+v", leader, pipeline.StreamRequests, nodes[0].Name, j.Status, j.RequestCounts)
		// Two nodes and one worker go on; the node then rejoins.
		progress(j.RequestCounts.Completed + persisted)
		killed.start()
		waitLeader(t, ctx, admin, pipeline.StreamRequests)
		if _, err := w.WriteString(strings.Join(lines[before:], "\n") + "\n"); err != nil {
			t.Fatal(err)
		}
		if err := w.Close(); err != nil {
			t.Fatal(err)
		}
		if err := exited(t, sub, 3*time.Minute); err != nil {
			t.Fatalf("submit: %v\n%s", err, sub.out)
		}
		j = waitJobOr(t, ctx, store, id, 3*time.Minute, "the job ended",
			func(j jobs.Job) bool { return j.Status.Terminal() },
			map[string]*proc{"infer 2": infer[1], "results 1": resultSinks[0], "results 2": resultSinks[1]})
		if j.Status != jobs.StatusCompleted || j.RequestCounts != (jobs.Counts{Total: n, Completed: n}) {
			t.Fatalf("job ended %s %+v %+v, want completed with %d rows", j.Status, j.RequestCounts, j.Errors, n)
		}
		// Read back through each node (the restarted one included).
		for i, mc := range m {
			out := fmt.Sprintf("results-%d.jsonl", i)
			mc.must(ctx, "submit", "jobs", "results", id, "-o", out)
			got := customIDsOf(t, mc.path(out))
			slices.Sort(got)
			if !slices.Equal(got, want) {
				t.Errorf("jobs results through %s: %d lines (%d distinct), want each of %d custom_ids once",
					nodes[i].Name, len(got), len(slices.Compact(got)), n)
			}
		}
	})

	t.Run("ingest", func(t *testing.T) {
		// Shards sent while LF_DATASETS has no leader, or from a client
		// whose node died, are retried until stored (pipeline's
		// Publisher); a sink that cannot reach the object store while the
		// node is down retries the shard (it once dead-lettered a whole
		// shard as an invalid dataset), and a manifest it cannot publish
		// leaves the batch unacked until it can.
		const ds, n = "big", 24_000
		var src strings.Builder
		if err := samples.WriteLargeAlpaca(&src, n, 200, 7); err != nil {
			t.Fatal(err)
		}
		all := []byte(src.String())
		// A third before the kill, a third while the node is down, a third
		// once it has rejoined.
		third, twoThirds := nthLineEnd(all, n/3), nthLineEnd(all, 2*n/3)
		pr, pw, err := os.Pipe()
		if err != nil {
			t.Fatal(err)
		}
		defer pw.Close()
		cmd := m[2].command(context.Background(), "ingest", "ingest", "--dataset", ds, "--format", "alpaca", "--wait", "3m", "-")
		cmd.Stdin = pr
		in := startCmd(t, cmd)
		pr.Close()
		written := make(chan error, 1)
		write := func(b []byte) {
			t.Helper()
			go func() { _, err := pw.Write(b); written <- err }()
		}
		parts := func(atLeast int) int {
			t.Helper()
			var got []string
			pipelinetest.CheckFor(t, 2*time.Minute, 20*time.Millisecond, func() error {
				var err error
				if got, err = storedParts(ctx, artifacts, ds); err == nil && len(got) < atLeast {
					err = fmt.Errorf("%d parts of %s stored, want %d; ingest:\n%s", len(got), ds, atLeast, in.out)
				}
				return err
			})
			return len(got)
		}
		write(all[:third])
		stored := parts(1)
		leader := waitLeader(t, ctx, admin, pipeline.StreamDatasets)
		killed := nodeNamed(t, nodes, leader)
		killed.kill()
		defer killed.rejoin()
		t.Logf("killed %s (the leader of %s) with %d parts stored", leader, pipeline.StreamDatasets, stored)
		if err := <-written; err != nil {
			t.Fatal(err)
		}
		write(all[third:twoThirds])
		parts(stored + 1)
		killed.start()
		waitLeader(t, ctx, admin, pipeline.StreamDatasets)
		if err := <-written; err != nil {
			t.Fatal(err)
		}
		write(all[twoThirds:])
		if err := <-written; err != nil {
			t.Fatal(err)
		}
		if err := pw.Close(); err != nil {
			t.Fatal(err)
		}
		if err := exited(t, in, 3*time.Minute); err != nil {
			t.Fatalf("ingest: %v\n%s", err, in.out)
		}
		m[1].must(ctx, "api", "datasets", "export", ds, "export")
		exported, err := filepath.Glob(m[1].path("export/part-*.parquet"))
		if err != nil {
			t.Fatal(err)
		}
		if seen := partIDsOnce(t, exported); len(seen) != n {
			show, err := m[1].run(ctx, "api", "datasets", "show", ds)
			t.Fatalf("%d parts hold %d records, want each of %d exactly once; ingest:\n%s\ndatasets show %s (%v):\n%s\nsink 1:\n%s\nsink 2:\n%s",
				len(exported), len(seen), n, in.out, ds, err, show, sinks[0].out, sinks[1].out)
		}
	})

	t.Run("train", func(t *testing.T) {
		const ds, rows = "colours", 8
		var alpaca strings.Builder
		for i := range rows {
			fmt.Fprintf(&alpaca, `{"instruction":"Colour %d?","input":"","output":%q}`+"\n", i, []string{"red", "blue", "green", "gold"}[i%4])
		}
		if err := os.WriteFile(m[2].path("colours.jsonl"), []byte(alpaca.String()), 0o644); err != nil {
			t.Fatal(err)
		}
		if out := m[2].must(ctx, "ingest", "ingest", "--dataset", ds, "--format", "alpaca", "--wait", "60s", "colours.jsonl"); !strings.Contains(out, "accepted") {
			t.Fatalf("ingest: %q", out)
		}
		var train [2]*proc
		for i, mc := range m[:2] {
			train[i] = mc.start("train", "worker", "--role", "train", "--ack-wait", "2s", "--worker-id", nodes[i].Name,
				"--data-dir", mc.path("train-data"), "--output-root", mc.path("out"), "--model-cache", mc.path("cache"))
		}
		const epochs, saveSteps = 10, 2
		steps := epochs * rows / 2
		fx := traintest.New(t, 1)
		yaml := strings.NewReplacer("model_name: "+fx.Base, "model_name: tiny",
			"data_files: ["+fx.Data+"]", "dataset: "+ds+"\nprompt_template: chat").Replace(fx.YAML("submitted", epochs, saveSteps))
		if err := os.WriteFile(m[2].path("train.yaml"), []byte(yaml), 0o644); err != nil {
			t.Fatal(err)
		}
		id := strings.TrimSpace(m[2].must(ctx, "submit", "train", "--config", "train.yaml", "--submit"))
		var j jobs.Job
		pipelinetest.CheckFor(t, 2*time.Minute, 20*time.Millisecond, func() error {
			actx, cancel := context.WithTimeout(ctx, attemptTimeout)
			defer cancel()
			var err error
			if j, err = store.Get(actx, id); err == nil && (j.Training == nil || j.Training.Worker == "") {
				err = fmt.Errorf("job %s %s not taken; train workers:\n%s\n%s", id, j.Status, train[0].out, train[1].out)
			}
			return err
		})
		i := slices.IndexFunc(nodes[:2], func(n *nodeProc) bool { return n.Name == j.Training.Worker })
		if i < 0 {
			t.Fatalf("job taken by %q, not a worker of this test", j.Training.Worker)
		}
		killOnceStored(t, ctx, artifacts, id, train[i])
		nodes[i].kill()
		defer nodes[i].rejoin()
		j = getJob(t, ctx, store, id)
		t.Logf("killed train worker %s and its node at step %d of %d", nodes[i].Name, j.Training.Step, steps)
		other := train[1-i]
		j = waitJobEnd(t, ctx, store, id, 4*time.Minute, other.out)
		nodes[i].start()
		if j.Status != jobs.StatusCompleted {
			t.Fatalf("job ended %s %+v; the other worker:\n%s", j.Status, j.Errors, other.out)
		}
		if tp := j.Training; tp == nil || tp.Worker != nodes[1-i].Name || tp.Attempt < 2 || tp.Step != steps || tp.FineTunedModel != id {
			t.Fatalf("final progress %+v: want worker %s resuming (attempt 2 or more) to step %d, the model pushed as %s", tp, nodes[1-i].Name, steps, id)
		}
	})
}

// waitJobOr waits up to timeout for job id to satisfy done (want says
// what that is) and returns it; when it does not, the test fails with what
// each of procs was doing (stuck).
func waitJobOr(t *testing.T, ctx context.Context, store *jobs.Store, id string, timeout time.Duration, want string,
	done func(jobs.Job) bool, procs map[string]*proc) jobs.Job {
	t.Helper()
	for deadline := time.Now().Add(timeout); ; time.Sleep(20 * time.Millisecond) {
		actx, cancel := context.WithTimeout(ctx, attemptTimeout)
		j, err := store.Get(actx, id)
		cancel()
		if err == nil && done(j) {
			return j
		}
		if time.Now().After(deadline) {
			stuck(t, procs)
			t.Fatalf("job %s %s %+v (%v) after %v, want %s", id, j.Status, j.RequestCounts, err, timeout, want)
		}
	}
}

// stuck logs what each process was doing: SIGQUIT makes a Go program print
// its goroutines and exit. It is called once a test has given up on them.
func stuck(t *testing.T, procs map[string]*proc) {
	t.Helper()
	for _, p := range procs {
		_ = p.cmd.Process.Signal(syscall.SIGQUIT)
	}
	time.Sleep(2 * time.Second)
	for _, name := range slices.Sorted(maps.Keys(procs)) {
		t.Logf("%s:\n%s", name, tail(procs[name].out.String(), 256<<10))
	}
}

// tail is the last n bytes of s.
func tail(s string, n int) string {
	if len(s) <= n {
		return s
	}
	return "..." + s[len(s)-n:]
}
