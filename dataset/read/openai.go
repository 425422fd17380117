package read

import (
	"bytes"
	"encoding/json"
	"fmt"
	"strings"

	"github.com/largeforge/largeforge/schemas"
)

// OpenAI's fine-tuning formats, taken as the dictionary's records:
//
// Chat ({"messages": [...]}) is a ShareGPT record: each message a turn,
// role system or developer → "system", user → "human", assistant → "gpt";
// content a string or a list of text parts (joined with "\n"). An
// assistant message's "weight" (0 or 1, default 1) says whether it is
// trained on: weight 0 is carried as the turn's weight 0 (a per-turn loss
// mask; the trainer keeps the turn as context and out of the loss).
// Tool calls, tool and function messages and other roles are rejected,
// naming the field.
//
// Preference ({"input": {"messages": [...]}, "preferred_output": [...],
// "non_preferred_output": [...]}) is a DPO record: prompt is input's one
// user message, chosen and rejected the one assistant message of each
// output. A multi-message input (a system message, earlier turns) has no
// DPO prompt and is rejected rather than cut.

// OpenAIFormat reports whether data is a line of one of OpenAI's
// fine-tuning formats, and the dictionary format it becomes: a top-level
// "messages" is chat (sharegpt), "preferred_output" preference (dpo).
func OpenAIFormat(data []byte) (schemas.Format, bool) {
	var keys map[string]json.RawMessage
	if json.Unmarshal(data, &keys) != nil {
		return "", false
	}
	if _, ok := keys["messages"]; ok {
		return schemas.FormatShareGPT, true
	}
	if _, ok := keys["preferred_output"]; ok {
		return schemas.FormatDPO, true
	}
	return "", false
}

// openAIMessage is one message of an OpenAI fine-tuning line.
type openAIMessage struct {
	Role         string          `json:"role"`
	Content      json.RawMessage `json:"content"`
	Weight       *float64        `json:"weight"`
	ToolCalls    json.RawMessage `json:"tool_calls"`
	FunctionCall json.RawMessage `json:"function_call"`
}

// FromOpenAI converts a line of OpenAI's chat or preference format into
// the dictionary's JSON of format f (what OpenAIFormat names), to be
// decoded by schemas.DecodeRecord. Errors are *schemas.ValidationError
// naming the field and rule.
func FromOpenAI(f schemas.Format, data []byte) ([]byte, error) {
	switch f {
	case schemas.FormatShareGPT:
		var line struct {
			Messages []openAIMessage `json:"messages"`
		}
		if err := json.Unmarshal(data, &line); err != nil {
			return nil, invalid("messages", "type", "want a list of message objects: %v", err)
		}
		type turn struct {
			From   string `json:"from"`
			Value  string `json:"value"`
			Weight *int   `json:"weight,omitempty"`
		}
		conv := make([]turn, len(line.Messages))
		for i, m := range line.Messages {
			path := fmt.Sprintf("messages[%d]", i)
			if err := noTools(path, m); err != nil {
				return nil, err
			}
			text, err := contentText(path, m.Content)
			if err != nil {
				return nil, err
			}
			conv[i].Value = text
			switch m.Role {
			case "system", "developer":
				conv[i].From = schemas.SpeakerSystem
			case "user":
				conv[i].From = schemas.SpeakerHuman
			case "assistant":
				conv[i].From = schemas.SpeakerGPT
			default:
				return nil, invalid(path+".role", "enum", "%q is not one of system, developer, user, assistant", m.Role)
			}
			if m.Weight != nil {
				switch {
				case m.Role != "assistant":
					return nil, invalid(path+".weight", "enum", "only assistant messages take a weight")
				case *m.Weight != 0 && *m.Weight != 1:
					return nil, invalid(path+".weight", "enum", "%v is not 0 or 1", *m.Weight)
				case *m.Weight == 0:
					zero := 0
					conv[i].Weight = &zero
				}
			}
		}
		return json.Marshal(map[string]any{"conversations": conv})
	case schemas.FormatDPO:
		var line struct {
			Input struct {
				Messages []openAIMessage `json:"messages"`
				Tools    json.RawMessage `json:"tools"`
			} `json:"input"`
			Preferred    []openAIMessage `json:"preferred_output"`
			NonPreferred []openAIMessage `json:"non_preferred_output"`
		}
		if err := json.Unmarshal(data, &line); err != nil {
			return nil, invalid("", "type", "want input.messages, preferred_output and non_preferred_output lists of messages: %v", err)
		}
		if !emptyJSON(line.Input.Tools) {
			return nil, invalid("input.tools", "unsupported", "tools are not supported")
		}
		prompt, err := only("input.messages", "user", line.Input.Messages)
		if err != nil {
			return nil, err
		}
		chosen, err := only("preferred_output", "assistant", line.Preferred)
		if err != nil {
			return nil, err
		}
		rejected, err := only("non_preferred_output", "assistant", line.NonPreferred)
		if err != nil {
			return nil, err
		}
		return json.Marshal(schemas.DPO{Prompt: prompt, Chosen: chosen, Rejected: rejected})
	}
	return nil, invalid("", "format", "%s has no OpenAI form", f)
}

// only is the text of msgs, which must be one message of role.
func only(path, role string, msgs []openAIMessage) (string, error) {
	if len(msgs) != 1 {
		return "", invalid(path, "minItems", "%d messages; a DPO record takes exactly one %s message here", len(msgs), role)
	}
	p := path + "[0]"
	if err := noTools(p, msgs[0]); err != nil {
		return "", err
	}
	if msgs[0].Role != role {
		return "", invalid(p+".role", "enum", "%q, want %q", msgs[0].Role, role)
	}
	return contentText(p, msgs[0].Content)
}

func noTools(path string, m openAIMessage) error {
	if !emptyJSON(m.ToolCalls) || !emptyJSON(m.FunctionCall) {
		return invalid(path+".tool_calls", "unsupported", "tool and function calls are not supported")
	}
	return nil
}

// contentText is a message content: a string, or text parts joined with "\n".
func contentText(path string, c json.RawMessage) (string, error) {
	var s string
	if json.Unmarshal(c, &s) == nil {
		return s, nil
	}
	var parts []struct {
		Type string  `json:"type"`
		Text *string `json:"text"`
	}
	if json.Unmarshal(c, &parts) != nil {
		return "", invalid(path+".content", "type", "want a string or a list of text parts")
	}
	texts := make([]string, len(parts))
	for j, p := range parts {
		if p.Type != "text" || p.Text == nil {
			return "", invalid(fmt.Sprintf("%s.content[%d].type", path, j), "enum", "%q is not supported (only text parts)", p.Type)
		}
		texts[j] = *p.Text
	}
	return strings.Join(texts, "\n"), nil
}

func emptyJSON(v json.RawMessage) bool {
	switch string(bytes.TrimSpace(v)) {
	case "", "null", "[]", "{}":
		return true
	}
	return false
}

func invalid(field, rule, format string, args ...any) *schemas.ValidationError {
	where := "record"
	if field != "" {
		where = fmt.Sprintf("field %q", field)
	}
	return &schemas.ValidationError{Field: field, Rule: rule, Message: where + ": " + rule + ": " + fmt.Sprintf(format, args...)}
}
