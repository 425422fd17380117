package main

import (
	"context"
	"testing"

	"github.com/spf13/cobra"
)

func TestLocalListen(t *testing.T) {
	for _, tc := range []struct{ url, want string }{
		{"nats://127.0.0.1:4300", "127.0.0.1:4300"},
		{"nats://localhost:4222", "localhost:4222"},
		{"nats://[::1]:4222", "[::1]:4222"},
		{"", ""},
		{"nats://127.0.0.1", ""},              // no port: nats.conf's
		{"nats://lf-1:4222", ""},              // another machine
		{"tls://127.0.0.1:4222", ""},          // TLS is the server's config
		{"nats://127.0.0.1:1,nats://x:2", ""}, // a cluster
	} {
		if got := localListen(tc.url); got != tc.want {
			t.Errorf("localListen(%q) = %q, want %q", tc.url, got, tc.want)
		}
	}
}

// The shared flags reach a command through its context, not a global: two
// invocations of the root command keep their own.
func TestConfigFromContext(t *testing.T) {
	if c := configFrom(context.Background()); c.LogLevel != "info" || c.NATS.URL == "" {
		t.Errorf("default config %+v", c)
	}
	seen := map[string]string{}
	for _, level := range []string{"debug", "error"} {
		root, _ := newRoot()
		probe := &cobra.Command{Use: "probe", RunE: func(cmd *cobra.Command, _ []string) error {
			c := configFrom(cmd.Context())
			seen[level] = c.LogLevel + " " + c.Logger
			return nil
		}}
		root.AddCommand(probe)
		root.SetArgs([]string{"probe", "--log-level", level})
		if err := root.ExecuteContext(context.Background()); err != nil {
			t.Fatal(err)
		}
	}
	if seen["debug"] != "debug largeforge.probe" || seen["error"] != "error largeforge.probe" {
		t.Errorf("configs seen %v", seen)
	}
}
