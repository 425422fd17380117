package tokenizer

import (
	"fmt"
	"strings"

	"github.com/ardanlabs/jinja"
)

// Message is one chat message (DATA_DICTIONARY §3.3).
type Message struct {
	Role    string `json:"role"`
	Content string `json:"content"`
}

// BuiltinTemplates names the chat templates RenderBuiltinTemplate knows.
var BuiltinTemplates = []string{"chatml", "llama2", "alpaca"}

func compileTemplate(src string) (tmpl *jinja.Template, err error) {
	defer func() {
		if r := recover(); r != nil {
			tmpl, err = nil, fmt.Errorf("%w: compile: %v", ErrTemplate, r)
		}
	}()
	tmpl, err = jinja.Compile(src)
	if err != nil {
		return nil, fmt.Errorf("%w: compile: %v", ErrTemplate, err)
	}
	return tmpl, nil
}

// HasChatTemplate reports whether the model ships a chat_template.
func (t *Tokenizer) HasChatTemplate() bool { return t.chatTmpl != "" }

// ChatTemplate returns the model's Jinja chat_template ("" when none).
func (t *Tokenizer) ChatTemplate() string { return t.chatTmpl }

// ApplyChatTemplate renders msgs with the model's chat_template from
// tokenizer_config.json, as Hugging Face's apply_chat_template does with
// tokenize=False. With addGenerationPrompt the prompt ends where the assistant
// reply starts. A model without a template gets ErrNoChatTemplate; a template
// this package cannot run gets ErrTemplate. The result may hold the BOS token
// as text: encode it with addSpecial false.
func (t *Tokenizer) ApplyChatTemplate(msgs []Message, addGenerationPrompt bool) (string, error) {
	return t.ApplyChatTemplateWith(msgs, addGenerationPrompt, nil)
}

// ApplyChatTemplateWith is ApplyChatTemplate with extra template variables,
// such as Qwen3's enable_thinking.
func (t *Tokenizer) ApplyChatTemplateWith(msgs []Message, addGenerationPrompt bool, vars map[string]any) (string, error) {
	if t.chatTmpl == "" {
		return "", ErrNoChatTemplate
	}
	if t.chatErr != nil {
		return "", t.chatErr
	}
	return renderJinja(t.chatCompiled, msgs, addGenerationPrompt, t.bosToken, t.eosToken, vars)
}

// RenderJinjaTemplate renders msgs with a Jinja chat template given as text,
// with bos_token and eos_token set to the given strings.
func RenderJinjaTemplate(src string, msgs []Message, addGenerationPrompt bool, bosToken, eosToken string) (string, error) {
	tmpl, err := compileTemplate(src)
	if err != nil {
		return "", err
	}
	return renderJinja(tmpl, msgs, addGenerationPrompt, bosToken, eosToken, nil)
}

func renderJinja(tmpl *jinja.Template, msgs []Message, addGenerationPrompt bool, bos, eos string, vars map[string]any) (out string, err error) {
	if len(msgs) == 0 {
		return "", fmt.Errorf("%w: no messages", ErrInvalidMessage)
	}
	list := make([]any, len(msgs))
	for k, m := range msgs {
		list[k] = map[string]any{"role": m.Role, "content": m.Content}
	}
	defer func() {
		if r := recover(); r != nil {
			out, err = "", fmt.Errorf("%w: render: %v", ErrTemplate, r)
		}
	}()
	data := map[string]any{}
	for k, v := range vars {
		data[k] = v
	}
	data["messages"] = list
	data["add_generation_prompt"] = addGenerationPrompt
	data["bos_token"] = bos
	data["eos_token"] = eos
	out, err = tmpl.Render(data)
	if err != nil {
		return "", fmt.Errorf("%w: render: %v", ErrTemplate, err)
	}
	return out, nil
}

// RenderBuiltinTemplate renders msgs with a named built-in template:
//
//   - "chatml": <|im_start|>role\ncontent<|im_end|>\n per message; the generation
//     prompt is <|im_start|>assistant\n.
//   - "llama2": <s>[INST] <<SYS>>\nsystem\n<</SYS>>\n\nuser [/INST] assistant </s>...,
//     as the Llama-2 chat models' template (user and assistant must alternate).
//   - "alpaca": the Alpaca instruction prompt, "### Instruction:" and
//     "### Response:" sections after a system preamble.
//
// Roles are "system", "user" and "assistant"; any other role, or none at all,
// is an ErrInvalidMessage error; an unknown name is ErrUnknownTemplate.
func RenderBuiltinTemplate(name string, msgs []Message, addGenerationPrompt bool) (string, error) {
	if len(msgs) == 0 {
		return "", fmt.Errorf("%w: no messages", ErrInvalidMessage)
	}
	for k, m := range msgs {
		switch m.Role {
		case "system", "user", "assistant":
		default:
			return "", fmt.Errorf("%w: message %d has role %q (want system, user or assistant)", ErrInvalidMessage, k, m.Role)
		}
	}
	switch name {
	case "chatml":
		return renderChatML(msgs, addGenerationPrompt), nil
	case "llama2":
		return renderLlama2(msgs)
	case "alpaca":
		return renderAlpaca(msgs, addGenerationPrompt), nil
	}
	return "", fmt.Errorf("%w: %q (known: %s)", ErrUnknownTemplate, name, strings.Join(BuiltinTemplates, ", "))
}

func renderChatML(msgs []Message, gen bool) string {
	var b strings.Builder
	for _, m := range msgs {
		b.WriteString("<|im_start|>" + m.Role + "\n" + m.Content + "<|im_end|>\n")
	}
	if gen {
		b.WriteString("<|im_start|>assistant\n")
	}
	return b.String()
}

// renderLlama2 follows the Llama-2 chat template; the prompt always ends
// ready for the assistant after a user turn, so addGenerationPrompt changes nothing.
func renderLlama2(msgs []Message) (string, error) {
	system := ""
	hasSystem := msgs[0].Role == "system"
	if hasSystem {
		system = msgs[0].Content
		msgs = msgs[1:]
	}
	var b strings.Builder
	for k, m := range msgs {
		if (m.Role == "user") != (k%2 == 0) {
			return "", fmt.Errorf("%w: llama2 template needs user and assistant turns to alternate, starting with user", ErrInvalidMessage)
		}
		content := m.Content
		if k == 0 && hasSystem {
			content = "<<SYS>>\n" + system + "\n<</SYS>>\n\n" + content
		}
		if m.Role == "user" {
			b.WriteString("<s>[INST] " + strings.TrimSpace(content) + " [/INST]")
		} else {
			b.WriteString(" " + strings.TrimSpace(content) + " </s>")
		}
	}
	return b.String(), nil
}

// alpacaPreamble is the Alpaca prompt's default system text.
const alpacaPreamble = "Below is an instruction that describes a task. Write a response that appropriately completes the request."

func renderAlpaca(msgs []Message, gen bool) string {
	var b strings.Builder
	system := alpacaPreamble
	if msgs[0].Role == "system" {
		system = msgs[0].Content
		msgs = msgs[1:]
	}
	b.WriteString(system + "\n\n")
	for _, m := range msgs {
		switch m.Role {
		case "user":
			b.WriteString("### Instruction:\n" + m.Content + "\n\n")
		case "assistant":
			b.WriteString("### Response:\n" + m.Content + "\n\n")
		case "system":
			b.WriteString(m.Content + "\n\n")
		}
	}
	if gen {
		b.WriteString("### Response:\n")
	}
	return b.String()
}
