package train

import (
	"fmt"
	"math/rand/v2"
	"strings"

	"github.com/largeforge/largeforge/model/tokenizer"
	"github.com/largeforge/largeforge/schemas"
)

// The Stanford Alpaca prompt templates, with and without an input.
const (
	AlpacaPromptInput = "Below is an instruction that describes a task, paired with an input that provides further context. " +
		"Write a response that appropriately completes the request.\n\n" +
		"### Instruction:\n%s\n\n### Input:\n%s\n\n### Response:\n"
	AlpacaPromptNoInput = "Below is an instruction that describes a task. " +
		"Write a response that appropriately completes the request.\n\n" +
		"### Instruction:\n%s\n\n### Response:\n"
)

// Example is one tokenized training sequence. Weights[i] is the loss
// weight of Tokens[i] as a prediction target: 1 on response tokens, 0 on
// prompt tokens (the first token is never a target).
type Example struct {
	Tokens  []int32
	Weights []float32
}

// ResponseTokens counts the tokens that carry loss.
func (e Example) ResponseTokens() int {
	n := 0
	if len(e.Weights) < 2 {
		return 0
	}
	for _, w := range e.Weights[1:] {
		if w > 0 {
			n++
		}
	}
	return n
}

// AlpacaPrompt renders the Alpaca prompt of an instruction and optional input.
func AlpacaPrompt(instruction, input string) string {
	if strings.TrimSpace(input) == "" {
		return fmt.Sprintf(AlpacaPromptNoInput, instruction)
	}
	return fmt.Sprintf(AlpacaPromptInput, instruction, input)
}

// Prompt templates of Alpaca records (train.yaml prompt_template).
const (
	// PromptTemplateAlpaca renders the Stanford Alpaca prompt (the default).
	PromptTemplateAlpaca = schemas.PromptTemplateAlpaca
	// PromptTemplateChat renders the instruction (and input) as a user
	// turn and the output as the assistant's reply with the model's chat
	// template (ChatML when it has none, then written into the trained
	// model's tokenizer_config.json): shorter sequences, served through chat
	// requests.
	PromptTemplateChat = schemas.PromptTemplateChat
)

// TrainedChatTemplate is the chat_template a model trained on recs with tok
// must ship to serve chat as trained: ChatML (tokenizer.ChatMLJinja) when
// some record is rendered as chat (ShareGPT, or Alpaca with
// PromptTemplateChat) and tok has no template of its own, else "" (the
// tokenizer files copied from the base say it all).
func TrainedChatTemplate(tok *tokenizer.Tokenizer, recs []schemas.Record, promptTemplate string) string {
	if tok.HasChatTemplate() {
		return ""
	}
	for _, rec := range recs {
		if rec.Format == schemas.FormatShareGPT || (rec.Format == schemas.FormatAlpaca && promptTemplate == PromptTemplateChat) {
			return tokenizer.ChatMLJinja
		}
	}
	return ""
}

// Renderer turns records into Examples with a tokenizer.
type Renderer struct {
	tok          *tokenizer.Tokenizer
	maxLen       int
	alpacaAsChat bool
}

// NewRenderer returns a Renderer that truncates sequences to maxLen tokens
// and renders Alpaca records with the prompt template named (default
// PromptTemplateAlpaca).
func NewRenderer(tok *tokenizer.Tokenizer, maxLen int, promptTemplate ...string) (*Renderer, error) {
	if tok == nil {
		return nil, fmt.Errorf("%w: nil tokenizer", ErrInvalidOption)
	}
	if maxLen < 2 {
		return nil, fmt.Errorf("%w: max length %d is below 2", ErrInvalidOption, maxLen)
	}
	r := &Renderer{tok: tok, maxLen: maxLen}
	for _, t := range promptTemplate {
		switch t {
		case "", PromptTemplateAlpaca:
			r.alpacaAsChat = false
		case PromptTemplateChat:
			r.alpacaAsChat = true
		default:
			return nil, fmt.Errorf("%w: prompt_template %q (want %s or %s)", ErrInvalidOption, t, PromptTemplateAlpaca, PromptTemplateChat)
		}
	}
	return r, nil
}

type segment struct {
	text string
	loss bool
}

// Render tokenizes a record: Alpaca with the Alpaca prompt (loss on the
// output and EOS), ShareGPT as chat (loss on gpt turns and their end of
// turn). truncated reports that the sequence was cut to the maximum length.
func (r *Renderer) Render(rec schemas.Record) (ex Example, truncated bool, err error) {
	var segs []segment
	chat := rec.Format == schemas.FormatShareGPT
	switch {
	case rec.Format == schemas.FormatAlpaca && r.alpacaAsChat:
		chat = true
		user := rec.Alpaca.Instruction
		if strings.TrimSpace(rec.Alpaca.Input) != "" {
			user += "\n\n" + rec.Alpaca.Input
		}
		segs, err = r.chatSegments([]schemas.Turn{{From: schemas.SpeakerHuman, Value: user}, {From: schemas.SpeakerGPT, Value: rec.Alpaca.Output}})
		if err != nil {
			return Example{}, false, err
		}
	case rec.Format == schemas.FormatAlpaca:
		segs = []segment{{AlpacaPrompt(rec.Alpaca.Instruction, rec.Alpaca.Input), false}, {rec.Alpaca.Output, true}}
	case rec.Format == schemas.FormatShareGPT:
		segs, err = r.chatSegments(rec.ShareGPT.Conversations)
		if err != nil {
			return Example{}, false, err
		}
	default:
		return Example{}, false, fmt.Errorf("%w: format %q", ErrUnsupportedRecord, rec.Format)
	}
	if bos, ok := r.tok.BOS(); ok {
		ex.Tokens = append(ex.Tokens, int32(bos))
		ex.Weights = append(ex.Weights, 0)
	}
	for _, s := range segs {
		w := float32(0)
		if s.loss {
			w = 1
		}
		for _, id := range r.tok.Encode(s.text, false) {
			ex.Tokens = append(ex.Tokens, int32(id))
			ex.Weights = append(ex.Weights, w)
		}
	}
	// Alpaca prompts and chat without a template of its own end with EOS, a target.
	if eos, ok := r.tok.EOS(); ok && (!chat || !r.tok.HasChatTemplate()) {
		ex.Tokens = append(ex.Tokens, int32(eos))
		ex.Weights = append(ex.Weights, 1)
	}
	if len(ex.Tokens) > r.maxLen {
		ex.Tokens, ex.Weights = ex.Tokens[:r.maxLen], ex.Weights[:r.maxLen]
		truncated = true
	}
	return ex, truncated, nil
}

// chatSegments renders a ShareGPT conversation with the tokenizer's chat
// template (ChatML when it has none: TrainedChatTemplate) and splits it into prompt parts and
// gpt replies by rendering each prefix of the conversation. A gpt turn of
// weight 0 stays in the text out of the loss.
func (r *Renderer) chatSegments(turns []schemas.Turn) ([]segment, error) {
	msgs := make([]tokenizer.Message, 0, len(turns))
	hasGPT := false
	for _, t := range turns {
		role := "user"
		switch t.From {
		case schemas.SpeakerGPT:
			role, hasGPT = "assistant", hasGPT || t.Trained()
		case schemas.SpeakerSystem:
			role = "system"
		}
		msgs = append(msgs, tokenizer.Message{Role: role, Content: t.Value})
	}
	if !hasGPT {
		return nil, fmt.Errorf("%w: conversation has no gpt turn trained on (all weight 0, or none)", ErrUnsupportedRecord)
	}
	render := func(m []tokenizer.Message, gen bool) (string, error) {
		if len(m) == 0 {
			return "", nil
		}
		if r.tok.HasChatTemplate() {
			return r.tok.ApplyChatTemplate(m, gen)
		}
		return tokenizer.RenderBuiltinTemplate("chatml", m, gen)
	}
	var segs []segment
	prev := ""
	for k, m := range msgs {
		if m.Role == "assistant" {
			head, err := render(msgs[:k], true)
			if err != nil {
				return nil, fmt.Errorf("%w: %w", ErrUnsupportedRecord, err)
			}
			if !strings.HasPrefix(head, prev) {
				return nil, fmt.Errorf("%w: chat template output is not incremental", ErrUnsupportedRecord)
			}
			segs = append(segs, segment{head[len(prev):], false})
			prev = head
		}
		full, err := render(msgs[:k+1], false)
		if err != nil {
			return nil, fmt.Errorf("%w: %w", ErrUnsupportedRecord, err)
		}
		if !strings.HasPrefix(full, prev) {
			return nil, fmt.Errorf("%w: chat template output is not incremental", ErrUnsupportedRecord)
		}
		segs = append(segs, segment{full[len(prev):], turns[k].Trained()}) // a weight-0 gpt turn is context only
		prev = full
	}
	return segs, nil
}

// RenderAll renders every record, skipping none: an unsupported record is an
// error. It returns the examples and the count of truncated ones.
func (r *Renderer) RenderAll(recs []schemas.Record) ([]Example, int, error) {
	out := make([]Example, 0, len(recs))
	truncated := 0
	for i, rec := range recs {
		ex, cut, err := r.Render(rec)
		if err != nil {
			return nil, 0, fmt.Errorf("record %d: %w", i, err)
		}
		if cut {
			truncated++
		}
		out = append(out, ex)
	}
	return out, truncated, nil
}

// EpochOrder is the order examples are visited in epoch (0-based): a
// permutation of 0..n-1 that depends only on seed and epoch.
func EpochOrder(seed int64, epoch, n int) []int {
	rng := rand.New(rand.NewPCG(uint64(seed), uint64(epoch)+0x5851f42d4c957f2d))
	return rng.Perm(n)
}

// Batch is a right-padded batch ready for the train step: Targets[b][i] is
// Tokens[b][i+1], and Weights[b][i] its loss weight (0 on padding).
type Batch struct {
	Rows, Len int
	Tokens    []int32   // [Rows*Len]
	Targets   []int32   // [Rows*Len]
	Weights   []float32 // [Rows*Len]
	Samples   int       // real (non-padding) rows
}

// MakeBatch pads exs to rows rows and length seqLen with padID; an
// example longer than seqLen is cut to it.
func MakeBatch(exs []Example, rows, seqLen int, padID int32) Batch {
	b := Batch{Rows: rows, Len: seqLen, Samples: len(exs),
		Tokens: make([]int32, rows*seqLen), Targets: make([]int32, rows*seqLen), Weights: make([]float32, rows*seqLen)}
	for i := range b.Tokens {
		b.Tokens[i], b.Targets[i] = padID, padID
	}
	for r, ex := range exs {
		o := r * seqLen
		toks := ex.Tokens[:min(len(ex.Tokens), seqLen)] // longer rows are cut
		copy(b.Tokens[o:], toks)
		for i := 0; i+1 < len(toks); i++ {
			b.Targets[o+i] = ex.Tokens[i+1]
			b.Weights[o+i] = ex.Weights[i+1]
		}
	}
	return b
}
