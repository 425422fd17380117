package train

import (
	"context"
	"encoding/json"
	"os"
	"path/filepath"
	"reflect"
	"testing"

	"github.com/rs/zerolog"

	"github.com/largeforge/largeforge/model/checkpoint"
	"github.com/largeforge/largeforge/model/tokenizer"
	"github.com/largeforge/largeforge/schemas"
)

// A model fine-tuned on chat rows ships the chat template it was trained
// with in its tokenizer_config.json (and its checkpoints'): loaded, it
// renders the training conversations exactly as training did, so it serves
// chat as trained. Rows not rendered as chat add no template, and a base's
// own template is kept.
func TestTrainedModelShipsItsChatTemplate(t *testing.T) {
	const qa = "{% for m in messages %}{% if m.role == 'assistant' %} A: {{ m.content }}</s>{% else %}Q: {{ m.content }}{% endif %}{% endfor %}{% if add_generation_prompt %} A: {% endif %}"
	sharegpt := `{"conversations":[{"from":"system","value":"Be brief."},{"from":"human","value":"Colour?"},{"from":"gpt","value":"red"},{"from":"human","value":"Again?"},{"from":"gpt","value":"blue"}]}`
	alpaca := `{"instruction":"Colour?","input":"a hint","output":"red"}`
	tests := []struct {
		name           string
		baseTemplate   string
		row            string
		promptTemplate string
		want           string // the output's chat_template ("": none)
	}{
		{name: "sharegpt on a base without a template", row: sharegpt, want: tokenizer.ChatMLJinja},
		{name: "alpaca as chat on a base without a template", row: alpaca, promptTemplate: PromptTemplateChat, want: tokenizer.ChatMLJinja},
		{name: "alpaca prompt", row: alpaca, want: ""},
		{name: "sharegpt on a base with its template", baseTemplate: qa, row: sharegpt, want: qa},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			base, _, _ := tinyBase(t)
			if tt.baseTemplate != "" {
				if err := checkpoint.SetChatTemplate(base, tt.baseTemplate); err != nil {
					t.Fatal(err)
				}
			}
			dir := t.TempDir()
			data := filepath.Join(dir, "rows.jsonl")
			row := tt.row + "\n"
			if err := os.WriteFile(data, []byte(row+row+row+row), 0o644); err != nil {
				t.Fatal(err)
			}
			out := filepath.Join(dir, "out")
			yaml := "base_model: " + base + "\ndata_files: [" + data + "]\noutput_dir: " + out +
				"\nnum_epochs: 2\nper_device_batch_size: 4\ngradient_accumulation_steps: 1\nmax_seq_length: 256\nsave_steps: 1\nsave_total_limit: 0\nbf16: false\n"
			if tt.promptTemplate != "" {
				yaml += "prompt_template: " + tt.promptTemplate + "\n"
			}
			rc, err := ParseRunConfig([]byte(yaml))
			if err != nil {
				t.Fatal(err)
			}
			if _, err := Run(context.Background(), rc, zerolog.Nop()); err != nil {
				t.Fatal(err)
			}
			for _, d := range []string{out, filepath.Join(out, CheckpointPrefix+"1")} {
				if got := chatTemplateOf(t, d); got != tt.want {
					t.Errorf("%s: chat_template %q, want %q", filepath.Base(d), got, tt.want)
				}
			}
			if tt.want == "" {
				return
			}
			// Served: the trained model's tokenizer renders the conversation
			// (each prompt up to a reply, and the whole) as training did.
			baseTok, err := tokenizer.LoadDir(base)
			if err != nil {
				t.Fatal(err)
			}
			outTok, err := tokenizer.LoadDir(out)
			if err != nil {
				t.Fatal(err)
			}
			recs, err := LoadRecords([]string{data}, "")
			if err != nil {
				t.Fatal(err)
			}
			rec := recs[0]
			turns := rec.ShareGPT.Conversations
			if rec.Format == schemas.FormatAlpaca {
				turns = []schemas.Turn{{From: schemas.SpeakerHuman, Value: rec.Alpaca.Instruction + "\n\n" + rec.Alpaca.Input},
					{From: schemas.SpeakerGPT, Value: rec.Alpaca.Output}}
			}
			trained, err := (&Renderer{tok: baseTok, maxLen: 160}).chatSegments(turns)
			if err != nil {
				t.Fatal(err)
			}
			served, err := (&Renderer{tok: outTok, maxLen: 160}).chatSegments(turns)
			if err != nil {
				t.Fatal(err)
			}
			if !reflect.DeepEqual(served, trained) {
				t.Errorf("served model renders\n%+v\ntraining rendered\n%+v", served, trained)
			}
		})
	}
}

// chatTemplateOf reads the chat_template of dir's tokenizer_config.json.
func chatTemplateOf(t *testing.T, dir string) string {
	t.Helper()
	data, err := os.ReadFile(filepath.Join(dir, checkpoint.TokenizerConfigFile))
	if err != nil {
		t.Fatal(err)
	}
	var cfg struct {
		ChatTemplate string `json:"chat_template"`
	}
	if err := json.Unmarshal(data, &cfg); err != nil {
		t.Fatal(err)
	}
	return cfg.ChatTemplate
}
