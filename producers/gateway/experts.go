package gateway

import (
	"context"
	"fmt"

	"github.com/largeforge/largeforge/pipeline"
	"github.com/largeforge/largeforge/routing"
	"github.com/largeforge/largeforge/schemas"
)

// watchExperts applies the lf_experts bucket live: each key holds one §2.3
// ExpertConfig as a JSON object, which adds to or replaces the Config.Experts
// entry of its name; a deleted key drops its expert. The router is rebuilt
// on each change; an invalid entry is logged and skipped. It returns once
// the initial values are applied and watches until ctx ends.
func (g *Gateway) watchExperts(ctx context.Context) error {
	w, err := g.experts.Watch(ctx, ">")
	if err != nil {
		return fmt.Errorf("watch lf_experts: %w", err)
	}
	fromKV := map[string]schemas.ExpertConfig{}
	apply := func() {
		kvList := make([]schemas.ExpertConfig, 0, len(fromKV))
		for _, e := range fromKV {
			kvList = append(kvList, e)
		}
		experts := routing.MergeExperts(g.cfg.Experts, kvList)
		if len(experts) == 0 {
			g.router.Store(nil)
			return
		}
		r, err := routing.New(experts, g.routerOptions()...)
		if err != nil {
			g.log.Warn().Err(err).Msg("experts not applied")
			return
		}
		g.router.Store(r)
	}
	handle := func(e *pipeline.Entry) {
		if e.Deleted {
			delete(fromKV, e.Key)
			return
		}
		x, err := routing.ParseExpertEntry(e.Key, e.Value)
		if err != nil {
			g.log.Warn().Err(err).Str("key", e.Key).Msg("lf_experts entry skipped")
			return
		}
		fromKV[e.Key] = x
	}
	// The initial values end with a nil entry.
	for {
		e, err := w.Next(ctx)
		if err != nil {
			w.Stop()
			return fmt.Errorf("watch lf_experts: %w", err)
		}
		if e == nil {
			break
		}
		handle(e)
	}
	apply()
	go func() {
		defer w.Stop()
		for {
			e, err := w.Next(ctx)
			if err != nil {
				return
			}
			if e != nil {
				handle(e)
				apply()
			}
		}
	}()
	return nil
}
