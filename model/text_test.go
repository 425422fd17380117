package model

import (
	"context"
	"errors"
	"strings"
	"testing"

	"github.com/largeforge/largeforge/model/tokenizer"
)

func storiesText(t *testing.T) (*TextGenerator, *reference) {
	t.Helper()
	m, ref := storiesModel(t)
	tok, err := tokenizer.LoadDir(ref.modelDir)
	if err != nil {
		t.Fatal(err)
	}
	g, err := NewTextGenerator(m, tok)
	if err != nil {
		t.Fatal(err)
	}
	return g, ref
}

func TestTextGenerate(t *testing.T) {
	g, ref := storiesText(t)
	p := ref.Prompts[0]
	full := g.tok.Decode(p.GreedyIDs, true)
	stopAt := strings.Index(full, " girl")
	if stopAt < 0 {
		t.Fatalf("reference text %q has no %q", full, " girl")
	}
	tests := []struct {
		name       string
		req        TextRequest
		wantText   string
		wantFinish string
	}{
		{"greedy", TextRequest{Prompt: p.Prompt, Params: greedy(len(p.GreedyIDs))}, full, FinishLength},
		{"stop string", TextRequest{Prompt: p.Prompt, Stop: []string{"zzz", " girl"}, Params: greedy(64)}, full[:stopAt], FinishStop},
		{"stop inside a token", TextRequest{Prompt: p.Prompt, Stop: []string{"irl"}, Params: greedy(64)}, full[:stopAt+2], FinishStop},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			res, err := g.Generate(context.Background(), []TextRequest{tt.req})
			if err != nil {
				t.Fatal(err)
			}
			if res[0].Text != tt.wantText || res[0].FinishReason != tt.wantFinish {
				t.Errorf("got %q (%s), want %q (%s)", res[0].Text, res[0].FinishReason, tt.wantText, tt.wantFinish)
			}
			if res[0].PromptTokens != len(p.PromptIDs) {
				t.Errorf("prompt tokens %d, want %d", res[0].PromptTokens, len(p.PromptIDs))
			}
		})
	}
	if full != p.GreedyText {
		t.Errorf("decoded greedy ids %q differ from the reference text %q", full, p.GreedyText)
	}
}

func TestTextSubmitStreams(t *testing.T) {
	g, ref := storiesText(t)
	b := startBatcher(t, g.m, 2)
	p := ref.Prompts[1]
	var streamed strings.Builder
	res, err := g.Submit(context.Background(), b, TextRequest{Prompt: p.Prompt, Stop: []string{" box"}, Params: greedy(64)}, func(s string) {
		streamed.WriteString(s)
	})
	if err != nil {
		t.Fatal(err)
	}
	if res.FinishReason != FinishStop || strings.Contains(res.Text, " box") || res.Text == "" {
		t.Errorf("got %q (%s)", res.Text, res.FinishReason)
	}
	if streamed.String() != res.Text {
		t.Errorf("streamed %q, result %q", streamed.String(), res.Text)
	}
}

// Check tells the requests Generate would refuse, without running them.
func TestTextCheck(t *testing.T) {
	g, _ := storiesText(t)
	for _, tc := range []struct {
		name    string
		req     TextRequest
		tooLong bool
		wantErr bool
	}{
		{"fits", TextRequest{Prompt: "Once upon a time", Params: SamplingParams{MaxTokens: 8}}, false, false},
		{"over the context", TextRequest{Prompt: "Once upon a time", Params: SamplingParams{MaxTokens: 4000}}, true, true},
		{"empty stop", TextRequest{Prompt: "x", Stop: []string{""}, Params: SamplingParams{MaxTokens: 8}}, false, true},
	} {
		err := g.Check(tc.req)
		if (err != nil) != tc.wantErr || errors.Is(err, ErrTooLong) != tc.tooLong {
			t.Errorf("%s: Check = %v", tc.name, err)
		}
		_, gerr := g.Generate(context.Background(), []TextRequest{tc.req})
		if (gerr != nil) != (err != nil) {
			t.Errorf("%s: Check says %v, Generate %v", tc.name, err, gerr)
		}
	}
}
