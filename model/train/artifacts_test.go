package train

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"

	"github.com/rs/zerolog"
)

// TestPickleDictBytes holds the encoder to the protocol-2 opcodes written
// out by hand (pickletools' names in the comments).
func TestPickleDictBytes(t *testing.T) {
	got, err := PickleDict(map[string]any{"a": 1, "b": []any{true, nil}, "c": 0.5, "d": "é", "e": int64(1) << 40, "f": map[string]any{}})
	if err != nil {
		t.Fatal(err)
	}
	// Keys are sorted: a, b, c, d, e, f.
	want := []byte{
		0x80, 2, '}', '(',
		'X', 1, 0, 0, 0, 'a', 'J', 1, 0, 0, 0,
		'X', 1, 0, 0, 0, 'b', ']', '(', 0x88, 'N', 'e',
		'X', 1, 0, 0, 0, 'c', 'G', 0x3f, 0xe0, 0, 0, 0, 0, 0, 0,
		'X', 1, 0, 0, 0, 'd', 'X', 2, 0, 0, 0, 0xc3, 0xa9,
		'X', 1, 0, 0, 0, 'e', 0x8a, 6, 0, 0, 0, 0, 0, 1, // LONG1 2^40 in 6 bytes
		'X', 1, 0, 0, 0, 'f', '}', // EMPTY_DICT
		'u', '.', // SETITEMS, STOP
	}
	if !bytes.Equal(got, want) {
		t.Fatalf("pickle\n got %v\nwant %v", got, want)
	}
}

// TestArtifacts: every checkpoint holds training_args.bin, a pickled dict
// of the training arguments that Python's pickle.load reads (checked with
// python3 where it is installed), and a LoRA adapter (checkpoints and the
// final one) its README.md model card: base model, dataset, LoRA settings
// and final metrics.
func TestArtifacts(t *testing.T) {
	base, _, _ := tinyBase(t)
	data := alpacaJSONL(t, 8)
	out := filepath.Join(t.TempDir(), "out")
	rc, err := ParseRunConfig([]byte("model_name: " + base + "\ndata_files: [" + data + "]\noutput_dir: " + out +
		"\nnum_epochs: 1\nper_device_batch_size: 4\ngradient_accumulation_steps: 1\nmax_seq_length: 160\nsave_steps: 1\neval_steps: 1\nlogging_steps: 1" +
		"\nlr_scheduler_type: cosine_with_min_lr\nlr_scheduler_kwargs: {min_lr_rate: 0.1}\nlora:\n  r: 4\n  target_modules: [q_proj, v_proj]\n"))
	if err != nil {
		t.Fatal(err)
	}
	if _, err := Run(context.Background(), rc, zerolog.Nop()); err != nil {
		t.Fatal(err)
	}
	ck := filepath.Join(out, "checkpoint-1")
	for _, dir := range []string{ck, out} {
		card, err := os.ReadFile(filepath.Join(dir, ModelCardFile))
		if err != nil {
			t.Fatal(err)
		}
		for _, want := range []string{base, data, "| r | 4 |", "| lora_alpha | 16 |", "q_proj, v_proj", "| task_type | CAUSAL_LM |", "| eval_loss |", "| loss |"} {
			if !strings.Contains(string(card), want) {
				t.Errorf("%s/README.md lacks %q:\n%s", dir, want, card)
			}
		}
		if dir == out && !strings.Contains(string(card), "| train_loss |") {
			t.Errorf("final model card lacks the final train_loss:\n%s", card)
		}
		if _, err := os.Stat(filepath.Join(dir, TrainingArgsBinFile)); err != nil {
			t.Error(err)
		}
	}
	if _, err := exec.LookPath("python3"); err != nil {
		t.Skip("python3 is not installed: training_args.bin is checked by TestPickleDictBytes only")
	}
	script := "import pickle,sys,json\nd=pickle.load(open(sys.argv[1],'rb'))\n" +
		"print(json.dumps({k:[type(v).__name__,v] for k,v in d.items()}))"
	res, err := exec.Command("python3", "-c", script, filepath.Join(ck, TrainingArgsBinFile)).Output()
	if err != nil {
		t.Fatalf("python3 pickle.load: %v", err)
	}
	var got map[string][2]any
	if err := json.Unmarshal(res, &got); err != nil {
		t.Fatalf("%v: %s", err, res)
	}
	for k, want := range map[string][2]any{
		"model_name": {"str", base}, "learning_rate": {"float", 2e-5}, "num_epochs": {"int", 1.0},
		"max_grad_norm": {"float", 1.0}, "bf16": {"bool", true}, "optim": {"str", "adamw_torch"},
		"lr_scheduler_type": {"str", "cosine_with_min_lr"}, "lr_scheduler_kwargs": {"dict", map[string]any{"min_lr_rate": 0.1}},
		"seed": {"int", 42.0}, "max_seq_length": {"int", 160.0},
	} {
		if fmt.Sprint(got[k]) != fmt.Sprint(want) {
			t.Errorf("training_args.bin %s = %v, want %v", k, got[k], want)
		}
	}
}
