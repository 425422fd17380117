package console

import (
	"bufio"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"sort"
	"time"

	"github.com/largeforge/largeforge/dataset"
	"github.com/largeforge/largeforge/jobs"
	"github.com/largeforge/largeforge/pipeline"
	"github.com/largeforge/largeforge/schemas"
)

// listJobs: every job record, newest first.
func (c *Console) listJobs(_ http.ResponseWriter, r *http.Request) (any, error) {
	store, err := c.jobStore(r.Context())
	if err != nil {
		return nil, err
	}
	list, err := store.List(r.Context())
	if err != nil {
		return nil, err
	}
	if list == nil {
		list = []jobs.Job{}
	}
	return map[string]any{"data": list}, nil
}

// job reads the job of the path's id; an id that is no job id, or names
// none, is a notFound.
func (c *Console) job(r *http.Request) (jobs.Job, error) {
	id := r.PathValue("id")
	if jobs.ValidID(id) != nil {
		return jobs.Job{}, notFound{fmt.Sprintf("No job %q: not a job id", id)}
	}
	store, err := c.jobStore(r.Context())
	if err != nil {
		return jobs.Job{}, err
	}
	j, err := store.Get(r.Context(), id)
	if errors.Is(err, jobs.ErrNotFound) {
		return jobs.Job{}, notFound{fmt.Sprintf("No job %q", id)}
	}
	return j, err
}

func (c *Console) getJob(_ http.ResponseWriter, r *http.Request) (any, error) {
	return c.job(r)
}

// cancelJob cancels through jobs.Cancel, as the API does: an illegal
// transition (a finished job) is a 409.
func (c *Console) cancelJob(_ http.ResponseWriter, r *http.Request) (any, error) {
	j, err := c.job(r)
	if err != nil {
		return nil, err
	}
	store, err := c.jobStore(r.Context())
	if err != nil {
		return nil, err
	}
	j, purged, err := jobs.Cancel(r.Context(), c.bus, store, j.ID)
	if err != nil {
		return nil, err
	}
	c.opt.Log.Info().Str("job", j.ID).Uint64("purged", purged).Msg("job cancelled from the console")
	return map[string]any{"job": j, "purged": purged}, nil
}

// jobEvents: the training events of a job (LF_EVENTS), oldest first.
func (c *Console) jobEvents(_ http.ResponseWriter, r *http.Request) (any, error) {
	j, err := c.job(r)
	if err != nil {
		return nil, err
	}
	filter, err := pipeline.TrainEventSubject(j.ID)
	if err != nil {
		return nil, err
	}
	msgs, err := c.bus.Tail(r.Context(), pipeline.StreamEvents, filter, MaxEvents)
	if err != nil {
		return nil, err
	}
	evs := []schemas.TrainEvent{}
	for _, m := range msgs {
		ev, err := schemas.DecodeTrainEvent(m.Data)
		if err != nil {
			c.opt.Log.Warn().Err(err).Uint64("seq", m.Seq).Msg("training event skipped")
			continue
		}
		evs = append(evs, ev)
	}
	return map[string]any{"job": j.ID, "data": evs}, nil
}

// manifest reads dataset name's manifest from lf_datasets.
func (c *Console) manifest(ctx context.Context, kv *pipeline.KV, name string) (dataset.Manifest, error) {
	e, err := kv.Get(ctx, name)
	if errors.Is(err, pipeline.ErrKeyNotFound) {
		return dataset.Manifest{}, notFound{fmt.Sprintf("No dataset %q", name)}
	}
	if err != nil {
		return dataset.Manifest{}, err
	}
	var m dataset.Manifest
	if err := json.Unmarshal(e.Value, &m); err != nil {
		return dataset.Manifest{}, fmt.Errorf("manifest of dataset %s: %w", name, err)
	}
	return m, nil
}

// listDatasets: every manifest, by name, read in one pass over
// lf_datasets.
func (c *Console) listDatasets(_ http.ResponseWriter, r *http.Request) (any, error) {
	kv, err := c.kv(r.Context(), pipeline.BucketDatasets)
	if err != nil {
		return nil, err
	}
	entries, err := kv.Values(r.Context(), ">")
	if err != nil {
		return nil, err
	}
	sort.Slice(entries, func(i, j int) bool { return entries[i].Key < entries[j].Key })
	out := []dataset.Manifest{}
	for _, e := range entries {
		var m dataset.Manifest
		if err := json.Unmarshal(e.Value, &m); err != nil {
			return nil, fmt.Errorf("manifest of dataset %s: %w", e.Key, err)
		}
		out = append(out, m)
	}
	return map[string]any{"data": out}, nil
}

// RejectSample is one rejected record shown under its rule.
type RejectSample struct {
	Source   string `json:"source"`
	Line     int64  `json:"line"`
	Field    string `json:"field"`
	Error    string `json:"error"`
	Original string `json:"original"`
}

// RuleRejects are the rejects of one rule: the manifest's count and the
// first samples found.
type RuleRejects struct {
	Rule    string         `json:"rule"`
	Count   int64          `json:"count"`
	Samples []RejectSample `json:"samples"`
}

// getDataset: the manifest and its rejects by rule, with samples from the
// rejects-NNNNN.jsonl objects.
func (c *Console) getDataset(_ http.ResponseWriter, r *http.Request) (any, error) {
	name := r.PathValue("name")
	if err := dataset.ValidateName(name); err != nil {
		return nil, notFound{fmt.Sprintf("No dataset %q: %v", name, err)}
	}
	kv, err := c.kv(r.Context(), pipeline.BucketDatasets)
	if err != nil {
		return nil, err
	}
	m, err := c.manifest(r.Context(), kv, name)
	if err != nil {
		return nil, err
	}
	byRule := map[string]*RuleRejects{}
	for rule, n := range m.Counts.RejectedByRule {
		byRule[rule] = &RuleRejects{Rule: rule, Count: n, Samples: []RejectSample{}}
	}
	if m.Counts.Rejected > 0 {
		store, err := c.artifactStore(r.Context())
		if err != nil {
			return nil, err
		}
		err = dataset.Rejects(r.Context(), store, name, MaxRejectsRead, func(line []byte) error {
			var rj struct {
				RejectSample
				Rule     string          `json:"rule"`
				Original json.RawMessage `json:"original"`
			}
			if json.Unmarshal(line, &rj) != nil {
				return nil
			}
			rr := byRule[rj.Rule]
			if rr == nil {
				rr = &RuleRejects{Rule: rj.Rule, Samples: []RejectSample{}}
				byRule[rj.Rule] = rr
			}
			if len(rr.Samples) < SamplesPerRule {
				s := rj.RejectSample
				s.Original = originalText(rj.Original)
				rr.Samples = append(rr.Samples, s)
			}
			return nil
		})
		if err != nil {
			return nil, err
		}
	}
	rules := make([]RuleRejects, 0, len(byRule))
	for _, rr := range byRule {
		rules = append(rules, *rr)
	}
	sort.Slice(rules, func(i, j int) bool {
		if rules[i].Count != rules[j].Count {
			return rules[i].Count > rules[j].Count
		}
		return rules[i].Rule < rules[j].Rule
	})
	return map[string]any{"manifest": m, "rejects": rules}, nil
}

// originalText is a reject's original bytes as text: a JSON string's value,
// else the raw JSON (bytes are base64 in a string).
func originalText(raw json.RawMessage) string {
	var s string
	if json.Unmarshal(raw, &s) == nil {
		return s
	}
	return string(raw)
}

// listWorkers: the heartbeats of lf_workers, by key.
func (c *Console) listWorkers(_ http.ResponseWriter, r *http.Request) (any, error) {
	hbs, err := c.heartbeats(r.Context())
	if err != nil {
		return nil, err
	}
	return map[string]any{"data": hbs, "now": time.Now().Unix()}, nil
}

func (c *Console) heartbeats(ctx context.Context) ([]schemas.Heartbeat, error) {
	kv, err := c.kv(ctx, pipeline.BucketWorkers)
	if err != nil {
		return nil, err
	}
	entries, err := kv.Values(ctx, ">") // one pass, not a read per worker
	if err != nil {
		return nil, err
	}
	sort.Slice(entries, func(i, j int) bool { return entries[i].Key < entries[j].Key })
	out := []schemas.Heartbeat{}
	for _, e := range entries {
		var hb schemas.Heartbeat
		if err := json.Unmarshal(e.Value, &hb); err != nil {
			c.opt.Log.Warn().Err(err).Str("key", e.Key).Msg("heartbeat skipped")
			continue
		}
		out = append(out, hb)
	}
	return out, nil
}

// ExpertView is an expert with its live workers and recent decisions.
type ExpertView struct {
	schemas.ExpertConfig
	LiveWorkers int `json:"live_workers"`
	Decisions   int `json:"recent_decisions"`
}

// Decision is a routing decision of LF_ROUTES with its job token.
type Decision struct {
	schemas.RouteRecord
	Job string `json:"job"`
}

// listExperts: the gateway's experts and the recent routing decisions.
func (c *Console) listExperts(_ http.ResponseWriter, r *http.Request) (any, error) {
	msgs, err := c.bus.Tail(r.Context(), pipeline.StreamRoutes, "lf.route.>", MaxDecisions)
	if err != nil {
		return nil, err
	}
	decisions := []Decision{}
	count := map[string]int{}
	for i := len(msgs) - 1; i >= 0; i-- { // newest first
		var d Decision
		if err := json.Unmarshal(msgs[i].Data, &d.RouteRecord); err != nil {
			continue
		}
		d.Job = pipeline.ThirdToken(msgs[i].Subject)
		count[d.Expert]++
		decisions = append(decisions, d)
	}
	hbs, err := c.heartbeats(r.Context())
	if err != nil {
		return nil, err
	}
	live := map[string]int{}
	for _, hb := range hbs {
		for _, m := range hb.Models {
			live[m]++
		}
	}
	experts := []ExpertView{}
	if c.opt.Experts != nil {
		for _, e := range c.opt.Experts() {
			experts = append(experts, ExpertView{ExpertConfig: e, LiveWorkers: live[e.Name], Decisions: count[e.Name]})
		}
	}
	sort.Slice(experts, func(i, j int) bool { return experts[i].Name < experts[j].Name })
	return map[string]any{"experts": experts, "decisions": decisions}, nil
}

// ModelView is a model of lf_models.
type ModelView struct {
	Name    string    `json:"name"`
	Digest  string    `json:"digest"`
	Size    int64     `json:"size"`
	Files   int       `json:"files"`
	Updated time.Time `json:"updated"`
}

func (c *Console) listModels(_ http.ResponseWriter, r *http.Request) (any, error) {
	s, err := c.modelStore(r.Context())
	if err != nil {
		return nil, err
	}
	list, err := s.List(r.Context())
	if err != nil {
		return nil, err
	}
	out := make([]ModelView, 0, len(list))
	for _, m := range list {
		out = append(out, ModelView{Name: m.Name, Digest: m.Digest, Size: m.Size, Files: m.Files, Updated: m.Updated})
	}
	return map[string]any{"data": out}, nil
}

// MaxRequestErrors bounds the lines of errors.jsonl a job page shows.
const MaxRequestErrors = 100

// RequestError is a failed request of a finished batch job: a line of its
// errors.jsonl.
type RequestError struct {
	CustomID string `json:"custom_id"`
	Status   int    `json:"status_code,omitempty"`
	Code     string `json:"code"`
	Message  string `json:"message"`
}

// jobErrors: the failed requests of a job, from its errors.jsonl in
// lf_artifacts once the job is final (final false before).
func (c *Console) jobErrors(_ http.ResponseWriter, r *http.Request) (any, error) {
	j, err := c.job(r)
	if err != nil {
		return nil, err
	}
	out := []RequestError{}
	if j.Outputs.Errors == "" {
		return map[string]any{"job": j.ID, "final": false, "data": out}, nil
	}
	store, err := c.artifactStore(r.Context())
	if err != nil {
		return nil, err
	}
	rd, _, err := store.Open(r.Context(), j.Outputs.Errors)
	if err != nil {
		return nil, fmt.Errorf("errors of job %s: %w", j.ID, err)
	}
	defer rd.Close()
	sc := bufio.NewScanner(rd)
	sc.Buffer(make([]byte, 1<<16), 16<<20)
	more := false
	for sc.Scan() {
		if len(out) == MaxRequestErrors {
			more = true
			break
		}
		var line schemas.OutputLine
		if json.Unmarshal(sc.Bytes(), &line) != nil {
			continue
		}
		e := RequestError{CustomID: line.CustomID}
		if line.Error != nil {
			e.Code, e.Message = line.Error.Code, line.Error.Message
		}
		if line.Response != nil {
			e.Status = line.Response.StatusCode
			var body struct{ Error *schemas.ResultError }
			if e.Message == "" && json.Unmarshal(line.Response.Body, &body) == nil && body.Error != nil {
				e.Code, e.Message = body.Error.Code, body.Error.Message
			}
		}
		out = append(out, e)
	}
	if err := sc.Err(); err != nil {
		return nil, fmt.Errorf("errors of job %s: %w", j.ID, err)
	}
	return map[string]any{"job": j.ID, "final": true, "data": out, "truncated": more}, nil
}
