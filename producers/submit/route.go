package submit

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"time"

	"github.com/largeforge/largeforge/pipeline"
	"github.com/largeforge/largeforge/routing"
	"github.com/largeforge/largeforge/schemas"
)

// AutoModel is the model name of a job (or row) routed to experts.
const AutoModel = routing.AutoModel

// liveEvery is how long the submitter trusts its read of lf_workers.
const liveEvery = time.Second

// autoRouter routes the rows of a submission through a routing.Router:
// the same stages and the same LF_ROUTES records as interactive requests,
// on lf.route.<job>. Experts with live workers are preferred; when none has
// one, the decision is made as if all had (a batch request waits in the
// work queue for its expert's workers).
type autoRouter struct {
	r       *routing.Router
	workers *pipeline.KV
	live    map[string]int
	read    time.Time
}

func newAutoRouter(ctx context.Context, bus *pipeline.Bus, r *routing.Router) (*autoRouter, error) {
	kv, err := bus.KV(ctx, pipeline.BucketWorkers)
	if err != nil {
		return nil, err
	}
	return &autoRouter{r: r, workers: kv}, nil
}

// route decides the expert of one row and returns it with the record to
// publish to LF_ROUTES.
func (a *autoRouter) route(ctx context.Context, job, customID, text string) (string, []byte, error) {
	if time.Since(a.read) > liveEvery {
		live, err := routing.LiveWorkers(ctx, a.workers)
		if err != nil {
			return "", nil, err
		}
		a.live, a.read = live, time.Now()
	}
	d, err := a.r.Route(text, func(name string) bool { return a.live[name] > 0 })
	if errors.Is(err, routing.ErrNoWorker) {
		d, err = a.r.Route(text, nil)
	}
	if err != nil {
		return "", nil, fmt.Errorf("route %s: %w", customID, err)
	}
	rec := schemas.RouteRecord{RequestID: schemas.MsgID(job, customID), RouteDecision: d, At: time.Now().UTC().Format(time.RFC3339Nano)}
	data, err := json.Marshal(rec)
	return d.Expert, data, err
}
