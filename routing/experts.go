package routing

import (
	"context"
	"fmt"
	"sort"

	"github.com/largeforge/largeforge/pipeline"
	"github.com/largeforge/largeforge/schemas"
)

// ParseExpertEntry decodes the lf_experts value of key: one ExpertConfig
// JSON object named as its key.
func ParseExpertEntry(key string, value []byte) (schemas.ExpertConfig, error) {
	list, err := schemas.ParseExperts(append(append([]byte("["), value...), ']'))
	if err != nil {
		return schemas.ExpertConfig{}, fmt.Errorf("lf_experts %s: %w", key, err)
	}
	if len(list) != 1 || list[0].Name != key {
		return schemas.ExpertConfig{}, fmt.Errorf("lf_experts %s: want one expert named as its key", key)
	}
	return list[0], nil
}

// ReadExperts returns the experts now in the lf_experts bucket kv, sorted
// by name, and the keys it skipped as invalid with why.
func ReadExperts(ctx context.Context, kv *pipeline.KV) ([]schemas.ExpertConfig, []error, error) {
	keys, err := kv.Keys(ctx)
	if err != nil || len(keys) == 0 {
		if err != nil {
			err = fmt.Errorf("list lf_experts: %w", err)
		}
		return nil, nil, err
	}
	var out []schemas.ExpertConfig
	var skipped []error
	for _, key := range keys {
		e, err := kv.Get(ctx, key)
		if err != nil {
			continue // deleted meanwhile
		}
		x, err := ParseExpertEntry(key, e.Value)
		if err != nil {
			skipped = append(skipped, err)
			continue
		}
		out = append(out, x)
	}
	return MergeExperts(nil, out), skipped, nil
}

// MergeExperts returns the experts of base with those of override added or
// replacing the ones of the same name, sorted by name.
func MergeExperts(base, override []schemas.ExpertConfig) []schemas.ExpertConfig {
	byName := map[string]schemas.ExpertConfig{}
	for _, e := range base {
		byName[e.Name] = e
	}
	for _, e := range override {
		byName[e.Name] = e
	}
	names := make([]string, 0, len(byName))
	for n := range byName {
		names = append(names, n)
	}
	sort.Strings(names)
	experts := make([]schemas.ExpertConfig, len(names))
	for i, n := range names {
		experts[i] = byName[n]
	}
	return experts
}
