package datasetsink_test

import (
	"context"
	"fmt"
	"path/filepath"
	"sort"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/largeforge/largeforge/dataset"
	"github.com/largeforge/largeforge/pipeline"
	"github.com/largeforge/largeforge/pipeline/pipelinetest"
	"github.com/largeforge/largeforge/schemas"
)

// publishShard publishes hand-made rows with the ids given, as anyone who may
// publish on lf.data.<ds>.shard could.
func (s *stack) publishShard(t *testing.T, ds string, f schemas.Format, recs []schemas.Record, ids []string) {
	t.Helper()
	data, err := dataset.EncodeShard(f, recs, ids)
	if err != nil {
		t.Fatal(err)
	}
	subj, err := pipeline.DatasetShardSubject(ds)
	if err != nil {
		t.Fatal(err)
	}
	hdr := pipeline.Header{}
	hdr.Set(schemas.HeaderFormat, string(f))
	hdr.Set(schemas.HeaderSource, "forger")
	hdr.Set(schemas.HeaderRun, "forged-run")
	hdr.Set(schemas.HeaderRows, strconv.Itoa(len(recs)))
	if _, err := s.bus.Publish(context.Background(), subj, data, dataset.ShardID(ds, ids), hdr); err != nil {
		t.Fatal(err)
	}
}

func alpaca(instruction, output string) schemas.Record {
	return schemas.Record{Format: schemas.FormatAlpaca, Alpaca: schemas.Alpaca{Instruction: instruction, Output: output}}
}

// storedByID reads a dataset's Parquet parts back: each record by its id.
func storedByID(t *testing.T, dir string) map[string]schemas.Record {
	t.Helper()
	parts, err := dataset.ListParts(dir)
	if err != nil {
		t.Fatal(err)
	}
	out := map[string]schemas.Record{}
	for _, p := range parts {
		_, recs, ids, err := dataset.ReadPart(p)
		if err != nil {
			t.Fatal(err)
		}
		for i, id := range ids {
			if _, dup := out[id]; dup {
				t.Errorf("id %s stored twice", id)
			}
			out[id] = recs[i]
		}
	}
	return out
}

// A shard is not trusted: each row is validated as ingest validates a record
// and its id recomputed from its canonical JSON. Invalid rows, a row carrying
// another record's id and a row with a malformed id are rejects with their
// rule; they never displace a stored record, and the good rows of the same
// shard are stored.
func TestSinkVerifiesShardRows(t *testing.T) {
	s := startStack(t)
	legit := `{"instruction":"the real one","output":"kept"}`
	s.ingest(t, "trust", "alpaca", writeLines(t, "a.jsonl", legit))
	legitRec := alpaca("the real one", "kept")
	legitID := legitRec.ID()

	good := alpaca("a good row", "stored")
	// The dictionary (and so ingest) accepts U+0000 in a string: a shard
	// row holding one is stored as ingest would store "a\u0000b".
	nul := alpaca("a\x00b", "nul")
	forged := alpaca("forged content", "evil")
	malformed := alpaca("valid content, malformed id", "o")
	bad := []struct {
		rec         schemas.Record
		id          string
		field, rule string
	}{
		{alpaca("", "empty instruction"), "", "instruction", "minLength"},
		{alpaca(strings.Repeat("x", 20000), "long"), "", "instruction", "maxLength"},
		{forged, legitID, "id", schemas.RuleRecordID},
		{malformed, "not-a-record-id", "id", schemas.RuleRecordID},
	}
	recs := []schemas.Record{good, nul}
	ids := []string{good.ID(), nul.ID()}
	for _, b := range bad {
		id := b.id
		if id == "" {
			id = b.rec.ID() // the right id does not make an invalid row valid
		}
		recs, ids = append(recs, b.rec), append(ids, id)
	}
	s.publishShard(t, "trust", schemas.FormatAlpaca, recs, ids)

	chat := func(from string) schemas.Record {
		return schemas.Record{Format: schemas.FormatShareGPT, ShareGPT: schemas.ShareGPT{Conversations: []schemas.Turn{
			{From: from, Value: "hi"}, {From: "gpt", Value: "hello"}}}}
	}
	human, robot := chat("human"), chat("robot")
	s.publishShard(t, "chat", schemas.FormatShareGPT, []schemas.Record{robot, human}, []string{robot.ID(), human.ID()})

	rej := s.waitRejects(t, "trust", len(bad))
	sort.Slice(rej, func(a, b int) bool { return rej[a].Error < rej[b].Error })
	for _, b := range bad {
		want := string(b.rec.CanonicalJSON())
		var found bool
		for _, r := range rej {
			if r.Original != nil && *r.Original == want {
				found = true
				if r.Rule != b.rule || r.Field != b.field || r.Source != "forger" || !strings.Contains(r.Error, b.rule) {
					t.Errorf("reject %+v, want field %s rule %s", r, b.field, b.rule)
				}
			}
		}
		if !found {
			t.Errorf("no reject for the row %.60s", want)
		}
	}
	chatRej := s.waitRejects(t, "chat", 1)
	if r := chatRej[0]; r.Rule != "enum" || r.Field != "conversations[0].from" || !strings.Contains(*r.Original, "robot") {
		t.Errorf("sharegpt reject %+v", r)
	}

	dir := filepath.Join(s.dataDir, "datasets", "trust")
	pipelinetest.CheckFor(t, 15*time.Second, 50*time.Millisecond, func() error {
		if got := storedByID(t, dir); len(got) != 3 {
			return fmt.Errorf("%d records stored, want 3", len(got))
		}
		return nil
	})
	got := storedByID(t, dir)
	for id, want := range map[string]schemas.Record{legitID: legitRec, good.ID(): good, nul.ID(): nul} {
		if r, ok := got[id]; !ok || string(r.CanonicalJSON()) != string(want.CanonicalJSON()) {
			t.Errorf("record %s = %s, want %s", id, r.CanonicalJSON(), want.CanonicalJSON())
		}
	}
	for id, r := range got {
		if id != r.ID() {
			t.Errorf("stored id %s is not its record's id %s", id, r.ID())
		}
	}
	chatDir := filepath.Join(s.dataDir, "datasets", "chat")
	pipelinetest.CheckFor(t, 15*time.Second, 50*time.Millisecond, func() error {
		if got := storedByID(t, chatDir); len(got) != 1 || got[human.ID()].Format != schemas.FormatShareGPT {
			return fmt.Errorf("chat dataset holds %v, want the human row", got)
		}
		return nil
	})
	pipelinetest.CheckFor(t, 10*time.Second, 50*time.Millisecond, func() error {
		man, err := dataset.ReadManifest(dir)
		if err != nil {
			return err
		}
		c := man.Counts
		if c.Rows != 3 || c.RejectedByRule["minLength"] != 1 || c.RejectedByRule["maxLength"] != 1 || c.RejectedByRule[schemas.RuleRecordID] != 2 {
			return fmt.Errorf("manifest counts %+v", c)
		}
		if src := man.FindRun("forged-run"); src == nil || src.Rejected != 4 || src.Rows != 2 {
			return fmt.Errorf("forged run %+v", src)
		}
		return nil
	})

	// Redelivered or published again, the shard adds no reject twice.
	s.publishShard(t, "trust", schemas.FormatAlpaca, recs[2:], ids[2:])
	marker := alpaca("after the replay", "o")
	s.publishShard(t, "trust", schemas.FormatAlpaca, []schemas.Record{marker}, []string{marker.ID()})
	pipelinetest.CheckFor(t, 15*time.Second, 50*time.Millisecond, func() error {
		if _, ok := storedByID(t, dir)[marker.ID()]; !ok {
			return fmt.Errorf("marker not stored yet")
		}
		return nil
	})
	if n := len(rejectLines(t, dir)); n != len(bad) {
		t.Errorf("%d rejects after the replay, want %d", n, len(bad))
	}
}
