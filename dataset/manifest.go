package dataset

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"maps"
	"os"
	"path/filepath"
	"slices"
	"sort"
	"time"

	"github.com/largeforge/largeforge/schemas"
	"github.com/largeforge/largeforge/storage"
)

// ManifestFile is the manifest's file name inside a dataset.
const ManifestFile = storage.ManifestFile

// RejectsFile is the file of rejected records inside a dataset.
const RejectsFile = storage.RejectsFile

// Manifest describes a dataset: its format and schema, counts, parts and sources.
type Manifest struct {
	Name      string         `json:"name"`
	Format    schemas.Format `json:"format"`
	Schema    []Field        `json:"schema"`
	Counts    Counts         `json:"counts"`
	Parts     []PartInfo     `json:"parts"`
	Sources   []Source       `json:"sources"`
	CreatedAt time.Time      `json:"created_at"`
	UpdatedAt time.Time      `json:"updated_at"`
}

// Field is one column of the dataset's schema.
type Field struct {
	Name string `json:"name"`
	Type string `json:"type"`
}

// Counts are the dataset's totals.
type Counts struct {
	Rows           int64            `json:"rows"`       // records persisted in parts
	Duplicates     int64            `json:"duplicates"` // records dropped because their id was already persisted
	Rejected       int64            `json:"rejected"`   // records that failed validation
	RejectedByRule map[string]int64 `json:"rejected_by_rule,omitempty"`
}

// Source is what one ingestion run (a file, stdin, or raw records from the bus) contributed.
type Source struct {
	Source     string    `json:"source"`
	Run        string    `json:"run"`
	Shards     int64     `json:"shards"`
	Rows       int64     `json:"rows"`
	Duplicates int64     `json:"duplicates"`
	Rejected   int64     `json:"rejected"`
	FirstSeen  time.Time `json:"first_seen"`
	LastSeen   time.Time `json:"last_seen"`
}

// NewManifest returns an empty manifest of a dataset of format f.
func NewManifest(name string, f schemas.Format, now time.Time) Manifest {
	m := Manifest{Name: name, Format: f, CreatedAt: now.UTC(), UpdatedAt: now.UTC()}
	for _, fl := range schemas.ArrowSchema(f).Fields() {
		m.Schema = append(m.Schema, Field{Name: fl.Name, Type: fl.Type.String()})
	}
	return m
}

// Source returns the entry of a run, adding it when new.
func (m *Manifest) Source(source, run string, now time.Time) *Source {
	for i := range m.Sources {
		if m.Sources[i].Run == run && m.Sources[i].Source == source {
			m.Sources[i].LastSeen = now.UTC()
			return &m.Sources[i]
		}
	}
	m.Sources = append(m.Sources, Source{Source: source, Run: run, FirstSeen: now.UTC(), LastSeen: now.UTC()})
	return &m.Sources[len(m.Sources)-1]
}

// FindRun returns the source entry of a run id, or nil.
func (m *Manifest) FindRun(run string) *Source {
	for i := range m.Sources {
		if m.Sources[i].Run == run {
			return &m.Sources[i]
		}
	}
	return nil
}

// AddReject counts one rejected record under its rule.
func (m *Manifest) AddReject(rule string) {
	m.Counts.Rejected++
	if m.Counts.RejectedByRule == nil {
		m.Counts.RejectedByRule = map[string]int64{}
	}
	m.Counts.RejectedByRule[rule]++
}

// ReadManifest reads the manifest file in dir; a missing one gives an error
// wrapping os.ErrNotExist.
func ReadManifest(dir string) (Manifest, error) {
	data, err := os.ReadFile(filepath.Join(dir, ManifestFile))
	if err != nil {
		return Manifest{}, err
	}
	return decodeManifest(data, dir)
}

// LoadManifest reads dataset name's manifest from store; a missing one
// gives an error for which IsNotExist is true.
func LoadManifest(ctx context.Context, store storage.Store, name string) (Manifest, error) {
	r, _, err := store.Open(ctx, storage.DatasetManifest(name))
	if err != nil {
		return Manifest{}, err
	}
	defer r.Close()
	data, err := io.ReadAll(r)
	if err != nil {
		return Manifest{}, fmt.Errorf("read manifest %s: %w", name, err)
	}
	return decodeManifest(data, name)
}

func decodeManifest(data []byte, name string) (Manifest, error) {
	var m Manifest
	if err := json.Unmarshal(data, &m); err != nil {
		return m, fmt.Errorf("read manifest %s: %w", name, err)
	}
	return m, nil
}

// SaveManifest stores m as its dataset's manifest, replacing the old one.
func SaveManifest(ctx context.Context, store storage.Store, m Manifest) error {
	data, err := json.MarshalIndent(m, "", "  ")
	if err != nil {
		return err
	}
	_, err = store.Put(ctx, storage.DatasetManifest(m.Name), func(w io.Writer) error {
		_, err := w.Write(append(data, '\n'))
		return err
	})
	return err
}

// ListParts returns the part files present in dir, sorted by number.
func ListParts(dir string) ([]string, error) {
	matches, err := filepath.Glob(filepath.Join(dir, "part-*.parquet"))
	if err != nil {
		return nil, err
	}
	sort.Strings(matches)
	return matches, nil
}

// IsNotExist reports whether err says a file or stored object is missing.
func IsNotExist(err error) bool {
	return errors.Is(err, os.ErrNotExist) || errors.Is(err, storage.ErrNotFound)
}

// MergeManifest applies to cur (the manifest as stored now, written by any
// number of sinks) the changes one sink made since it read base: mine is
// base with its changes. Counts and source entries add their differences,
// parts not in cur are added (rows are the sum of the parts), and cur's
// creation time, format and schema win when set.
func MergeManifest(cur, base, mine Manifest) Manifest {
	out := copyOf(cur)
	if out.Name == "" {
		out.Name = mine.Name
	}
	if out.Format == "" {
		out.Format, out.Schema = mine.Format, mine.Schema
	}
	if out.CreatedAt.IsZero() || (!mine.CreatedAt.IsZero() && mine.CreatedAt.Before(out.CreatedAt)) {
		out.CreatedAt = mine.CreatedAt
	}
	if mine.UpdatedAt.After(out.UpdatedAt) {
		out.UpdatedAt = mine.UpdatedAt
	}
	out.Counts.Duplicates += mine.Counts.Duplicates - base.Counts.Duplicates
	out.Counts.Rejected += mine.Counts.Rejected - base.Counts.Rejected
	for rule, n := range mine.Counts.RejectedByRule {
		if d := n - base.Counts.RejectedByRule[rule]; d != 0 {
			if out.Counts.RejectedByRule == nil {
				out.Counts.RejectedByRule = map[string]int64{}
			}
			out.Counts.RejectedByRule[rule] += d
		}
	}
	have := map[string]bool{}
	for _, p := range out.Parts {
		have[p.File] = true
	}
	for _, p := range mine.Parts {
		if !have[p.File] {
			out.Parts = append(out.Parts, p)
			have[p.File] = true
		}
	}
	sort.SliceStable(out.Parts, func(i, j int) bool { return out.Parts[i].File < out.Parts[j].File })
	out.Counts.Rows = 0
	for _, p := range out.Parts {
		out.Counts.Rows += p.Rows
	}
	for _, m := range mine.Sources {
		var b Source
		for _, x := range base.Sources {
			if x.Source == m.Source && x.Run == m.Run {
				b = x
				break
			}
		}
		o := out.Source(m.Source, m.Run, m.LastSeen)
		o.Shards += m.Shards - b.Shards
		o.Rows += m.Rows - b.Rows
		o.Duplicates += m.Duplicates - b.Duplicates
		o.Rejected += m.Rejected - b.Rejected
		if o.FirstSeen.IsZero() || m.FirstSeen.Before(o.FirstSeen) {
			o.FirstSeen = m.FirstSeen
		}
	}
	return out
}

// copyOf is m with slices and maps of its own.
func copyOf(m Manifest) Manifest {
	m.Schema = slices.Clone(m.Schema)
	m.Parts = slices.Clone(m.Parts)
	m.Sources = slices.Clone(m.Sources)
	m.Counts.RejectedByRule = maps.Clone(m.Counts.RejectedByRule)
	return m
}
