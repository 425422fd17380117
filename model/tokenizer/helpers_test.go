package tokenizer

import (
	"encoding/json"
	"path/filepath"
	"sync"
	"testing"

	"github.com/largeforge/largeforge/internal/testenv"
)

// sharedTok loads a tokenizer directory from the shared reference files once
// per test binary (the Qwen3 tokenizer.json is 11 MB).
type sharedTok struct {
	once sync.Once
	tok  *Tokenizer
	err  error
}

var (
	qwen3Tok   sharedTok
	llama2Tok  sharedTok
	storiesTok sharedTok
)

func (s *sharedTok) get(t testing.TB, rel string) *Tokenizer {
	t.Helper()
	dir := filepath.Dir(testenv.SharedFile(t, rel))
	s.once.Do(func() { s.tok, s.err = LoadDir(dir) })
	if s.err != nil {
		t.Fatalf("LoadDir(%s): %v", dir, s.err)
	}
	return s.tok
}

func qwen3(t testing.TB) *Tokenizer {
	t.Helper()
	return qwen3Tok.get(t, "tokenizers/qwen3/tokenizer.json")
}

func llama2(t testing.TB) *Tokenizer {
	t.Helper()
	return llama2Tok.get(t, "tokenizers/llama2-spm/tokenizer.json")
}

func stories(t testing.TB) *Tokenizer {
	t.Helper()
	return storiesTok.get(t, "models/stories260K/tokenizer.json")
}

func quoteJSON(s string) string {
	b, _ := json.Marshal(s)
	return string(b)
}

func qwen3Path(t testing.TB) string {
	t.Helper()
	return testenv.SharedFile(t, "tokenizers/qwen3/tokenizer.json")
}
