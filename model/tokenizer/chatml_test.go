package tokenizer

import "testing"

func TestChatMLJinjaRendersAsBuiltin(t *testing.T) {
	for _, tc := range []struct {
		msgs []Message
		gen  bool
	}{
		{[]Message{{Role: "user", Content: "hi"}}, true},
		{[]Message{{Role: "system", Content: "Be brief."}, {Role: "user", Content: "hi"}, {Role: "assistant", Content: "hello"}}, false},
	} {
		want, err := RenderBuiltinTemplate("chatml", tc.msgs, tc.gen)
		if err != nil {
			t.Fatal(err)
		}
		got, err := RenderJinjaTemplate(ChatMLJinja, tc.msgs, tc.gen, "<s>", "</s>")
		if err != nil {
			t.Fatal(err)
		}
		if got != want {
			t.Errorf("jinja %q\nbuiltin %q", got, want)
		}
	}
}
