package schemas

import (
	"errors"
	"fmt"
	"testing"
)

func TestValidationMessage(t *testing.T) {
	tests := []struct {
		name      string
		err       error
		wantMsg   string
		wantParam string
	}{
		{"model required", ErrModelNameRequired, "Model name required", "model"},
		{"model path", ErrInvalidModelPath, "Invalid model path", "model"},
		{"prompt wrapped", fmt.Errorf("line 3: %w", ErrPromptTooLong), "Prompt too long", "prompt"},
		{"max_tokens", ErrInvalidMaxTokens, "Invalid max_tokens", "max_tokens"},
		{"temperature", ErrTemperatureOutOfRange, "Temperature out of range", "temperature"},
		{"limit", RequestLimitError("max_tokens", 300, 200, "the context"), "Invalid max_tokens: 300 is over the limit of 200 (the context)", "max_tokens"},
		{"limit wrapped", fmt.Errorf("generate: %w", RequestLimitError("prompt", 9, 7, "")), "Invalid prompt: 9 is over the limit of 7", "prompt"},
		{"other request error", fmt.Errorf("%w: top_k -1 is negative", ErrInvalidRequest), "invalid request: top_k -1 is negative", ""},
		{"any error", errors.New("boom"), "boom", ""},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			msg, param := ValidationMessage(tt.err)
			if msg != tt.wantMsg || param != tt.wantParam {
				t.Errorf("ValidationMessage = %q, %q; want %q, %q", msg, param, tt.wantMsg, tt.wantParam)
			}
		})
	}
}

func TestValidationMessageOfValidate(t *testing.T) {
	// Every §7.1 refusal of CompletionRequest.Validate names its field.
	tests := []struct {
		name      string
		mutate    func(*CompletionRequest)
		wantParam string
	}{
		{"no model", func(r *CompletionRequest) { r.Model = "" }, "model"},
		{"max_tokens", func(r *CompletionRequest) { r.MaxTokens = MaxMaxTokens + 1 }, "max_tokens"},
		{"temperature", func(r *CompletionRequest) { r.Temperature = 3 }, "temperature"},
		{"top_p", func(r *CompletionRequest) { r.TopP = 2 }, ""},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			r := DefaultCompletionRequest()
			r.Model, r.Prompt = "m", "hi"
			tt.mutate(&r)
			err := r.Validate()
			if err == nil {
				t.Fatal("Validate accepted the request")
			}
			if _, param := ValidationMessage(err); param != tt.wantParam {
				t.Errorf("param = %q, want %q (err %v)", param, tt.wantParam, err)
			}
		})
	}
}
