package serve_test

import (
	"fmt"

	"github.com/largeforge/largeforge/model"
	"github.com/largeforge/largeforge/schemas"
	"github.com/largeforge/largeforge/serve"
)

// A chat request's generation becomes a chat.completion whose choice is the
// assistant's message.
func ExampleResponse() {
	req := schemas.CompletionRequest{Model: "stories", Messages: []schemas.ChatMessage{{Role: schemas.RoleUser, Content: "Hi"}}}
	out := model.TextResult{Text: "Hello!", FinishReason: "stop", PromptTokens: 6, CompletionTokens: 3}
	resp := serve.Response("chatcmpl-1", "stories", req, out)
	fmt.Println(resp.Object, resp.Choices[0].Message.Role, resp.Choices[0].Message.Content, resp.Choices[0].FinishReason, resp.Usage.TotalTokens)
	// Output: chat.completion assistant Hello! stop 9
}
