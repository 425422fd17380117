// Command largeforge runs LLM work through NATS JetStream: dataset ingestion,
// batch inference and scoring, routing and fine-tuning. `largeforge up` starts the
// embedded default (a nats-server with JetStream and the workers in one process);
// every other command connects to --nats.
package main

import (
	"context"
	"fmt"
	"os"
	"os/signal"
	"syscall"

	"github.com/rs/zerolog"

	"github.com/largeforge/largeforge/logging"
)

func main() {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	root, cfg := newRoot()
	if err := root.ExecuteContext(ctx); err != nil {
		reportFatal(cfg, err)
		os.Exit(1)
	}
}

// reportFatal writes the error that ends the command: one CRITICAL line
// when the logs are JSON, else "largeforge: <error>".
func reportFatal(cfg *Config, err error) {
	if logging.Resolve(cfg.LogFormat, os.Stderr) == logging.FormatJSON {
		log := loggerFor(cfg)
		log.WithLevel(zerolog.FatalLevel).Msg(err.Error())
		return
	}
	fmt.Fprintln(os.Stderr, "largeforge:", err)
}
