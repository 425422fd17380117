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
)

func main() {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	if err := newRootCmd().ExecuteContext(ctx); err != nil {
		fmt.Fprintln(os.Stderr, "largeforge:", err)
		os.Exit(1)
	}
}
