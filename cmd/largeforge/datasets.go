package main

import (
	"bufio"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"sort"
	"strings"
	"text/tabwriter"

	"github.com/spf13/cobra"

	"github.com/largeforge/largeforge/dataset"
	"github.com/largeforge/largeforge/pipeline"
	"github.com/largeforge/largeforge/storage"
)

func newDatasetsCmd() *cobra.Command {
	cmd := &cobra.Command{Use: "datasets", Short: "List, describe and export datasets"}
	var asJSON bool
	list := &cobra.Command{
		Use:   "list",
		Short: "List datasets with their format and counts",
		Args:  cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			mans, err := loadManifests(cmd.Context(), "")
			if err != nil {
				return err
			}
			if asJSON {
				return json.NewEncoder(os.Stdout).Encode(mans)
			}
			tw := tabwriter.NewWriter(os.Stdout, 0, 4, 2, ' ', 0)
			fmt.Fprintln(tw, "NAME\tFORMAT\tROWS\tDUPLICATES\tREJECTED\tPARTS\tUPDATED")
			for _, m := range mans {
				fmt.Fprintf(tw, "%s\t%s\t%d\t%d\t%d\t%d\t%s\n", m.Name, m.Format, m.Counts.Rows, m.Counts.Duplicates, m.Counts.Rejected, len(m.Parts), m.UpdatedAt.Format("2006-01-02 15:04:05Z"))
			}
			return tw.Flush()
		},
	}
	show := &cobra.Command{
		Use:   "show NAME",
		Short: "Show a dataset's counts, format, schema, parts, sources and rejects",
		Args:  cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			mans, err := loadManifests(cmd.Context(), args[0])
			if err != nil {
				return err
			}
			m := mans[0]
			if asJSON {
				enc := json.NewEncoder(os.Stdout)
				enc.SetIndent("", "  ")
				return enc.Encode(m)
			}
			printManifest(m)
			return nil
		},
	}
	for _, c := range []*cobra.Command{list, show} {
		c.Flags().BoolVar(&asJSON, "json", false, "print JSON")
	}
	export := &cobra.Command{
		Use:   "export NAME DIR",
		Short: "Write a dataset's Parquet parts, rejects and manifest.json from the bus into DIR",
		Long: `Export reads dataset NAME from the bus, on any machine: its manifest from
lf_datasets and its parts and rejects from the object store lf_artifacts, and
writes them into DIR as the dataset sink's local copy holds them
(part-NNNNN.parquet, rejects-NNNNN.jsonl, manifest.json). Each part is
checked against the manifest's size and SHA-256; manifest.json is written
last, so a directory holding one is complete.`,
		Args: cobra.ExactArgs(2),
		RunE: func(cmd *cobra.Command, args []string) error {
			return exportDataset(cmd.Context(), args[0], args[1])
		},
	}
	var limit int
	rejects := &cobra.Command{
		Use:   "rejects NAME",
		Short: "Print a dataset's rejected records (JSON lines) from the bus",
		Long: `Rejects prints the records ingestion rejected for dataset NAME, one JSON
object a line (id, source, line, field, rule, error, original bytes), from the
rejects-NNNNN.jsonl objects of lf_artifacts, on any machine. --limit N stops
after N lines.`,
		Args: cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			return printRejects(cmd.Context(), args[0], limit)
		},
	}
	rejects.Flags().IntVar(&limit, "limit", 0, "print at most this many rejects (0: all)")
	cmd.AddCommand(list, show, export, rejects)
	return cmd
}

// exportDataset writes dataset name from the bus into dir.
func exportDataset(ctx context.Context, name, dir string) error {
	log := newLogger(ctx)
	bus, err := connect(ctx, log)
	if err != nil {
		return err
	}
	defer bus.Close()
	m, err := manifestOf(ctx, bus, name)
	if err != nil {
		return err
	}
	store, err := storage.OpenObjects(ctx, bus, "")
	if err != nil {
		return err
	}
	if err := dataset.Export(ctx, store, m, dir); err != nil {
		return err
	}
	fmt.Printf("exported %s: %d parts, %d rows to %s\n", name, len(m.Parts), m.Counts.Rows, dir)
	return nil
}

// printRejects prints dataset name's rejects from the bus.
func printRejects(ctx context.Context, name string, limit int) error {
	log := newLogger(ctx)
	bus, err := connect(ctx, log)
	if err != nil {
		return err
	}
	defer bus.Close()
	if _, err := manifestOf(ctx, bus, name); err != nil {
		return err
	}
	store, err := storage.OpenObjects(ctx, bus, "")
	if err != nil {
		return err
	}
	out := bufio.NewWriter(os.Stdout)
	err = dataset.Rejects(ctx, store, name, limit, func(line []byte) error {
		_, err := out.Write(append(line, '\n'))
		return err
	})
	return errors.Join(err, out.Flush())
}

// loadManifests reads manifests from the lf_datasets bucket: all, or the one named.
func loadManifests(ctx context.Context, name string) ([]dataset.Manifest, error) {
	log := newLogger(ctx)
	bus, err := connect(ctx, log)
	if err != nil {
		return nil, err
	}
	defer bus.Close()
	kv, err := bus.KV(ctx, pipeline.BucketDatasets)
	if err != nil {
		return nil, err
	}
	if name != "" {
		m, err := readManifest(ctx, kv, name)
		if err != nil {
			return nil, err
		}
		return []dataset.Manifest{m}, nil
	}
	entries, err := kv.Values(ctx, ">") // one pass, not a read per dataset
	if err != nil {
		return nil, err
	}
	sort.Slice(entries, func(i, j int) bool { return entries[i].Key < entries[j].Key })
	var out []dataset.Manifest
	for _, e := range entries {
		var m dataset.Manifest
		if err := json.Unmarshal(e.Value, &m); err != nil {
			return nil, fmt.Errorf("dataset %s: %w", e.Key, err)
		}
		out = append(out, m)
	}
	return out, nil
}

// manifestOf reads dataset name's manifest from lf_datasets.
func manifestOf(ctx context.Context, bus *pipeline.Bus, name string) (dataset.Manifest, error) {
	kv, err := bus.KV(ctx, pipeline.BucketDatasets)
	if err != nil {
		return dataset.Manifest{}, err
	}
	return readManifest(ctx, kv, name)
}

func readManifest(ctx context.Context, kv *pipeline.KV, name string) (dataset.Manifest, error) {
	e, err := kv.Get(ctx, name)
	if errors.Is(err, pipeline.ErrKeyNotFound) {
		return dataset.Manifest{}, fmt.Errorf("no dataset %q (see `largeforge datasets list`)", name)
	}
	if err != nil {
		return dataset.Manifest{}, err
	}
	var m dataset.Manifest
	if err := json.Unmarshal(e.Value, &m); err != nil {
		return dataset.Manifest{}, fmt.Errorf("dataset %s: %w", name, err)
	}
	return m, nil
}

func printManifest(m dataset.Manifest) {
	fmt.Printf("dataset   %s\nformat    %s\nrows      %d\nduplicates %d (records already in the dataset, skipped)\nrejected  %d", m.Name, m.Format, m.Counts.Rows, m.Counts.Duplicates, m.Counts.Rejected)
	if len(m.Counts.RejectedByRule) > 0 {
		var parts []string
		for r, n := range m.Counts.RejectedByRule {
			parts = append(parts, fmt.Sprintf("%s: %d", r, n))
		}
		sort.Strings(parts)
		fmt.Printf(" (%s)", strings.Join(parts, ", "))
	}
	fmt.Printf("\ncreated   %s\nupdated   %s\n", m.CreatedAt.Format("2006-01-02 15:04:05Z"), m.UpdatedAt.Format("2006-01-02 15:04:05Z"))
	fmt.Println("schema")
	for _, f := range m.Schema {
		fmt.Printf("  %-14s %s\n", f.Name, f.Type)
	}
	tw := tabwriter.NewWriter(os.Stdout, 0, 4, 2, ' ', 0)
	fmt.Fprintln(tw, "parts\tROWS\tBYTES\tSHA256")
	for _, p := range m.Parts {
		fmt.Fprintf(tw, "  %s\t%d\t%d\t%s\n", p.File, p.Rows, p.Bytes, p.SHA256)
	}
	fmt.Fprintln(tw, "sources\tRUN\tSHARDS\tROWS\tDUPLICATES\tREJECTED")
	for _, s := range m.Sources {
		fmt.Fprintf(tw, "  %s\t%s\t%d\t%d\t%d\t%d\n", s.Source, s.Run, s.Shards, s.Rows, s.Duplicates, s.Rejected)
	}
	tw.Flush()
	if m.Counts.Rejected > 0 {
		fmt.Printf("rejects   %srejects-*.jsonl in lf_artifacts (largeforge datasets export %s DIR)\n", storage.Dataset(m.Name), m.Name)
	}
}
