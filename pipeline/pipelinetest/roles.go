package pipelinetest

import (
	"context"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/rs/zerolog"
	"golang.org/x/crypto/bcrypt"

	"github.com/largeforge/largeforge/pipeline"
)

// Roles are the users of deploy/nats-roles.conf (ARCHITECTURE.md "Roles").
var Roles = []string{"admin", "ingest", "submit", "api", "infer", "train", "results", "datasets"}

// RolePassword is the password StartRoles gives role.
func RolePassword(role string) string { return role + "-secret" }

// RolesConf returns deploy/nats-roles.conf, found above the working
// directory (the repository root holds go.mod).
func RolesConf(t testing.TB) string {
	t.Helper()
	dir, err := os.Getwd()
	if err != nil {
		t.Fatal(err)
	}
	for {
		if _, err := os.Stat(filepath.Join(dir, "go.mod")); err == nil {
			break
		}
		parent := filepath.Dir(dir)
		if parent == dir {
			t.Fatal("no go.mod above the working directory")
		}
		dir = parent
	}
	b, err := os.ReadFile(filepath.Join(dir, "deploy", "nats-roles.conf"))
	if err != nil {
		t.Fatal(err)
	}
	return string(b)
}

// SetRoleHashes sets LF_<ROLE>_PASSWORD_HASH, as nats-roles.conf expects,
// to the bcrypt hash of each role's RolePassword (t.Setenv). cost 0 is
// bcrypt.MinCost.
func SetRoleHashes(t *testing.T, cost int) {
	t.Helper()
	if cost == 0 {
		cost = bcrypt.MinCost
	}
	for _, role := range Roles {
		h, err := bcrypt.GenerateFromPassword([]byte(RolePassword(role)), cost)
		if err != nil {
			t.Fatal(err)
		}
		t.Setenv("LF_"+strings.ToUpper(role)+"_PASSWORD_HASH", string(h))
	}
}

// StartRoles starts a server with the repository's nats.conf and the users
// of deploy/nats-roles.conf (passwords RolePassword(role)), its log lines
// also written to serverLog when not nil, and applies the topology as
// admin. It returns the server and the admin connection.
func StartRoles(t *testing.T, serverLog *Buffer) (*pipeline.Embedded, *pipeline.Bus) {
	t.Helper()
	e := StartRolesServer(t, serverLog)
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	admin := ConnectRole(t, e, "admin", Logger(t))
	if err := admin.EnsureTopology(ctx); err != nil {
		t.Fatal(err)
	}
	return e, admin
}

// StartRolesServer is StartRoles without the topology: nothing exists yet.
func StartRolesServer(t *testing.T, serverLog *Buffer) *pipeline.Embedded {
	t.Helper()
	SetRoleHashes(t, 0)
	log := Logger(t)
	if serverLog != nil {
		log = zerolog.New(zerolog.MultiLevelWriter(zerolog.NewTestWriter(t), serverLog)).Level(zerolog.WarnLevel).With().Timestamp().Logger()
	}
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	e, err := pipeline.StartEmbedded(ctx, pipeline.EmbeddedConfig{DataDir: t.TempDir(), Listen: "127.0.0.1:-1",
		Conf: []byte(pipeline.DefaultNATSConf + "\n" + RolesConf(t))}, log)
	if err != nil {
		t.Fatalf("start the server with nats-roles.conf: %v", err)
	}
	t.Cleanup(e.Shutdown)
	return e
}

// ConnectRole connects to e as role (StartRoles' password) on the role's
// inbox prefix _INBOX_<role>, and closes the connection in t.Cleanup.
func ConnectRole(t testing.TB, e *pipeline.Embedded, role string, log zerolog.Logger) *pipeline.Bus {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	b, err := pipeline.Connect(ctx, pipeline.ConnConfig{URL: e.ClientURL(), Name: t.Name() + "-" + role,
		User: role, Password: RolePassword(role), InboxPrefix: "_INBOX_" + role}, log)
	if err != nil {
		t.Fatalf("connect as %s: %v", role, err)
	}
	t.Cleanup(b.Close)
	return b
}
