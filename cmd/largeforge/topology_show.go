package main

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"strconv"
	"strings"
	"text/tabwriter"
	"time"

	"github.com/nats-io/nats.go/jetstream"
	"github.com/spf13/cobra"

	"github.com/largeforge/largeforge/pipeline"
)

// topologyRow is one stream, KV bucket or object store as the server holds
// it: its limits in effect and what it holds.
type topologyRow struct {
	Kind      string  `json:"kind"` // stream, kv or object store
	Name      string  `json:"name"` // the bucket's name for a KV bucket or object store
	Stream    string  `json:"stream"`
	Missing   bool    `json:"missing,omitempty"`
	Replicas  int     `json:"replicas,omitempty"`
	MaxAgeS   float64 `json:"max_age_seconds"` // 0: none
	MaxBytes  int64   `json:"max_bytes"`       // 0: none
	Bytes     uint64  `json:"bytes"`
	Messages  uint64  `json:"messages"`
	Retention string  `json:"retention,omitempty"`
}

func newTopologyShowCmd() *cobra.Command {
	var asJSON bool
	cmd := &cobra.Command{
		Use:   "show [--json]",
		Short: "Show each stream, KV bucket and object store with its replicas, limits and size",
		Long: `Show LargeForge's streams, KV buckets and object stores as the server holds them: the
replicas, the max age and max bytes in effect (none: no such limit; set them with
largeforge topology apply --limit) and the bytes and messages each holds now. One missing
is shown as missing (largeforge topology apply creates it) and makes the exit status
non-zero. Any role that may read the stream info of all of them runs it (admin does).`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			rows, err := readTopology(cmd.Context())
			if err != nil {
				return err
			}
			out := cmd.OutOrStdout()
			if asJSON {
				enc := json.NewEncoder(out)
				enc.SetIndent("", "  ")
				err = enc.Encode(rows)
			} else {
				err = writeTopology(out, rows)
			}
			if err != nil {
				return err
			}
			for _, r := range rows {
				if r.Missing {
					return fmt.Errorf("%s %s is missing: run largeforge topology apply (as admin)", r.Kind, r.Name)
				}
			}
			return nil
		},
	}
	cmd.Flags().BoolVar(&asJSON, "json", false, "print JSON")
	return cmd
}

// readTopology reads the info of every stream, KV bucket and object store of
// the default topology.
func readTopology(ctx context.Context) ([]topologyRow, error) {
	c := configFrom(ctx).NATS
	c.Name = "largeforge-topology"
	cctx, cancel := context.WithTimeout(ctx, 30*time.Second)
	defer cancel()
	bus, err := pipeline.Connect(cctx, c, newLogger(ctx))
	if err != nil {
		return nil, fmt.Errorf("connect to NATS at %s: %w", c.URL, err)
	}
	defer bus.Close()
	topo := pipeline.DefaultTopology(1)
	var rows []topologyRow
	for _, s := range topo.Streams {
		rows = append(rows, topologyRow{Kind: "stream", Name: s.Name, Stream: s.Name})
	}
	for _, kv := range topo.KeyValues {
		rows = append(rows, topologyRow{Kind: "kv", Name: kv.Bucket, Stream: "KV_" + kv.Bucket})
	}
	for _, o := range topo.ObjectStores {
		rows = append(rows, topologyRow{Kind: "object store", Name: o.Bucket, Stream: "OBJ_" + o.Bucket})
	}
	js := bus.JetStream()
	for i := range rows {
		r := &rows[i]
		s, err := js.Stream(cctx, r.Stream)
		if errors.Is(err, jetstream.ErrStreamNotFound) {
			r.Missing = true
			continue
		}
		if err != nil {
			return nil, fmt.Errorf("%s %s: %w", r.Kind, r.Name, err)
		}
		info := s.CachedInfo()
		r.Replicas, r.MaxAgeS, r.MaxBytes = info.Config.Replicas, info.Config.MaxAge.Seconds(), max(info.Config.MaxBytes, 0)
		r.Bytes, r.Messages, r.Retention = info.State.Bytes, info.State.Msgs, info.Config.Retention.String()
	}
	return rows, nil
}

// writeTopology prints rows as a table.
func writeTopology(w io.Writer, rows []topologyRow) error {
	tw := tabwriter.NewWriter(w, 0, 4, 2, ' ', 0)
	fmt.Fprintln(tw, "KIND\tNAME\tREPLICAS\tMAX AGE\tMAX BYTES\tBYTES\tMESSAGES\tUSED")
	for _, r := range rows {
		if r.Missing {
			fmt.Fprintf(tw, "%s\t%s\tmissing (largeforge topology apply)\t\t\t\t\t\n", r.Kind, r.Name)
			continue
		}
		age, limit, used := "none", "none", "-"
		if r.MaxAgeS > 0 {
			age = ageText(time.Duration(r.MaxAgeS * float64(time.Second)))
		}
		if r.MaxBytes > 0 {
			limit = byteSize(uint64(r.MaxBytes))
			used = strconv.FormatFloat(100*float64(r.Bytes)/float64(r.MaxBytes), 'f', 1, 64) + "%"
		}
		fmt.Fprintf(tw, "%s\t%s\t%d\t%s\t%s\t%s\t%d\t%s\n", r.Kind, r.Name, r.Replicas, age, limit, byteSize(r.Bytes), r.Messages, used)
	}
	return tw.Flush()
}

// byteSize is n in the largest binary unit it reaches (4 GiB, 1.5 MiB).
func byteSize(n uint64) string {
	units := []string{"B", "KiB", "MiB", "GiB", "TiB"}
	v, u := float64(n), 0
	for v >= 1024 && u < len(units)-1 {
		v /= 1024
		u++
	}
	if u == 0 {
		return strconv.FormatUint(n, 10) + " B"
	}
	return strings.TrimSuffix(strconv.FormatFloat(v, 'f', 1, 64), ".0") + " " + units[u]
}

// ageText is d in days when whole days (7d), else as Go writes it.
func ageText(d time.Duration) string {
	if d%(24*time.Hour) == 0 {
		return strconv.Itoa(int(d/(24*time.Hour))) + "d"
	}
	return d.String()
}
