package main

import (
	"context"
	"errors"
	"fmt"
	"net"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/largeforge/largeforge/consumers/train/traintest"
	"github.com/largeforge/largeforge/dataset"
	mtrain "github.com/largeforge/largeforge/model/train"
	"github.com/largeforge/largeforge/pipeline"
	"github.com/largeforge/largeforge/pipeline/pipelinetest"
	"github.com/largeforge/largeforge/schemas"
	"github.com/largeforge/largeforge/storage"
)

// TestTrainDatasetFromBus: `train --config` (here, not --submit) with
// dataset: NAME and no data dir reads the dataset's parts from the bus when
// a server answers and holds them (8 rows: 4 steps an epoch), else those of
// ./lf-data (4 rows: 2 steps), and fails naming both when neither holds the
// dataset; --data-dir given reads only there, as before.
func TestTrainDatasetFromBus(t *testing.T) {
	if testing.Short() {
		t.Skip("trains four times")
	}
	fx := traintest.New(t, 8)
	e, bus := pipelinetest.StartBus(t)
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	defer cancel()
	recs, err := mtrain.LoadRecords([]string{fx.Data}, "")
	if err != nil {
		t.Fatal(err)
	}
	storeDataset(ctx, t, bus, "chat", recs)
	t.Chdir(t.TempDir())
	local := filepath.Join("lf-data", "datasets", "chat")
	if err := os.MkdirAll(local, 0o755); err != nil {
		t.Fatal(err)
	}
	if _, err := dataset.WritePart(filepath.Join(local, "part-00000.parquet"), schemas.FormatShareGPT, recs[:4], recordIDs(recs[:4]), nil); err != nil {
		t.Fatal(err)
	}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	noServer := "nats://" + ln.Addr().String()
	ln.Close()

	runs := 0
	trainCmd := func(name, nats string, args ...string) (string, error) {
		runs++
		yaml := strings.Replace(fx.YAML(filepath.Join(fx.Dir, fmt.Sprintf("out-%d", runs)), 1, 1000), "data_files: ["+fx.Data+"]", "dataset: "+name, 1)
		cfg := filepath.Join(fx.Dir, fmt.Sprintf("train-%d.yaml", runs))
		if err := os.WriteFile(cfg, []byte(yaml), 0o644); err != nil {
			t.Fatal(err)
		}
		return runCLI(t, ctx, append([]string{"--nats=" + nats, "--log-level=error", "train", "--config", cfg}, args...)...)
	}
	for _, c := range []struct {
		name, nats string
		args       []string
		steps      int
	}{
		{"on the bus", e.ClientURL(), nil, 4},
		{"no server: ./lf-data", noServer, nil, 2},
		{"--data-dir: only there", e.ClientURL(), []string{"--data-dir", "lf-data"}, 2},
	} {
		out, err := trainCmd("chat", c.nats, c.args...)
		if err != nil {
			t.Fatalf("%s: %v\n%s", c.name, err, out)
		}
		if want := fmt.Sprintf("trained %d steps", c.steps); !strings.Contains(out, want) {
			t.Errorf("%s: %q, want %q", c.name, out, want)
		}
	}
	out, err := trainCmd("missing", e.ClientURL())
	if !errors.Is(err, errNoDataset) || !strings.Contains(err.Error(), "no parts in lf_artifacts") || !strings.Contains(err.Error(), filepath.Join("lf-data", "datasets", "missing")) {
		t.Fatalf("a dataset in neither place: %v, want errNoDataset naming the bus and ./lf-data\n%s", err, out)
	}
}

// TestTrainDatasetFromBusAsTrainRole: on a server with the role table,
// train run on the train credential reads the dataset from lf_artifacts.
func TestTrainDatasetFromBusAsTrainRole(t *testing.T) {
	if testing.Short() {
		t.Skip("trains")
	}
	fx := traintest.New(t, 8)
	_, e, admin, ctx := tinyOnRoles(t)
	recs, err := mtrain.LoadRecords([]string{fx.Data}, "")
	if err != nil {
		t.Fatal(err)
	}
	storeDataset(ctx, t, admin, "chat", recs)
	t.Chdir(t.TempDir()) // no lf-data here
	yaml := strings.Replace(fx.YAML(filepath.Join(fx.Dir, "out"), 1, 1000), "data_files: ["+fx.Data+"]", "dataset: chat", 1)
	cfg := filepath.Join(fx.Dir, "train.yaml")
	if err := os.WriteFile(cfg, []byte(yaml), 0o644); err != nil {
		t.Fatal(err)
	}
	out, err := runCLI(t, ctx, "--nats="+e.ClientURL(), "--nats-user=train", "--nats-password="+pipelinetest.RolePassword("train"),
		"--log-level=error", "train", "--config", cfg)
	if err != nil || !strings.Contains(out, "trained 4 steps") {
		t.Fatalf("train as the train role: %v\n%s", err, out)
	}
}

// storeDataset stores recs on the bus as dataset name's first part.
func storeDataset(ctx context.Context, t *testing.T, bus *pipeline.Bus, name string, recs []schemas.Record) {
	t.Helper()
	objects, err := storage.OpenObjects(ctx, bus, "")
	if err != nil {
		t.Fatal(err)
	}
	parts, err := storage.DatasetParts(objects, name)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := dataset.CreatePart(ctx, parts, 0, schemas.FormatShareGPT, recs, recordIDs(recs), nil); err != nil {
		t.Fatal(err)
	}
}

// recordIDs are the record ids of recs.
func recordIDs(recs []schemas.Record) []string {
	ids := make([]string, len(recs))
	for i, r := range recs {
		ids[i] = r.ID()
	}
	return ids
}
