package main

import (
	"context"
	"fmt"
	"slices"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/rs/zerolog"

	"github.com/largeforge/largeforge/consumers/infer"
	"github.com/largeforge/largeforge/pipeline"
)

// validateServePushed checks worker --serve-pushed: "all" alone, or names
// of lf_models, with a --model-cache to fetch them into.
func validateServePushed(c WorkerConfig) error {
	if len(c.ServePushed) == 0 {
		return nil
	}
	if c.ModelCache == "" {
		return fmt.Errorf("--serve-pushed needs --model-cache")
	}
	if slices.Contains(c.ServePushed, "all") && len(c.ServePushed) > 1 {
		return fmt.Errorf("--serve-pushed all serves every pushed model: give it alone, or names")
	}
	for _, n := range c.ServePushed {
		if err := pipeline.ValidToken(n); err != nil {
			return fmt.Errorf("--serve-pushed %s: %w", n, err)
		}
	}
	return nil
}

// startServePushed starts serving the pushed models of --serve-pushed (nil
// without it).
func startServePushed(ctx context.Context, bus *pipeline.Bus, wc WorkerConfig, icfg infer.Config, log zerolog.Logger, reg prometheus.Registerer) (*infer.Pushed, error) {
	if len(wc.ServePushed) == 0 {
		return nil, nil
	}
	pc := infer.PushedConfig{Cache: wc.ModelCache}
	if slices.Equal(wc.ServePushed, []string{"all"}) {
		pc.All = true
	} else {
		pc.Names = wc.ServePushed
	}
	return infer.ServePushed(ctx, bus, pc, icfg, log, reg)
}
