package main

import (
	"context"
	"encoding/json"
	"math"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/parquet-go/parquet-go"

	"github.com/largeforge/largeforge/internal/testenv"
	"github.com/largeforge/largeforge/model/tokenizer"
	"github.com/largeforge/largeforge/schemas"
)

// columns are the Parquet column names of a row type, comma separated.
func columns(row any) string {
	var names []string
	for _, f := range parquet.SchemaOf(row).Fields() {
		names = append(names, f.Name())
	}
	return strings.Join(names, ",")
}

type refPrompt struct {
	Prompt      string  `json:"prompt"`
	GreedyText  string  `json:"greedy_text"`
	SumLogprob  float64 `json:"sum_logprob_greedy64"`
	GreedyIDs   []int   `json:"greedy_ids"`
	PromptIDsIn []int   `json:"prompt_ids"`
}

func loadRef(t *testing.T) []refPrompt {
	t.Helper()
	data, err := os.ReadFile(testenv.SharedFile(t, "models/stories260K.reference.json"))
	if err != nil {
		t.Fatal(err)
	}
	var ref struct {
		Prompts []refPrompt `json:"prompts"`
	}
	if err := json.Unmarshal(data, &ref); err != nil {
		t.Fatal(err)
	}
	return ref.Prompts
}

// The model commands as a user runs them: import the GGUF, describe it, generate
// greedily (the reference text), generate a JSONL batch, score rows to Parquet,
// and init a preset.
func TestModelCommands(t *testing.T) {
	ctx := context.Background()
	gguf := testenv.SharedFile(t, "models/gguf/stories260K.gguf")
	ref := loadRef(t)
	dir := t.TempDir()
	model := filepath.Join(dir, "s260k")

	if _, err := runCLI(t, ctx, "model", "import-gguf", gguf, "--output", model); err != nil {
		t.Fatal(err)
	}
	out, err := runCLI(t, ctx, "model", "info", model)
	if err != nil || !strings.Contains(out, "LlamaForCausalLM") {
		t.Fatalf("info: %v\n%s", err, out)
	}
	out, err = runCLI(t, ctx, "--log-level", "error", "generate", "--model", model, "--prompt", ref[0].Prompt, "--max-tokens", "64", "--temperature", "0")
	if err != nil {
		t.Fatal(err)
	}
	if got := strings.TrimSuffix(out, "\n"); got != ref[0].Prompt+ref[0].GreedyText {
		t.Fatalf("generate = %q\nwant %q", got, ref[0].Prompt+ref[0].GreedyText)
	}

	in := filepath.Join(dir, "prompts.jsonl")
	var lines []string
	for _, p := range ref {
		b, _ := json.Marshal(map[string]any{"prompt": p.Prompt, "max_tokens": 64, "temperature": 0})
		lines = append(lines, string(b))
	}
	// Beyond the model's context (2048 tokens): refused alone, the batch runs.
	lines = append(lines, `{"prompt":"Once upon a time","max_tokens":4000}`)
	lines = append(lines, `{"prompt":"x","max_tokens":0}`)
	os.WriteFile(in, []byte(strings.Join(lines, "\n")+"\n"), 0o644)
	outFile := filepath.Join(dir, "out.jsonl")
	if _, err := runCLI(t, ctx, "--log-level", "error", "generate", "--model", model, "--input", in, "--output", outFile, "--batch-size", "8"); err != nil {
		t.Fatal(err)
	}
	data, _ := os.ReadFile(outFile)
	got := strings.Split(strings.TrimSpace(string(data)), "\n")
	if len(got) != len(lines) {
		t.Fatalf("%d output lines for %d requests", len(got), len(lines))
	}
	for i, p := range ref {
		var resp struct {
			Object  string `json:"object"`
			Choices []struct {
				Text string `json:"text"`
			} `json:"choices"`
			Usage struct {
				CompletionTokens int `json:"completion_tokens"`
			} `json:"usage"`
		}
		if err := json.Unmarshal([]byte(got[i]), &resp); err != nil || resp.Object != "text_completion" || len(resp.Choices) != 1 || resp.Choices[0].Text != p.GreedyText {
			t.Errorf("line %d = %s (err %v), want text %q", i+1, got[i], err, p.GreedyText)
		}
	}
	// Error lines carry the exact validation message, its param, and the
	// input line in a field of its own.
	type errLine struct {
		Error struct {
			Message, Type, Param string
			Line                 int
		} `json:"error"`
	}
	var bad, over errLine
	if err := json.Unmarshal([]byte(got[len(got)-1]), &bad); err != nil || bad.Error.Message != "Invalid max_tokens" || bad.Error.Line != len(lines) || bad.Error.Param != "max_tokens" {
		t.Errorf("bad request line = %s (%v)", got[len(got)-1], err)
	}
	if err := json.Unmarshal([]byte(got[len(got)-2]), &over); err != nil || !strings.HasPrefix(over.Error.Message, "Invalid max_tokens: 4000 is over the limit of ") || over.Error.Line != len(lines)-1 {
		t.Errorf("line over the context = %s (%v)", got[len(got)-2], err)
	}
	for _, args := range [][]string{
		{"generate", "--model", model, "--input", in, "--batch-size", "0"},
		{"router", "train", in, "--output", filepath.Join(dir, "r"), "--batch-size", "0"},
		{"router", "train", in, "--output", filepath.Join(dir, "r"), "--learning-rate", "0"},
	} {
		if _, err := runCLI(t, ctx, args...); err == nil || !strings.Contains(err.Error(), "want") {
			t.Errorf("%v: err %v, want a refusal", args, err)
		}
	}

	rows := filepath.Join(dir, "rows.jsonl")
	b, _ := json.Marshal(map[string]string{"prompt": ref[0].Prompt, "completion": ref[0].GreedyText})
	os.WriteFile(rows, []byte(string(b)+"\n"+`{"prompt":"a","chosen":" the dog","rejected":" zq xj"}`+"\n"+`{"text":"Lily"}`+"\n"+`{"nothing":1}`+"\n"), 0o644)
	scores := filepath.Join(dir, "scores.parquet")
	out, err = runCLI(t, ctx, "--log-level", "error", "score", "--model", model, "--input", rows, "--output", scores)
	if err != nil {
		t.Fatal(err)
	}
	if !strings.Contains(out, "scored 4 rows into "+scores+" (model: 3 rows, ") || !strings.Contains(out, "rows/s") || !strings.Contains(out, "tokens/s") {
		t.Errorf("score prints %q, want the rows and its rows/s and tokens/s", out)
	}
	res, err := parquet.ReadFile[scoreRow](scores)
	if err != nil {
		t.Fatal(err)
	}
	kind := func(r scoreRow) string {
		if r.Kind == nil {
			return "null"
		}
		return *r.Kind
	}
	if len(res) != 4 || kind(res[0]) != "completion" || kind(res[1]) != "dpo" || kind(res[2]) != "text" || kind(res[3]) != "null" || res[3].Error == nil {
		t.Fatalf("scores = %+v", res)
	}
	for i, r := range res[:3] {
		if r.Error != nil || r.SumLogprob == nil || r.MeanLogprob == nil || r.Perplexity == nil || r.Tokens == nil {
			t.Fatalf("row %d = %+v, want its scores", i+1, r)
		}
		if dpo := i == 1; (r.ChosenLogprob != nil) != dpo || (r.RejectedLogprob != nil) != dpo || (r.DPOMargin != nil) != dpo {
			t.Errorf("row %d = %+v: chosen, rejected and dpo_margin want a value on the DPO row only (null elsewhere)", i+1, r)
		}
	}
	if *res[0].Tokens == 64 && math.Abs(*res[0].SumLogprob-ref[0].SumLogprob) > 1e-3 {
		t.Errorf("sum logprob %v, reference %v", *res[0].SumLogprob, ref[0].SumLogprob)
	}
	if d := res[1]; math.Abs(*d.DPOMargin-(*d.ChosenLogprob-*d.RejectedLogprob)) > 1e-9 || *d.DPOMargin <= 0 || *d.SumLogprob != *d.ChosenLogprob {
		t.Errorf("dpo row %+v", d)
	}
	if r := res[3]; r.SumLogprob != nil || r.Tokens != nil || r.DPOMargin != nil {
		t.Errorf("row that failed %+v, want null scores", r)
	}
	// One set of score columns with score jobs' results.parquet.
	if got, want := columns(scoreRow{}), "line,kind,"+columns(schemas.ScoreColumns{})+",error"; got != want {
		t.Errorf("scores.parquet columns %s, want %s", got, want)
	}

	tiny := filepath.Join(dir, "tiny")
	if _, err := runCLI(t, ctx, "model", "init", "--preset", "tiny", "--output", tiny); err != nil {
		t.Fatal(err)
	}
	if _, err := runCLI(t, ctx, "--log-level", "error", "generate", "--model", tiny, "--prompt", "hello", "--max-tokens", "8", "--temperature", "0"); err != nil {
		t.Fatal(err)
	}

	// --chat-template writes the template the tokenizer then renders chat with.
	chat := filepath.Join(dir, "tiny-chat")
	tmpl := "{% for m in messages %}Q: {{ m.content }}{% endfor %}{% if add_generation_prompt %} A:{% endif %}"
	if _, err := runCLI(t, ctx, "model", "init", "--preset", "tiny", "--output", chat, "--chat-template", tmpl); err != nil {
		t.Fatal(err)
	}
	tok, err := tokenizer.LoadDir(chat)
	if err != nil {
		t.Fatal(err)
	}
	rendered, err := tok.ApplyChatTemplate([]tokenizer.Message{{Role: "user", Content: "hi"}}, true)
	if err != nil || rendered != "Q: hi A:" {
		t.Errorf("chat template renders %q (%v), want %q", rendered, err, "Q: hi A:")
	}
	if _, err := runCLI(t, ctx, "model", "init", "--output", filepath.Join(dir, "bad"), "--chat-template", "{% for %}"); err == nil {
		t.Error("a broken --chat-template was accepted")
	}
}
