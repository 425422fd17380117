package main

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/largeforge/largeforge/pipeline/pipelinetest"
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
	if _, err := bus.Publish(ctx, "lf.req.job1.orphan", []byte(`{}`), "", nil); err != nil {
		t.Fatal(err)
	}
	out, err = runCLI(t, ctx, "doctor", "--nats", e.ClientURL())
	if !errors.Is(err, ErrDoctor) || !strings.Contains(out, "FAIL workers   1 request(s) queued for model orphan") ||
		!strings.Contains(out, "fix: largeforge worker --role infer --model orphan=DIR") {
		t.Fatalf("queued request for no worker: %v\n%s", err, out)
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
