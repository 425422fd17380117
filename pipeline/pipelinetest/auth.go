package pipelinetest

import (
	"context"
	"testing"
	"time"

	"github.com/rs/zerolog"

	"github.com/largeforge/largeforge/pipeline"
)

// StartServerConf starts an embedded server with the configuration conf
// (for example the default nats.conf plus an authorization block) on a
// random port with its store in t.TempDir().
func StartServerConf(t testing.TB, conf string) *pipeline.Embedded {
	t.Helper()
	return StartServerWith(t, pipeline.EmbeddedConfig{DataDir: t.TempDir(), Conf: []byte(conf)})
}

// ConnectAs connects to e as user (password auth) without applying the
// topology, logging to log, and closes the connection in t.Cleanup.
func ConnectAs(t testing.TB, e *pipeline.Embedded, user, password string, log zerolog.Logger) *pipeline.Bus {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	b, err := pipeline.Connect(ctx, pipeline.ConnConfig{URL: e.ClientURL(), Name: t.Name() + "-" + user, User: user, Password: password}, log)
	if err != nil {
		t.Fatalf("connect as %s: %v", user, err)
	}
	t.Cleanup(b.Close)
	return b
}
