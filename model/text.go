package model

import (
	"bytes"
	"context"
	"fmt"
	"slices"
	"strings"

	"github.com/largeforge/largeforge/model/tokenizer"
)

// TextRequest is a prompt as text. Stop strings end the completion, which
// is cut before the stop text. The prompt is encoded with the tokenizer's
// special tokens (BOS) added.
type TextRequest struct {
	Prompt string
	Stop   []string
	Params SamplingParams
}

// TextResult is a completion as text (special tokens skipped) and its ids.
type TextResult struct {
	Text             string
	IDs              []int
	FinishReason     string
	PromptTokens     int
	CompletionTokens int
	// Logprobs, with SamplingParams.Logprobs: one per id of IDs, each
	// token's text as it reads after the tokens before it.
	Logprobs []TokenLogprob
}

// TextGenerator runs text requests on a Model with its tokenizer.
type TextGenerator struct {
	m   *Model
	tok *tokenizer.Tokenizer
}

// NewTextGenerator pairs a model with its tokenizer.
func NewTextGenerator(m *Model, tok *tokenizer.Tokenizer) (*TextGenerator, error) {
	if m == nil || tok == nil {
		return nil, fmt.Errorf("%w: nil model or tokenizer", ErrInvalidOption)
	}
	if tok.VocabSize() > m.cfg.VocabSize {
		return nil, fmt.Errorf("%w: tokenizer has %d tokens, the model %d", ErrInvalidOption, tok.VocabSize(), m.cfg.VocabSize)
	}
	return &TextGenerator{m: m, tok: tok}, nil
}

// textStop finds stop strings in the decoded completion.
// decodeAfter decodes a completion as it reads after its prompt: a tokenizer
// that strips the leading space of the first token (SentencePiece's
// metaspace) keeps it when the completion starts with a word.
func decodeAfter(tok *tokenizer.Tokenizer, prompt, ids []int) string {
	if len(prompt) == 0 {
		return tok.Decode(ids, true)
	}
	ctx := prompt[len(prompt)-1:]
	pre := tok.Decode(ctx, true)
	full := tok.Decode(append(append([]int(nil), ctx...), ids...), true)
	if strings.HasPrefix(full, pre) {
		return full[len(pre):]
	}
	return tok.Decode(ids, true)
}

// bytesAfter is the raw bytes of token id after prompt (as decodeAfter,
// without replacing a partial character with U+FFFD).
func bytesAfter(tok *tokenizer.Tokenizer, prompt []int, id int) []byte {
	if len(prompt) == 0 {
		return tok.DecodeBytes([]int{id}, true)
	}
	ctx := prompt[len(prompt)-1:]
	pre := tok.DecodeBytes(ctx, true)
	full := tok.DecodeBytes([]int{ctx[0], id}, true)
	if bytes.HasPrefix(full, pre) {
		return full[len(pre):]
	}
	return tok.DecodeBytes([]int{id}, true)
}

type textStop struct {
	tok    *tokenizer.Tokenizer
	prompt []int
	stops  []string
	cut    string // the completion text up to the stop, once found
	found  bool
}

func (s *textStop) hook(ids []int) (int, bool) {
	text := decodeAfter(s.tok, s.prompt, ids)
	at := -1
	for _, st := range s.stops {
		if i := strings.Index(text, st); i >= 0 && (at < 0 || i < at) {
			at = i
		}
	}
	if at < 0 {
		return 0, false
	}
	s.cut, s.found = text[:at], true
	keep := 0
	for keep < len(ids) && len(decodeAfter(s.tok, s.prompt, ids[:keep+1])) <= at {
		keep++
	}
	return keep, true
}

// holdback is how many trailing bytes of text could begin a stop string.
func (s *textStop) holdback(text string) int {
	h := 0
	for _, st := range s.stops {
		for n := min(len(st)-1, len(text)); n > h; n-- {
			if strings.HasSuffix(text, st[:n]) {
				h = n
				break
			}
		}
	}
	return h
}

func (g *TextGenerator) prepare(r TextRequest) (GenerateRequest, *textStop, error) {
	for _, st := range r.Stop {
		if st == "" {
			return GenerateRequest{}, nil, fmt.Errorf("%w: empty stop string", ErrInvalidRequest)
		}
	}
	req := GenerateRequest{PromptIDs: g.tok.Encode(r.Prompt, true), Params: r.Params}
	var ts *textStop
	if len(r.Stop) > 0 {
		ts = &textStop{tok: g.tok, prompt: req.PromptIDs, stops: r.Stop}
		inner := r.Params.Stop
		req.Params.Stop = func(ids []int) (int, bool) {
			if inner != nil {
				if keep, stop := inner(ids); stop {
					return keep, stop
				}
			}
			return ts.hook(ids)
		}
	}
	return req, ts, nil
}

func (g *TextGenerator) result(prompt []int, res GenerateResult, ts *textStop) TextResult {
	text := ""
	if ts != nil && ts.found {
		text = ts.cut
	} else {
		text = decodeAfter(g.tok, prompt, res.IDs)
	}
	return TextResult{Text: text, IDs: res.IDs, FinishReason: res.FinishReason,
		PromptTokens: res.PromptTokens, CompletionTokens: res.CompletionTokens,
		Logprobs: g.tokenTexts(prompt, res.IDs, res.Logprobs)}
}

// tokenTexts names the tokens of lps (the logprobs of ids, generated after
// prompt): each token, chosen or alternative, decoded after the one before it.
func (g *TextGenerator) tokenTexts(prompt, ids []int, lps []TokenLogprob) []TokenLogprob {
	if lps == nil {
		return nil
	}
	out := make([]TokenLogprob, len(lps))
	for i, lp := range lps {
		before := prompt
		if i > 0 {
			before = ids[i-1 : i]
		}
		lp.Token = decodeAfter(g.tok, before, []int{lp.ID})
		lp.Bytes = bytesAfter(g.tok, before, lp.ID)
		lp.Top = append([]TopLogprob(nil), lp.Top...)
		for k := range lp.Top {
			lp.Top[k].Token = decodeAfter(g.tok, before, []int{lp.Top[k].ID})
			lp.Top[k].Bytes = bytesAfter(g.tok, before, lp.Top[k].ID)
		}
		out[i] = lp
	}
	return out
}

// Check reports whether the model would refuse r (an invalid request, or a
// prompt plus max_tokens over its context: ErrTooLong) without running it,
// so that a caller batches only requests that run.
func (g *TextGenerator) Check(r TextRequest) error {
	req, _, err := g.prepare(r)
	if err == nil {
		_, err = g.m.validateRequest(req)
	}
	return err
}

// Generate completes text requests as one batch (see Model.Generate).
func (g *TextGenerator) Generate(ctx context.Context, reqs []TextRequest) ([]TextResult, error) {
	greqs := make([]GenerateRequest, len(reqs))
	stops := make([]*textStop, len(reqs))
	for i, r := range reqs {
		var err error
		if greqs[i], stops[i], err = g.prepare(r); err != nil {
			return nil, fmt.Errorf("request %d: %w", i, err)
		}
	}
	res, err := g.m.Generate(ctx, greqs)
	if err != nil {
		return nil, err
	}
	out := make([]TextResult, len(res))
	for i, r := range res {
		out[i] = g.result(greqs[i].PromptIDs, r, stops[i])
	}
	return out, nil
}

// Submit runs a text request on a Batcher. onText, when not nil, receives
// the completion's text in pieces as it is produced; their concatenation is
// the result's Text (text that may begin a stop string is held back).
func (g *TextGenerator) Submit(ctx context.Context, b *Batcher, r TextRequest, onText func(string)) (TextResult, error) {
	req, ts, err := g.prepare(r)
	if err != nil {
		return TextResult{}, err
	}
	var (
		onToken func(int)
		dec     = g.tok.NewStreamDecoderAfter(true, req.PromptIDs)
		all     strings.Builder // the text decoded so far
		sent    int             // bytes of it given to onText
	)
	if onText != nil {
		onToken = func(id int) {
			all.WriteString(dec.Add(id))
			end := all.Len()
			if ts != nil {
				end -= ts.holdback(all.String())
			}
			if end > sent {
				onText(all.String()[sent:end])
				sent = end
			}
		}
	}
	res, err := b.Submit(ctx, req, onToken)
	if err != nil {
		return TextResult{}, err
	}
	out := g.result(req.PromptIDs, res, ts)
	if onText != nil && len(out.Text) > sent && strings.HasPrefix(out.Text, all.String()[:sent]) {
		onText(out.Text[sent:])
	}
	return out, nil
}

// ScorePair tokenizes a prompt and its completion for scoring: the prompt with
// the tokenizer's special tokens, and the completion as the tokens that follow
// the prompt when the two are encoded together, so that a word spanning the
// boundary is tokenized as in the whole text. When the joint encoding does
// not start with the prompt's, the completion is encoded on its own.
func ScorePair(tok *tokenizer.Tokenizer, prompt, completion string) ScoreRequest {
	p := tok.Encode(prompt, true)
	full := tok.Encode(prompt+completion, true)
	if len(full) >= len(p) && slices.Equal(full[:len(p)], p) {
		return ScoreRequest{PromptIDs: p, CompletionIDs: full[len(p):]}
	}
	return ScoreRequest{PromptIDs: p, CompletionIDs: tok.Encode(completion, false)}
}
