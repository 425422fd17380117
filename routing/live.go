package routing

import (
	"context"
	"encoding/json"
	"fmt"
	"time"

	"github.com/largeforge/largeforge/pipeline"
	"github.com/largeforge/largeforge/schemas"
)

// LiveWorkers reads the lf_workers bucket kv: infer workers whose heartbeat
// is within the bucket's TTL, counted per model.
func LiveWorkers(ctx context.Context, kv *pipeline.KV) (map[string]int, error) {
	return CountWorkers(ctx, kv, func(hb schemas.Heartbeat) bool {
		return time.Since(time.Unix(hb.UpdatedAt, 0)) <= pipeline.WorkerHeartbeatTTL
	})
}

// CountWorkers counts, per model, the infer workers of the lf_workers
// bucket kv whose heartbeat keep accepts. The heartbeats are read in one
// pass over the infer keys, not a read per worker.
func CountWorkers(ctx context.Context, kv *pipeline.KV, keep func(schemas.Heartbeat) bool) (map[string]int, error) {
	entries, err := kv.Values(ctx, schemas.HeartbeatKey(schemas.WorkerInfer, ">"))
	if err != nil {
		return nil, fmt.Errorf("list %s: %w", pipeline.BucketWorkers, err)
	}
	out := map[string]int{}
	for _, e := range entries {
		var hb schemas.Heartbeat
		if json.Unmarshal(e.Value, &hb) != nil || !keep(hb) {
			continue
		}
		for _, m := range hb.Models {
			out[m]++
		}
	}
	return out, nil
}
