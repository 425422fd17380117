package datasetsink_test

import (
	"bufio"
	"context"
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/largeforge/largeforge/consumers/datasetsink"
	"github.com/largeforge/largeforge/dataset"
	"github.com/largeforge/largeforge/pipeline"
	"github.com/largeforge/largeforge/pipeline/pipelinetest"
	"github.com/largeforge/largeforge/producers/ingest"
	"github.com/largeforge/largeforge/schemas"
)

// stack is an embedded JetStream server with the dataset workers running.
type stack struct {
	bus     *pipeline.Bus
	dataDir string
	cancel  context.CancelFunc
	workers *datasetsink.Workers
}

func startStack(t *testing.T) *stack {
	t.Helper()
	_, bus := pipelinetest.StartBus(t)
	dir := t.TempDir()
	ctx, cancel := context.WithCancel(context.Background())
	w, err := datasetsink.Start(ctx, bus, filepath.Join(dir, "datasets"), pipelinetest.Logger(t), nil)
	if err != nil {
		t.Fatal(err)
	}
	s := &stack{bus: bus, dataDir: dir, cancel: cancel, workers: w}
	t.Cleanup(func() {
		cancel()
		if err := w.Wait(); err != nil {
			t.Errorf("workers: %v", err)
		}
	})
	return s
}

func (s *stack) ingest(t *testing.T, ds, format, path string) ingest.Summary {
	t.Helper()
	cfg := ingest.DefaultConfig()
	cfg.Dataset, cfg.Format, cfg.Wait = ds, format, 30*time.Second
	in, err := ingest.New(s.bus, cfg, pipelinetest.Logger(t))
	if err != nil {
		t.Fatal(err)
	}
	sum, err := in.Ingest(context.Background(), path, nil)
	if err != nil {
		t.Fatalf("ingest %s: %v", path, err)
	}
	return sum
}

// rows reads every record of a dataset's parts, in order.
func rows(t *testing.T, dir string) []schemas.Record {
	t.Helper()
	parts, err := dataset.ListParts(dir)
	if err != nil {
		t.Fatal(err)
	}
	var all []schemas.Record
	for _, p := range parts {
		_, recs, _, err := dataset.ReadPart(p)
		if err != nil {
			t.Fatal(err)
		}
		all = append(all, recs...)
	}
	return all
}

func rejectLines(t *testing.T, path string) []datasetsink.RejectLine {
	t.Helper()
	f, err := os.Open(path)
	if err != nil {
		return nil
	}
	defer f.Close()
	var out []datasetsink.RejectLine
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		var l datasetsink.RejectLine
		if err := json.Unmarshal(sc.Bytes(), &l); err != nil {
			t.Fatalf("rejects.jsonl line %q: %v", sc.Text(), err)
		}
		out = append(out, l)
	}
	return out
}

func TestIngestBadInput(t *testing.T) {
	s := startStack(t)
	long := strings.Repeat("x", 10001)
	huge := strings.Repeat("y", 50001)
	lines := []string{
		"\ufeff" + `{"instruction":"good 1","output":"one"}`,           // 1 BOM, good
		`{"instruction":"good 2","input":"ctx","output":"two"}` + "\r", // 2 CRLF, good
		``,                                    // 3 blank: skipped
		`{"instruction":"bad json","output":`, // 4 malformed
		`[1,2,3]`,                             // 5 not an object
		`{"instruction":5,"output":"x"}`,      // 6 wrong type
		`{"output":"x"}`,                      // 7 missing field
		`{"instruction":"","output":"x"}`,     // 8 empty string
		`{"instruction":"` + long + `","output":"x"}`,                       // 9 over 10,000 code points
		`{"instruction":"i","output":"` + huge + `"}`,                       // 10 over 50,000
		`{"instruction":"` + strings.Repeat("é", 10000) + `","output":"x"}`, // 11 exactly 10,000 code points (20,000 bytes): good
		"{\"instruction\":\"bad \xff utf8\",\"output\":\"x\"}",              // 12 invalid UTF-8
		`{"instruction":"` + strings.Repeat("z", 70000) + `","output":"x"}`, // 13 longer than the line bound
		`{"instruction":"good 3","output":"three","extra":{"kept":true}}`,   // 14 additional properties: good
		`{"instruction":null,"output":"x"}`,                                 // 15 null
		`{"instruction":"good 4","output":"four"}`,                          // 16 truncated last line (no newline) but whole
	}
	path := filepath.Join(t.TempDir(), "bad.jsonl")
	if err := os.WriteFile(path, []byte(strings.Join(lines, "\n")), 0o644); err != nil {
		t.Fatal(err)
	}
	cfg := ingest.DefaultConfig()
	cfg.Dataset, cfg.Format, cfg.Wait, cfg.MaxLineBytes = "bad", "alpaca", 30*time.Second, 64000
	in, err := ingest.New(s.bus, cfg, pipelinetest.Logger(t))
	if err != nil {
		t.Fatal(err)
	}
	sum, err := in.Ingest(context.Background(), path, nil)
	if err != nil {
		t.Fatal(err)
	}
	if sum.Accepted != 5 || sum.Rejected != 10 || !sum.Confirmed || sum.Persisted != 5 {
		t.Fatalf("summary = %+v, want 5 accepted and persisted, 10 rejected", sum)
	}
	got := rows(t, filepath.Join(s.dataDir, "datasets", "bad"))
	var instr []string
	for _, r := range got {
		instr = append(instr, r.Alpaca.Instruction)
	}
	want := []string{"good 1", "good 2", strings.Repeat("é", 10000), "good 3", "good 4"}
	if fmt.Sprint(instr) != fmt.Sprint(want) {
		t.Fatalf("parts hold %q, want %q in order", instr, want)
	}

	wantRejects := map[int64]string{4: "json", 5: "type", 6: "type", 7: "required", 8: "minLength", 9: "maxLength", 10: "maxLength", 12: "utf8", 13: "maxLineBytes", 15: "type"}
	rejPath := filepath.Join(s.dataDir, "datasets", "bad", dataset.RejectsFile)
	var rej []datasetsink.RejectLine
	pipelinetest.CheckFor(t, 10*time.Second, 50*time.Millisecond, func() error {
		rej = rejectLines(t, rejPath)
		if len(rej) != len(wantRejects) {
			return fmt.Errorf("%d rejects, want %d", len(rej), len(wantRejects))
		}
		return nil
	})
	for _, r := range rej {
		rule, ok := wantRejects[r.Line]
		if !ok {
			t.Errorf("unexpected reject of line %d: %+v", r.Line, r)
			continue
		}
		if r.Rule != rule {
			t.Errorf("line %d: rule %q, want %q (%s)", r.Line, r.Rule, rule, r.Error)
		}
		if r.Source != path || r.Error == "" {
			t.Errorf("line %d: source %q error %q", r.Line, r.Source, r.Error)
		}
		orig := lines[r.Line-1]
		switch {
		case r.Line == 12:
			if string(r.OriginalBase64) != orig {
				t.Errorf("line 12: original bytes not kept: %q", r.OriginalBase64)
			}
		case r.Line == 13:
			if r.Original == nil || !strings.HasPrefix(orig, *r.Original) {
				t.Errorf("line 13: original prefix not kept")
			}
		case r.Original == nil || *r.Original != orig:
			t.Errorf("line %d: original = %v, want %q", r.Line, r.Original, orig)
		}
	}
	if r := findLine(rej, 9); r == nil || r.Field != "instruction" {
		t.Errorf("line 9 reject does not name the field: %+v", r)
	}
}

func findLine(rej []datasetsink.RejectLine, line int64) *datasetsink.RejectLine {
	for i := range rej {
		if rej[i].Line == line {
			return &rej[i]
		}
	}
	return nil
}

func TestIngestDedupAcrossRunsAndFormats(t *testing.T) {
	s := startStack(t)
	dir := t.TempDir()
	a := filepath.Join(dir, "a.jsonl")
	b := filepath.Join(dir, "b.json")
	os.WriteFile(a, []byte(`{"instruction":"x","output":"1"}`+"\n"+`{"instruction":"y","output":"2"}`+"\n"+`{"output":"1","instruction":"x"}`+"\n"), 0o644)
	os.WriteFile(b, []byte(`[{"input":"","instruction":"y","output":"2"}, {"instruction":"z","output":"3"}]`), 0o644)

	sum := s.ingest(t, "dd", "auto", a)
	if sum.Format != schemas.FormatAlpaca || !sum.FormatDetected || sum.Persisted != 2 || sum.Duplicates != 1 {
		t.Fatalf("first run: %+v", sum)
	}
	sum = s.ingest(t, "dd", "auto", a) // same file again: nothing new
	if sum.Persisted != 0 {
		t.Fatalf("rerun persisted %d records", sum.Persisted)
	}
	sum = s.ingest(t, "dd", "alpaca", b) // a JSON array; y is already there (absent input == "")
	if sum.Persisted != 1 || sum.Duplicates != 1 {
		t.Fatalf("array run: %+v", sum)
	}
	got := rows(t, filepath.Join(s.dataDir, "datasets", "dd"))
	if len(got) != 3 {
		t.Fatalf("dataset holds %d records, want 3", len(got))
	}
	man, err := dataset.ReadManifest(filepath.Join(s.dataDir, "datasets", "dd"))
	if err != nil {
		t.Fatal(err)
	}
	if man.Counts.Rows != 3 || man.Format != schemas.FormatAlpaca || len(man.Sources) < 2 {
		t.Fatalf("manifest = %+v", man)
	}
	for _, p := range man.Parts {
		meta, err := dataset.ReadPartMeta(filepath.Join(s.dataDir, "datasets", "dd", p.File))
		if err != nil || meta.SHA256 != p.SHA256 {
			t.Errorf("part %s: sha256 %s in manifest, %s on disk (%v)", p.File, p.SHA256, meta.SHA256, err)
		}
	}
}

func TestRawRecordsFromAnyClient(t *testing.T) {
	s := startStack(t)
	ctx := context.Background()
	subj, _ := pipeline.DatasetRawSubject("rawds")
	msgs := []string{
		`{"prompt":"p","chosen":"c","rejected":"r"}`,
		`{"chosen":"c","rejected":"r","prompt":"p"}`, // same record, keys reordered
		`{"prompt":"p2","chosen":"c2"}`,              // dpo without rejected: no format fits all keys → detected dpo, rejected
		`{"prompt":"p3","chosen":"c3","rejected":"r3"}`,
	}
	for i, m := range msgs {
		if _, err := s.bus.Publish(ctx, subj, []byte(m), fmt.Sprintf("client-%d", i), nil); err != nil {
			t.Fatal(err)
		}
	}
	dir := filepath.Join(s.dataDir, "datasets", "rawds")
	pipelinetest.CheckFor(t, 15*time.Second, 100*time.Millisecond, func() error {
		if n := len(rows(t, dir)); n != 2 {
			return fmt.Errorf("%d rows persisted, want 2", n)
		}
		if n := len(rejectLines(t, filepath.Join(dir, dataset.RejectsFile))); n != 1 {
			return fmt.Errorf("%d rejects, want 1", n)
		}
		return nil
	})
}

func TestParquetInput(t *testing.T) {
	s := startStack(t)
	dir := t.TempDir()
	// A Parquet file the project wrote itself (a dataset part) is valid input.
	recs := []schemas.Record{
		{Format: schemas.FormatShareGPT, ShareGPT: schemas.ShareGPT{Conversations: []schemas.Turn{{From: "human", Value: "hi"}, {From: "gpt", Value: "hello"}}}},
		{Format: schemas.FormatShareGPT, ShareGPT: schemas.ShareGPT{Conversations: []schemas.Turn{{From: "human", Value: "only"}}}},
	}
	src := filepath.Join(dir, "chat.parquet")
	if _, err := dataset.WritePart(src, schemas.FormatShareGPT, recs, []string{"a", "b"}, nil); err != nil {
		t.Fatal(err)
	}
	sum := s.ingest(t, "chat", "auto", src)
	if sum.Format != schemas.FormatShareGPT || sum.Accepted != 1 || sum.Rejected != 1 {
		t.Fatalf("summary %+v", sum)
	}
	// Wrong columns: a clear error that names them.
	wrong := filepath.Join(dir, "wrong.parquet")
	if _, err := dataset.WritePart(wrong, schemas.FormatDPO, []schemas.Record{{Format: schemas.FormatDPO, DPO: schemas.DPO{Prompt: "p", Chosen: "c", Rejected: "r"}}}, []string{"x"}, nil); err != nil {
		t.Fatal(err)
	}
	cfg := ingest.DefaultConfig()
	cfg.Dataset, cfg.Format = "chat", "alpaca"
	in, _ := ingest.New(s.bus, cfg, pipelinetest.Logger(t))
	_, err := in.Ingest(context.Background(), wrong, nil)
	if err == nil || !strings.Contains(err.Error(), "instruction") {
		t.Fatalf("wrong columns: err = %v", err)
	}
}
