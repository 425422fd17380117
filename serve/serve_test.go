package serve_test

import (
	"context"
	"errors"
	"fmt"
	"math"
	"path/filepath"
	"strings"
	"testing"

	"github.com/largeforge/largeforge/internal/testenv"
	"github.com/largeforge/largeforge/model"
	"github.com/largeforge/largeforge/model/tokenizer"
	"github.com/largeforge/largeforge/schemas"
	"github.com/largeforge/largeforge/serve"
)

// storiesDir is the directory of the shared stories260K model (no
// chat_template).
func storiesDir(t *testing.T) string {
	t.Helper()
	return filepath.Dir(testenv.SharedFile(t, "models/stories260K/model.safetensors"))
}

func loadTokenizer(t *testing.T, dir string) *tokenizer.Tokenizer {
	t.Helper()
	tok, err := tokenizer.LoadDir(dir)
	if err != nil {
		t.Fatal(err)
	}
	return tok
}

func TestTextRequest(t *testing.T) {
	plain := loadTokenizer(t, storiesDir(t))
	chat := loadTokenizer(t, testenv.WithChatTemplate(t, storiesDir(t),
		"{% for m in messages %}{{ m.role }}: {{ m.content }}\n{% endfor %}{% if add_generation_prompt %}assistant:{% endif %}"))
	seven := int64(7)
	req := func(edit func(*schemas.CompletionRequest)) schemas.CompletionRequest {
		c := schemas.DefaultCompletionRequest()
		c.Model, c.Prompt, c.Stop = "stories", "Once upon a time", []string{"."}
		edit(&c)
		return c
	}
	hi := []schemas.ChatMessage{{Role: schemas.RoleUser, Content: "Hi"}}
	tests := []struct {
		name       string
		tok        *tokenizer.Tokenizer
		req        schemas.CompletionRequest
		wantPrompt string
		wantSeed   int64
		wantErr    error
	}{
		{name: "prompt, seed of the caller", tok: plain, req: req(func(*schemas.CompletionRequest) {}), wantPrompt: "Once upon a time", wantSeed: 99},
		{name: "prompt, seed of the request", tok: plain, req: req(func(c *schemas.CompletionRequest) { c.Seed = &seven }), wantPrompt: "Once upon a time", wantSeed: 7},
		{name: "chat with a chat_template", tok: chat, req: req(func(c *schemas.CompletionRequest) { c.Prompt, c.Messages = "", hi }),
			wantPrompt: "user: Hi\nassistant:", wantSeed: 99},
		{name: "chat without a chat_template", tok: plain, req: req(func(c *schemas.CompletionRequest) { c.Prompt, c.Messages = "", hi }),
			wantErr: tokenizer.ErrNoChatTemplate},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, err := serve.TextRequest(tt.tok, tt.req, 99)
			if tt.wantErr != nil {
				if !errors.Is(err, tt.wantErr) || !errors.Is(err, schemas.ErrInvalidRequest) {
					t.Fatalf("err %v, want %v wrapping schemas.ErrInvalidRequest", err, tt.wantErr)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			want := model.TextRequest{Prompt: tt.wantPrompt, Stop: []string{"."}, Params: model.SamplingParams{
				MaxTokens: tt.req.MaxTokens, Temperature: tt.req.Temperature, TopP: tt.req.TopP, TopK: tt.req.TopK, Seed: tt.wantSeed}}
			if fmt.Sprint(got) != fmt.Sprint(want) {
				t.Errorf("text request %+v, want %+v", got, want)
			}
		})
	}
}

func TestResponse(t *testing.T) {
	out := model.TextResult{Text: " there was", FinishReason: "length", PromptTokens: 5, CompletionTokens: 3}
	usage := schemas.Usage{PromptTokens: 5, CompletionTokens: 3, TotalTokens: 8}
	tests := []struct {
		name        string
		req         schemas.CompletionRequest
		wantObject  string
		wantText    string
		wantMessage *schemas.ChatMessage
	}{
		{name: "prompt", req: schemas.CompletionRequest{Prompt: "Once upon a time"}, wantObject: schemas.ObjectTextCompletion, wantText: " there was"},
		{name: "chat", req: schemas.CompletionRequest{Messages: []schemas.ChatMessage{{Role: schemas.RoleUser, Content: "Hi"}}},
			wantObject: schemas.ObjectChatCompletion, wantMessage: &schemas.ChatMessage{Role: schemas.RoleAssistant, Content: " there was"}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			r := serve.Response("cmpl-1", "stories", tt.req, out)
			if r.ID != "cmpl-1" || r.Model != "stories" || r.Object != tt.wantObject || r.Usage != usage || r.Created == 0 || len(r.Choices) != 1 {
				t.Fatalf("response %+v", r)
			}
			c := r.Choices[0]
			if c.Text != tt.wantText || c.FinishReason != "length" || fmt.Sprint(c.Message) != fmt.Sprint(tt.wantMessage) {
				t.Errorf("choice %+v (message %+v), want text %q message %+v", c, c.Message, tt.wantText, tt.wantMessage)
			}
		})
	}
}

func TestRefused(t *testing.T) {
	tests := []struct {
		name string
		err  error
		want bool
	}{
		{"too long", fmt.Errorf("row 3: %w", model.ErrTooLong), true},
		{"invalid", model.ErrInvalidRequest, true},
		{"failed", errors.New("out of memory"), false},
		{"cancelled", context.Canceled, false},
		{"none", nil, false},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if got := serve.Refused(tt.err); got != tt.want {
				t.Errorf("Refused(%v) = %v, want %v", tt.err, got, tt.want)
			}
		})
	}
}

// TestScore scores the three row shapes in one batch with a row too long
// for the context among them: that row fails alone (refused), and every
// other row scores as the model scores its requests directly.
func TestScore(t *testing.T) {
	dir := storiesDir(t)
	m, err := model.Load(dir)
	if err != nil {
		t.Fatal(err)
	}
	defer m.Close()
	tok := loadTokenizer(t, dir)
	ctx := context.Background()
	tests := []struct {
		name      string
		row       schemas.ScoreInput
		wantReqs  int
		wantDPO   bool
		wantError bool
	}{
		{name: "text", row: schemas.ScoreInput{Text: "Lily went to the park."}, wantReqs: 1},
		{name: "prompt and completion", row: schemas.ScoreInput{Prompt: "Once upon a time", Completion: " there was a dog."}, wantReqs: 1},
		{name: "dpo", row: schemas.ScoreInput{Prompt: "a", Chosen: " the dog", Rejected: " zq xj"}, wantReqs: 2, wantDPO: true},
		{name: "too long for the context", row: schemas.ScoreInput{Text: strings.Repeat("dog ", 5000)}, wantReqs: 1, wantError: true},
	}
	rows := make([]schemas.ScoreInput, len(tests))
	for i, tt := range tests {
		rows[i] = tt.row
	}
	outs, errs, rate := serve.ScoreRated(ctx, m, tok, rows)
	// The rate counts the rows scored (not the refused one) and every token
	// of their requests.
	wantTokens := 0
	for _, tt := range tests[:3] {
		for _, q := range serve.ScoreRequests(tok, tt.row) {
			wantTokens += len(q.PromptIDs) + len(q.CompletionIDs)
		}
	}
	if rate.Rows != 3 || rate.Tokens != wantTokens || rate.Elapsed <= 0 || rate.RowsPerSecond() <= 0 || rate.TokensPerSecond() <= 0 {
		t.Errorf("rate %+v (%v), want 3 rows and %d tokens in some time", rate, rate, wantTokens)
	}
	for i, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			reqs := serve.ScoreRequests(tok, tt.row)
			if len(reqs) != tt.wantReqs {
				t.Fatalf("%d score requests, want %d", len(reqs), tt.wantReqs)
			}
			if tt.wantError {
				if !serve.Refused(errs[i]) {
					t.Fatalf("err %v, want a refusal", errs[i])
				}
				return
			}
			if errs[i] != nil {
				t.Fatal(errs[i])
			}
			direct, err := m.Score(ctx, reqs)
			if err != nil {
				t.Fatal(err)
			}
			want := serve.ScoreOutput(tt.row, direct)
			got := outs[i]
			near := func(a, b float64) bool { return math.Abs(a-b) < 1e-4 }
			if got.Tokens != want.Tokens || !near(got.SumLogprob, want.SumLogprob) || !near(got.MeanLogprob, want.MeanLogprob) || !near(got.Perplexity, want.Perplexity) {
				t.Errorf("batched %+v, direct %+v", got, want)
			}
			if (got.DPOMargin != nil) != tt.wantDPO || (got.Chosen != nil) != tt.wantDPO || (got.Rejected != nil) != tt.wantDPO {
				t.Fatalf("output %+v: DPO parts set %v, want %v", got, got.DPOMargin != nil, tt.wantDPO)
			}
			if tt.wantDPO {
				if m := *got.DPOMargin; !near(m, direct[0].SumLogprob-direct[1].SumLogprob) || m <= 0 || got.Chosen.SumLogprob != got.SumLogprob {
					t.Errorf("dpo output %+v, margin %v, direct %+v", got, m, direct)
				}
			}
		})
	}
}
