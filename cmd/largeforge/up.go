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

	"github.com/spf13/cobra"

	"github.com/largeforge/largeforge"
	"github.com/largeforge/largeforge/internal/dirlock"
	"github.com/largeforge/largeforge/logging"
	"github.com/largeforge/largeforge/pipeline"
	"github.com/largeforge/largeforge/schemas"
	"github.com/largeforge/largeforge/storage"
)

// UpConfig is what `largeforge up` runs with.
type UpConfig struct {
	DataDir string
	Listen  string
	Models  []string     // name=DIR: models the embedded infer worker serves
	Adapter []string     // name=DIR: LoRA adapters merged into those models at load
	Gateway GatewayFlags // HTTP "" : no gateway
}

// Validate checks the flags of up.
func (c UpConfig) Validate() error {
	if c.DataDir == "" {
		return fmt.Errorf("--data-dir is required")
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
the same directory exits at once, naming the pid of the first.`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			if err := up.Validate(); err != nil {
				return err
			}
			if c := configFrom(cmd.Context()); !cmd.Flags().Changed("metrics-addr") && c.MetricsAddr == "" {
				c.MetricsAddr = "127.0.0.1:9464"
			}
			if up.Listen == "" {
				up.Listen = localListen(os.Getenv("LARGEFORGE_NATS"))
			}
			return runUp(cmd.Context(), up)
		},
	}
	cmd.Flags().StringVar(&up.DataDir, "data-dir", "./lf-data", "where JetStream, datasets and results live")
	cmd.Flags().StringVar(&up.Listen, "listen", "", "client address host:port (default: where LARGEFORGE_NATS points when that is one local nats:// URL, else nats.conf's 127.0.0.1:4222)")
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
	reg := newRegistry()
	if err := serveMetrics(ctx, configFrom(ctx).MetricsAddr, reg, log); err != nil {
		return err
	}
	started := time.Now()
	srv, err := pipeline.StartEmbedded(ctx, pipeline.EmbeddedConfig{DataDir: dataDir, Conf: largeforge.NATSConf, Listen: up.Listen}, log)
	if err != nil {
		return err
	}
	defer srv.Shutdown()

	c := configFrom(ctx).NATS
	c.URL, c.Name = srv.ClientURL(), "largeforge-up"
	bus, err := pipeline.Connect(ctx, c, log)
	if err != nil {
		return err
	}
	defer bus.Close()
	if err := bus.EnsureTopology(ctx); err != nil {
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

	err = workers.Wait()
	if gwDone != nil {
		err = errors.Join(err, <-gwDone)
	}
	ulog.Info().Msg("workers drained; stopping")
	return err
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
