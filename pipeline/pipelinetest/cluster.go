package pipelinetest

import (
	"context"
	"errors"
	"fmt"
	"io"
	"math/rand/v2"
	"net"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/rs/zerolog"

	"github.com/largeforge/largeforge/pipeline"
)

// ClusterNode is one server of a loopback cluster. Its configuration file,
// store directory and ports stay the same across Shutdown and Restart, so a
// restarted node rejoins as the same peer with what it stored.
type ClusterNode struct {
	Name        string // server_name: lf-1, lf-2, ...
	ConfFile    string // its nats-server configuration file
	StoreDir    string // jetstream store_dir of the file
	Port        int    // client port on 127.0.0.1
	ClusterPort int    // route port on 127.0.0.1
	// Log, when set, also receives the node's warnings and errors.
	Log io.Writer

	mu  sync.Mutex
	srv *pipeline.Embedded
}

// URL is the node's client URL.
func (n *ClusterNode) URL() string { return fmt.Sprintf("nats://127.0.0.1:%d", n.Port) }

// Server is the running server; nil after Shutdown.
func (n *ClusterNode) Server() *pipeline.Embedded {
	n.mu.Lock()
	defer n.mu.Unlock()
	return n.srv
}

// Start starts the node from its file; it waits for the server to accept
// connections, not for its routes. It shuts the node down in t.Cleanup.
func (n *ClusterNode) Start(t testing.TB) {
	t.Helper()
	if err := n.start(t); err != nil {
		t.Fatal(err)
	}
}

func (n *ClusterNode) start(t testing.TB) error {
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	log := Logger(t)
	if n.Log != nil {
		log = zerolog.New(zerolog.MultiLevelWriter(zerolog.NewTestWriter(t), n.Log)).Level(zerolog.WarnLevel)
	}
	srv, err := pipeline.StartEmbedded(ctx, pipeline.EmbeddedConfig{ConfFile: n.ConfFile}, log.With().Str("node", n.Name).Logger())
	if err != nil {
		return fmt.Errorf("start %s: %w", n.Name, err)
	}
	n.mu.Lock()
	n.srv = srv
	n.mu.Unlock()
	t.Cleanup(n.Shutdown)
	return nil
}

// Shutdown stops the node (its store stays); safe when it is not running.
func (n *ClusterNode) Shutdown() {
	n.mu.Lock()
	srv := n.srv
	n.srv = nil
	n.mu.Unlock()
	if srv != nil {
		srv.Shutdown()
	}
}

// Restart stops the node if it runs and starts it again on the same store
// and ports.
func (n *ClusterNode) Restart(t testing.TB) {
	t.Helper()
	n.Shutdown()
	n.Start(t)
}

// Cluster is a JetStream cluster of embedded servers on loopback.
type Cluster struct {
	Nodes []*ClusterNode
}

// URLs is every node's client URL, comma-separated (a --nats value).
func (c *Cluster) URLs() string {
	urls := make([]string, len(c.Nodes))
	for i, n := range c.Nodes {
		urls[i] = n.URL()
	}
	return strings.Join(urls, ",")
}

// WaitReady waits until every running node sees a JetStream meta leader and
// all of them online.
func (c *Cluster) WaitReady(t testing.TB) {
	t.Helper()
	running := 0
	for _, n := range c.Nodes {
		if n.Server() != nil {
			running++
		}
	}
	for _, n := range c.Nodes {
		srv := n.Server()
		if srv == nil {
			continue
		}
		CheckFor(t, time.Minute, 50*time.Millisecond, func() error {
			ctx, cancel := context.WithTimeout(context.Background(), time.Second)
			defer cancel()
			online, err := srv.WaitJetStream(ctx, time.Minute)
			if err != nil {
				return fmt.Errorf("%s: %w", n.Name, err)
			}
			if online < running {
				return fmt.Errorf("%s sees %d jetstream servers online, want %d", n.Name, online, running)
			}
			return nil
		})
	}
	// Every running node current in the meta group (only its leader
	// knows): the peer set is persisted, so a cluster stopped whole
	// elects again from any majority.
	CheckFor(t, time.Minute, 50*time.Millisecond, func() error {
		for _, n := range c.Nodes {
			if srv := n.Server(); srv != nil {
				if size, current, leader := srv.MetaPeers(); leader {
					if size < running || current < running {
						return fmt.Errorf("meta leader %s: group of %d with %d current peers, want %d", n.Name, size, current, running)
					}
					return nil
				}
			}
		}
		return fmt.Errorf("no running node leads the meta group")
	})
}

// ClusterConfs writes the configuration files of an n-node cluster on
// loopback (free ports, each node its own store directory under
// t.TempDir()) with extra appended to each (nats-roles.conf, say), and
// starts nothing: for processes such as largeforge up --config.
func ClusterConfs(t testing.TB, n int, extra string) []*ClusterNode {
	t.Helper()
	dir := t.TempDir()
	nodes := make([]*ClusterNode, n)
	var routes []string
	for i := range nodes {
		name := fmt.Sprintf("lf-%d", i+1)
		nodes[i] = &ClusterNode{Name: name, StoreDir: filepath.Join(dir, name, "store"),
			ConfFile: filepath.Join(dir, name+".conf"), Port: FreePort(t), ClusterPort: FreePort(t)}
		routes = append(routes, fmt.Sprintf("nats-route://127.0.0.1:%d", nodes[i].ClusterPort))
	}
	for _, node := range nodes {
		conf := fmt.Sprintf(`server_name: %s
listen: 127.0.0.1:%d
max_payload: 1MB
max_pending: 64MB
jetstream {
  store_dir: %q
  max_memory_store: 256MB
  max_file_store: 64GB # the topology reserves its size limits (pipeline.DefaultLimits, about 14.5 GiB) on each node
}
cluster {
  name: lf-test
  listen: 127.0.0.1:%d
  routes: [
    %s
  ]
}
%s
`, node.Name, node.Port, node.StoreDir, node.ClusterPort, strings.Join(routes, "\n    "), extra)
		if err := os.WriteFile(node.ConfFile, []byte(conf), 0o600); err != nil {
			t.Fatal(err)
		}
	}
	return nodes
}

// StartCluster starts an n-node cluster from ClusterConfs(t, n, extra) and
// waits until every node sees all of them online. Nodes are shut down in
// t.Cleanup; each may be shut down and restarted before.
// A node whose port was taken meanwhile (by another test process: FreePort
// can only pick a port free at the time) makes it start the cluster again
// on other ports, a few times. With -short (make test-short) the test is
// skipped: make test runs the clusters.
func StartCluster(t testing.TB, n int, extra string) *Cluster {
	t.Helper()
	if testing.Short() {
		t.Skip("a cluster of nodes: make test runs it, not make test-short")
	}
	for try := 1; ; try++ {
		c := &Cluster{Nodes: ClusterConfs(t, n, extra)}
		err := c.startAll(t)
		if err == nil {
			c.WaitReady(t)
			return c
		}
		if !errors.Is(err, pipeline.ErrListen) || try == 3 {
			t.Fatal(err)
		}
		t.Logf("starting the cluster again on other ports: %v", err)
	}
}

// startAll starts every node; on a failure it shuts down those started.
func (c *Cluster) startAll(t testing.TB) error {
	for i, node := range c.Nodes {
		if err := node.start(t); err != nil {
			for _, started := range c.Nodes[:i] {
				started.Shutdown()
			}
			return err
		}
	}
	return nil
}

// FreePort returns a loopback TCP port free now, for a server the test
// starts later. It is picked below the kernel's ephemeral range
// (net.ipv4.ip_local_port_range), where neither the outgoing connections nor
// the port-0 listeners of tests running in parallel take it between the
// pick and the server's bind (a port from the ephemeral range was taken so
// once, failing a cluster test with "address already in use"); where that
// range leaves no room below it, the kernel picks.
// A port is handed out once in a process: the ports of one cluster's
// configuration are picked before any is bound.
func FreePort(t testing.TB) int {
	t.Helper()
	if lo := ephemeralLow(); lo > freePortFloor+1000 {
		for range 200 {
			p := freePortFloor + rand.IntN(lo-freePortFloor)
			if !handOut(p) {
				continue
			}
			if l, err := net.Listen("tcp", fmt.Sprintf("127.0.0.1:%d", p)); err == nil {
				l.Close()
				return p
			}
		}
	}
	for {
		l, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			t.Fatal(err)
		}
		p := l.Addr().(*net.TCPAddr).Port
		l.Close()
		if handOut(p) {
			return p
		}
	}
}

var (
	handedMu sync.Mutex
	handed   = map[int]bool{} // the ports FreePort returned
)

// handOut records p as handed out; false when it was before.
func handOut(p int) bool {
	handedMu.Lock()
	defer handedMu.Unlock()
	if handed[p] {
		return false
	}
	handed[p] = true
	return true
}

// freePortFloor is the lowest port FreePort picks: above the well-known and
// most registered services' ports.
const freePortFloor = 20000

// ephemeralLow is the first port of the kernel's ephemeral range (0 where
// it cannot be read).
func ephemeralLow() int {
	data, err := os.ReadFile("/proc/sys/net/ipv4/ip_local_port_range")
	if err != nil {
		return 0
	}
	var lo, hi int
	if _, err := fmt.Sscan(string(data), &lo, &hi); err != nil {
		return 0
	}
	return lo
}
