package model

import (
	"encoding/json"
	"os"
	"path/filepath"
	"sync"
	"testing"

	"github.com/largeforge/largeforge/internal/testenv"
)

type refStep struct {
	Position  int       `json:"position"`
	NextToken int       `json:"next_token"`
	Logits    []float64 `json:"logits"`
}

type refPrompt struct {
	Prompt       string    `json:"prompt"`
	PromptIDs    []int     `json:"prompt_ids"`
	GreedyIDs    []int     `json:"greedy_ids"`
	FirstSteps   []refStep `json:"first_steps"`
	SumLogprob64 float64   `json:"sum_logprob_greedy64"`
	GreedyText   string    `json:"greedy_text"`
}

type reference struct {
	Prompts  []refPrompt         `json:"prompts"`
	FromBOS  struct{ IDs []int } `json:"from_bos_greedy200"`
	modelDir string
}

func loadReference(t testing.TB) *reference {
	t.Helper()
	p := testenv.SharedFile(t, "models/stories260K.reference.json")
	dir := testenv.SharedFile(t, "models/stories260K/model.safetensors")
	b, err := os.ReadFile(p)
	if err != nil {
		t.Fatal(err)
	}
	var r reference
	if err := json.Unmarshal(b, &r); err != nil {
		t.Fatal(err)
	}
	if len(r.Prompts) == 0 || len(r.FromBOS.IDs) == 0 {
		t.Fatalf("reference %s has no prompts", p)
	}
	r.modelDir = filepath.Dir(dir)
	return &r
}

var (
	sharedMu     sync.Mutex
	sharedModels = map[string]*Model{}
)

// engines are the generation engines every reference test runs on.
var engines = []string{EngineNative, EngineGraph}

// storiesModel loads stories260K (on the default engine) once for the whole test binary.
func storiesModel(t testing.TB) (*Model, *reference) {
	t.Helper()
	return storiesModelOn(t, "")
}

// storiesModelOn loads stories260K on the given engine ("" for the default), once.
func storiesModelOn(t testing.TB, engine string) (*Model, *reference) {
	t.Helper()
	ref := loadReference(t)
	sharedMu.Lock()
	defer sharedMu.Unlock()
	if m, ok := sharedModels[engine]; ok {
		return m, ref
	}
	m, err := Load(ref.modelDir, WithEngine(engine))
	if err != nil {
		t.Fatalf("load %s: %v", ref.modelDir, err)
	}
	sharedModels[engine] = m
	return m, ref
}
