package main

import (
	"context"
	"errors"
	"fmt"
	"net/url"
	"os"
	"path/filepath"
	"strings"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/rs/zerolog"
	"github.com/spf13/cobra"

	"github.com/largeforge/largeforge"
	"github.com/largeforge/largeforge/internal/dirlock"
	"github.com/largeforge/largeforge/internal/memlimit"
	"github.com/largeforge/largeforge/logging"
	"github.com/largeforge/largeforge/pipeline"
	"github.com/largeforge/largeforge/schemas"
	"github.com/largeforge/largeforge/storage"
)

// UpConfig is what `largeforge up` runs with.
type UpConfig struct {
	DataDir  string
	Listen   string
	Config   string       // a nats-server configuration file in place of nats.conf (a cluster node's)
	Replicas int          // replicas of the topology; 0: from the JetStream servers online
	Models   []string     // name=DIR: models the embedded infer worker serves
	Adapter  []string     // name=DIR: LoRA adapters merged into those models at load
	Gateway  GatewayFlags // HTTP "" : no gateway
	Limits   limitsFlag   // --limit: the topology's limits (pipeline.DefaultLimits and overrides)
	// MemoryLimit is --memory-limit: the floor of the soft memory limit
	// (memlimit.Start); "", "0" or "off": none.
	MemoryLimit string
}

// Validate checks the flags of up.
func (c UpConfig) Validate() error {
	if c.DataDir == "" {
		return fmt.Errorf("--data-dir is required")
	}
	if c.Replicas < 0 {
		return fmt.Errorf("--replicas %d: want 1 or more (0: from the servers online)", c.Replicas)
	}
	if _, err := memlimit.Parse(c.MemoryLimit); c.MemoryLimit != "" && err != nil {
		return fmt.Errorf("--memory-limit: %w", err)
	}
	if c.Gateway.HTTP != "" {
		return c.Gateway.Validate()
	}
	return nil
}

func newUpCmd() *cobra.Command {
	var up UpConfig
	cmd := &cobra.Command{
		Use:   "up",
		Short: "Start the embedded default: nats-server with JetStream on a file store, and the workers",
		Long: `Start the embedded default in one process: a nats-server with JetStream on a file
store under --data-dir (settings from the repository's nats.conf), the streams, buckets
and object store, and the workers: the dataset sink (Parquet parts and manifests under
<data-dir>/datasets), the raw-record validator of lf.data.<dataset>.raw, and the rejects
writer; the results sink of batch jobs (<data-dir>/jobs/<job>/), and, for each --model
name=DIR (with --adapter name=DIR: a LoRA adapter merged in at load), an infer and score
worker; for each expert of --experts FILE that no worker serves yet, an infer worker
loading its model_path (a directory, or a model name in lf_models) with its max_tokens as
the context, or, when it has an endpoint, a proxy worker forwarding to that server; a train worker for training jobs (largeforge train --submit); with --http ADDR, the OpenAI-compatible
HTTP gateway (see largeforge gateway). Ctrl-C drains the workers and stops cleanly.
One up runs per --data-dir: it holds <data-dir>/largeforge-up.lock, and a second up on
the same directory exits at once, naming the pid of the first.

On several machines, --config FILE replaces nats.conf with a nats-server configuration
file (deploy/nats-cluster.conf: its own server_name, jetstream store_dir and a cluster
block of routes; include resolves relative to the file; the official nats-server -c
runs the same file). Its store_dir holds JetStream; --data-dir then holds only local
copies (and JetStream too when the file names no store_dir). An unknown key in the
file is an error naming it; routes that do not answer are retried with a warning: up
serves at once and applies the topology once the cluster has a JetStream leader (a
new cluster elects its first when all its nodes have started, later a majority is
enough). The topology gets 3 replicas when 3 or more JetStream servers are online, 1
otherwise, and is never lowered by up; an existing one is raised in place when a
node starts on a grown cluster. --replicas N sets the count exactly.`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			if err := up.Validate(); err != nil {
				return err
			}
			if c := configFrom(cmd.Context()); !cmd.Flags().Changed("metrics-addr") && c.MetricsAddr == "" {
				c.MetricsAddr = "127.0.0.1:9464"
			}
			if up.Listen == "" && up.Config == "" {
				up.Listen = localListen(os.Getenv("LARGEFORGE_NATS"))
			}
			return runUp(cmd.Context(), up)
		},
	}
	cmd.Flags().StringVar(&up.DataDir, "data-dir", "./lf-data", "where JetStream (unless --config names a store_dir) and the local copies of datasets and results live")
	cmd.Flags().StringVar(&up.Listen, "listen", "", "client address host:port (default: --config's listen, else where LARGEFORGE_NATS points when that is one local nats:// URL, else nats.conf's 127.0.0.1:4222)")
	cmd.Flags().StringVar(&up.Config, "config", "", "nats-server configuration FILE in place of nats.conf (a cluster node's: server_name, store_dir, cluster routes; see deploy/)")
	addLimitFlag(cmd, &up.Limits)
	cmd.Flags().StringVar(&up.MemoryLimit, "memory-limit", "256MiB", "soft memory limit while the live heap is small, raised to 1.5x the live heap when it grows (KiB, MiB, GiB; 0 or off: none; GOMEMLIMIT or GOGC set: theirs)")
	cmd.Flags().IntVar(&up.Replicas, "replicas", 0, "replicas of each stream and bucket (default: 3 when 3 or more JetStream servers are online, else 1, never lowering)")
	cmd.Flags().StringArrayVar(&up.Models, "model", nil, "serve a model: name=DIR (repeatable)")
	cmd.Flags().StringArrayVar(&up.Adapter, "adapter", nil, "merge a LoRA adapter into a --model at load: name=ADAPTER_DIR (repeatable)")
	addGatewayFlags(cmd, &up.Gateway, "")
	return cmd
}

// upLockFile is the lock file that keeps a data directory to one `up`.
const upLockFile = "largeforge-up.lock"

func runUp(ctx context.Context, up UpConfig) error {
	log := newLogger(ctx)
	dataDir, err := filepath.Abs(up.DataDir)
	if err != nil {
		return err
	}
	if err := os.MkdirAll(dataDir, 0o755); err != nil {
		return err
	}
	// One up per data directory: two would share one JetStream store and
	// write the same dataset and job files.
	lock, err := dirlock.Acquire(dataDir, upLockFile)
	if err != nil {
		var held *dirlock.LockedError
		if errors.As(err, &held) {
			return fmt.Errorf("--data-dir %w (another largeforge up); stop it, or give this one another --data-dir", err)
		}
		return err
	}
	defer lock.Release()
	floor, _ := memlimit.Parse(up.MemoryLimit) // validated
	stopLimit, _ := memlimit.Start(floor)
	defer stopLimit()
	reg, pr := newRegistry(), newProbes()
	if err := serveMetrics(ctx, configFrom(ctx).MetricsAddr, reg, pr, log); err != nil {
		return err
	}
	started := time.Now()
	ec := pipeline.EmbeddedConfig{DataDir: dataDir, Conf: largeforge.NATSConf, Listen: up.Listen}
	if up.Config != "" {
		ec.Conf, ec.ConfFile = nil, up.Config
	}
	srv, err := pipeline.StartEmbedded(ctx, ec, log)
	if err != nil {
		return err
	}
	defer srv.Shutdown()
	topo, err := upTopology(ctx, srv, up.Replicas)
	if err != nil {
		return err
	}
	if topo, err = up.Limits.apply(topo); err != nil {
		return err
	}

	c := configFrom(ctx).NATS
	c.URL, c.Name = srv.ClientURL(), "largeforge-up"
	bus, err := pipeline.Connect(ctx, c, log)
	if err != nil {
		return err
	}
	defer bus.Close()
	if err := applyUpTopology(ctx, bus, topo, log); err != nil {
		return err
	}
	models, err := parseModels(up.Models)
	if err != nil {
		return err
	}
	adapters, err := parseAdapters(up.Adapter)
	if err != nil {
		return err
	}
	for n := range adapters {
		if _, ok := models[n]; !ok {
			return fmt.Errorf("--adapter %s: no --model %s to apply it to", n, n)
		}
	}
	wc := upWorkerConfig(dataDir, models, adapters)
	wc.LiveSince = started
	if err := registerBusMetrics(ctx, bus, reg, allBusMetrics(wc), true, log); err != nil {
		return err
	}
	if up.Gateway.Experts != "" {
		// Each expert not served already gets a worker (or an endpoint proxy).
		if wc.Experts, err = schemas.LoadExperts(up.Gateway.Experts); err != nil {
			return fmt.Errorf("--experts %s: %w", up.Gateway.Experts, err)
		}
	}
	workers, err := startWorkers(ctx, bus, wc, upRoles(wc), log, reg)
	if err != nil {
		return err
	}
	var gwDone <-chan error
	if up.Gateway.HTTP != "" {
		if gwDone, err = startGateway(ctx, bus, up.Gateway, log, reg); err != nil {
			return err
		}
	}
	ulog := logging.Named(log, "largeforge.up")
	ulog.Info().Dict("context", logging.Ctx().Str("nats", srv.ClientURL()).Str("data_dir", dataDir).Str("version", largeforge.Version)).
		Msg("largeforge is up; Ctrl-C to stop")

	pr.addBus(bus)
	err = waitReady(pr, "workers", workers.Wait)
	if gwDone != nil {
		err = errors.Join(err, <-gwDone)
	}
	ulog.Info().Msg("workers drained; stopping")
	return err
}

// upTopology waits until JetStream answers (on a cluster node, a meta
// leader) and returns the topology to apply: with replicas 0, 3 replicas
// when 3 or more JetStream servers are online and 1 otherwise, never
// lowering what exists; else exactly replicas.
func upTopology(ctx context.Context, srv *pipeline.Embedded, replicas int) (pipeline.Topology, error) {
	online, err := srv.WaitJetStream(ctx, 0)
	if err != nil {
		return pipeline.Topology{}, err
	}
	if replicas > 0 {
		return pipeline.DefaultTopology(replicas), nil
	}
	topo := pipeline.DefaultTopology(pipeline.ReplicasFor(online))
	topo.RaiseOnly = true
	return topo, nil
}

// upTopologyTimeout bounds how long up retries applying the topology while
// the cluster does not answer in time (nodes applying it at once, a meta
// leader being elected).
const upTopologyTimeout = 2 * time.Minute

// upTopologyTry bounds one try of applying the topology.
const upTopologyTry = 15 * time.Second

// applyUpTopology applies topo and waits until every stream of it has its
// replicas current, retrying what timed out, or what a cluster still
// forming refused ("no suitable peers for placement, peer offline"), until
// upTopologyTimeout.
func applyUpTopology(ctx context.Context, bus *pipeline.Bus, topo pipeline.Topology, log zerolog.Logger) error {
	ctx, cancel := context.WithTimeout(ctx, upTopologyTimeout)
	defer cancel()
	for {
		// Each try its own deadline: a request lost while several nodes
		// create the same streams at once is asked again.
		try, cancelTry := context.WithTimeout(ctx, upTopologyTry)
		err := bus.ApplyTopology(try, topo)
		if err == nil {
			err = bus.WaitTopology(try, topo)
		}
		cancelTry()
		if err == nil || ctx.Err() != nil || !(errors.Is(err, context.DeadlineExceeded) || errors.Is(err, nats.ErrTimeout) || pipeline.ClusterForming(err)) {
			return err
		}
		log.Warn().Err(err).Msg("the topology did not apply in time; retrying")
		select {
		case <-ctx.Done():
			return err
		case <-time.After(time.Second):
		}
	}
}

// upWorkerConfig is what up's roles run with: models fetched from lf_models
// are kept under <dataDir>/models, the defaults otherwise.
func upWorkerConfig(dataDir string, models, adapters map[string]string) WorkerConfig {
	return WorkerConfig{DataDir: dataDir, Models: models, Adapters: adapters, ModelCache: storage.DirsUnder(dataDir).Models}
}

// localListen returns the host:port of a single nats:// URL on this machine
// (127.0.0.1, localhost, ::1), so that `up` listens where the other commands
// connect; "" for anything else.
func localListen(natsURL string) string {
	u, err := url.Parse(strings.TrimSpace(natsURL))
	if err != nil || u.Scheme != "nats" || u.Port() == "" || strings.Contains(natsURL, ",") {
		return ""
	}
	switch u.Hostname() {
	case "127.0.0.1", "localhost", "::1":
		return u.Host
	}
	return ""
}
