package pipeline_test

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/largeforge/largeforge/internal/testenv"
	"github.com/largeforge/largeforge/pipeline"
	"github.com/largeforge/largeforge/pipeline/pipelinetest"
)

// connectCluster connects to every node of c (the client picks one).
func connectCluster(t *testing.T, c *pipelinetest.Cluster) *pipeline.Bus {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	b, err := pipeline.Connect(ctx, pipeline.ConnConfig{URL: c.URLs(), Name: t.Name()}, pipelinetest.Logger(t))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(b.Close)
	return b
}

// checkReplicas waits until every stream of names has want replicas, all
// of them current.
func checkReplicas(t *testing.T, b *pipeline.Bus, names []string, want int) {
	t.Helper()
	for _, name := range names {
		pipelinetest.CheckFor(t, time.Minute, 100*time.Millisecond, func() error {
			ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
			defer cancel()
			s, err := b.JetStream().Stream(ctx, name)
			if err != nil {
				return err
			}
			info := s.CachedInfo()
			if info.Config.Replicas != want {
				return fmt.Errorf("%s: %d replicas configured, want %d", name, info.Config.Replicas, want)
			}
			if info.Cluster == nil || info.Cluster.Leader == "" {
				return fmt.Errorf("%s: no leader", name)
			}
			current := 1
			for _, p := range info.Cluster.Replicas {
				if p.Current && !p.Offline {
					current++
				}
			}
			if current != want {
				return fmt.Errorf("%s: %d replicas current, want %d", name, current, want)
			}
			return nil
		})
	}
}

func TestClusterTopologyReplicas(t *testing.T) {
	c := pipelinetest.StartCluster(t, 3, "")
	b := connectCluster(t, c)
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	online, err := c.Nodes[0].Server().WaitJetStream(ctx, 0)
	if err != nil {
		t.Fatal(err)
	}
	if got := pipeline.ReplicasFor(online); got != 3 {
		t.Fatalf("ReplicasFor(%d online) = %d, want 3", online, got)
	}
	topo := pipeline.DefaultTopology(3)
	if err := b.ApplyTopology(ctx, topo); err != nil {
		t.Fatal(err)
	}
	checkReplicas(t, b, topo.StreamNames(), 3)

	// A count guessed from the servers online (one node down) never lowers.
	guessed := pipeline.DefaultTopology(1)
	guessed.RaiseOnly = true
	if err := b.ApplyTopology(ctx, guessed); err != nil {
		t.Fatal(err)
	}
	checkReplicas(t, b, topo.StreamNames(), 3)
}

// TestTopologyRaisedInPlace: a topology applied with one replica on a
// cluster is raised to three by applying it again with three, and keeps
// what it held: the data reads back after the node that held the only
// replica is stopped.
func TestTopologyRaisedInPlace(t *testing.T) {
	c := pipelinetest.StartCluster(t, 3, "")
	b := connectCluster(t, c)
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	one := pipeline.DefaultTopology(1)
	if err := b.ApplyTopology(ctx, one); err != nil {
		t.Fatal(err)
	}
	checkReplicas(t, b, one.StreamNames(), 1)

	kv, err := b.JetStream().KeyValue(ctx, pipeline.BucketJobs)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := kv.Put(ctx, "job1", []byte(`{"status":"queued"}`)); err != nil {
		t.Fatal(err)
	}
	obj := bytes.Repeat([]byte("artifact "), 50_000) // several chunks
	objs, err := b.Objects(ctx, pipeline.BucketArtifacts)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := objs.Put(ctx, "datasets/d/part-00000.parquet", bytes.NewReader(obj)); err != nil {
		t.Fatal(err)
	}
	if _, err := b.Publish(ctx, "lf.res.job1", []byte(`{"custom_id":"a"}`), "job1/a", nil); err != nil {
		t.Fatal(err)
	}
	// The node holding the only replica of lf_artifacts.
	s, err := b.JetStream().Stream(ctx, "OBJ_"+pipeline.BucketArtifacts)
	if err != nil {
		t.Fatal(err)
	}
	holder := s.CachedInfo().Cluster.Leader

	if err := b.ApplyTopology(ctx, pipeline.DefaultTopology(3)); err != nil {
		t.Fatal(err)
	}
	checkReplicas(t, b, one.StreamNames(), 3)

	for _, n := range c.Nodes {
		if n.Name == holder {
			n.Shutdown()
		}
	}
	pipelinetest.CheckFor(t, time.Minute, 200*time.Millisecond, func() error {
		ctx, cancel := context.WithTimeout(ctx, 5*time.Second)
		defer cancel()
		e, err := kv.Get(ctx, "job1")
		if err != nil {
			return fmt.Errorf("lf_jobs job1 without %s: %w", holder, err)
		}
		if string(e.Value()) != `{"status":"queued"}` {
			return fmt.Errorf("lf_jobs job1 = %s", e.Value())
		}
		r, err := objs.Get(ctx, "datasets/d/part-00000.parquet")
		if err != nil {
			return fmt.Errorf("object without %s: %w", holder, err)
		}
		got, err := io.ReadAll(r)
		r.Close()
		if err != nil {
			return fmt.Errorf("read object without %s: %w", holder, err)
		}
		if !bytes.Equal(got, obj) {
			return fmt.Errorf("object: %d bytes, want %d", len(got), len(obj))
		}
		rs, err := b.JetStream().Stream(ctx, pipeline.StreamResults)
		if err != nil {
			return err
		}
		if m, err := rs.GetLastMsgForSubject(ctx, "lf.res.job1"); err != nil || string(m.Data) != `{"custom_id":"a"}` {
			return fmt.Errorf("LF_RESULTS without %s: %v", holder, err)
		}
		return nil
	})
}

// TestClusterNodeStartsAlone: a node whose routes do not answer serves
// clients at once and warns while it waits. A new cluster elects its first
// meta leader once all its nodes have started; after that a quorum is
// enough: a node restarted alone waits, and is ready when a second one is
// back, whatever the order.
func TestClusterNodeStartsAlone(t *testing.T) {
	if testing.Short() {
		t.Skip("starts a three-node cluster (make test runs it)")
	}
	c := &pipelinetest.Cluster{Nodes: pipelinetest.ClusterConfs(t, 3, "")}
	var logs pipelinetest.Buffer
	first := c.Nodes[2]
	first.Log = &logs
	alone := func() {
		t.Helper()
		first.Start(t)
		srv := first.Server()
		if !srv.Clustered() {
			t.Fatal("not clustered")
		}
		ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
		defer cancel()
		b, err := pipeline.Connect(ctx, pipeline.ConnConfig{URL: first.URL(), Name: t.Name()}, pipelinetest.Logger(t))
		if err != nil {
			t.Fatalf("a node alone does not serve: %v", err)
		}
		b.Close()
		short, cancelShort := context.WithTimeout(ctx, 300*time.Millisecond)
		defer cancelShort()
		if _, err := srv.WaitJetStream(short, 100*time.Millisecond); !errors.Is(err, context.DeadlineExceeded) {
			t.Fatalf("WaitJetStream alone = %v, want the deadline", err)
		}
		var quorum, route bool
		for _, line := range strings.Split(logs.String(), "\n") {
			warn := strings.Contains(line, `"level":"warn"`)
			quorum = quorum || warn && strings.Contains(line, "waiting for a jetstream quorum")
			if strings.Contains(line, "Error trying to connect to route") {
				route = route || warn
				if !warn {
					t.Errorf("a route that does not answer logged above a warning: %s", line)
				}
			}
		}
		if !quorum || !route {
			t.Errorf("no warnings while the routes do not answer (quorum %v, route %v); log:\n%s", quorum, route, logs.String())
		}
	}
	alone()
	c.Nodes[0].Start(t)
	c.Nodes[1].Start(t)
	c.WaitReady(t)

	for _, n := range c.Nodes {
		n.Shutdown()
	}
	logs = pipelinetest.Buffer{}
	alone()
	c.Nodes[0].Start(t)
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	online, err := first.Server().WaitJetStream(ctx, 0)
	if err != nil {
		t.Fatal(err)
	}
	if online != 2 {
		t.Errorf("online = %d, want 2", online)
	}
	if pipeline.ReplicasFor(online) != 1 {
		t.Errorf("ReplicasFor(2) = %d, want 1", pipeline.ReplicasFor(online))
	}
}

// TestClusterTopologyAppliedAtOnce: every node's up applies the topology
// at the same moment; each application succeeds (a request the server
// leaves unanswered while a stream is being created is asked again, and no
// bucket is updated while another node creates it).
func TestClusterTopologyAppliedAtOnce(t *testing.T) {
	c := pipelinetest.StartCluster(t, 3, "")
	topo := pipeline.DefaultTopology(3)
	errs := make(chan error, len(c.Nodes))
	for _, n := range c.Nodes {
		ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
		defer cancel()
		b, err := pipeline.Connect(ctx, pipeline.ConnConfig{URL: n.URL(), Name: t.Name() + "-" + n.Name}, pipelinetest.Logger(t))
		if err != nil {
			t.Fatal(err)
		}
		defer b.Close()
		go func() {
			if err := b.ApplyTopology(ctx, topo); err != nil {
				errs <- fmt.Errorf("apply through %s: %w", n.Name, err)
				return
			}
			errs <- b.WaitTopology(ctx, topo)
		}()
	}
	for range c.Nodes {
		if err := <-errs; err != nil {
			t.Error(err)
		}
	}
	checkReplicas(t, connectCluster(t, c), topo.StreamNames(), 3)
}

// TestDeployClusterConf: deploy/nats-cluster.conf parses for each of its
// three nodes (with the role users of the nats-roles.conf it includes, each
// on a bcrypt hash), and three nodes started from it on loopback (hosts,
// ports and store directory rewritten, the include beside it) form a
// cluster in which admin applies the topology with three replicas.
func TestDeployClusterConf(t *testing.T) {
	root := testenv.ModuleRoot(t)
	conf, err := os.ReadFile(filepath.Join(root, "deploy", "nats-cluster.conf"))
	if err != nil {
		t.Fatal(err)
	}
	roles, err := os.ReadFile(filepath.Join(root, "deploy", "nats-roles.conf"))
	if err != nil {
		t.Fatal(err)
	}
	pipelinetest.SetRoleHashes(t, 0)
	names := []string{"lf-1", "lf-2", "lf-3"}
	for _, name := range names {
		t.Setenv("SERVER_NAME", name)
		if err := (pipeline.EmbeddedConfig{ConfFile: filepath.Join(root, "deploy", "nats-cluster.conf")}).Validate(); err != nil {
			t.Fatalf("%s: %v", name, err)
		}
	}

	dir := t.TempDir()
	if err := os.WriteFile(filepath.Join(dir, "nats-roles.conf"), roles, 0o600); err != nil {
		t.Fatal(err)
	}
	nodes := make([]*pipelinetest.ClusterNode, len(names))
	var hosts []string
	for i, name := range names {
		nodes[i] = &pipelinetest.ClusterNode{Name: name, ConfFile: filepath.Join(dir, name+".conf"),
			Port: pipelinetest.FreePort(t), ClusterPort: pipelinetest.FreePort(t)}
		hosts = append(hosts, name+":6222", fmt.Sprintf("127.0.0.1:%d", nodes[i].ClusterPort))
	}
	for _, n := range nodes {
		local := strings.NewReplacer(append(hosts,
			"0.0.0.0:4222", fmt.Sprintf("127.0.0.1:%d", n.Port),
			"0.0.0.0:6222", fmt.Sprintf("127.0.0.1:%d", n.ClusterPort),
			"/var/lib/largeforge", filepath.Join(dir, n.Name))...).Replace(string(conf))
		for _, line := range strings.Split(local, "\n") {
			if line = strings.TrimSpace(line); strings.HasPrefix(line, "#") {
				continue
			}
			for _, h := range []string{"lf-1:", "lf-2:", "lf-3:", "0.0.0.0", "/var/lib"} {
				if strings.Contains(line, h) {
					t.Fatalf("%q left in the loopback copy: %s", h, line)
				}
			}
		}
		if err := os.WriteFile(n.ConfFile, []byte(local), 0o600); err != nil {
			t.Fatal(err)
		}
	}
	t.Chdir(t.TempDir()) // the include resolves beside the file
	for _, n := range nodes {
		t.Setenv("SERVER_NAME", n.Name) // read when the node starts
		n.Start(t)
	}
	c := &pipelinetest.Cluster{Nodes: nodes}
	c.WaitReady(t)
	for _, n := range nodes {
		if got := n.Server().Server().Name(); got != n.Name {
			t.Errorf("server name %q, want %q", got, n.Name)
		}
	}
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	admin, err := pipeline.Connect(ctx, pipeline.ConnConfig{URL: c.URLs(), Name: t.Name(), User: "admin",
		Password: pipelinetest.RolePassword("admin"), InboxPrefix: "_INBOX_admin"}, pipelinetest.Logger(t))
	if err != nil {
		t.Fatal(err)
	}
	defer admin.Close()
	topo := pipeline.DefaultTopology(3)
	if err := admin.ApplyTopology(ctx, topo); err != nil {
		t.Fatal(err)
	}
	checkReplicas(t, admin, topo.StreamNames(), 3)
	if _, err := pipeline.Connect(ctx, pipeline.ConnConfig{URL: c.URLs(), Name: t.Name(), User: "admin", Password: "wrong"}, pipelinetest.Logger(t)); err == nil {
		t.Error("a wrong admin password connected")
	}
}
