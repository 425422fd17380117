package datasetsink_test

import (
	"bufio"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"math/rand/v2"
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
	sum, err := s.ingestErr(t, ds, format, path)
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

// rejectLines reads the rejects of the dataset directory dir: every
// rejects-NNNNN.jsonl in it.
func rejectLines(t *testing.T, dir string) []datasetsink.RejectLine {
	t.Helper()
	files, _ := filepath.Glob(filepath.Join(dir, "rejects-*.jsonl"))
	var out []datasetsink.RejectLine
	for _, path := range files {
		out = append(out, rejectFile(t, path)...)
	}
	return out
}

func rejectFile(t *testing.T, path string) []datasetsink.RejectLine {
	t.Helper()
	f, err := os.Open(path)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	var out []datasetsink.RejectLine
	sc := bufio.NewScanner(f)
	sc.Buffer(nil, 8<<20) // a reject keeps up to about max_payload of its original
	for sc.Scan() {
		var l datasetsink.RejectLine
		if err := json.Unmarshal(sc.Bytes(), &l); err != nil {
			t.Fatalf("rejects.jsonl line %q: %v", sc.Text(), err)
		}
		out = append(out, l)
	}
	if err := sc.Err(); err != nil {
		t.Fatalf("read %s: %v", path, err)
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
	rejPath := filepath.Join(s.dataDir, "datasets", "bad")
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
		if n := len(rejectLines(t, dir)); n != 1 {
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

// ingestErr runs one ingest and returns its summary and error.
func (s *stack) ingestErr(t *testing.T, ds, format, path string) (ingest.Summary, error) {
	t.Helper()
	cfg := ingest.DefaultConfig()
	cfg.Dataset, cfg.Format, cfg.Wait = ds, format, 30*time.Second
	in, err := ingest.New(s.bus, cfg, pipelinetest.Logger(t))
	if err != nil {
		t.Fatal(err)
	}
	return in.Ingest(context.Background(), path, nil)
}

func writeLines(t *testing.T, name string, lines ...string) string {
	t.Helper()
	path := filepath.Join(t.TempDir(), name)
	if err := os.WriteFile(path, []byte(strings.Join(lines, "\n")+"\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	return path
}

// waitRejects waits until rejects.jsonl of a dataset holds n lines.
func (s *stack) waitRejects(t *testing.T, ds string, n int) []datasetsink.RejectLine {
	t.Helper()
	var rej []datasetsink.RejectLine
	pipelinetest.CheckFor(t, 15*time.Second, 50*time.Millisecond, func() error {
		rej = rejectLines(t, filepath.Join(s.dataDir, "datasets", ds))
		if len(rej) != n {
			return fmt.Errorf("%d rejects, want %d", len(rej), n)
		}
		return nil
	})
	return rej
}

// A file of another format than its dataset's is not "accepted": every valid
// row is a reject with rule format (a broken row keeps its own rule), the run
// fails since nothing could join the dataset, and rejects.jsonl and the
// manifest say so.
func TestIngestFormatMismatch(t *testing.T) {
	s := startStack(t)
	alpaca := writeLines(t, "a.jsonl", `{"instruction":"x","output":"1"}`, `{"instruction":"y","output":"2"}`)
	if sum := s.ingest(t, "fm", "auto", alpaca); sum.Persisted != 2 {
		t.Fatalf("alpaca run: %+v", sum)
	}
	dpo := []string{`{"prompt":"p1","chosen":"c","rejected":"r"}`, `{"prompt":"p2","chosen":"c"`, `{"prompt":"p3","chosen":"c","rejected":"r"}`}
	for _, format := range []string{"auto", "dpo"} {
		t.Run(format, func(t *testing.T) {
			path := writeLines(t, "p.jsonl", dpo...)
			sum, err := s.ingestErr(t, "fm", format, path)
			if !errors.Is(err, ingest.ErrNothingPersisted) || !strings.Contains(err.Error(), "format: 2") {
				t.Fatalf("err = %v, want ErrNothingPersisted naming the format rejects", err)
			}
			if sum.Format != schemas.FormatDPO || sum.Accepted != 0 || sum.Rejected != 3 || sum.RejectedByRule["format"] != 2 || sum.RejectedByRule["json"] != 1 || sum.Shards != 0 {
				t.Fatalf("summary %+v", sum)
			}
		})
	}
	rej := s.waitRejects(t, "fm", 6)
	for _, r := range rej {
		want := map[int64]string{1: "format", 2: "json", 3: "format"}[r.Line]
		if r.Rule != want || r.Original == nil || *r.Original != dpo[r.Line-1] {
			t.Errorf("reject %+v, want rule %s and the original line", r, want)
		}
		if want == "format" && (!strings.Contains(r.Error, "dataset fm holds alpaca records") || !strings.Contains(r.Error, "dpo")) {
			t.Errorf("reject message %q does not name both formats", r.Error)
		}
	}
	if got := rows(t, filepath.Join(s.dataDir, "datasets", "fm")); len(got) != 2 {
		t.Fatalf("dataset holds %d records, want the 2 alpaca ones", len(got))
	}
	pipelinetest.CheckFor(t, 10*time.Second, 50*time.Millisecond, func() error {
		man, err := dataset.ReadManifest(filepath.Join(s.dataDir, "datasets", "fm"))
		if err != nil {
			return err
		}
		if man.Counts.RejectedByRule["format"] != 4 || man.Format != schemas.FormatAlpaca {
			return fmt.Errorf("manifest counts %+v format %s", man.Counts, man.Format)
		}
		return nil
	})
	// Nothing at all is a failure too; duplicates are not.
	if _, err := s.ingestErr(t, "fm", "auto", writeLines(t, "empty.jsonl")); !errors.Is(err, ingest.ErrNothingPersisted) {
		t.Errorf("empty file: err = %v, want ErrNothingPersisted", err)
	}
	if sum, err := s.ingestErr(t, "fm", "auto", alpaca); err != nil || sum.Persisted != 0 {
		t.Errorf("rerun of the alpaca file (all duplicates): %+v, %v", sum, err)
	}
}

// A shard of another format that reaches the sink anyway (a raw publisher,
// or a run that raced the first one of a new dataset) is not dead-lettered
// in silence: each of its records is a reject with rule format.
func TestSinkRejectsShardOfAnotherFormat(t *testing.T) {
	s := startStack(t)
	s.ingest(t, "race", "alpaca", writeLines(t, "a.jsonl", `{"instruction":"x","output":"1"}`))
	subj, _ := pipeline.DatasetRawSubject("race")
	rec := `{"prompt":"p","chosen":"c","rejected":"r"}`
	if _, err := s.bus.Publish(context.Background(), subj, []byte(rec), "client-dpo", nil); err != nil {
		t.Fatal(err)
	}
	rej := s.waitRejects(t, "race", 1)
	if r := rej[0]; r.Rule != "format" || r.Original == nil || *r.Original != `{"chosen":"c","prompt":"p","rejected":"r"}` ||
		!strings.Contains(r.Error, "dataset race holds alpaca records; this record is dpo") {
		t.Fatalf("reject %+v", r)
	}
	pipelinetest.CheckFor(t, 10*time.Second, 50*time.Millisecond, func() error {
		man, err := dataset.ReadManifest(filepath.Join(s.dataDir, "datasets", "race"))
		if err != nil {
			return err
		}
		if src := man.FindRun(schemas.RawRun); src == nil || src.Rejected != 1 || man.Counts.RejectedByRule["format"] != 1 {
			return fmt.Errorf("manifest %+v", man)
		}
		return nil
	})
	if got := rows(t, filepath.Join(s.dataDir, "datasets", "race")); len(got) != 1 {
		t.Fatalf("dataset holds %d records, want 1", len(got))
	}
}

// A schema-valid record too large for one shard under max_payload is a
// reject of its own rule, and the rows after it land.
func TestIngestOversizedRecord(t *testing.T) {
	s := startStack(t)
	// Letters zstd cannot shrink below max_payload.
	rng := rand.New(rand.NewPCG(1, 2))
	big := make([]byte, 4<<20)
	for i := range big {
		big[i] = byte('a' + rng.IntN(26))
	}
	dpo := writeLines(t, "dpo.jsonl",
		`{"prompt":"p1","chosen":"c","rejected":"r"}`,
		`{"prompt":"p2","chosen":"`+string(big)+`","rejected":"r"}`,
		`{"prompt":"p3","chosen":"c","rejected":"r"}`)
	turns := make([]string, 100000)
	for i := range turns {
		turns[i] = fmt.Sprintf(`{"from":"%s","value":"turn %d"}`, []string{"human", "gpt"}[i%2], i)
	}
	chat := writeLines(t, "chat.jsonl",
		`{"conversations":[{"from":"human","value":"hi"},{"from":"gpt","value":"hello"}]}`,
		`{"conversations":[`+strings.Join(turns, ",")+`]}`,
		`{"conversations":[{"from":"human","value":"bye"},{"from":"gpt","value":"bye"}]}`)
	for _, tt := range []struct{ ds, path, field string }{{"big-dpo", dpo, "chosen"}, {"big-chat", chat, "conversations"}} {
		t.Run(tt.ds, func(t *testing.T) {
			sum, err := s.ingestErr(t, tt.ds, "auto", tt.path)
			if err != nil {
				t.Fatalf("ingest: %v", err)
			}
			if sum.Accepted != 2 || sum.Persisted != 2 || sum.Rejected != 1 || sum.RejectedByRule["maxRecordBytes"] != 1 {
				t.Fatalf("summary %+v", sum)
			}
			rej := s.waitRejects(t, tt.ds, 1)
			if r := rej[0]; r.Line != 2 || r.Rule != "maxRecordBytes" || r.Field != tt.field || !strings.Contains(r.Error, "max_payload") {
				t.Fatalf("reject %+v", r)
			}
			if got := rows(t, filepath.Join(s.dataDir, "datasets", tt.ds)); len(got) != 2 {
				t.Fatalf("dataset holds %d records, want 2", len(got))
			}
		})
	}
}
