// Package samples writes the small sample datasets that `make run` ingests: alpaca,
// sharegpt and dpo records made up by the project itself, with a few bad rows in
// each file so that the rejects path shows. It also writes large synthetic alpaca
// files for benchmarks.
package samples

import (
	"bufio"
	"encoding/json"
	"fmt"
	"io"
	"math/rand/v2"
	"os"
	"path/filepath"
	"strings"
)

var (
	subjects = []string{"a river", "the moon", "a small robot", "the old library", "a garden", "the ocean", "a mountain village", "a lost kitten", "the first snow", "a busy market"}
	tasks    = []string{"Write a short poem about %s.", "Describe %s in two sentences.", "Explain to a child what %s is.", "Give three facts about %s.", "Summarize a story about %s."}
	verbs    = []string{"shines", "waits", "sings", "grows", "listens", "wanders", "sleeps", "dreams"}
)

func sentence(r *rand.Rand, subject string) string {
	return fmt.Sprintf("%s %s %s.", strings.ToUpper(subject[:1])+subject[1:], verbs[r.IntN(len(verbs))], []string{"in the morning", "under the stars", "all day long", "when no one is looking", "with quiet joy"}[r.IntN(5)])
}

// The alpaca set is small and regular so that `make run` can fine-tune the
// tiny model on it in seconds: short questions about a subject, each
// answered with that subject's one fact.
var (
	alpacaTasks = []string{"Describe %s.", "Tell me about %s.", "What is %s like?"}
	facts       = map[string]string{
		"a river": "Rivers run.", "the moon": "The moon glows.", "a small robot": "Robots beep.",
		"the old library": "Books sleep.", "a garden": "Flowers grow.", "the ocean": "The sea is blue.",
		"a mountain village": "Snow falls.", "a lost kitten": "Kittens cry.", "the first snow": "Snow is white.",
		"a busy market": "Bread is sold.",
	}
)

// Alpaca returns n alpaca records: an instruction about a subject (every
// eighth with an input), answered with the subject's fact.
func Alpaca(r *rand.Rand, n int) []map[string]string {
	out := make([]map[string]string, n)
	for i := range out {
		s := subjects[r.IntN(len(subjects))]
		rec := map[string]string{"instruction": fmt.Sprintf(alpacaTasks[r.IntN(len(alpacaTasks))], s), "output": facts[s]}
		if i%8 == 0 {
			rec["input"] = "Be brief."
		}
		out[i] = rec
	}
	return out
}

// AlpacaInstruction returns a question of the alpaca set about a random subject.
func AlpacaInstruction(r *rand.Rand) string {
	return fmt.Sprintf(alpacaTasks[r.IntN(len(alpacaTasks))], subjects[r.IntN(len(subjects))])
}

// WriteAll writes alpaca.jsonl, sharegpt.json and dpo.jsonl into dir, each with a
// few bad rows, and returns their paths.
func WriteAll(dir string, seed uint64) ([]string, error) {
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return nil, err
	}
	r := rand.New(rand.NewPCG(seed, 1))

	var alpaca []string
	for _, rec := range Alpaca(r, 40) {
		b, _ := json.Marshal(rec)
		alpaca = append(alpaca, string(b))
	}
	alpaca = append(alpaca,
		`{"instruction": "Name a color."}`,                         // missing output
		`{"instruction": "", "output": "Blue."}`,                   // empty instruction
		`{"instruction": "Count to three.", "output": 123}`,        // wrong type
		`{"instruction": "Say hi.", "output": "Hi!"`,               // truncated JSON
		`["not", "an", "object"]`,                                  // not an object
		alpaca[0],                                                  // duplicate of the first record
		`{"output": "Hello.", "instruction": "Greet the reader."}`, // a good record, keys reordered
		`{"instruction": "Greet the reader.", "output": "Hello."}`, // the same record again
		"", // a blank line (skipped)
	)

	type turn struct {
		From  string `json:"from"`
		Value string `json:"value"`
	}
	var chats []any
	for i := 0; i < 20; i++ {
		s := subjects[r.IntN(len(subjects))]
		conv := []turn{{"human", fmt.Sprintf(tasks[r.IntN(len(tasks))], s)}, {"gpt", sentence(r, s)}}
		if i%2 == 0 {
			conv = append([]turn{{"system", "You are a helpful assistant."}}, conv...)
			conv = append(conv, turn{"human", "Tell me more."}, turn{"gpt", sentence(r, s) + " " + sentence(r, s)})
		}
		chats = append(chats, map[string]any{"conversations": conv})
	}
	chats = append(chats,
		map[string]any{"conversations": []turn{{"human", "Only one turn."}}},            // fewer than two turns
		map[string]any{"conversations": []turn{{"user", "Hello"}, {"assistant", "Hi"}}}, // invalid roles
		map[string]any{"conversations": []turn{{"human", "Hello"}, {"gpt", ""}}},        // empty value
	)

	var dpo []string
	for i := 0; i < 20; i++ {
		s := subjects[r.IntN(len(subjects))]
		b, _ := json.Marshal(map[string]string{"prompt": fmt.Sprintf(tasks[r.IntN(len(tasks))], s), "chosen": sentence(r, s) + " " + sentence(r, s), "rejected": "I don't know."})
		dpo = append(dpo, string(b))
	}
	dpo = append(dpo,
		`{"prompt": "Pick one.", "chosen": "This one."}`,   // missing rejected
		`{"prompt": null, "chosen": "a", "rejected": "b"}`, // null is not a string
	)

	paths := []string{filepath.Join(dir, "alpaca.jsonl"), filepath.Join(dir, "sharegpt.json"), filepath.Join(dir, "dpo.jsonl")}
	if err := os.WriteFile(paths[0], []byte(strings.Join(alpaca, "\n")+"\n"), 0o644); err != nil {
		return nil, err
	}
	b, _ := json.MarshalIndent(chats, "", " ")
	if err := os.WriteFile(paths[1], b, 0o644); err != nil {
		return nil, err
	}
	// CRLF line ends in the dpo file: they are accepted.
	if err := os.WriteFile(paths[2], []byte(strings.Join(dpo, "\r\n")+"\r\n"), 0o644); err != nil {
		return nil, err
	}
	return paths, nil
}

// WritePrompts writes a batch job file of n chat completion requests (JSONL
// with custom_id, no model: the job's), each a question of the alpaca set
// as one user message, with one bad request to show an error row, and
// returns its path. A model fine-tuned on the alpaca set with
// prompt_template chat answers them with the set's facts.
func WritePrompts(dir string, n int, seed uint64) (string, error) {
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return "", err
	}
	r := rand.New(rand.NewPCG(seed, 3))
	var lines []string
	for i := 0; i < n; i++ {
		b, _ := json.Marshal(map[string]any{"custom_id": fmt.Sprintf("req-%03d", i),
			"messages":   []map[string]string{{"role": "user", "content": AlpacaInstruction(r)}},
			"max_tokens": 48, "temperature": 0, "stop": []string{"<|im_end|>"}})
		lines = append(lines, string(b))
	}
	lines = append(lines, `{"custom_id":"req-bad","prompt":"Too hot.","temperature":3}`)
	path := filepath.Join(dir, "prompts.jsonl")
	return path, os.WriteFile(path, []byte(strings.Join(lines, "\n")+"\n"), 0o644)
}

// WriteLargeAlpaca writes n distinct alpaca records of about size bytes each to w.
func WriteLargeAlpaca(w io.Writer, n, size int, seed uint64) error {
	r := rand.New(rand.NewPCG(seed, 2))
	bw := bufio.NewWriterSize(w, 1<<20)
	filler := strings.Repeat("The quick brown fox jumps over the lazy dog. ", size/45+2)
	for i := 0; i < n; i++ {
		s := subjects[r.IntN(len(subjects))]
		instr := fmt.Sprintf("Record %d. ", i) + fmt.Sprintf(tasks[r.IntN(len(tasks))], s)
		out := sentence(r, s)
		rest := size - len(instr) - len(out) - 60
		if rest < 0 {
			rest = 0
		}
		rec := map[string]string{"instruction": instr, "input": filler[:rest/2], "output": out + " " + filler[:rest-rest/2]}
		b, _ := json.Marshal(rec)
		bw.Write(b)
		bw.WriteByte('\n')
	}
	return bw.Flush()
}
