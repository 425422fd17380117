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
	sharedOnce  sync.Once
	sharedModel *Model
	sharedErr   error
)

// storiesModel loads stories260K once for the whole test binary.
func storiesModel(t testing.TB) (*Model, *reference) {
	t.Helper()
	ref := loadReference(t)
	sharedOnce.Do(func() {
		sharedModel, sharedErr = Load(ref.modelDir)
	})
	if sharedErr != nil {
		t.Fatalf("load %s: %v", ref.modelDir, sharedErr)
	}
	return sharedModel, ref
}
