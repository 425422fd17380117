package main

import (
	"context"
	"fmt"
	"time"

	"github.com/spf13/cobra"

	"github.com/largeforge/largeforge/pipeline"
)

func newTopologyCmd() *cobra.Command {
	cmd := &cobra.Command{
		Use:   "topology",
		Short: "The streams, KV buckets and object stores (apply them as admin)",
	}
	var replicas int
	var limits limitsFlag
	apply := &cobra.Command{
		Use:   "apply [--replicas N]",
		Short: "Create or update the streams, KV buckets and object stores, as admin",
		Long: `Create what is missing of LargeForge's topology (the streams LF_DATASETS, LF_REQUESTS,
LF_ROUTES, LF_RESULTS, LF_TRAIN, LF_DLQ, the KV buckets lf_jobs, lf_workers, lf_experts,
lf_datasets, lf_dedupe, lf_claims, lf_files and the object stores lf_models, lf_artifacts) and update
what differs, replica counts included; nothing is deleted. Run it once as admin before the
other roles of deploy/nats-roles.conf start: they only check that what they use exists,
and name what is missing. Without --replicas: 3 replicas when the server is a node of a
cluster, 1 on a single server, never lowering an existing count. --replicas N sets each
to N exactly: --replicas 3 raises a topology created with one replica in place when a
single server grew into a cluster of three (a two-node cluster needs --replicas 1).
Each stream and bucket gets its limit (pipeline.DefaultLimits: a max age where what
it drops is stored elsewhere or a log, a max size elsewhere, which refuses new data
and drops nothing); --limit NAME=72h or NAME=500GiB overrides one. Other admin
commands keep the limits applied. The size limits are reserved against the
server's max_file_store: lower them on a smaller server.`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			if replicas < 0 {
				return fmt.Errorf("--replicas %d: want 1 or more (0: 3 on a cluster, 1 alone)", replicas)
			}
			return applyTopology(cmd.Context(), replicas, &limits)
		},
	}
	apply.Flags().IntVar(&replicas, "replicas", 0, "replicas of each stream and bucket (default: 3 on a cluster, 1 alone, never lowering)")
	addLimitFlag(apply, &limits)
	cmd.AddCommand(apply, newTopologyShowCmd())
	return cmd
}

// applyTopology connects as admin and applies DefaultTopology(replicas);
// replicas 0 is 3 when the server is a cluster node, else 1, raise-only.
func applyTopology(ctx context.Context, replicas int, limits *limitsFlag) error {
	log := newLogger(ctx)
	cctx, cancel := context.WithTimeout(ctx, 30*time.Second)
	defer cancel()
	c := configFrom(ctx).NATS
	c.Name = "largeforge-topology"
	bus, err := pipeline.Connect(cctx, c, log)
	if err != nil {
		return fmt.Errorf("connect to NATS at %s: %w", c.URL, err)
	}
	defer bus.Close()
	topo := pipeline.DefaultTopology(replicas)
	if replicas == 0 {
		topo = pipeline.DefaultTopology(1)
		if bus.Conn().ConnectedClusterName() != "" {
			topo = pipeline.DefaultTopology(3)
		}
		topo.RaiseOnly = true
	}
	if topo, err = limits.apply(topo); err != nil {
		return err
	}
	if err := watchDenied(cctx, bus, func(ctx context.Context) error { return bus.ApplyTopology(ctx, topo) }); err != nil {
		return fmt.Errorf("apply the topology (as admin): %w", err)
	}
	fmt.Printf("topology applied: %d streams, %d kv buckets, %d object stores\n", len(topo.Streams), len(topo.KeyValues), len(topo.ObjectStores))
	return nil
}
