package resultsink_test

import (
	"context"
	"errors"
	"fmt"
	"testing"
	"time"

	"github.com/parquet-go/parquet-go"

	"github.com/largeforge/largeforge/consumers/resultsink"
	"github.com/largeforge/largeforge/jobs"
	"github.com/largeforge/largeforge/pipeline/pipelinetest"
	"github.com/largeforge/largeforge/storage"
	"github.com/largeforge/largeforge/storage/storagetest"
)

// TestTwoSinksOneJob: two results sinks on one directory take the results
// of one job from the shared durable at once. Their parts have names of
// their own (no part replaces another) and hold every row exactly once.
func TestTwoSinksOneJob(t *testing.T) {
	const rows = 400
	ctx := context.Background()
	e := newEnv(t)
	// A total beyond the rows sent: the job stays in progress, its parts as written.
	sent := make([]string, rows)
	for i := range sent {
		sent[i] = fmt.Sprintf("r%04d", i)
	}
	e.create(t, jobs.Spec{ID: "shared", Model: "m"}, sent...)
	if _, err := e.store.Transition(ctx, "shared", jobs.StatusInProgress, func(j *jobs.Job) { j.RequestCounts.Total = 10 * rows }); err != nil {
		t.Fatal(err)
	}
	for i := range rows {
		id := fmt.Sprintf("r%04d", i)
		e.publish(t, ok(t, "shared", id, id), id)
	}
	e.start(t)
	e.start(t)
	files, err := storage.NewLocal(storage.Dirs{Jobs: e.dir})
	if err != nil {
		t.Fatal(err)
	}
	parts, err := storage.JobParts(files, "shared")
	if err != nil {
		t.Fatal(err)
	}
	pipelinetest.CheckFor(t, 20*time.Second, 50*time.Millisecond, func() error {
		got, n, err := storagetest.IDsOnce(ctx, parts, func(key string) ([]string, error) { return customIDs(files, key) })
		if errors.Is(err, storagetest.ErrTwice) {
			t.Fatal(err)
		}
		if err == nil && got != rows {
			err = fmt.Errorf("%d of %d rows in %d parts", got, rows, n)
		}
		return err
	})
}

// customIDs reads the custom_id column of a stored part.
func customIDs(files storage.Store, key string) ([]string, error) {
	r, info, err := files.Open(context.Background(), key)
	if err != nil {
		return nil, err
	}
	defer r.Close()
	rows, err := parquet.Read[resultsink.Row](r, info.Size)
	ids := make([]string, len(rows))
	for i, row := range rows {
		ids[i] = row.CustomID
	}
	return ids, err
}
