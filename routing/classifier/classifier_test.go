package classifier_test

import (
	"context"
	"errors"
	"fmt"
	"math/rand/v2"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/largeforge/largeforge/internal/samples"
	"github.com/largeforge/largeforge/routing/classifier"
)

func toySet(n int, seed uint64) []classifier.Example {
	rows := samples.Router(rand.New(rand.NewPCG(seed, 3)), n)
	out := make([]classifier.Example, len(rows))
	for i, r := range rows {
		out[i] = classifier.Example{Prompt: r.Prompt, Expert: r.Expert}
	}
	return out
}

func train(t *testing.T, ex []classifier.Example, cfg classifier.Config) *classifier.Classifier {
	t.Helper()
	c, err := classifier.Train(context.Background(), ex, cfg)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = c.Close() })
	return c
}

func TestTrainHeldOutAccuracy(t *testing.T) {
	trainSet, test := classifier.Holdout(toySet(300, 1), 0.25, 1)
	if len(test) < 60 {
		t.Fatalf("held out %d rows", len(test))
	}
	t0 := time.Now()
	c := train(t, trainSet, classifier.Config{})
	el := time.Since(t0)
	acc, err := c.Accuracy(test)
	if err != nil {
		t.Fatal(err)
	}
	t.Logf("trained on %d rows in %v (loss %.4f, train accuracy %.3f); held-out accuracy %.3f on %d rows",
		len(trainSet), el.Round(time.Millisecond), c.Meta().FinalLoss, c.Meta().TrainAccuracy, acc, len(test))
	if acc < 0.9 {
		t.Errorf("held-out accuracy %.3f < 0.9", acc)
	}
	if got := c.Labels(); strings.Join(got, ",") != "code,math,stories" {
		t.Errorf("labels %v", got)
	}
	p, err := c.Predict("Why does my python function return the wrong index inside the loop?")
	if err != nil {
		t.Fatal(err)
	}
	sum := 0.0
	for i, q := range p {
		sum += q.Probability
		if i > 0 && q.Probability > p[i-1].Probability {
			t.Errorf("predictions not sorted: %+v", p)
		}
	}
	if p[0].Expert != "code" || sum < 0.999 || sum > 1.001 {
		t.Errorf("predict %+v (sum %v), want code first and probabilities summing to 1", p, sum)
	}
}

func TestSaveLoadSamePredictions(t *testing.T) {
	ex := toySet(90, 2)
	c := train(t, ex, classifier.Config{Dim: 1024, Epochs: 10})
	dir := filepath.Join(t.TempDir(), "router")
	if err := c.Save(dir); err != nil {
		t.Fatal(err)
	}
	c2, err := classifier.Load(dir, "")
	if err != nil {
		t.Fatal(err)
	}
	defer c2.Close()
	texts := []string{"Solve for x: 2x = 4", "Tell me a tale about a dragon", "my sql query is slow", "", "??"}
	a, err := c.PredictBatch(texts)
	if err != nil {
		t.Fatal(err)
	}
	b, err := c2.PredictBatch(texts)
	if err != nil {
		t.Fatal(err)
	}
	for i := range a {
		for j := range a[i] {
			if a[i][j] != b[i][j] {
				t.Fatalf("text %q label %d: %v before save, %v after load", texts[i], j, a[i][j], b[i][j])
			}
		}
	}
	if c2.Meta().TrainRows != 90 || c2.Meta().Dim != 1024 {
		t.Errorf("meta %+v", c2.Meta())
	}
}

func TestLoadErrors(t *testing.T) {
	c := train(t, toySet(30, 3), classifier.Config{Dim: 256, Epochs: 2})
	good := filepath.Join(t.TempDir(), "good")
	if err := c.Save(good); err != nil {
		t.Fatal(err)
	}
	meta, _ := os.ReadFile(filepath.Join(good, classifier.MetaFile))
	tests := []struct {
		name    string
		setup   func(dir string)
		wantErr error
	}{
		{name: "good", setup: func(string) {}},
		{name: "no router.json", setup: func(dir string) { _ = os.Remove(filepath.Join(dir, classifier.MetaFile)) }, wantErr: classifier.ErrModelDir},
		{name: "no weights", setup: func(dir string) { _ = os.Remove(filepath.Join(dir, classifier.WeightsFile)) }, wantErr: classifier.ErrModelDir},
		{name: "dim mismatch", setup: func(dir string) {
			_ = os.WriteFile(filepath.Join(dir, classifier.MetaFile), []byte(strings.Replace(string(meta), `"dim": 256`, `"dim": 512`, 1)), 0o644)
		}, wantErr: classifier.ErrModelDir},
		{name: "other format", setup: func(dir string) {
			_ = os.WriteFile(filepath.Join(dir, classifier.MetaFile), []byte(strings.Replace(string(meta), classifier.Format, "other", 1)), 0o644)
		}, wantErr: classifier.ErrModelDir},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			dir := filepath.Join(t.TempDir(), "m")
			if err := c.Save(dir); err != nil {
				t.Fatal(err)
			}
			tc.setup(dir)
			m, err := classifier.Load(dir, "")
			if !errors.Is(err, tc.wantErr) {
				t.Fatalf("err %v, want %v", err, tc.wantErr)
			}
			if m != nil {
				_ = m.Close()
			}
		})
	}
}

func TestReadExamples(t *testing.T) {
	tests := []struct {
		name    string
		in      string
		want    int
		wantErr string // a substring of the error; "" for none
	}{
		{name: "good", in: "{\"prompt\":\"hi\",\"expert\":\"a\"}\n\n{\"prompt\":\"yo\",\"expert\":\"b\"}\n", want: 2},
		{name: "not json", in: "{\"prompt\":\"hi\",\"expert\":\"a\"}\nnot json\n", wantErr: "line 2: invalid labeled row"},
		{name: "no expert", in: "\n\n{\"prompt\":\"hi\"}\n", wantErr: "line 3: invalid labeled row: expert is empty"},
		{name: "empty prompt", in: `{"prompt":"  ","expert":"a"}`, wantErr: "line 1: invalid labeled row: prompt is empty"},
		{name: "bad expert name", in: `{"prompt":"x","expert":"a.b"}`, wantErr: "line 1: invalid labeled row: expert \"a.b\""},
		{name: "unknown field", in: `{"prompt":"x","expert":"a","label":"b"}`, wantErr: "line 1:"},
		{name: "wrong type", in: `{"prompt":3,"expert":"a"}`, wantErr: "line 1:"},
		{name: "two values", in: `{"prompt":"x","expert":"a"} {}`, wantErr: "line 1: invalid labeled row: more than one JSON value"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			got, err := classifier.ReadExamples(strings.NewReader(tc.in))
			if tc.wantErr != "" {
				if err == nil || !errors.Is(err, classifier.ErrInvalidRow) || !strings.Contains(err.Error(), tc.wantErr) {
					t.Fatalf("err %v, want one containing %q", err, tc.wantErr)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			if len(got) != tc.want {
				t.Errorf("%d rows, want %d", len(got), tc.want)
			}
		})
	}
}

func TestLoadExamplesNamesFile(t *testing.T) {
	path := filepath.Join(t.TempDir(), "labeled.jsonl")
	if err := os.WriteFile(path, []byte("{\"prompt\":\"a\",\"expert\":\"x\"}\n{\"prompt\":\"b\"}\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	_, err := classifier.LoadExamples(path)
	if err == nil || !strings.Contains(err.Error(), path+": line 2:") {
		t.Errorf("err %v", err)
	}
}

func TestTrainErrors(t *testing.T) {
	tests := []struct {
		name    string
		ex      []classifier.Example
		cfg     classifier.Config
		wantErr error
	}{
		{name: "one expert", ex: []classifier.Example{{"a", "x"}, {"b", "x"}}, wantErr: classifier.ErrInvalidOption},
		{name: "no rows", wantErr: classifier.ErrInvalidOption},
		{name: "dim not a power of two", ex: toySet(6, 1), cfg: classifier.Config{Dim: 1000}, wantErr: classifier.ErrInvalidOption},
		{name: "negative epochs", ex: toySet(6, 1), cfg: classifier.Config{Epochs: -1}, wantErr: classifier.ErrInvalidOption},
		{name: "bad backend", ex: toySet(6, 1), cfg: classifier.Config{Backend: "nosuchbackend"}, wantErr: classifier.ErrBackend},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			c, err := classifier.Train(context.Background(), tc.ex, tc.cfg)
			if !errors.Is(err, tc.wantErr) {
				t.Fatalf("err %v, want %v", err, tc.wantErr)
			}
			if c != nil {
				_ = c.Close()
			}
		})
	}
}

func TestHoldout(t *testing.T) {
	ex := toySet(30, 4)
	tr, te := classifier.Holdout(ex, 0.2, 9)
	if len(tr)+len(te) != 30 || len(te) != 6 {
		t.Errorf("train %d test %d", len(tr), len(te))
	}
	tr2, te2 := classifier.Holdout(toySet(30, 4), 0.2, 9)
	if te[0] != te2[0] || tr[0] != tr2[0] {
		t.Error("same seed, different split")
	}
}

func FuzzParseExample(f *testing.F) {
	for _, s := range []string{`{"prompt":"fix my code","expert":"code"}`, `{"prompt":""}`, `[]`, `{"prompt":"x","expert":"a>b"}`, `{"prompt":"x","expert":"a"}{}`, "\x00"} {
		f.Add([]byte(s))
	}
	f.Fuzz(func(t *testing.T, data []byte) {
		e, err := classifier.ParseExample(data)
		if err != nil {
			if !errors.Is(err, classifier.ErrInvalidRow) {
				t.Fatalf("error %v does not wrap ErrInvalidRow", err)
			}
			return
		}
		if strings.TrimSpace(e.Prompt) == "" || e.Expert == "" || strings.ContainsAny(e.Expert, " \t\r\n.*>") {
			t.Fatalf("accepted %+v", e)
		}
	})
}

// TestPredictConcurrent: one classifier serves many goroutines.
func TestPredictConcurrent(t *testing.T) {
	c := train(t, toySet(60, 6), classifier.Config{Dim: 512, Epochs: 5})
	want, err := c.Predict("Solve for x: 3x + 7 = 22.")
	if err != nil {
		t.Fatal(err)
	}
	errs := make(chan error, 16)
	for range 16 {
		go func() {
			for range 20 {
				got, err := c.Predict("Solve for x: 3x + 7 = 22.")
				if err == nil && got[0] != want[0] {
					err = fmt.Errorf("got %+v, want %+v", got[0], want[0])
				}
				if err != nil {
					errs <- err
					return
				}
			}
			errs <- nil
		}()
	}
	for range 16 {
		if err := <-errs; err != nil {
			t.Error(err)
		}
	}
}

func FuzzFeaturize(f *testing.F) {
	for _, s := range []string{"", "fix this python function", "Über straße ñ", "\xff\xfe a\xc3", "x y z x y z", "日本語のテキスト"} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, s string) {
		v := make([]float32, 256)
		classifier.Featurize(v, s)
		var sq float64
		for _, x := range v {
			if x < 0 {
				t.Fatalf("negative feature %v", x)
			}
			sq += float64(x) * float64(x)
		}
		if sq != 0 && (sq < 0.999 || sq > 1.001) {
			t.Fatalf("squared norm %v, want 0 or 1", sq)
		}
	})
}
