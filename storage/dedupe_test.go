package storage_test

import (
	"context"
	"reflect"
	"strings"
	"testing"

	"github.com/largeforge/largeforge/storage"
)

func TestMemoryDeduper(t *testing.T) {
	ctx := context.Background()
	sha := strings.Repeat("ab", 32)
	m := storage.NewMemory()
	m.Add(sha, "held")
	tests := []struct {
		name string
		ids  []string
		want []bool
	}{
		{"held ids", []string{sha, "held"}, []bool{false, false}},
		{"new and repeated in one call", []string{"a", "b", "a"}, []bool{true, true, false}},
		{"claimed before", []string{"a"}, []bool{false}},
		{"uppercase hex is another id", []string{strings.ToUpper(sha)}, []bool{true}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, err := m.Claim(ctx, tt.ids)
			if err != nil || !reflect.DeepEqual(got, tt.want) {
				t.Fatalf("Claim(%q) = %v, %v; want %v", tt.ids, got, err, tt.want)
			}
		})
	}
	if err := m.Release(ctx, []string{"a", sha}); err != nil {
		t.Fatal(err)
	}
	if got, _ := m.Claim(ctx, []string{"a", sha, "b"}); !reflect.DeepEqual(got, []bool{true, true, false}) {
		t.Errorf("after release: %v", got)
	}
	if m.Len() != 5 {
		t.Errorf("Len %d", m.Len())
	}
}
