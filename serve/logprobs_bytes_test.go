package serve_test

import (
	"bytes"
	"context"
	"encoding/json"
	"testing"
	"unicode/utf8"

	"github.com/largeforge/largeforge/model"
	"github.com/largeforge/largeforge/model/checkpoint"
	"github.com/largeforge/largeforge/model/tokenizer"
	"github.com/largeforge/largeforge/schemas"
	"github.com/largeforge/largeforge/serve"
)

// A chat logprob's bytes are the token's own bytes, also where the token is
// part of a character (its text "\ufffd"), and the bytes of the content
// read back as the completion's raw bytes: the repro of `model init
// --preset tiny --chat-template chatml` (byte-level tokens) with seed 7 and
// 4 tokens, whose tokens are partial characters.
func TestChatLogprobBytes(t *testing.T) {
	dir := t.TempDir()
	src, _ := tokenizer.NamedJinja("chatml")
	if err := checkpoint.Init("tiny", 1, dir); err != nil {
		t.Fatal(err)
	}
	if err := checkpoint.SetChatTemplate(dir, src); err != nil {
		t.Fatal(err)
	}
	m, err := model.Load(dir)
	if err != nil {
		t.Fatal(err)
	}
	tok, err := tokenizer.LoadDir(dir)
	if err != nil {
		t.Fatal(err)
	}
	g, err := model.NewTextGenerator(m, tok)
	if err != nil {
		t.Fatal(err)
	}
	seed := int64(7)
	c := schemas.DefaultCompletionRequest()
	c.Model, c.Messages, c.MaxTokens, c.Seed, c.Logprobs, c.TopLogprobs = "tiny", []schemas.ChatMessage{{Role: schemas.RoleUser, Content: "Hi"}}, 4, &seed, true, 3
	tr, err := serve.TextRequest(tok, c, 0)
	if err != nil {
		t.Fatal(err)
	}
	out, err := g.Generate(context.Background(), []model.TextRequest{tr})
	if err != nil {
		t.Fatal(err)
	}
	var lp serve.ChatLogprobs
	if err := json.Unmarshal(serve.Logprobs(true, out[0].Logprobs), &lp); err != nil {
		t.Fatal(err)
	}
	var all []byte
	partial := 0
	for i, tl := range lp.Content {
		b := intsToBytes(tl.Bytes)
		all = append(all, b...)
		if !utf8.Valid(b) {
			partial++
		}
		if want := tok.DecodeBytes(out[0].IDs[i:i+1], true); !bytes.Equal(b, want) {
			t.Errorf("token %d %q: bytes %x, want %x", i, tl.Token, b, want)
		}
		for _, a := range tl.TopLogprobs {
			if ab := intsToBytes(a.Bytes); utf8.Valid(ab) && a.Token != string(ab) {
				t.Errorf("token %d alternative %q: bytes %x", i, a.Token, ab)
			}
		}
	}
	if want := tok.DecodeBytes(out[0].IDs, true); !bytes.Equal(all, want) {
		t.Errorf("the tokens' bytes read %x, the completion is %x", all, want)
	}
	if partial == 0 {
		t.Errorf("no token of %x is part of a character: the repro no longer covers partial bytes", all)
	}
}

func intsToBytes(v []int) []byte {
	b := make([]byte, len(v))
	for i, x := range v {
		b[i] = byte(x)
	}
	return b
}
