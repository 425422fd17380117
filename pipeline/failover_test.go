package pipeline_test

import (
	"context"
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/rs/zerolog"

	"github.com/largeforge/largeforge/pipeline"
	"github.com/largeforge/largeforge/pipeline/pipelinetest"
)

// A client given one node's URL only learns the others from the cluster
// (INFO connect_urls): when that node, which also leads the stream, goes,
// the client reconnects to another node, logs the disconnect as a warning
// and the reconnect, and every publish pending across the reconnect and the
// stream's new leader is stored once.
func TestClusterPublisherFailsOver(t *testing.T) {
	c := pipelinetest.StartCluster(t, 3, "")
	admin := connectCluster(t, c)
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	if err := admin.ApplyTopology(ctx, pipeline.DefaultTopology(3)); err != nil {
		t.Fatal(err)
	}
	checkReplicas(t, admin, []string{pipeline.StreamDatasets}, 3)
	s, err := admin.JetStream().Stream(ctx, pipeline.StreamDatasets)
	if err != nil {
		t.Fatal(err)
	}
	leader := s.CachedInfo().Cluster.Leader
	var node *pipelinetest.ClusterNode
	for _, n := range c.Nodes {
		if n.Name == leader {
			node = n
		}
	}
	if node == nil {
		t.Fatalf("no node named %q leads %s", leader, pipeline.StreamDatasets)
	}

	var logs pipelinetest.Buffer
	log := zerolog.New(zerolog.MultiLevelWriter(&logs, zerolog.NewTestWriter(t))).Level(zerolog.InfoLevel)
	b, err := pipeline.Connect(ctx, pipeline.ConnConfig{URL: node.URL(), Name: t.Name(), ReconnectWait: 50 * time.Millisecond}, log)
	if err != nil {
		t.Fatal(err)
	}
	defer b.Close()
	subj, _ := pipeline.DatasetRawSubject("failover")
	const n = 600
	publishThrough(t, ctx, b.NewPublisher(32), subj, "failover", n, node.Shutdown)
	if got := b.Conn().ConnectedServerName(); got == leader || got == "" {
		t.Errorf("connected to %q after %s went", got, leader)
	}
	if got := streamMsgs(t, admin, pipeline.StreamDatasets); got != n {
		t.Errorf("%s holds %d msgs, want %d", pipeline.StreamDatasets, got, n)
	}
	out := logs.String()
	for _, want := range []string{`"level":"warn"`, `"message":"nats disconnected"`, `"message":"nats reconnected"`} {
		if !strings.Contains(out, want) {
			t.Errorf("the client's log lacks %s:\n%s", want, out)
		}
	}
}

// publishThrough publishes n messages with msg ids prefix/i on subj,
// calling cut before the (n/3)th, flushes and checks that every one was
// acked and none failed.
func publishThrough(t *testing.T, ctx context.Context, p *pipeline.Publisher, subj, prefix string, n int, cut func()) {
	t.Helper()
	for i := range n {
		if i == n/3 {
			cut()
		}
		if err := p.Publish(ctx, subj, []byte(fmt.Sprintf(`{"i":%d}`, i)), fmt.Sprintf("%s/%d", prefix, i), nil); err != nil {
			t.Fatalf("publish %d: %v (stats %+v)", i, err, p.Stats())
		}
	}
	if err := p.Flush(ctx); err != nil {
		t.Fatalf("Flush: %v (stats %+v)", err, p.Stats())
	}
	st := p.Stats()
	t.Logf("publisher stats across the cut: %+v", st)
	if st.Failed != 0 || st.Acked != n {
		t.Errorf("stats = %+v, want %d acked and no failure", st, n)
	}
}
