package main

import "testing"

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
