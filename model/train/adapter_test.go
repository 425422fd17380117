package train

import (
	"context"
	"path/filepath"
	"slices"
	"testing"

	"github.com/largeforge/largeforge/model/checkpoint"
	"github.com/largeforge/largeforge/schemas"
)

// TestLoadMergedMatchesMergeAdapter: the in-memory merge gives exactly the
// weights `adapters merge` writes.
func TestLoadMergedMatchesMergeAdapter(t *testing.T) {
	baseDir, ck, tok := tinyBase(t)
	out := filepath.Join(t.TempDir(), "adapter")
	cfg := testConfig(out)
	cfg.NumEpochs, cfg.PerDeviceBatchSize, cfg.GradientAccumulationSteps, cfg.LearningRate = 1, 2, 1, 1e-2
	tr, err := New(cfg, ck, WithMaxSeqLen(32), WithLoRA(schemas.DefaultLoraConfig()))
	if err != nil {
		t.Fatal(err)
	}
	defer tr.Close()
	if _, err := tr.Train(context.Background(), shortTask(t, tok, 4)); err != nil {
		t.Fatal(err)
	}
	merged := filepath.Join(t.TempDir(), "merged")
	if err := MergeAdapter(baseDir, out, merged); err != nil {
		t.Fatal(err)
	}
	want, err := checkpoint.Load(merged)
	if err != nil {
		t.Fatal(err)
	}
	got, err := LoadMerged(baseDir, out)
	if err != nil {
		t.Fatal(err)
	}
	for n, w := range want.Tensors {
		if !slices.Equal(w.Data, got.Tensors[n].Data) {
			t.Errorf("tensor %s differs from the merged checkpoint's", n)
		}
	}
	if maxDiff(ck, got) == 0 {
		t.Error("the adapter changed nothing")
	}

	tests := []struct {
		name    string
		adapter string
		wantErr bool
	}{
		{name: "adapter", adapter: out},
		{name: "not an adapter", adapter: baseDir, wantErr: true},
		{name: "missing", adapter: filepath.Join(t.TempDir(), "none"), wantErr: true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			_, err := LoadMerged(baseDir, tt.adapter)
			if (err != nil) != tt.wantErr {
				t.Fatalf("err %v, wantErr %v", err, tt.wantErr)
			}
		})
	}
}
