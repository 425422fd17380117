package main

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"os"
	"sort"
	"strings"
	"time"

	"github.com/schollz/progressbar/v3"
	"github.com/spf13/cobra"

	"github.com/largeforge/largeforge/dataset"
	"github.com/largeforge/largeforge/logging"
	"github.com/largeforge/largeforge/producers/ingest"
)

func newIngestCmd() *cobra.Command {
	ic := ingest.DefaultConfig()
	var asJSON bool
	var progress string
	cmd := &cobra.Command{
		Use:   "ingest --dataset NAME [--format auto|alpaca|sharegpt|dpo] FILE",
		Short: "Validate a file of training records (.jsonl, .json array, .parquet, or - for stdin) and add it to a dataset",
		Long: `Read FILE record by record, validate each against the data dictionary's schema,
and publish the accepted records in shards to lf.data.<dataset>.shard; the dataset sink
of ` + "`largeforge up`" + ` writes them to Parquet parts. Records are identified by the sha256 of
their canonical JSON, so ingesting a file twice adds nothing. Rejected records go to the
dead-letter stream and are stored as the dataset's rejects-NNNNN.jsonl objects in lf_artifacts
(mirrored by up to <data-dir>/datasets/<dataset>/; ` + "`largeforge datasets rejects NAME`" + ` prints
them on any machine) with their line, field, rule and original bytes: besides the schema's rules, "format" for a record of
another format than the dataset's (a dataset holds one), and "maxRecordBytes" for one
too large to travel in a shard under the server's max_payload. The exit status is
non-zero when the run failed, when no row could join the dataset (an empty file, or
every row rejected; rows the dataset already holds are not a failure), or when rejects
exceed --max-rejects.`,
		Args: cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			if err := ic.Validate(); err != nil {
				return err
			}
			return runIngest(cmd.Context(), ic, args[0], asJSON, progress)
		},
	}
	f := cmd.Flags()
	f.StringVar(&ic.Dataset, "dataset", "", "dataset name (letters, digits, - and _)")
	f.StringVar(&ic.Format, "format", ic.Format, "record format: auto, alpaca, sharegpt or dpo")
	f.Int64Var(&ic.MaxRejects, "max-rejects", ic.MaxRejects, "exit non-zero when more records than this are rejected (-1: unlimited)")
	f.IntVar(&ic.MaxLineBytes, "max-line-bytes", ic.MaxLineBytes, "longest JSONL line accepted; longer lines are rejected without being held in memory")
	f.DurationVar(&ic.Wait, "wait", ic.Wait, "wait this long for the dataset sink to confirm the records are in Parquet (0: don't wait)")
	f.BoolVar(&asJSON, "json", false, "print the summary as JSON")
	f.StringVar(&progress, "progress", "auto", "progress bar: auto (on a terminal), on, off")
	_ = cmd.MarkFlagRequired("dataset")
	return cmd
}

func runIngest(ctx context.Context, ic ingest.Config, source string, asJSON bool, progress string) error {
	log := newLogger(ctx)
	reg, pr := newRegistry(), newProbes()
	if err := serveMetrics(ctx, configFrom(ctx).MetricsAddr, reg, pr, log); err != nil {
		return err
	}
	metrics, err := dataset.NewMetrics(reg)
	if err != nil {
		return err
	}
	bus, err := connect(ctx, log)
	if err != nil {
		return err
	}
	defer bus.Close()
	pr.addBus(bus)

	opts := []ingest.Option{ingest.WithMetrics(metrics)}
	var bar *progressbar.ProgressBar
	if progress == "on" || (progress == "auto" && isTerminal(os.Stderr)) {
		size := int64(-1)
		if st, err := os.Stat(source); err == nil && source != "-" {
			size = st.Size()
		}
		bar = progressbar.NewOptions64(size,
			progressbar.OptionSetWriter(os.Stderr),
			progressbar.OptionShowBytes(true),
			progressbar.OptionSetDescription("ingest "+ic.Dataset),
			progressbar.OptionThrottle(200*time.Millisecond),
			progressbar.OptionClearOnFinish(),
		)
		start := time.Now()
		opts = append(opts, ingest.WithProgress(func(p ingest.Progress) {
			rate := float64(p.Rows) / time.Since(start).Seconds()
			bar.Describe(fmt.Sprintf("ingest %s: %d rows (%.0f/s) accepted %d rejected %d duplicates %d", ic.Dataset, p.Rows, rate, p.Accepted, p.Rejected, p.Duplicates))
			_ = bar.Set64(p.Bytes)
		}))
	}
	in, err := ingest.New(bus, ic, logging.Named(log, "largeforge.ingest"), opts...)
	if err != nil {
		return err
	}
	sum, runErr := in.Ingest(ctx, source, os.Stdin)
	if bar != nil {
		_ = bar.Finish()
	}
	if asJSON {
		enc := json.NewEncoder(os.Stdout)
		enc.SetIndent("", "  ")
		_ = enc.Encode(sum)
	} else {
		printIngestSummary(os.Stdout, sum)
	}
	return runErr
}

func printIngestSummary(w io.Writer, s ingest.Summary) {
	how := "given"
	if s.FormatDetected {
		how = "detected"
	}
	fmt.Fprintf(w, "dataset %s  source %s  format %s (%s)  run %s\n", s.Dataset, s.Source, s.Format, how, s.Run)
	fmt.Fprintf(w, "  rows read   %d in %.2fs (%.0f rows/s, %.1f MB/s)\n", s.Rows, s.Seconds, s.RowsPerSecond(), float64(s.Bytes)/1e6/max(s.Seconds, 1e-9))
	fmt.Fprintf(w, "  accepted    %d in %d shards\n", s.Accepted, s.Shards)
	fmt.Fprintf(w, "  rejected    %d", s.Rejected)
	if len(s.RejectedByRule) > 0 {
		var parts []string
		for r, n := range s.RejectedByRule {
			parts = append(parts, fmt.Sprintf("%s: %d", r, n))
		}
		sort.Strings(parts)
		fmt.Fprintf(w, " (%s)", strings.Join(parts, ", "))
	}
	if s.Rejected > 0 {
		fmt.Fprintf(w, "; see largeforge datasets rejects %s", s.Dataset)
	}
	fmt.Fprintln(w)
	if s.Confirmed {
		fmt.Fprintf(w, "  persisted   %d new records in Parquet, %d duplicates skipped\n", s.Persisted, s.Duplicates)
		if s.AlreadyOnBus > 0 {
			fmt.Fprintf(w, "              %d of %d shards were already on the bus (the same records were sent in the last few minutes)\n", s.AlreadyOnBus, s.Shards)
		}
	} else {
		fmt.Fprintln(w, "  persisted   not confirmed (use --wait to wait for the dataset sink)")
	}
}

func isTerminal(f *os.File) bool {
	st, err := f.Stat()
	return err == nil && st.Mode()&os.ModeCharDevice != 0
}
