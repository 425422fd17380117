package routing

import (
	"context"
	"encoding/json"
	"fmt"
	"strings"
	"time"

	"github.com/largeforge/largeforge/pipeline"
	"github.com/largeforge/largeforge/schemas"
)

// LiveWorkers reads the lf_workers bucket kv: infer workers whose heartbeat
// is within the bucket's TTL, counted per model.
func LiveWorkers(ctx context.Context, kv *pipeline.KV) (map[string]int, error) {
	out := map[string]int{}
	keys, err := kv.Keys(ctx)
	if err != nil {
		return nil, fmt.Errorf("list %s: %w", pipeline.BucketWorkers, err)
	}
	for _, key := range keys {
		if !strings.HasPrefix(key, schemas.HeartbeatKey(schemas.WorkerInfer, "")) {
			continue
		}
		e, err := kv.Get(ctx, key)
		if err != nil {
			continue // expired or deleted meanwhile
		}
		var hb schemas.Heartbeat
		if json.Unmarshal(e.Value, &hb) != nil {
			continue
		}
		if time.Since(time.Unix(hb.UpdatedAt, 0)) > pipeline.WorkerHeartbeatTTL {
			continue
		}
		for _, m := range hb.Models {
			out[m]++
		}
	}
	return out, nil
}
