package dataset_test

import (
	"context"
	"io"
	"strings"
	"testing"

	"github.com/largeforge/largeforge/dataset"
	"github.com/largeforge/largeforge/storage"
)

// TestRejects: the lines of a dataset's rejects-NNNNN.jsonl objects in
// order, all of them or the first limit.
func TestRejects(t *testing.T) {
	ctx := context.Background()
	store, err := storage.NewLocal(storage.DirsUnder(t.TempDir()))
	if err != nil {
		t.Fatal(err)
	}
	parts, _ := storage.DatasetRejectParts(store, "ds")
	for _, lines := range []string{"{\"id\":\"a\"}\n{\"id\":\"b\"}\n", "{\"id\":\"c\"}\n"} {
		if _, err := parts.Publish(ctx, func(w io.Writer) error { _, err := io.WriteString(w, lines); return err }); err != nil {
			t.Fatal(err)
		}
	}
	for _, tc := range []struct {
		limit int
		want  string
	}{{0, "a b c"}, {2, "a b"}, {5, "a b c"}} {
		var got []string
		err := dataset.Rejects(ctx, store, "ds", tc.limit, func(line []byte) error {
			got = append(got, strings.TrimSuffix(strings.TrimPrefix(string(line), `{"id":"`), `"}`))
			return nil
		})
		if err != nil || strings.Join(got, " ") != tc.want {
			t.Errorf("Rejects(limit %d) = %v, %v; want %s", tc.limit, got, err, tc.want)
		}
	}
}
