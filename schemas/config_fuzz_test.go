package schemas

import (
	"errors"
	"testing"
)

// FuzzParseLoraConfig: LoRA configs are files an operator hands in; any bytes
// give either a config that validates or an error naming a sentinel.
func FuzzParseLoraConfig(f *testing.F) {
	for _, s := range []string{
		"r: 8\nalpha: 16\n", `{"r":4,"dropout":0.1}`, "", "r: -1\n", "target_modules: [q_proj, v_proj]\n",
		"r: [\n", "foo: 1\n", "r: .nan\n",
	} {
		f.Add([]byte(s))
	}
	f.Fuzz(func(t *testing.T, data []byte) {
		c, err := ParseLoraConfig(data)
		if err != nil {
			if !errors.Is(err, ErrInvalidConfig) {
				t.Fatalf("error %v does not wrap ErrInvalidConfig", err)
			}
			return
		}
		if err := c.Validate(); err != nil {
			t.Fatalf("parsed config %+v does not validate: %v", c, err)
		}
	})
}

// FuzzParseExperts: experts files list the models a router picks among; any
// bytes give uniquely named, valid experts or an ErrInvalidConfig error.
func FuzzParseExperts(f *testing.F) {
	for _, s := range []string{
		"experts:\n- {name: a, model_path: p}\n", `[{"name":"a","model_path":"p"},{"name":"b","model_path":"q"}]`,
		"- {name: a}\n", "experts: []\n", "x: 1\n", "- {name: a, model_path: p}\n- {name: a, model_path: q}\n", "",
	} {
		f.Add([]byte(s))
	}
	f.Fuzz(func(t *testing.T, data []byte) {
		es, err := ParseExperts(data)
		if err != nil {
			if !errors.Is(err, ErrInvalidConfig) {
				t.Fatalf("error %v does not wrap ErrInvalidConfig", err)
			}
			return
		}
		seen := map[string]bool{}
		for _, e := range es {
			if e.Name == "" || seen[e.Name] {
				t.Fatalf("expert name %q empty or repeated in %+v", e.Name, es)
			}
			seen[e.Name] = true
		}
	})
}
