package train

import (
	"context"
	"errors"
	"os"
	"path/filepath"
	"runtime"
	"testing"

	"github.com/rs/zerolog"

	"github.com/largeforge/largeforge/model/checkpoint"
	"github.com/largeforge/largeforge/schemas"
)

func TestSeqLen(t *testing.T) {
	long, err := checkpoint.PresetConfig("tiny") // max_position_embeddings 2048
	if err != nil {
		t.Fatal(err)
	}
	short := long
	short.MaxPositionEmbeddings = 64
	tests := []struct {
		name      string
		n         int
		mc        checkpoint.Config
		want      int
		wantLimit int // > 0: a LimitError for max_seq_length with this limit
	}{
		{name: "default", n: 0, mc: long, want: DefaultMaxSeqLen},
		{name: "default on a short model", n: 0, mc: short, want: 64},
		{name: "at the model's limit", n: 2048, mc: long, want: 2048},
		{name: "over the model's limit", n: 2049, mc: long, wantLimit: 2048},
		{name: "over a short model's limit", n: 512, mc: short, wantLimit: 64},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, err := SeqLen(tt.n, tt.mc)
			if tt.wantLimit == 0 {
				if err != nil || got != tt.want {
					t.Fatalf("SeqLen = %d, %v; want %d", got, err, tt.want)
				}
				return
			}
			var le *schemas.LimitError
			if !errors.As(err, &le) || le.Param != "max_seq_length" || le.Limit != tt.wantLimit || !errors.Is(err, schemas.ErrInvalidConfig) {
				t.Fatalf("err %v, want Invalid max_seq_length with limit %d", err, tt.wantLimit)
			}
		})
	}
}

// TestEstimateMemory checks the formula's parts on the tiny preset.
func TestEstimateMemory(t *testing.T) {
	mc, err := checkpoint.PresetConfig("tiny")
	if err != nil {
		t.Fatal(err)
	}
	var w int64
	for _, shape := range checkpoint.ExpectedTensors(mc) {
		n := int64(1)
		for _, d := range shape {
			n *= int64(d)
		}
		w += n
	}
	tc := schemas.DefaultTrainingConfig()
	full := EstimateMemory(mc, tc, nil, "sft", 64)
	if full.Weights != 8*w || full.Gradients != 8*w || full.Optimizer != 8*w {
		t.Errorf("full fine-tuning: %+v, want weights, gradients and optimizer of 8·%d bytes each", full, w)
	}
	lc := schemas.DefaultLoraConfig()
	lora := EstimateMemory(mc, tc, &lc, "sft", 64)
	// r 8 on q, k, v, o of each layer: r·(out+in) per module.
	h, q, kv := mc.HiddenSize, mc.NumHeads*mc.HeadDim, mc.NumKVHeads*mc.HeadDim
	adapters := int64(mc.NumLayers * lc.R * ((q + h) + 2*(kv+h) + (h + q)))
	if lora.Gradients != 8*adapters || lora.Optimizer != 8*adapters || lora.Weights != 8*w+4*adapters {
		t.Errorf("lora: %+v, want gradients and optimizer 8·%d", lora, adapters)
	}
	if lora.Activations != full.Activations {
		t.Errorf("lora activations %d, full %d: the same batch keeps the same activations", lora.Activations, full.Activations)
	}
	dpo := EstimateMemory(mc, tc, nil, "dpo", 64)
	if dpo.Rows != 2*tc.PerDeviceBatchSize || dpo.Activations != 2*full.Activations {
		t.Errorf("dpo: rows %d activations %d, want twice sft's %d", dpo.Rows, dpo.Activations, full.Activations)
	}
	longer := EstimateMemory(mc, tc, nil, "sft", 128)
	if longer.Activations <= 2*full.Activations {
		t.Errorf("activations at 128 tokens %d, want more than twice those at 64 (%d): attention grows with the square", longer.Activations, full.Activations)
	}
	tc.PerDeviceBatchSize = schemas.MaxPerDeviceBatchSize
	huge := EstimateMemory(mc, tc, nil, "sft", mc.MaxPositionEmbeddings)
	if huge.Total() < 1<<40 {
		t.Errorf("batch 4096 × 2048 tokens estimated at %s, want over a TiB", FormatBytes(huge.Total()))
	}
}

// TestCheckRun: an over-large run is refused from the model's config alone,
// before a weight is read (the base here has no weights file, so a run that
// went on to load it would fail otherwise), and a reasonable run passes
// against this machine's real available memory.
func TestCheckRun(t *testing.T) {
	if runtime.GOOS != "linux" {
		t.Skip("AvailableMemory reads /proc")
	}
	dir := filepath.Join(t.TempDir(), "base")
	if err := checkpoint.Init("tiny", 7, dir); err != nil {
		t.Fatal(err)
	}
	if err := os.Remove(filepath.Join(dir, "model.safetensors")); err != nil {
		t.Fatal(err)
	}
	data := filepath.Join(t.TempDir(), "rows.jsonl")
	if err := os.WriteFile(data, []byte(`{"instruction":"Colour?","output":"red"}`+"\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	avail, err := AvailableMemory()
	if err != nil || avail <= 0 {
		t.Fatalf("AvailableMemory = %d, %v", avail, err)
	}
	config := func(batch, seq int) RunConfig {
		rc := RunConfig{Method: "sft", BaseModel: dir, DataFiles: []string{data}, MaxSeqLength: seq, Seed: DefaultSeed, Beta: DefaultDPOBeta}
		rc.Training = testConfig(filepath.Join(t.TempDir(), "out"))
		rc.Training.ModelName = dir
		rc.Training.PerDeviceBatchSize = batch
		return rc
	}
	tests := []struct {
		name      string
		rc        RunConfig
		wantErr   error
		wantParam string
	}{
		{name: "reasonable", rc: config(4, 64)},
		{name: "batch 4096 of 2048 tokens", rc: config(schemas.MaxPerDeviceBatchSize, 2048), wantErr: ErrNotEnoughMemory},
		{name: "longer than the model", rc: config(4, 4096), wantErr: schemas.ErrInvalidConfig, wantParam: "max_seq_length"},
		{name: "batch 1e8", rc: config(100_000_000, 64), wantErr: schemas.ErrInvalidConfig, wantParam: "per_device_batch_size"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			mc, err := checkpoint.LoadConfig(dir)
			if err != nil {
				t.Fatal(err)
			}
			err = tt.rc.Validate()
			if err == nil {
				err = CheckRun(tt.rc, mc, zerolog.Nop())
			}
			if tt.wantErr == nil {
				if err != nil {
					t.Fatalf("CheckRun: %v", err)
				}
				return
			}
			if !errors.Is(err, tt.wantErr) {
				t.Fatalf("CheckRun: %v, want %v", err, tt.wantErr)
			}
			t.Log(err)
			var le *schemas.LimitError
			if tt.wantParam != "" && (!errors.As(err, &le) || le.Param != tt.wantParam) {
				t.Fatalf("CheckRun: %v, want Invalid %s", err, tt.wantParam)
			}
			// Run refuses it the same way, without reading the (absent) weights.
			if _, err := Run(context.Background(), tt.rc, zerolog.Nop()); !errors.Is(err, tt.wantErr) {
				t.Fatalf("Run: %v, want %v", err, tt.wantErr)
			}
		})
	}
}

// TestAvailableMemory reads MemAvailable and the cgroup limits from files
// laid out as /proc and /sys/fs/cgroup are.
func TestAvailableMemory(t *testing.T) {
	const meminfo = "MemTotal:       16000000 kB\nMemFree:         1000000 kB\nMemAvailable:    8000000 kB\n"
	tests := []struct {
		name    string
		files   map[string]string
		want    int64
		wantErr bool
	}{
		{name: "meminfo only", files: map[string]string{"proc/meminfo": meminfo}, want: 8000000 * 1024},
		{name: "cgroup v2 room is lower", files: map[string]string{"proc/meminfo": meminfo,
			"sys/fs/cgroup/memory.max": "1073741824\n", "sys/fs/cgroup/memory.current": "73741824\n"}, want: 1000000000},
		{name: "cgroup v2 of the process's group", files: map[string]string{"proc/meminfo": meminfo, "proc/self/cgroup": "0::/job\n",
			"sys/fs/cgroup/job/memory.max": "2000000000\n", "sys/fs/cgroup/job/memory.current": "0\n"}, want: 2000000000},
		{name: "cgroup v2 without a limit", files: map[string]string{"proc/meminfo": meminfo,
			"sys/fs/cgroup/memory.max": "max\n", "sys/fs/cgroup/memory.current": "5\n"}, want: 8000000 * 1024},
		{name: "cgroup v2 limit above meminfo", files: map[string]string{"proc/meminfo": meminfo,
			"sys/fs/cgroup/memory.max": "100000000000\n", "sys/fs/cgroup/memory.current": "0\n"}, want: 8000000 * 1024},
		{name: "cgroup v1", files: map[string]string{"proc/meminfo": meminfo,
			"sys/fs/cgroup/memory/memory.limit_in_bytes": "500000000\n", "sys/fs/cgroup/memory/memory.usage_in_bytes": "100000000\n"}, want: 400000000},
		{name: "cgroup v1 without a limit", files: map[string]string{"proc/meminfo": meminfo,
			"sys/fs/cgroup/memory/memory.limit_in_bytes": "9223372036854771712\n", "sys/fs/cgroup/memory/memory.usage_in_bytes": "100000000\n"}, want: 8000000 * 1024},
		{name: "no MemAvailable", files: map[string]string{"proc/meminfo": "MemTotal: 1 kB\n"}, wantErr: true},
		{name: "no meminfo", files: map[string]string{}, wantErr: true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			root := t.TempDir()
			for p, c := range tt.files {
				if err := os.MkdirAll(filepath.Dir(filepath.Join(root, p)), 0o755); err != nil {
					t.Fatal(err)
				}
				if err := os.WriteFile(filepath.Join(root, p), []byte(c), 0o644); err != nil {
					t.Fatal(err)
				}
			}
			got, err := availableMemory(root)
			if (err != nil) != tt.wantErr || got != tt.want {
				t.Fatalf("availableMemory = %d, %v; want %d (error %v)", got, err, tt.want, tt.wantErr)
			}
		})
	}
}

// TestApplyAdapterRankLimit: serving refuses an adapter whose rank is over
// the limit the trainer applies, before reading its weights.
func TestApplyAdapterRankLimit(t *testing.T) {
	_, ck, _ := tinyBase(t)
	dir := t.TempDir()
	cfg := `{"r": 257, "lora_alpha": 16, "peft_type": "LORA"}`
	if err := os.WriteFile(filepath.Join(dir, AdapterConfigFile), []byte(cfg), 0o644); err != nil {
		t.Fatal(err)
	}
	err := ApplyAdapter(ck, dir)
	var le *schemas.LimitError
	if !errors.As(err, &le) || le.Param != "lora.r" || le.Limit != schemas.MaxLoraRank {
		t.Fatalf("ApplyAdapter: %v, want Invalid lora.r with limit %d", err, schemas.MaxLoraRank)
	}
}
