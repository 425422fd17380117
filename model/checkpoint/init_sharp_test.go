package checkpoint

import (
	"math"
	"path/filepath"
	"testing"
)

// k256sharp is k256's weights of the same seed with the embedding scaled
// by sharpEmbedScale and the successor directions added to lm_head; every
// other tensor is k256's.
func TestInitSharpPreset(t *testing.T) {
	dir := t.TempDir()
	load := func(preset string) *Checkpoint {
		out := filepath.Join(dir, preset)
		if err := Init(preset, 3, out); err != nil {
			t.Fatal(err)
		}
		ck, err := Load(out)
		if err != nil {
			t.Fatal(err)
		}
		return ck
	}
	base, sharp := load("k256"), load(SharpPreset)
	if base.Config.HiddenSize != sharp.Config.HiddenSize || base.Config.NumLayers != sharp.Config.NumLayers {
		t.Fatalf("config %+v, want k256's %+v", sharp.Config, base.Config)
	}
	hidden := base.Config.HiddenSize
	for name, b := range base.Tensors {
		s := sharp.Tensors[name].Data
		switch name {
		case "model.embed_tokens.weight":
			for i, v := range b.Data {
				if s[i] != v*sharpEmbedScale {
					t.Fatalf("%s[%d] = %g, want %g", name, i, s[i], v*sharpEmbedScale)
				}
			}
		case "lm_head.weight":
			// Token 'a''s successor row (one of the bytes') gains the unit
			// vector of its embedding times sharpHeadWeight.
			e := base.Tensors["model.embed_tokens.weight"].Data['a'*hidden : ('a'+1)*hidden]
			var ee float64
			for _, v := range e {
				ee += float64(v) * float64(v)
			}
			best, gain := -1, 0.0
			for r := 0; r < b.Shape[0]; r++ {
				var dot float64
				for i, v := range e {
					dot += float64(s[r*hidden+i]-b.Data[r*hidden+i]) * float64(v)
				}
				if g := dot / math.Sqrt(ee); g > gain {
					best, gain = r, g
				}
			}
			if best < 0 || best >= 256 || math.Abs(gain-sharpHeadWeight) > 0.1*sharpHeadWeight {
				t.Errorf("lm_head: row %d gained %.3f along token 'a''s embedding, want a byte's row to gain %g", best, gain, sharpHeadWeight)
			}
		default:
			for i, v := range b.Data {
				if s[i] != v {
					t.Fatalf("%s differs from k256's at %d", name, i)
				}
			}
		}
	}
}
