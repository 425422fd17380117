package train

import (
	"testing"
)

// FuzzParseRunConfig: any train.yaml either parses into a valid config or
// is an error; it never panics.
func FuzzParseRunConfig(f *testing.F) {
	for _, s := range []string{
		"base_model: m\ndataset: d\noutput_dir: o\n",
		"method: sft\nbase_model: m\ndata_files: [a.jsonl, b.parquet]\noutput_dir: o\nlora:\n  r: 4\n  target_modules: [q_proj]\n",
		"base_model: m\ndataset: d\noutput_dir: o\neval_split: 0.1\nseed: -3\nmax_seq_length: 64\n",
		"lora: null\n",
		"{\"base_model\": \"m\", \"dataset\": \"d\", \"output_dir\": \"o\", \"num_epochs\": 1e9}",
		"- a\n- b\n",
		"",
	} {
		f.Add([]byte(s))
	}
	f.Fuzz(func(t *testing.T, data []byte) {
		rc, err := ParseRunConfig(data)
		if err != nil {
			return
		}
		if err := rc.Validate(); err != nil {
			t.Errorf("parsed config does not validate: %v", err)
		}
	})
}
