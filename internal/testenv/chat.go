package testenv

import (
	"encoding/json"
	"os"
	"path/filepath"
	"testing"
)

// WithChatTemplate returns a model directory in the test's temporary folder
// that is dir with chat_template set to template in its
// tokenizer_config.json (the other files linked, not copied).
func WithChatTemplate(t testing.TB, dir, template string) string {
	t.Helper()
	out := t.TempDir()
	entries, err := os.ReadDir(dir)
	if err != nil {
		t.Fatal(err)
	}
	for _, e := range entries {
		if e.IsDir() || e.Name() == "tokenizer_config.json" {
			continue
		}
		src, err := filepath.Abs(filepath.Join(dir, e.Name()))
		if err != nil {
			t.Fatal(err)
		}
		if err := os.Symlink(src, filepath.Join(out, e.Name())); err != nil {
			t.Fatal(err)
		}
	}
	cfg := map[string]any{}
	if data, err := os.ReadFile(filepath.Join(dir, "tokenizer_config.json")); err == nil {
		if err := json.Unmarshal(data, &cfg); err != nil {
			t.Fatalf("%s/tokenizer_config.json: %v", dir, err)
		}
	} else if !os.IsNotExist(err) {
		t.Fatal(err)
	}
	cfg["chat_template"] = template
	data, err := json.MarshalIndent(cfg, "", "  ")
	if err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(out, "tokenizer_config.json"), data, 0o644); err != nil {
		t.Fatal(err)
	}
	return out
}
