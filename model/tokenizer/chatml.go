package tokenizer

// ChatMLJinja is the ChatML template as a Jinja chat_template (what
// `largeforge model init --chat-template chatml` writes): it renders as the
// built-in "chatml" does.
const ChatMLJinja = "{% for message in messages %}{{ '<|im_start|>' + message['role'] + '\\n' + message['content'] + '<|im_end|>' + '\\n' }}{% endfor %}" +
	"{% if add_generation_prompt %}{{ '<|im_start|>assistant\\n' }}{% endif %}"

// NamedJinja returns the Jinja source of a built-in template that has one
// ("chatml"); ok is false for any other name.
func NamedJinja(name string) (src string, ok bool) {
	if name == "chatml" {
		return ChatMLJinja, true
	}
	return "", false
}
