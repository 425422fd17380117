package datasetsink_test

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/largeforge/largeforge/pipeline/pipelinetest"
)

// A publish on LF_DATASETS to a subject no stage handles is dead-lettered
// with its reason and original bytes, and becomes no dataset (not one named
// "unknown", nor one named after a token); a good record beside them lands.
func TestStraySubjectsAreDeadLettered(t *testing.T) {
	s := startStack(t) // StartStore runs the stray consumer beside the sink

	rec := []byte(`{"instruction":"i","output":"o"}`)
	strays := []string{"lf.data.a.b.raw", "lf.data.x.y", "lf.data.x", "lf.data.*.raw", "lf.data.>.shard", "lf.data.unknown.raw.x"}
	for i, subj := range strays {
		if _, err := s.bus.Publish(context.Background(), subj, rec, fmt.Sprintf("stray-%d", i), nil); err != nil {
			t.Fatalf("publish %s: %v", subj, err)
		}
	}
	if _, err := s.bus.Publish(context.Background(), "lf.data.fine.raw", rec, "good", nil); err != nil {
		t.Fatal(err)
	}
	pipelinetest.CheckFor(t, 15*time.Second, 50*time.Millisecond, func() error {
		recs := pipelinetest.DLQRecords(t, s.bus, "lf.dlq.stray.>")
		if len(recs) != len(strays) {
			return fmt.Errorf("%d dead letters, want %d", len(recs), len(strays))
		}
		for i, r := range recs {
			if r.Subject != strays[i] || r.Reason != "stray subject" || string(r.Data) != string(rec) {
				t.Fatalf("dead letter %d: %s %q %q", i, r.Subject, r.Reason, r.Data)
			}
		}
		return nil
	})
	pipelinetest.CheckFor(t, 15*time.Second, 50*time.Millisecond, func() error {
		if n := len(rows(t, filepath.Join(s.dataDir, "datasets", "fine"))); n != 1 {
			return fmt.Errorf("%d rows in fine", n)
		}
		return nil
	})
	entries, err := os.ReadDir(filepath.Join(s.dataDir, "datasets"))
	if err != nil {
		t.Fatal(err)
	}
	for _, e := range entries {
		if e.Name() != "fine" {
			t.Errorf("dataset %q made from a stray subject", e.Name())
		}
	}
}
