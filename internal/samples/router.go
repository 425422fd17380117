package samples

import (
	"bufio"
	"encoding/json"
	"fmt"
	"math/rand/v2"
	"os"
	"path/filepath"
	"strings"
)

// RouterRow is one labeled routing example, as `largeforge router train`
// reads it.
type RouterRow struct {
	Prompt string `json:"prompt"`
	Expert string `json:"expert"`
}

// routerTopics are the experts of the sample router file and the words
// their prompts are made of. The templates name no expert keyword on
// purpose: the learned stage decides what the rules do not.
var routerTopics = []struct {
	expert    string
	templates []string
	fills     []string
}{
	{"code", []string{"Why does my %s crash with a nil pointer?", "Refactor this %s so it compiles faster.", "How do I unit test a %s?", "The %s returns the wrong index after the loop.", "Add error handling to the %s and log the failure."},
		[]string{"golang handler", "rust iterator", "sql query", "bash script", "java class", "recursive method", "http server", "regex", "linked list", "goroutine"}},
	{"stories", []string{"Tell me a tale about %s.", "Write a bedtime story where %s saves the day.", "Continue the fairy tale of %s.", "Imagine %s on an adventure in a magic forest.", "A short legend about %s and a dragon."},
		[]string{"a brave princess", "a tiny dragon", "a lost kitten", "an old wizard", "a talking tree", "a sleepy bear", "two friendly giants", "a young knight", "a clever fox", "a pirate girl"}},
	{"math", []string{"Solve for x: %s.", "What is the derivative of %s?", "Integrate %s from zero to one.", "Prove that %s holds for every integer.", "Simplify the expression %s."},
		[]string{"3x + 7 = 22", "x squared plus 2x", "sin of x times cos of x", "the sum of the first n odd numbers", "2 to the power n", "the square root of 2", "log of x over x", "a quadratic equation", "the product rule", "a geometric series"}},
}

// Router returns n labeled routing rows, cycling through the experts code,
// stories and math.
func Router(r *rand.Rand, n int) []RouterRow {
	out := make([]RouterRow, n)
	for i := range out {
		t := routerTopics[i%len(routerTopics)]
		p := fmt.Sprintf(t.templates[r.IntN(len(t.templates))], t.fills[r.IntN(len(t.fills))])
		if r.IntN(3) == 0 {
			p = []string{"Please help: ", "Quick question. ", "Hi! "}[r.IntN(3)] + strings.ToLower(p[:1]) + p[1:]
		}
		out[i] = RouterRow{Prompt: p, Expert: t.expert}
	}
	return out
}

// WriteRouter writes router.jsonl (n labeled rows for `largeforge router
// train`) into dir and returns its path.
func WriteRouter(dir string, n int, seed uint64) (string, error) {
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return "", err
	}
	path := filepath.Join(dir, "router.jsonl")
	f, err := os.Create(path)
	if err != nil {
		return "", err
	}
	w := bufio.NewWriter(f)
	enc := json.NewEncoder(w)
	for _, row := range Router(rand.New(rand.NewPCG(seed, 7)), n) {
		if err := enc.Encode(row); err != nil {
			_ = f.Close()
			return "", err
		}
	}
	if err := w.Flush(); err != nil {
		_ = f.Close()
		return "", err
	}
	return path, f.Close()
}

// ExpertsYAML is the sample experts file: the three experts of the sample
// router rows, with keyword and domain rules for `largeforge route`, the
// gateway's model "auto" and `submit --model auto`. Each expert is served by
// the infer workers of the model with its name (`up --model code=DIR`).
const ExpertsYAML = `# Experts for model "auto": each is served by the workers of the model with its name
# (largeforge up --model code=./models/tiny ...); model_path is that model's directory.
experts:
  - name: code
    model_path: ./models/tiny
    description: Programming questions and code review
    domains: [programming, software]
    keywords: [code, function, bug, python, golang, compile, regex, sql]
    priority: 2
    max_tokens: 2048
  - name: math
    model_path: ./models/tiny
    description: Equations, derivatives, integrals and proofs
    domains: [mathematics]
    keywords: [solve, equation, derivative, integrate, integral, prove]
    priority: 1
    max_tokens: 2048
  - name: stories
    model_path: ./models/tiny
    description: Short stories for children (the default)
    domains: [fiction]
    keywords: [story, tale, once, dragon, princess]
    priority: 0
    max_tokens: 2048
`

// WriteExperts writes experts.yaml (ExpertsYAML) into dir and returns its path.
func WriteExperts(dir string) (string, error) {
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return "", err
	}
	path := filepath.Join(dir, "experts.yaml")
	return path, os.WriteFile(path, []byte(ExpertsYAML), 0o644)
}
