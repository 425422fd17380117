package routing

import (
	"context"
	"errors"
	"fmt"
	"sort"

	"github.com/nats-io/nats.go/jetstream"

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
func ReadExperts(ctx context.Context, kv jetstream.KeyValue) ([]schemas.ExpertConfig, []error, error) {
	lister, err := kv.ListKeys(ctx)
	if err != nil {
		if errors.Is(err, jetstream.ErrNoKeysFound) {
			return nil, nil, nil
		}
		return nil, nil, fmt.Errorf("list lf_experts: %w", err)
	}
	defer func() { _ = lister.Stop() }()
	var out []schemas.ExpertConfig
	var skipped []error
	for key := range lister.Keys() {
		e, err := kv.Get(ctx, key)
		if err != nil {
			continue // deleted meanwhile
		}
		x, err := ParseExpertEntry(key, e.Value())
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
