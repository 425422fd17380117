package main

import (
	"fmt"
	"strings"

	"github.com/spf13/cobra"

	"github.com/largeforge/largeforge/pipeline"
)

// limitsFlag is the repeatable --limit NAME=VALUE of topology apply and up:
// pipeline.DefaultLimits with the overrides given.
type limitsFlag struct {
	limits pipeline.Limits
	given  []string
}

func (f *limitsFlag) String() string { return strings.Join(f.given, ",") }
func (f *limitsFlag) Type() string   { return "NAME=VALUE" }

func (f *limitsFlag) Set(v string) error {
	if f.limits == nil {
		f.limits = pipeline.DefaultLimits()
	}
	if err := f.limits.Set(v); err != nil {
		return err
	}
	f.given = append(f.given, v)
	return nil
}

// addLimitFlag adds --limit to cmd.
func addLimitFlag(cmd *cobra.Command, f *limitsFlag) {
	cmd.Flags().Var(f, "limit", pipeline.LimitFlagUsage)
}

// apply returns topo with the limits (the defaults when none was given).
func (f *limitsFlag) apply(topo pipeline.Topology) (pipeline.Topology, error) {
	if f.limits == nil {
		return topo, nil // DefaultTopology carries the defaults
	}
	t, err := topo.WithLimits(f.limits)
	if err != nil {
		return topo, fmt.Errorf("--limit: %w", err)
	}
	return t, nil
}
