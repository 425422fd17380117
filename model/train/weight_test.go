package train

import (
	"errors"
	"strings"
	"testing"

	"github.com/largeforge/largeforge/schemas"
)

// A gpt turn of weight 0 stays in the rendered conversation as context and
// out of the loss: the same tokens as without the weight, its reply's
// tokens weighted 0, the trained reply's 1.
func TestRenderWeightZeroTurn(t *testing.T) {
	_, _, tok := tinyBase(t)
	r, err := NewRenderer(tok, 1024)
	if err != nil {
		t.Fatal(err)
	}
	zero := 0
	conv := func(w *int) schemas.Record {
		return schemas.Record{Format: schemas.FormatShareGPT, ShareGPT: schemas.ShareGPT{Conversations: []schemas.Turn{
			{From: "human", Value: "Say hi."}, {From: "gpt", Value: "Hi.", Weight: w},
			{From: "human", Value: "Again."}, {From: "gpt", Value: "Hello."}}}}
	}
	all, _, err := r.Render(conv(nil))
	if err != nil {
		t.Fatal(err)
	}
	masked, _, err := r.Render(conv(&zero))
	if err != nil {
		t.Fatal(err)
	}
	if len(all.Tokens) != len(masked.Tokens) {
		t.Fatalf("%d tokens with the weight, %d without", len(masked.Tokens), len(all.Tokens))
	}
	var inAll, inMasked []int32
	for i := range all.Tokens {
		if all.Tokens[i] != masked.Tokens[i] {
			t.Fatalf("token %d differs", i)
		}
		if all.Weights[i] > 0 {
			inAll = append(inAll, all.Tokens[i])
		}
		if masked.Weights[i] > 0 {
			inMasked = append(inMasked, masked.Tokens[i])
		}
	}
	hello := tok.Decode(toInts(inMasked), false)
	if len(inMasked) >= len(inAll) || !strings.HasPrefix(hello, "Hello.<|im_end|>") {
		t.Errorf("loss tokens %q (of %d with every reply trained)", hello, len(inAll))
	}
	_, _, err = r.Render(schemas.Record{Format: schemas.FormatShareGPT, ShareGPT: schemas.ShareGPT{Conversations: []schemas.Turn{
		{From: "human", Value: "Say hi."}, {From: "gpt", Value: "Hi.", Weight: &zero}}}})
	if !errors.Is(err, ErrUnsupportedRecord) {
		t.Errorf("nothing to train on: %v, want ErrUnsupportedRecord", err)
	}
}

func toInts(xs []int32) []int {
	out := make([]int, len(xs))
	for i, x := range xs {
		out[i] = int(x)
	}
	return out
}
