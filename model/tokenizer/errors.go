package tokenizer

import "errors"

var (
	// ErrUnsupported is returned by Load when tokenizer.json uses a model,
	// normalizer, pre-tokenizer, post-processor or decoder this package does
	// not implement. The wrapping error names the component.
	ErrUnsupported = errors.New("tokenizer: unsupported feature")
	// ErrInvalid is returned by Load when tokenizer.json or tokenizer_config.json
	// is malformed (bad JSON, a merge whose parts are not in the vocabulary, ...).
	ErrInvalid = errors.New("tokenizer: invalid tokenizer file")
	// ErrNoChatTemplate is returned by ApplyChatTemplate when the model ships no
	// chat_template in tokenizer_config.json.
	ErrNoChatTemplate = errors.New("tokenizer: model has no chat template")
	// ErrUnknownTemplate is returned by RenderBuiltinTemplate for a name that is
	// not one of BuiltinTemplates.
	ErrUnknownTemplate = errors.New("tokenizer: unknown built-in chat template")
	// ErrInvalidMessage is returned when a chat message has a role the template
	// cannot render or the conversation order is not one it accepts.
	ErrInvalidMessage = errors.New("tokenizer: invalid chat message")
	// ErrTemplate is returned when a Jinja chat template fails to compile or render.
	ErrTemplate = errors.New("tokenizer: chat template failed")
)
