package main

import (
	"context"
	"errors"
	"io"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/largeforge/largeforge/pipeline/pipelinetest"
)

// TestAPIKeysSource: an API-keys file or variable that yields no key is an
// error at start, never open access.
func TestAPIKeysSource(t *testing.T) {
	dir := t.TempDir()
	write := func(name, body string) string {
		p := filepath.Join(dir, name)
		if err := os.WriteFile(p, []byte(body), 0o600); err != nil {
			t.Fatal(err)
		}
		return p
	}
	blank := write("blank", "\n  \n\n")
	comments := write("comments", "# keys go here\n\n")
	good := write("good", "# one key\nsk-a-good-key\n")
	tests := []struct {
		name     string
		env      *string // nil: unset
		file     string
		wantKeys int
		wantErr  bool
	}{
		{name: "nothing configured", wantKeys: 0},
		{name: "file of blank lines", file: blank, wantErr: true},
		{name: "file of comments", file: comments, wantErr: true},
		{name: "file with a key", file: good, wantKeys: 1},
		{name: "variable of separators", env: ptr(", ,"), wantErr: true},
		{name: "variable empty", env: ptr(""), wantErr: true},
		{name: "variable with keys", env: ptr("sk-first-key, sk-second-key"), wantKeys: 2},
		{name: "good variable, blank file", env: ptr("sk-first-key"), file: blank, wantErr: true},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			if tc.env != nil {
				t.Setenv("LARGEFORGE_API_KEYS", *tc.env)
			} else {
				t.Setenv("LARGEFORGE_API_KEYS", "")
				os.Unsetenv("LARGEFORGE_API_KEYS")
			}
			keys, err := GatewayFlags{KeysFile: tc.file}.apiKeys()
			if tc.wantErr {
				if !errors.Is(err, errNoAPIKeys) {
					t.Fatalf("err %v, want errNoAPIKeys", err)
				}
				return
			}
			if err != nil || len(keys) != tc.wantKeys {
				t.Fatalf("keys %q err %v, want %d keys", keys, err, tc.wantKeys)
			}
		})
	}
	// The command refuses to start, before it connects anywhere.
	os.Unsetenv("LARGEFORGE_API_KEYS")
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	_, err := runCLI(t, ctx, "gateway", "--http", "127.0.0.1:0", "--api-keys-file", blank, "--nats", "nats://127.0.0.1:1", "--wait-for-nats", "0s")
	if !errors.Is(err, errNoAPIKeys) || !strings.Contains(err.Error(), blank) {
		t.Errorf("gateway with a blank keys file: %v", err)
	}
}

// TestNATSPasswordFile: the password comes from a file (or the
// environment); a wrong one is refused by the server; a password flag
// still works but warns that ps shows it.
func TestNATSPasswordFile(t *testing.T) {
	e := pipelinetest.StartRolesServer(t, nil)
	dir := t.TempDir()
	pw := filepath.Join(dir, "pw")
	if err := os.WriteFile(pw, []byte(pipelinetest.RolePassword("admin")+"\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	bad := filepath.Join(dir, "bad")
	if err := os.WriteFile(bad, []byte("not-the-password\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	base := []string{"--nats", e.ClientURL(), "--nats-user", "admin", "--wait-for-nats", "0s"}
	if _, err := runCLI(t, ctx, append(base, "--nats-password-file", pw, "topology", "apply")...); err != nil {
		t.Fatalf("password from a file: %v", err)
	}
	if _, err := runCLI(t, ctx, append(base, "--nats-password-file", bad, "topology", "apply")...); err == nil {
		t.Error("a wrong password from a file was accepted")
	}
	if _, err := runCLI(t, ctx, append(base, "--nats-password-file", filepath.Join(dir, "absent"), "topology", "apply")...); err == nil || !strings.Contains(err.Error(), "--nats-password-file") {
		t.Errorf("missing password file: %v", err)
	}
	if _, err := runCLI(t, ctx, append(base, "--nats-password-file", pw, "--nats-password", "other", "topology", "apply")...); err == nil || !strings.Contains(err.Error(), "once") {
		t.Errorf("two different passwords: %v", err)
	}

	// The flag works, with a warning on stderr.
	r, w, err := os.Pipe()
	if err != nil {
		t.Fatal(err)
	}
	old := os.Stderr
	os.Stderr = w
	_, err = runCLI(t, ctx, append(base, "--log-format", "json", "--nats-password", pipelinetest.RolePassword("admin"), "topology", "apply")...)
	os.Stderr = old
	w.Close()
	logs, _ := io.ReadAll(r)
	if err != nil {
		t.Fatalf("password flag: %v", err)
	}
	if !strings.Contains(string(logs), "ps shows it") {
		t.Errorf("no warning for a password on the command line; stderr:\n%s", logs)
	}
}
