package main

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"os"
	"strconv"
	"strings"
	"text/tabwriter"

	"github.com/spf13/cobra"

	"github.com/largeforge/largeforge/pipeline"
	"github.com/largeforge/largeforge/routing"
	"github.com/largeforge/largeforge/schemas"
)

// ExpertRow is one line of `largeforge experts list`.
type ExpertRow struct {
	schemas.ExpertConfig
	Source      string `json:"source"`       // "file", "kv" (lf_experts), or "file+kv" (the bucket's entry replaces the file's)
	LiveWorkers int    `json:"live_workers"` // -1: unknown (no bus)
}

func newExpertsCmd() *cobra.Command {
	cmd := &cobra.Command{Use: "experts", Short: "The experts that model \"auto\" routes to"}
	cmd.AddCommand(newExpertsListCmd())
	return cmd
}

func newExpertsListCmd() *cobra.Command {
	var file string
	var asJSON, offline bool
	cmd := &cobra.Command{
		Use:   "list [--experts FILE]",
		Short: "List the experts (name, model, priority, live workers, keywords, domains)",
		Long: `List the experts of --experts FILE and of the lf_experts bucket (an entry of the bucket
replaces the file's expert of the same name, as in the gateway), with the number of
live infer workers serving each (from lf_workers). --offline lists the file alone
without connecting to NATS.`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			if offline && file == "" {
				return fmt.Errorf("--offline needs --experts FILE")
			}
			rows, err := listExperts(cmd.Context(), file, offline)
			if err != nil {
				return err
			}
			if asJSON {
				enc := json.NewEncoder(cmd.OutOrStdout())
				enc.SetIndent("", "  ")
				return enc.Encode(rows)
			}
			return printExperts(cmd.OutOrStdout(), rows)
		},
	}
	cmd.Flags().StringVar(&file, "experts", "", "experts file (YAML or JSON; largeforge samples writes an example)")
	cmd.Flags().BoolVar(&asJSON, "json", false, "print JSON instead of a table")
	cmd.Flags().BoolVar(&offline, "offline", false, "do not connect to NATS: the file's experts only")
	return cmd
}

// listExperts merges the file's experts with lf_experts and counts live
// workers.
func listExperts(ctx context.Context, file string, offline bool) ([]ExpertRow, error) {
	var fromFile []schemas.ExpertConfig
	if file != "" {
		var err error
		if fromFile, err = schemas.LoadExperts(file); err != nil {
			return nil, fmt.Errorf("--experts %s: %w", file, err)
		}
	}
	if offline {
		rows := make([]ExpertRow, 0, len(fromFile))
		for _, e := range routing.MergeExperts(fromFile, nil) {
			rows = append(rows, ExpertRow{ExpertConfig: e, Source: "file", LiveWorkers: -1})
		}
		return rows, nil
	}
	log := newLogger(ctx)
	bus, err := connect(ctx, log)
	if err != nil {
		return nil, err
	}
	defer bus.Close()
	return expertRows(ctx, bus, fromFile, os.Stderr)
}

// expertRows lists fromFile and the lf_experts bucket with live workers;
// skipped bucket entries are reported on warn.
func expertRows(ctx context.Context, bus *pipeline.Bus, fromFile []schemas.ExpertConfig, warn io.Writer) ([]ExpertRow, error) {
	ekv, err := bus.KV(ctx, pipeline.BucketExperts)
	if err != nil {
		return nil, err
	}
	fromKV, skipped, err := routing.ReadExperts(ctx, ekv)
	if err != nil {
		return nil, err
	}
	for _, e := range skipped {
		fmt.Fprintf(warn, "skipped: %v\n", e)
	}
	wkv, err := bus.KV(ctx, pipeline.BucketWorkers)
	if err != nil {
		return nil, err
	}
	live, err := routing.LiveWorkers(ctx, wkv)
	if err != nil {
		return nil, err
	}
	src := map[string]string{}
	for _, e := range fromFile {
		src[e.Name] = "file"
	}
	for _, e := range fromKV {
		if src[e.Name] == "file" {
			src[e.Name] = "file+kv"
		} else {
			src[e.Name] = "kv"
		}
	}
	var rows []ExpertRow
	for _, e := range routing.MergeExperts(fromFile, fromKV) {
		rows = append(rows, ExpertRow{ExpertConfig: e, Source: src[e.Name], LiveWorkers: live[e.Name]})
	}
	return rows, nil
}

func printExperts(w io.Writer, rows []ExpertRow) error {
	if len(rows) == 0 {
		_, err := fmt.Fprintln(w, "no experts (give --experts FILE, or put experts in the lf_experts bucket)")
		return err
	}
	tw := tabwriter.NewWriter(w, 0, 4, 2, ' ', 0)
	fmt.Fprintln(tw, "NAME\tMODEL\tPRIORITY\tLIVE\tSOURCE\tKEYWORDS\tDOMAINS")
	dash := func(s []string) string {
		if len(s) == 0 {
			return "-"
		}
		return strings.Join(s, ",")
	}
	for _, r := range rows {
		liveStr := strconv.Itoa(r.LiveWorkers)
		if r.LiveWorkers < 0 {
			liveStr = "?"
		}
		fmt.Fprintf(tw, "%s\t%s\t%d\t%s\t%s\t%s\t%s\n", r.Name, r.ModelPath, r.Priority, liveStr, r.Source, dash(r.Keywords), dash(r.Domains))
	}
	return tw.Flush()
}
