package pipeline_test

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/rs/zerolog"

	"github.com/largeforge/largeforge/internal/testenv"
	"github.com/largeforge/largeforge/pipeline"
	"github.com/largeforge/largeforge/pipeline/pipelinetest"
)

func repoNATSConf(t *testing.T) []byte {
	t.Helper()
	b, err := os.ReadFile(filepath.Join(testenv.ModuleRoot(t), "nats.conf"))
	if err != nil {
		t.Fatalf("read repo nats.conf: %v", err)
	}
	return b
}

func TestEmbeddedLoadsRepoConf(t *testing.T) {
	conf := repoNATSConf(t)
	dir := t.TempDir()
	e := pipelinetest.StartServerWith(t, pipeline.EmbeddedConfig{DataDir: dir, Conf: conf})
	v, err := e.Server().Varz(nil)
	if err != nil {
		t.Fatalf("varz: %v", err)
	}
	if v.Name != "largeforge" {
		t.Errorf("server name = %q, want largeforge", v.Name)
	}
	if v.MaxPayload != 1<<20 {
		t.Errorf("max_payload = %d, want %d", v.MaxPayload, 1<<20)
	}
	if v.MaxPending != 64<<20 {
		t.Errorf("max_pending = %d, want %d", v.MaxPending, 64<<20)
	}
	if v.WriteDeadline != 10*time.Second {
		t.Errorf("write_deadline = %v, want 10s", v.WriteDeadline)
	}
	js := e.Server().JetStreamConfig()
	if js == nil {
		t.Fatal("jetstream not enabled")
	}
	if js.MaxMemory != 256<<20 || js.MaxStore != 20<<30 {
		t.Errorf("jetstream limits memory=%d store=%d, want %d and %d", js.MaxMemory, js.MaxStore, 256<<20, 20<<30)
	}
	if js.SyncInterval != 2*time.Minute {
		t.Errorf("sync_interval = %v, want 2m", js.SyncInterval)
	}
	if want := filepath.Join(dir, "jetstream"); js.StoreDir != want || e.StoreDir() != want {
		t.Errorf("store dir = %q (StoreDir() %q), want %q", js.StoreDir, e.StoreDir(), want)
	}
	// The listen address of the conf is replaced by the random port.
	if strings.HasSuffix(e.ClientURL(), ":4222") {
		t.Errorf("client url %s uses the conf's port, want a random one", e.ClientURL())
	}
}

func TestEmbeddedConfigValidate(t *testing.T) {
	tests := []struct {
		name    string
		cfg     pipeline.EmbeddedConfig
		wantErr bool
	}{
		{name: "defaults", cfg: pipeline.EmbeddedConfig{DataDir: "/tmp/x"}},
		{name: "random port", cfg: pipeline.EmbeddedConfig{DataDir: "/tmp/x", Listen: "127.0.0.1:-1"}},
		{name: "all interfaces", cfg: pipeline.EmbeddedConfig{DataDir: "/tmp/x", Listen: ":4333"}},
		{name: "no data dir", cfg: pipeline.EmbeddedConfig{}, wantErr: true},
		{name: "blank data dir", cfg: pipeline.EmbeddedConfig{DataDir: "  "}, wantErr: true},
		{name: "listen without port", cfg: pipeline.EmbeddedConfig{DataDir: "/tmp/x", Listen: "127.0.0.1"}, wantErr: true},
		{name: "listen bad port", cfg: pipeline.EmbeddedConfig{DataDir: "/tmp/x", Listen: "127.0.0.1:99999"}, wantErr: true},
		{name: "listen port not a number", cfg: pipeline.EmbeddedConfig{DataDir: "/tmp/x", Listen: "127.0.0.1:abc"}, wantErr: true},
		{name: "bad conf", cfg: pipeline.EmbeddedConfig{DataDir: "/tmp/x", Conf: []byte("listen: {{{")}, wantErr: true},
		{name: "unknown conf field", cfg: pipeline.EmbeddedConfig{DataDir: "/tmp/x", Conf: []byte("no_such_option: 1\n")}, wantErr: true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			err := tt.cfg.Validate()
			if (err != nil) != tt.wantErr {
				t.Fatalf("Validate() = %v, wantErr %v", err, tt.wantErr)
			}
			if err != nil && !errors.Is(err, pipeline.ErrInvalidOption) {
				t.Errorf("error %v does not wrap ErrInvalidOption", err)
			}
		})
	}
}

func TestEmbeddedPortTaken(t *testing.T) {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	// Failing with ErrListen (below), not waiting out ctx, is the prompt answer.
	e, err := pipeline.StartEmbedded(ctx, pipeline.EmbeddedConfig{DataDir: t.TempDir(), Listen: l.Addr().String()}, zerolog.Nop())
	if err == nil {
		e.Shutdown()
		t.Fatal("StartEmbedded on a taken port succeeded")
	}
	if !errors.Is(err, pipeline.ErrListen) {
		t.Errorf("error %v does not wrap ErrListen", err)
	}
	if !strings.Contains(err.Error(), l.Addr().String()) && !strings.Contains(err.Error(), "in use") {
		t.Errorf("error %q names neither the address nor the cause", err)
	}
}

// A taken route port is ErrListen too (a cluster node started on a port
// another process took meanwhile can be started again elsewhere).
func TestEmbeddedRoutePortTaken(t *testing.T) {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	dir := t.TempDir()
	conf := filepath.Join(dir, "node.conf")
	if err := os.WriteFile(conf, []byte(fmt.Sprintf(`server_name: taken
listen: 127.0.0.1:-1
jetstream { store_dir: %q }
cluster { name: c, listen: %q, routes: ["nats-route://%s"] }
`, filepath.Join(dir, "store"), l.Addr().String(), l.Addr().String())), 0o600); err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	e, err := pipeline.StartEmbedded(ctx, pipeline.EmbeddedConfig{ConfFile: conf}, zerolog.Nop())
	if err == nil {
		e.Shutdown()
		t.Fatal("StartEmbedded on a taken route port succeeded")
	}
	if !errors.Is(err, pipeline.ErrListen) {
		t.Errorf("error %v does not wrap ErrListen", err)
	}
}

// The server's banner is spaced with blank lines: none reaches the log.
func TestEmbeddedDropsBlankLines(t *testing.T) {
	var buf pipelinetest.Buffer
	log := zerolog.New(&buf)
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	e, err := pipeline.StartEmbedded(ctx, pipeline.EmbeddedConfig{DataDir: t.TempDir(), Listen: "127.0.0.1:-1"}, log)
	if err != nil {
		t.Fatal(err)
	}
	e.Shutdown()
	lines := strings.Split(strings.TrimSpace(buf.String()), "\n")
	if len(lines) < 5 {
		t.Fatalf("only %d log lines", len(lines))
	}
	for _, l := range lines {
		var rec map[string]any
		if err := json.Unmarshal([]byte(l), &rec); err != nil {
			t.Fatalf("%v: %s", err, l)
		}
		if msg, _ := rec["message"].(string); strings.TrimSpace(msg) == "" {
			t.Errorf("blank line logged: %s", l)
		}
	}
}

func TestEmbeddedShutdownTwice(t *testing.T) {
	e := pipelinetest.StartServer(t)
	e.Shutdown()
	e.Shutdown() // and once more in Cleanup
}

// TestEmbeddedConfigFile: a configuration file is read as nats-server reads
// it (include relative to the file, not the working directory), its
// store_dir wins over DataDir and DataDir is the store when it names none;
// an unknown key is an error naming the file and the key.
func TestEmbeddedConfigFile(t *testing.T) {
	dir := t.TempDir()
	write := func(name, body string) string {
		t.Helper()
		p := filepath.Join(dir, name)
		if err := os.WriteFile(p, []byte(body), 0o600); err != nil {
			t.Fatal(err)
		}
		return p
	}
	write("limits.conf", "max_payload: 1MB\n")
	store := filepath.Join(dir, "store")
	withStore := write("node.conf", "server_name: n1\nlisten: 127.0.0.1:-1\ninclude limits.conf\njetstream { store_dir: \""+store+"\" }\n")
	noStore := write("bare.conf", "server_name: n2\nlisten: 127.0.0.1:-1\ninclude limits.conf\n")
	unknown := write("typo.conf", "server_name: n3\njetstream { store_dri: /x }\n")

	t.Chdir(t.TempDir()) // include must not depend on the working directory
	e := pipelinetest.StartServerWith(t, pipeline.EmbeddedConfig{ConfFile: withStore, DataDir: filepath.Join(dir, "mirrors")})
	if want := filepath.Join(store, "jetstream"); e.StoreDir() != want {
		t.Errorf("store dir %q, want the file's %q", e.StoreDir(), want)
	}
	if v, _ := e.Server().Varz(nil); v.MaxPayload != 1<<20 || v.Name != "n1" {
		t.Errorf("included max_payload %d, name %q", v.MaxPayload, v.Name)
	}
	data := filepath.Join(dir, "data")
	e2 := pipelinetest.StartServerWith(t, pipeline.EmbeddedConfig{ConfFile: noStore, DataDir: data})
	if want := filepath.Join(data, "jetstream"); e2.StoreDir() != want {
		t.Errorf("store dir %q, want --data-dir's %q", e2.StoreDir(), want)
	}
	if err := (pipeline.EmbeddedConfig{ConfFile: noStore}).Validate(); !errors.Is(err, pipeline.ErrInvalidOption) {
		t.Errorf("no store_dir and no data dir: %v, want ErrInvalidOption", err)
	}
	err := pipeline.EmbeddedConfig{ConfFile: unknown, DataDir: data}.Validate()
	if !errors.Is(err, pipeline.ErrInvalidOption) || !strings.Contains(err.Error(), unknown) || !strings.Contains(err.Error(), `"store_dri"`) {
		t.Errorf("unknown key: %v, want ErrInvalidOption naming %s and store_dri", err, unknown)
	}
	if err := (pipeline.EmbeddedConfig{ConfFile: filepath.Join(dir, "absent.conf"), DataDir: data}).Validate(); err == nil || !strings.Contains(err.Error(), "absent.conf") {
		t.Errorf("missing file: %v", err)
	}
}
