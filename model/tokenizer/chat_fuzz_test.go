package tokenizer

import (
	"errors"
	"testing"
)

// FuzzRenderJinjaTemplate: chat templates come from downloaded
// tokenizer_config.json files; any template text and message renders or
// fails with ErrTemplate, never panics or hangs the worker.
func FuzzRenderJinjaTemplate(f *testing.F) {
	for _, s := range []string{
		ChatMLJinja, chatMLTemplate,
		"{{ bos_token }}{% for m in messages %}[{{ m.role }}] {{ m.content }}{% endfor %}{% if add_generation_prompt %}[assistant]{% endif %}",
		"{% for m in messages %}{% if m.role == 'user' %}{{ m.content | trim }}{% else %}{{ raise_exception('bad') }}{% endif %}{% endfor %}",
		"{{ messages[0]['content'][:3] }}{{ eos_token }}", "{% if %}", "{{ }}", "{% for x in 3 %}{% endfor %}", "",
	} {
		f.Add(s, "user", "hello", true)
	}
	f.Fuzz(func(t *testing.T, src, role, content string, gen bool) {
		if len(src) > 4096 {
			return
		}
		_, err := RenderJinjaTemplate(src, []Message{{Role: role, Content: content}}, gen, "<s>", "</s>")
		if err != nil && !errors.Is(err, ErrTemplate) {
			t.Fatalf("error %v does not wrap ErrTemplate", err)
		}
	})
}
