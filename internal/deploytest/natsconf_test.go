package deploytest_test

import (
	"bytes"
	"encoding/json"
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"testing"

	"github.com/nats-io/nats-server/v2/server"
	"sigs.k8s.io/yaml"
)

// chartConfig renders the nats.conf the official NATS Helm chart (1.x)
// would write from values for the keys LargeForge sets: the JetStream
// block of its files/config/jetstream.yaml, the monitor port, then
// config.merge over them (mergeOverwrite), printed as pretty JSON with its
// nats.formatConfig rules: a key ending in $include becomes an include
// directive, a string "<< x >>" is written unquoted, every other string
// stays a quoted JSON string.
func chartConfig(t *testing.T, values []byte) string {
	t.Helper()
	var v struct {
		Config struct {
			JetStream struct {
				Enabled   bool `json:"enabled"`
				FileStore struct {
					Enabled bool   `json:"enabled"`
					Dir     string `json:"dir"`
					MaxSize string `json:"maxSize"`
					PVC     struct {
						Size string `json:"size"`
					} `json:"pvc"`
				} `json:"fileStore"`
				MemoryStore struct {
					Enabled bool   `json:"enabled"`
					MaxSize string `json:"maxSize"`
				} `json:"memoryStore"`
			} `json:"jetstream"`
			Monitor struct {
				Enabled bool `json:"enabled"`
				Port    int  `json:"port"`
			} `json:"monitor"`
			Merge map[string]any `json:"merge"`
		} `json:"config"`
	}
	if err := yaml.Unmarshal(values, &v); err != nil {
		t.Fatal(err)
	}
	conf := map[string]any{}
	if c := v.Config.JetStream; c.Enabled {
		js := map[string]any{"max_memory_store": 0, "max_file_store": 0}
		if c.MemoryStore.Enabled && c.MemoryStore.MaxSize != "" {
			js["max_memory_store"] = "<< " + c.MemoryStore.MaxSize + " >>"
		}
		if c.FileStore.Enabled {
			js["store_dir"] = c.FileStore.Dir
			size := c.FileStore.MaxSize
			if size == "" {
				size = c.FileStore.PVC.Size
			}
			js["max_file_store"] = "<< " + size + " >>"
		}
		conf["jetstream"] = js
	}
	if v.Config.Monitor.Enabled {
		conf["http_port"] = v.Config.Monitor.Port
	}
	for k, val := range v.Config.Merge {
		conf[k] = val
	}
	var buf bytes.Buffer
	enc := json.NewEncoder(&buf)
	enc.SetEscapeHTML(false)
	enc.SetIndent("", "  ")
	if err := enc.Encode(conf); err != nil {
		t.Fatal(err)
	}
	out := regexp.MustCompile(`".*\$include": "(.*)",?`).ReplaceAllString(buf.String(), "include ${1};")
	return regexp.MustCompile(`"<<\s+(.*?)\s+>>"`).ReplaceAllString(out, "${1}")
}

// TestNATSValuesServerConfig: the nats.conf the chart renders from
// deploy/kubernetes/nats/values.yaml is one nats-server accepts, with the
// role users of deploy/nats-roles.conf included from where the ConfigMap
// nats-roles is mounted (/etc/nats-roles beside the chart's
// /etc/nats-config), the payload limit LargeForge's shards need and the
// file store the topology's limits are reserved against.
func TestNATSValuesServerConfig(t *testing.T) {
	values, err := os.ReadFile(filepath.Join(kubeDir, "nats/values.yaml"))
	if err != nil {
		t.Fatal(err)
	}
	roles, err := os.ReadFile("../../deploy/nats-roles.conf")
	if err != nil {
		t.Fatal(err)
	}
	etc := t.TempDir()
	for dir, file := range map[string][]byte{"nats-config/nats.conf": []byte(chartConfig(t, values)), "nats-roles/nats-roles.conf": roles} {
		path := filepath.Join(etc, dir)
		if err := os.MkdirAll(filepath.Dir(path), 0o755); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(path, file, 0o644); err != nil {
			t.Fatal(err)
		}
	}
	users := roleUsers(t)
	for _, r := range users {
		t.Setenv("LF_"+strings.ToUpper(r)+"_PASSWORD_HASH", "$2a$11$"+strings.Repeat("x", 53))
	}
	conf := filepath.Join(etc, "nats-config/nats.conf")
	opts, err := server.ProcessConfigFile(conf)
	if err != nil {
		data, _ := os.ReadFile(conf)
		t.Fatalf("nats-server refuses the chart's config: %v\n%s", err, data)
	}
	if opts.MaxPayload != 1<<20 || opts.MaxPending != 64<<20 {
		t.Errorf("max_payload %d, max_pending %d: want 1MB and 64MB (nats.conf's)", opts.MaxPayload, opts.MaxPending)
	}
	if opts.JetStreamMaxStore != 180<<30 || opts.StoreDir != "/data" {
		t.Errorf("max_file_store %d in %q: want 180Gi in /data", opts.JetStreamMaxStore, opts.StoreDir)
	}
	if len(opts.Users) != len(users) {
		t.Errorf("%d users: want the %d of nats-roles.conf", len(opts.Users), len(users))
	}
}

// TestChartConfigQuotesUnits: the rendering above follows the chart, so a
// size without << >> comes out a quoted string, which nats-server refuses.
func TestChartConfigQuotesUnits(t *testing.T) {
	conf := chartConfig(t, []byte("config:\n  merge:\n    max_payload: 1MB\n"))
	path := filepath.Join(t.TempDir(), "nats.conf")
	if err := os.WriteFile(path, []byte(conf), 0o644); err != nil {
		t.Fatal(err)
	}
	if !strings.Contains(conf, `"max_payload": "1MB"`) {
		t.Fatalf("rendered %s", conf)
	}
	if _, err := server.ProcessConfigFile(path); err == nil {
		t.Fatalf("nats-server accepted %s", conf)
	}
}
