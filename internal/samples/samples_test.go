package samples

import (
	"bufio"
	"os"
	"strings"
	"testing"

	"github.com/largeforge/largeforge/schemas"
)

func readLines(t *testing.T, path string) []string {
	t.Helper()
	f, err := os.Open(path)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	var out []string
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		out = append(out, sc.Text())
	}
	if err := sc.Err(); err != nil {
		t.Fatal(err)
	}
	return out
}

// The alpaca set answers each question with its subject's fact, keeps its
// bad rows, and the prompts file asks questions of the set as chat requests.
func TestAlpacaSetAndPrompts(t *testing.T) {
	dir := t.TempDir()
	paths, err := WriteAll(dir, 1)
	if err != nil {
		t.Fatal(err)
	}
	lines := readLines(t, paths[0])
	questions := map[string]string{}
	good, bad := 0, 0
	for _, l := range lines {
		if strings.TrimSpace(l) == "" {
			continue
		}
		rec, err := schemas.DecodeRecord(schemas.FormatAlpaca, []byte(l))
		if err != nil {
			bad++
			continue
		}
		good++
		questions[rec.Alpaca.Instruction] = rec.Alpaca.Output
	}
	if good < 40 || bad < 5 {
		t.Errorf("alpaca.jsonl: %d good rows, %d bad, want at least 40 and 5", good, bad)
	}
	for q, a := range questions {
		if q == "Greet the reader." {
			continue
		}
		found := false
		for s, fact := range facts {
			if strings.Contains(q, s) {
				found = true
				if a != fact {
					t.Errorf("%q answered %q, want its subject's fact %q", q, a, fact)
				}
			}
		}
		if !found {
			t.Errorf("question %q names no subject", q)
		}
	}
	prompts, err := WritePrompts(dir, 12, 1)
	if err != nil {
		t.Fatal(err)
	}
	valid, invalid := 0, 0
	for _, l := range readLines(t, prompts) {
		req, err := schemas.DecodeCompletionRequest([]byte(l))
		if err == nil {
			req.Model = "tuned" // rows name no model: the job's
			err = req.Validate()
		}
		if err != nil {
			invalid++
			continue
		}
		valid++
		if !req.IsChat() || len(req.Messages) != 1 || req.Messages[0].Role != "user" {
			t.Errorf("prompt %s is not one user message", l)
			continue
		}
		q := req.Messages[0].Content
		known := false
		for s := range facts {
			known = known || strings.Contains(q, s)
		}
		if !known {
			t.Errorf("prompt %q asks about no subject of the alpaca set", q)
		}
	}
	if valid != 12 || invalid != 1 {
		t.Errorf("prompts: %d valid, %d invalid, want 12 and 1", valid, invalid)
	}
}

func TestExpertsYAMLParses(t *testing.T) {
	path, err := WriteExperts(t.TempDir())
	if err != nil {
		t.Fatal(err)
	}
	experts, err := schemas.LoadExperts(path)
	if err != nil {
		t.Fatal(err)
	}
	var names []string
	for _, e := range experts {
		names = append(names, e.Name)
	}
	if got := strings.Join(names, ","); got != "code,math,stories" {
		t.Errorf("experts %s", got)
	}
}
