package checkpoint

import (
	"encoding/json"
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

// editJSON rewrites the JSON file path through edit.
func editJSON(t *testing.T, path string, edit func(m map[string]any)) {
	t.Helper()
	raw, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	var m map[string]any
	if err := json.Unmarshal(raw, &m); err != nil {
		t.Fatal(err)
	}
	edit(m)
	out, err := json.Marshal(m)
	if err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(path, out, 0o644); err != nil {
		t.Fatal(err)
	}
}

// The stated configuration is held to: quant_config.json's group size and
// per-channel fallbacks against the scales, config.json's
// quantization_config against quant_config.json, bits naming the file that
// states them. Each used to load (the fields read and ignored), or named
// only the directory.
func TestQuantConfigHeldToTensors(t *testing.T) {
	_, dir, _ := quantizedTiny(t, 4, 32) // tiny's 172-wide down_proj falls back to per channel
	qcPath, cfgPath := filepath.Join(dir, QuantConfigFile), filepath.Join(dir, ConfigFile)
	qcRaw, _ := os.ReadFile(qcPath)
	cfgRaw, _ := os.ReadFile(cfgPath)
	qcEdit := func(edit func(m map[string]any)) func() { return func() { editJSON(t, qcPath, edit) } }
	cfgEdit := func(edit func(m map[string]any)) func() {
		return func() {
			editJSON(t, cfgPath, func(m map[string]any) { edit(m["quantization_config"].(map[string]any)) })
		}
	}
	both := func(edit func(m map[string]any)) func() { return func() { qcEdit(edit)(); cfgEdit(edit)() } }
	for _, tc := range []struct {
		name string
		edit func()
		err  error
		want []string // in the message
	}{
		{"no fallback listed", qcEdit(func(m map[string]any) { delete(m, "per_channel_fallback") }), ErrQuant,
			[]string{WeightsFile, `"model.layers.0.mlp.down_proj.scales"`, "group size 32 does not divide its rows of 172", QuantConfigFile}},
		{"group size not the tensors'", both(func(m map[string]any) { m["group_size"] = 64 }), ErrQuant,
			[]string{WeightsFile, `"model.layers.0.self_attn.q_proj.scales"`, "2 groups of 32 per row", "group size 64", QuantConfigFile}},
		{"bits 3", both(func(m map[string]any) { m["bits"] = 3 }), ErrQuant, []string{qcPath, "3 bits"}},
		{"quantization_config bits", cfgEdit(func(m map[string]any) { m["bits"] = 8 }), ErrQuant,
			[]string{cfgPath, "bits 8", qcPath + " says 4"}},
		{"quantization_config group_size", cfgEdit(func(m map[string]any) { m["group_size"] = 128 }), ErrQuant,
			[]string{cfgPath, "group_size 128"}},
		{"quantization_config lm_head", cfgEdit(func(m map[string]any) { m["lm_head"] = false }), ErrQuant,
			[]string{cfgPath, "lm_head false", WeightsFile, `has tensor "lm_head.qweight"`}},
		{"quantization_config desc_act", cfgEdit(func(m map[string]any) { m["desc_act"] = true }), ErrUnsupported,
			[]string{cfgPath, "desc_act"}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			tc.edit()
			defer func() {
				if err := os.WriteFile(qcPath, qcRaw, 0o644); err != nil {
					t.Fatal(err)
				}
				if err := os.WriteFile(cfgPath, cfgRaw, 0o644); err != nil {
					t.Fatal(err)
				}
			}()
			_, _, err := LoadQuantized(dir)
			if !errors.Is(err, tc.err) {
				t.Fatalf("%v, want %v", err, tc.err)
			}
			for _, w := range tc.want {
				if !strings.Contains(err.Error(), w) {
					t.Errorf("%v: does not say %q", err, w)
				}
			}
		})
	}
	if _, _, err := LoadQuantized(dir); err != nil {
		t.Fatalf("restored directory: %v", err)
	}
	// GPTQModel's lm_head flag says the LM head is quantized.
	var cfg struct {
		Q map[string]any `json:"quantization_config"`
	}
	if err := json.Unmarshal(cfgRaw, &cfg); err != nil || cfg.Q["lm_head"] != true {
		t.Errorf("quantization_config %v (%v): want lm_head true", cfg.Q, err)
	}
}
