package main

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/largeforge/largeforge/pipeline"
	"github.com/largeforge/largeforge/pipeline/pipelinetest"
	"github.com/largeforge/largeforge/schemas"
)

// doctor on a fresh bus finds nothing wrong; a request queued for a model
// no worker serves is a FAIL line with the command that starts one and a
// non-zero exit; an unreachable server and wrong credentials are one line.
func TestDoctor(t *testing.T) {
	e, bus := pipelinetest.StartBus(t)
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	out, err := runCLI(t, ctx, "doctor", "--nats", e.ClientURL())
	if err != nil || !strings.Contains(out, "no problems found") || !strings.Contains(out, "ok   topology") {
		t.Fatalf("healthy bus: %v\n%s", err, out)
	}
	// A live infer worker serving "served", a train worker silent for an
	// hour, and a request queued for a model nobody serves.
	workers, err := bus.KV(ctx, pipeline.BucketWorkers)
	if err != nil {
		t.Fatal(err)
	}
	now := time.Now()
	for key, hb := range map[string]schemas.Heartbeat{
		"infer.w1": {ID: "w1", Role: schemas.WorkerInfer, Models: []string{"served"}, PID: 1, UpdatedAt: now.Unix()},
		"train.w2": {ID: "w2", Role: schemas.WorkerTrain, PID: 2, UpdatedAt: now.Add(-time.Hour).Unix()},
	} {
		data, _ := json.Marshal(hb)
		if _, err := workers.Put(ctx, key, data); err != nil {
			t.Fatal(err)
		}
	}
	for _, subj := range []string{"lf.req.job1.orphan", "lf.req.job1.served"} {
		if _, err := bus.Publish(ctx, subj, []byte(`{}`), "", nil); err != nil {
			t.Fatal(err)
		}
	}
	// The heartbeat's age is an hour and the seconds the test took.
	out, err = runCLI(t, ctx, "doctor", "--nats", e.ClientURL())
	if !errors.Is(err, ErrDoctor) || !strings.Contains(out, "FAIL workers   1 request(s) queued for model orphan") ||
		!strings.Contains(out, "fix: largeforge worker --role infer --model orphan=DIR") ||
		!strings.Contains(out, "ok   workers   1 infer worker(s) serving served; 0 train worker(s)") ||
		!strings.Contains(out, "FAIL workers   train worker w2 (pid 2): last heartbeat 1h0m") || strings.Contains(out, "model served and") {
		t.Fatalf("workers: %v\n%s", err, out)
	}
	// A --stale below the heartbeat interval would call live workers stale.
	if _, err := runCLI(t, ctx, "doctor", "--nats", e.ClientURL(), "--stale", "5s"); err == nil || !strings.Contains(err.Error(), "--stale 5s: want at least 20s") {
		t.Fatalf("--stale 5s: %v", err)
	}
	_, err = runCLI(t, ctx, "doctor", "--nats", fmt.Sprintf("nats://127.0.0.1:%d", freePort(t)), "--wait-for-nats", "100ms")
	if err == nil || strings.Contains(err.Error(), "\n") || !strings.Contains(err.Error(), "cannot reach the bus") {
		t.Fatalf("unreachable: %v", err)
	}
}

func TestDoctorWrongCredentials(t *testing.T) {
	e, _ := pipelinetest.StartRoles(t, nil)
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	_, err := runCLI(t, ctx, "doctor", "--nats", e.ClientURL(), "--nats-user", "admin", "--nats-password", "wrong")
	if err == nil || strings.Contains(err.Error(), "\n") || !strings.Contains(err.Error(), "cannot reach the bus") {
		t.Fatalf("wrong password: %v", err)
	}
	out, err := runCLI(t, ctx, "doctor", "--nats", e.ClientURL(), "--nats-user", "admin", "--nats-password", pipelinetest.RolePassword("admin"))
	if err != nil {
		t.Fatalf("admin: %v\n%s", err, out)
	}
}
