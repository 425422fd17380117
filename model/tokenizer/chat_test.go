package tokenizer

import (
	"errors"
	"os"
	"path/filepath"
	"testing"
)

// llama2ChatTemplate is the chat_template of the Llama-2 chat models' tokenizer_config.json.
const llama2ChatTemplate = "{% if messages[0]['role'] == 'system' %}{% set loop_messages = messages[1:] %}{% set system_message = messages[0]['content'] %}{% else %}{% set loop_messages = messages %}{% set system_message = false %}{% endif %}{% for message in loop_messages %}{% if (message['role'] == 'user') != (loop.index0 % 2 == 0) %}{{ raise_exception('Conversation roles must alternate user/assistant/user/assistant/...') }}{% endif %}{% if loop.index0 == 0 and system_message != false %}{% set content = '<<SYS>>\\n' + system_message + '\\n<</SYS>>\\n\\n' + message['content'] %}{% else %}{% set content = message['content'] %}{% endif %}{% if message['role'] == 'user' %}{{ bos_token + '[INST] ' + content.strip() + ' [/INST]' }}{% elif message['role'] == 'assistant' %}{{ ' '  + content.strip() + ' ' + eos_token }}{% endif %}{% endfor %}"

// chatMLTemplate is the usual ChatML chat_template.
const chatMLTemplate = "{% for message in messages %}{{'<|im_start|>' + message['role'] + '\n' + message['content'] + '<|im_end|>' + '\n'}}{% endfor %}{% if add_generation_prompt %}{{ '<|im_start|>assistant\n' }}{% endif %}"

func TestApplyChatTemplateQwen3(t *testing.T) {
	tok := qwen3(t)
	// Expected strings rendered by Python Jinja2 with Hugging Face's settings
	// (trim_blocks, lstrip_blocks) from qwen3/tokenizer_config.json.
	tests := []struct {
		name string
		msgs []Message
		gen  bool
		want string
	}{
		{
			name: "one user turn with generation prompt",
			msgs: []Message{{Role: "user", Content: "Hi"}},
			gen:  true,
			want: "<|im_start|>user\nHi<|im_end|>\n<|im_start|>assistant\n",
		},
		{
			name: "system and history drops old reasoning",
			msgs: []Message{
				{Role: "system", Content: "Be brief."},
				{Role: "user", Content: "What is 2+2?"},
				{Role: "assistant", Content: "<think>\nadd\n</think>\n\n4"},
				{Role: "user", Content: "And 3+3?"},
			},
			want: "<|im_start|>system\nBe brief.<|im_end|>\n<|im_start|>user\nWhat is 2+2?<|im_end|>\n<|im_start|>assistant\n4<|im_end|>\n<|im_start|>user\nAnd 3+3?<|im_end|>\n",
		},
		{
			name: "last assistant turn keeps reasoning",
			msgs: []Message{{Role: "user", Content: "Q"}, {Role: "assistant", Content: "<think>\nr\n</think>\n\nA"}},
			want: "<|im_start|>user\nQ<|im_end|>\n<|im_start|>assistant\n<think>\nr\n</think>\n\nA<|im_end|>\n",
		},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			got, err := tok.ApplyChatTemplate(tc.msgs, tc.gen)
			if err != nil {
				t.Fatalf("ApplyChatTemplate: %v", err)
			}
			if got != tc.want {
				t.Errorf("got  %q\nwant %q", got, tc.want)
			}
			// The rendered prompt's markers are single special tokens.
			ids := tok.Encode(got, false)
			start, _ := tok.TokenID("<|im_start|>")
			if ids[0] != start {
				t.Errorf("first token %d, want <|im_start|> %d", ids[0], start)
			}
			if dec := tok.Decode(ids, false); dec != got {
				t.Errorf("Decode(Encode(prompt)) = %q", dec)
			}
		})
	}
}

func TestApplyChatTemplateEnableThinking(t *testing.T) {
	got, err := qwen3(t).ApplyChatTemplateWith([]Message{{Role: "user", Content: "Hi"}}, true, map[string]any{"enable_thinking": false})
	if err != nil {
		t.Fatal(err)
	}
	if want := "<|im_start|>user\nHi<|im_end|>\n<|im_start|>assistant\n<think>\n\n</think>\n\n"; got != want {
		t.Errorf("got %q, want %q", got, want)
	}
}

func TestApplyChatTemplateErrors(t *testing.T) {
	tok := stories(t) // stories260K ships no chat_template
	if tok.HasChatTemplate() {
		t.Fatal("stories260K should have no chat template")
	}
	_, err := tok.ApplyChatTemplate([]Message{{Role: "user", Content: "hi"}}, true)
	if !errors.Is(err, ErrNoChatTemplate) {
		t.Errorf("err = %v, want ErrNoChatTemplate", err)
	}
	if _, err := qwen3(t).ApplyChatTemplate(nil, true); !errors.Is(err, ErrInvalidMessage) {
		t.Errorf("no messages: err = %v, want ErrInvalidMessage", err)
	}
	if _, err := RenderJinjaTemplate("{% for x in %}", []Message{{Role: "user"}}, false, "", ""); !errors.Is(err, ErrTemplate) {
		t.Errorf("bad template: err = %v, want ErrTemplate", err)
	}
	_, err = RenderJinjaTemplate(llama2ChatTemplate, []Message{{Role: "assistant", Content: "x"}}, false, "<s>", "</s>")
	if !errors.Is(err, ErrTemplate) {
		t.Errorf("raise_exception: err = %v, want ErrTemplate", err)
	}
}

func TestLoadDirChatTemplate(t *testing.T) {
	dir := t.TempDir()
	b, err := ByteLevelJSON(nil)
	if err != nil {
		t.Fatal(err)
	}
	writeFile(t, filepath.Join(dir, "tokenizer.json"), b)
	writeFile(t, filepath.Join(dir, "tokenizer_config.json"), []byte(`{"bos_token": {"content": "<s>"}, "eos_token": "</s>", "add_bos_token": false, "chat_template": [{"name": "default", "template": `+quoteJSON(chatMLTemplate)+`}]}`))
	tok, err := LoadDir(dir)
	if err != nil {
		t.Fatal(err)
	}
	got, err := tok.ApplyChatTemplate([]Message{{Role: "user", Content: "hi"}}, true)
	if err != nil {
		t.Fatal(err)
	}
	want, _ := RenderBuiltinTemplate("chatml", []Message{{Role: "user", Content: "hi"}}, true)
	if got != want {
		t.Errorf("got %q, want %q", got, want)
	}
	if ids := tok.Encode("a", true); len(ids) != 1 {
		t.Errorf("add_bos_token false: Encode = %v, want one id", ids)
	}
	if id, ok := tok.EOS(); !ok || tok.Token(id) != "</s>" {
		t.Errorf("EOS = %d %v", id, ok)
	}
}

func writeFile(t *testing.T, path string, b []byte) {
	t.Helper()
	if err := os.WriteFile(path, b, 0o644); err != nil {
		t.Fatal(err)
	}
}

func TestRenderBuiltinTemplate(t *testing.T) {
	conv := []Message{
		{Role: "system", Content: "Be kind."},
		{Role: "user", Content: "Hello"},
		{Role: "assistant", Content: "Hi there"},
		{Role: "user", Content: "Bye"},
	}
	tests := []struct {
		name    string
		tmpl    string
		msgs    []Message
		gen     bool
		want    string
		wantErr error
	}{
		{name: "chatml", tmpl: "chatml", msgs: conv, gen: true,
			want: "<|im_start|>system\nBe kind.<|im_end|>\n<|im_start|>user\nHello<|im_end|>\n<|im_start|>assistant\nHi there<|im_end|>\n<|im_start|>user\nBye<|im_end|>\n<|im_start|>assistant\n"},
		{name: "llama2", tmpl: "llama2", msgs: conv,
			want: "<s>[INST] <<SYS>>\nBe kind.\n<</SYS>>\n\nHello [/INST] Hi there </s><s>[INST] Bye [/INST]"},
		{name: "llama2 without system", tmpl: "llama2", msgs: conv[1:2], want: "<s>[INST] Hello [/INST]"},
		{name: "alpaca", tmpl: "alpaca", msgs: conv[1:2], gen: true,
			want: alpacaPreamble + "\n\n### Instruction:\nHello\n\n### Response:\n"},
		{name: "alpaca with system", tmpl: "alpaca", msgs: conv[:3],
			want: "Be kind.\n\n### Instruction:\nHello\n\n### Response:\nHi there\n\n"},
		{name: "unknown name", tmpl: "vicuna", msgs: conv, wantErr: ErrUnknownTemplate},
		{name: "bad role", tmpl: "chatml", msgs: []Message{{Role: "tool", Content: "x"}}, wantErr: ErrInvalidMessage},
		{name: "no messages", tmpl: "chatml", wantErr: ErrInvalidMessage},
		{name: "llama2 order", tmpl: "llama2", msgs: []Message{{Role: "assistant", Content: "x"}}, wantErr: ErrInvalidMessage},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			got, err := RenderBuiltinTemplate(tc.tmpl, tc.msgs, tc.gen)
			if tc.wantErr != nil {
				if !errors.Is(err, tc.wantErr) {
					t.Fatalf("err = %v, want %v", err, tc.wantErr)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			if got != tc.want {
				t.Errorf("got  %q\nwant %q", got, tc.want)
			}
		})
	}
}

// The built-in templates agree with the models' own Jinja templates.
func TestBuiltinMatchesJinja(t *testing.T) {
	conv := []Message{{Role: "system", Content: "Be kind."}, {Role: "user", Content: " Hello "}, {Role: "assistant", Content: "Hi"}, {Role: "user", Content: "Bye"}}
	tests := []struct {
		name, builtin, jinja string
	}{
		{name: "llama2", builtin: "llama2", jinja: llama2ChatTemplate},
		{name: "chatml", builtin: "chatml", jinja: chatMLTemplate},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			want, err := RenderJinjaTemplate(tc.jinja, conv, true, "<s>", "</s>")
			if err != nil {
				t.Fatal(err)
			}
			got, err := RenderBuiltinTemplate(tc.builtin, conv, true)
			if err != nil {
				t.Fatal(err)
			}
			if got != want {
				t.Errorf("builtin %q\njinja   %q", got, want)
			}
		})
	}
}
