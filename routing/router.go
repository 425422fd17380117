package routing

import (
	"fmt"
	"sort"
	"strings"
	"unicode"

	"github.com/largeforge/largeforge/routing/classifier"
	"github.com/largeforge/largeforge/schemas"
)

// AutoModel is the model name that asks for routing (a request of the
// gateway, a batch job or one of its rows).
const AutoModel = "auto"

// Decision stages.
const (
	StageRules      = "rules"      // keyword and domain matches decided
	StageClassifier = "classifier" // no rule matched: the learned classifier decided
	StageDefault    = "default"    // nothing matched and no classifier: the highest-priority live expert
)

// Rule weights: a keyword match counts more than a domain match.
const (
	keywordWeight = 2.0
	domainWeight  = 1.0
)

// Router routes prompts to experts (§2.3) in stages. The rule stage scores
// each expert by the keywords and domains found in the prompt (whole words,
// case folded; a phrase matches as a run of words), breaks ties by priority
// then name, and chooses the best expert with live workers (StageRules;
// confidence is the expert's share of the scores). When no rule matches and
// the router has a classifier (WithClassifier), the learned stage decides
// (StageClassifier): each expert gets the classifier's probability (0 for an
// expert it was not trained on), ties broken by priority then name, and the
// most probable live expert is chosen with its probability as confidence.
// Without a classifier, or when it fails, the highest-priority live expert
// is chosen (StageDefault). Alternatives are the other experts, sorted by
// confidence.
type Router struct {
	experts []schemas.ExpertConfig
	clf     *classifier.Classifier
}

// Option configures a Router.
type Option func(*Router) error

// WithClassifier adds the learned stage. The router does not own c: the
// caller closes it after the router's last use.
func WithClassifier(c *classifier.Classifier) Option {
	return func(r *Router) error {
		if c == nil {
			return fmt.Errorf("%w: nil classifier", ErrInvalidOption)
		}
		r.clf = c
		return nil
	}
}

// New validates the experts (unique names) and returns their router.
func New(experts []schemas.ExpertConfig, opts ...Option) (*Router, error) {
	if len(experts) == 0 {
		return nil, fmt.Errorf("%w: router needs at least one expert", ErrInvalidOption)
	}
	seen := map[string]bool{}
	for _, e := range experts {
		if err := e.Validate(); err != nil {
			return nil, fmt.Errorf("%w: expert %q: %w", ErrInvalidOption, e.Name, err)
		}
		if e.Name == AutoModel {
			return nil, fmt.Errorf("%w: expert name %q is reserved", ErrInvalidOption, AutoModel)
		}
		if seen[e.Name] {
			return nil, fmt.Errorf("%w: expert %q twice", ErrInvalidOption, e.Name)
		}
		seen[e.Name] = true
	}
	r := &Router{experts: append([]schemas.ExpertConfig(nil), experts...)}
	for _, o := range opts {
		if err := o(r); err != nil {
			return nil, err
		}
	}
	return r, nil
}

// Classifier returns the learned stage's classifier, or nil.
func (r *Router) Classifier() *classifier.Classifier { return r.clf }

// Experts returns the router's experts.
func (r *Router) Experts() []schemas.ExpertConfig { return r.experts }

// words splits text into lower-case words.
func words(s string) []string {
	return strings.FieldsFunc(strings.ToLower(s), func(c rune) bool { return !unicode.IsLetter(c) && !unicode.IsDigit(c) && c != '+' && c != '#' })
}

// containsPhrase reports whether the words of phrase occur as a run in ws.
func containsPhrase(ws []string, phrase string) bool {
	p := words(phrase)
	if len(p) == 0 {
		return false
	}
	for i := 0; i+len(p) <= len(ws); i++ {
		match := true
		for j := range p {
			if ws[i+j] != p[j] {
				match = false
				break
			}
		}
		if match {
			return true
		}
	}
	return false
}

// Route decides which expert takes prompt. live reports whether an expert
// has live workers (nil: all do). ErrNoWorker when none has.
func (r *Router) Route(prompt string, live func(string) bool) (schemas.RouteDecision, error) {
	ws := words(prompt)
	type cand struct {
		e     schemas.ExpertConfig
		score float64
	}
	cands := make([]cand, len(r.experts))
	total := 0.0
	for i, e := range r.experts {
		c := cand{e: e}
		for _, k := range e.Keywords {
			if containsPhrase(ws, k) {
				c.score += keywordWeight
			}
		}
		for _, d := range e.Domains {
			if containsPhrase(ws, d) {
				c.score += domainWeight
			}
		}
		total += c.score
		cands[i] = c
	}
	stage := StageRules
	if total == 0 {
		stage = StageDefault
		if r.clf != nil {
			if preds, err := r.clf.Predict(prompt); err == nil {
				prob := make(map[string]float64, len(preds))
				for _, p := range preds {
					prob[p.Expert] = p.Probability
				}
				for i := range cands {
					cands[i].score = prob[cands[i].e.Name]
				}
				stage = StageClassifier
			}
		}
	}
	sort.SliceStable(cands, func(i, j int) bool {
		a, b := cands[i], cands[j]
		if a.score != b.score {
			return a.score > b.score
		}
		if a.e.Priority != b.e.Priority {
			return a.e.Priority > b.e.Priority
		}
		return a.e.Name < b.e.Name
	})
	conf := func(c cand) float64 {
		switch stage {
		case StageClassifier:
			return min(max(c.score, 0), 1)
		case StageDefault:
			return 1 / float64(len(cands))
		}
		return c.score / total
	}
	chosen := -1
	for i, c := range cands {
		if live == nil || live(c.e.Name) {
			chosen = i
			break
		}
	}
	if chosen < 0 {
		return schemas.RouteDecision{}, fmt.Errorf("%w: no expert has a live worker", ErrNoWorker)
	}
	d := schemas.RouteDecision{Stage: stage}
	d.Expert, d.Confidence = cands[chosen].e.Name, conf(cands[chosen])
	d.Alternatives = []schemas.Alternative{}
	for i, c := range cands {
		if i != chosen {
			d.Alternatives = append(d.Alternatives, schemas.Alternative{Expert: c.e.Name, Confidence: conf(c)})
		}
	}
	return d, nil
}

// RouteText is what the router reads of a request: the prompt, or the chat's
// user messages.
func RouteText(req schemas.CompletionRequest) string {
	if !req.IsChat() {
		return req.Prompt
	}
	var b strings.Builder
	for _, m := range req.Messages {
		if m.Role == schemas.RoleUser {
			b.WriteString(m.Content)
			b.WriteByte('\n')
		}
	}
	return b.String()
}
