package routing_test

import (
	"errors"
	"testing"

	"github.com/largeforge/largeforge/routing"
	"github.com/largeforge/largeforge/routing/routingtest"
	"github.com/largeforge/largeforge/schemas"
)

func TestRouter(t *testing.T) {
	r, err := routing.New(routingtest.Experts())
	if err != nil {
		t.Fatal(err)
	}
	tests := []struct {
		name      string
		prompt    string
		dead      string // an expert without live workers
		want      string
		wantStage string
		wantConf  float64
		wantErr   error
	}{
		{name: "keywords", prompt: "Fix this Python function, please", want: "coder", wantStage: routing.StageRules, wantConf: 1},
		{name: "phrase", prompt: "Once upon a time there was a dog", want: "stories", wantStage: routing.StageRules, wantConf: 1},
		{name: "split", prompt: "a story about python code", want: "coder", wantStage: routing.StageRules, wantConf: 3.0 / 5},
		{name: "no words inside words", prompt: "pythonic functional", want: "general", wantStage: routing.StageDefault, wantConf: 1.0 / 3},
		{name: "nothing matches: priority", prompt: "hello there", want: "general", wantStage: routing.StageDefault, wantConf: 1.0 / 3},
		{name: "best is dead: next alternative", prompt: "python story python function", dead: "coder", want: "stories", wantStage: routing.StageRules, wantConf: 2.0 / 6},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			d, err := r.Route(tc.prompt, func(n string) bool { return n != tc.dead })
			if !errors.Is(err, tc.wantErr) {
				t.Fatalf("err %v, want %v", err, tc.wantErr)
			}
			if d.Expert != tc.want || d.Stage != tc.wantStage || d.Confidence < tc.wantConf-1e-9 || d.Confidence > tc.wantConf+1e-9 {
				t.Errorf("decision %+v, want %s by %s at %v", d, tc.want, tc.wantStage, tc.wantConf)
			}
			if err := d.RouteResponse.Validate(); err != nil {
				t.Error(err)
			}
			if len(d.Alternatives) != 2 || d.Alternatives[0].Confidence < d.Alternatives[1].Confidence {
				t.Errorf("alternatives %+v: want the 2 others, sorted", d.Alternatives)
			}
		})
	}
	if _, err := r.Route("python", func(string) bool { return false }); !errors.Is(err, routing.ErrNoWorker) {
		t.Errorf("no live expert: err %v", err)
	}
}

func TestNewRouter(t *testing.T) {
	tests := []struct {
		name    string
		experts []schemas.ExpertConfig
		wantErr bool
	}{
		{name: "ok", experts: routingtest.Experts()},
		{name: "none", wantErr: true},
		{name: "duplicate", experts: append(routingtest.Experts(), routingtest.Expert("coder", 0, nil, nil)), wantErr: true},
		{name: "auto reserved", experts: []schemas.ExpertConfig{routingtest.Expert("auto", 0, nil, nil)}, wantErr: true},
		{name: "invalid", experts: []schemas.ExpertConfig{{Name: "x"}}, wantErr: true},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			_, err := routing.New(tc.experts)
			if (err != nil) != tc.wantErr || (err != nil && !errors.Is(err, routing.ErrInvalidOption)) {
				t.Errorf("err %v, wantErr %v", err, tc.wantErr)
			}
		})
	}
}

func TestRouterClassifierStage(t *testing.T) {
	clf := routingtest.SampleClassifier(t)
	experts := []schemas.ExpertConfig{
		routingtest.Expert("code", 0, []string{"python"}, nil),
		routingtest.Expert("math", 0, nil, nil),
		routingtest.Expert("stories", 0, nil, nil),
		routingtest.Expert("general", 9, nil, nil), // unknown to the classifier
	}
	r, err := routing.New(experts, routing.WithClassifier(clf))
	if err != nil {
		t.Fatal(err)
	}
	tests := []struct {
		name      string
		prompt    string
		dead      string
		want      string
		wantStage string
	}{
		{name: "rule decides", prompt: "my python script fails", want: "code", wantStage: routing.StageRules},
		{name: "classifier: math", prompt: "Solve for x: 5x + 1 = 11.", want: "math", wantStage: routing.StageClassifier},
		{name: "classifier: stories", prompt: "Write a bedtime story where a clever fox saves the day.", want: "stories", wantStage: routing.StageClassifier},
		{name: "classifier: code", prompt: "Why does my golang handler crash with a nil pointer?", want: "code", wantStage: routing.StageClassifier},
		{name: "best is dead: next alternative", prompt: "Solve for x: 5x + 1 = 11.", dead: "math", wantStage: routing.StageClassifier},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			d, err := r.Route(tc.prompt, func(n string) bool { return n != tc.dead })
			if err != nil {
				t.Fatal(err)
			}
			if d.Stage != tc.wantStage || (tc.want != "" && d.Expert != tc.want) {
				t.Fatalf("decision %+v, want %s by %s", d, tc.want, tc.wantStage)
			}
			if err := d.RouteResponse.Validate(); err != nil {
				t.Error(err)
			}
			if len(d.Alternatives) != 3 {
				t.Fatalf("alternatives %+v", d.Alternatives)
			}
			for i := 1; i < len(d.Alternatives); i++ {
				if d.Alternatives[i].Confidence > d.Alternatives[i-1].Confidence {
					t.Errorf("alternatives not sorted: %+v", d.Alternatives)
				}
			}
			if tc.wantStage != routing.StageClassifier {
				return
			}
			preds, err := clf.Predict(tc.prompt)
			if err != nil {
				t.Fatal(err)
			}
			if tc.dead == "" {
				if d.Confidence != preds[0].Probability || d.Confidence < 0.5 {
					t.Errorf("confidence %v, classifier %+v", d.Confidence, preds)
				}
				return
			}
			// The most probable expert is dead: the next one is chosen and
			// the dead one leads the alternatives.
			if d.Expert != preds[1].Expert || d.Alternatives[0].Expert != tc.dead {
				t.Errorf("decision %+v, classifier %+v", d, preds)
			}
		})
	}
}
