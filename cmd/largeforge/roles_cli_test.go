package main

import (
	"context"
	"errors"
	"fmt"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/largeforge/largeforge/consumers/train/traintest"
	"github.com/largeforge/largeforge/internal/samples"
	"github.com/largeforge/largeforge/internal/testenv"
	"github.com/largeforge/largeforge/jobs"
	"github.com/largeforge/largeforge/pipeline"
	"github.com/largeforge/largeforge/pipeline/pipelinetest"
)

// roleEnv is the environment of a largeforge process on role's credential
// of deploy/nats-roles.conf (the password from the environment, never the
// command line).
func roleEnv(e *pipeline.Embedded, role string) []string { return roleURLEnv(e.ClientURL(), role) }

// roleURLEnv is roleEnv for the server(s) at url.
func roleURLEnv(url, role string) []string {
	return []string{"LARGEFORGE_NATS=" + url, "LARGEFORGE_NATS_PASSWORD=" + pipelinetest.RolePassword(role)}
}

// roleJobFile writes a batch job of three rows: two the model completes,
// one invalid (an error row).
func roleJobFile(t *testing.T) string {
	t.Helper()
	jobFile := filepath.Join(t.TempDir(), "job.jsonl")
	if err := os.WriteFile(jobFile, []byte(`{"custom_id":"a","prompt":"Once upon a time","max_tokens":4,"temperature":0}
{"custom_id":"b","prompt":"The cat","max_tokens":4,"temperature":0}
{"custom_id":"c","prompt":"x","temperature":9}
`), 0o644); err != nil {
		t.Fatal(err)
	}
	return jobFile
}

// runAs runs the binary to the end as role and returns its stdout; it
// fails the test on an error.
func runAs(t *testing.T, ctx context.Context, bin string, e *pipeline.Embedded, role string, args ...string) string {
	t.Helper()
	cmd := exec.CommandContext(ctx, bin, append([]string{"--nats-user=" + role, "--log-level=warning"}, args...)...)
	cmd.Env = append(os.Environ(), roleEnv(e, role)...)
	var stderr strings.Builder
	cmd.Stderr = &stderr
	out, err := cmd.Output()
	if err != nil {
		t.Fatalf("largeforge %s as %s: %v\n%s%s", strings.Join(args, " "), role, err, out, stderr.String())
	}
	return string(out)
}

// TestPipelineOnRoleCredentials runs the whole pipeline with the binary,
// each process on its own role's credential of deploy/nats-roles.conf and
// its default inbox prefix _INBOX_<role>: admin applies the topology
// (topology apply); the dataset sink (datasets), the results sink
// (results), an infer worker (infer), a train worker (train) and the
// gateway (api) run; ingest ingests a file (ingest); submit submits a
// batch job and a training job (train --submit), waits for both and lists
// them (submit), then a training job whose model_name is the first one's
// pushed model (submit reads lf_models to pin it); the gateway serves a completion. Everything completes, and the
// server logs no permissions violation.
func TestPipelineOnRoleCredentials(t *testing.T) {
	if testing.Short() {
		t.Skip("builds the binary and trains")
	}
	model := filepath.Dir(testenv.SharedFile(t, "models/stories260K/model.safetensors"))
	var serverLog pipelinetest.Buffer
	e := pipelinetest.StartRolesServer(t, &serverLog)
	bin := buildBinary(t)
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Minute)
	defer cancel()

	if out := runAs(t, ctx, bin, e, "admin", "topology", "apply"); !strings.Contains(out, "topology applied") {
		t.Fatalf("topology apply: %q", out)
	}
	dataDir := t.TempDir()
	port := freePort(t)
	procs := map[string]*proc{}
	for role, args := range map[string][]string{
		"datasets": {"worker", "--role", "dataset", "--data-dir", dataDir},
		"results":  {"worker", "--role", "results", "--data-dir", dataDir},
		"infer":    {"worker", "--role", "infer", "--model", "stories=" + model},
		"train":    {"worker", "--role", "train", "--data-dir", dataDir},
		"api":      {"gateway", "--http", fmt.Sprintf("127.0.0.1:%d", port)},
	} {
		procs[role] = start(t, bin, roleEnv(e, role), append([]string{"--nats-user=" + role, "--log-level=warning"}, args...)...)
	}

	files, err := samples.WriteAll(t.TempDir(), 1)
	if err != nil {
		t.Fatal(err)
	}
	if out := runAs(t, ctx, bin, e, "ingest", "ingest", "--dataset", "roles", "--wait", "60s", files[0]); !strings.Contains(out, "accepted") {
		t.Errorf("ingest: %q", out)
	}

	jobFile := roleJobFile(t)
	job := strings.TrimSpace(runAs(t, ctx, bin, e, "submit", "submit", jobFile, "--model", "stories"))

	fx := traintest.New(t, 8)
	out := filepath.Join(fx.Dir, "out")
	cfgPath := filepath.Join(fx.Dir, "train.yaml")
	if err := os.WriteFile(cfgPath, []byte(fx.YAML(out, 2, 1000)), 0o644); err != nil {
		t.Fatal(err)
	}
	trainJob := strings.TrimSpace(runAs(t, ctx, bin, e, "submit", "train", "--config", cfgPath, "--submit"))

	// The gateway serves a completion through the infer worker.
	url := fmt.Sprintf("http://127.0.0.1:%d", port)
	pipelinetest.CheckFor(t, time.Minute, 100*time.Millisecond, func() error {
		status, resp, _ := completion(t, url, map[string]any{"model": "stories", "prompt": "Once upon a time", "max_tokens": 4, "temperature": 0})
		if status != http.StatusOK || len(resp.Choices) != 1 {
			return fmt.Errorf("completion: %d %+v", status, resp)
		}
		return nil
	})

	runAs(t, ctx, bin, e, "submit", "jobs", "wait", job, "--progress", "off")
	runAs(t, ctx, bin, e, "submit", "jobs", "wait", trainJob, "--progress", "off")
	// The trained model is in lf_models under the job id: a training job
	// submitted as submit with it as model_name (pinned through submit's
	// read of lf_models) runs on the train role.
	cfg2 := filepath.Join(fx.Dir, "train2.yaml")
	if err := os.WriteFile(cfg2, []byte(strings.Replace(fx.YAML(filepath.Join(fx.Dir, "out2"), 1, 1000),
		"model_name: "+fx.Base, "model_name: "+trainJob, 1)), 0o644); err != nil {
		t.Fatal(err)
	}
	fromPushed := strings.TrimSpace(runAs(t, ctx, bin, e, "submit", "train", "--config", cfg2, "--submit"))
	runAs(t, ctx, bin, e, "submit", "jobs", "wait", fromPushed, "--progress", "off")
	if out := runAs(t, ctx, bin, e, "submit", "jobs", "list"); !strings.Contains(out, job) || !strings.Contains(out, trainJob) {
		t.Errorf("jobs list as submit: %q", out)
	}
	if out := runAs(t, ctx, bin, e, "submit", "jobs", "status", job); !strings.Contains(out, "completed") {
		t.Errorf("jobs status as submit: %q", out)
	}
	admin := pipelinetest.ConnectRole(t, e, "admin", pipelinetest.Logger(t))
	store, err := jobs.Open(ctx, admin)
	if err != nil {
		t.Fatal(err)
	}
	if j, err := store.Get(ctx, job); err != nil || j.Status != jobs.StatusCompleted || j.RequestCounts.Completed != 2 || j.RequestCounts.Failed != 1 {
		t.Errorf("batch job %s: %+v %v", j.Status, j.RequestCounts, err)
	}
	if j, err := store.Get(ctx, trainJob); err != nil || j.Status != jobs.StatusCompleted {
		t.Errorf("training job %s: %+v %v", j.Status, j.Errors, err)
	}
	if j, err := store.Get(ctx, fromPushed); err != nil || j.Status != jobs.StatusCompleted || j.Training == nil ||
		j.Training.FineTunedModel != fromPushed || j.Training.FineTunedDigest == "" {
		t.Errorf("training job %s from the pushed model %s: %+v %+v %v", fromPushed, trainJob, j.Status, j.Errors, err)
	}
	if _, err := os.Stat(filepath.Join(out, "model.safetensors")); err != nil {
		t.Errorf("no trained model: %v", err)
	}
	if _, err := os.Stat(filepath.Join(dataDir, "jobs", job, "output.jsonl")); err != nil {
		t.Errorf("no job output: %v", err)
	}
	if m, err := filepath.Glob(filepath.Join(dataDir, "datasets", "roles", "part-*.parquet")); err != nil || len(m) == 0 {
		t.Errorf("no dataset part: %v %v", m, err)
	}

	if log := serverLog.String(); strings.Contains(log, "Violation") {
		t.Errorf("the server logged a permissions violation:\n%s", log)
	}
	for role, p := range procs {
		if p.cmd.ProcessState != nil {
			t.Errorf("%s exited early:\n%s", role, p.out)
		}
	}
}

// TestWorkerNamesMissingTopology: a worker on its role's credential never
// tries to apply the topology; on a server where no admin applied it, it
// fails at once naming each missing stream and bucket and how to apply it.
func TestWorkerNamesMissingTopology(t *testing.T) {
	e := pipelinetest.StartRolesServer(t, nil)
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	_, err := runCLI(t, ctx, "--nats="+e.ClientURL(), "--nats-user=results", "--nats-password="+pipelinetest.RolePassword("results"), "--log-level=error",
		"--wait-for-nats=300ms", // asks again for that long (5 s by default) before it names what is missing
		"worker", "--role", "results", "--data-dir", t.TempDir())
	if !errors.Is(err, pipeline.ErrTopologyMissing) {
		t.Fatalf("worker --role results on an empty server: %v, want ErrTopologyMissing", err)
	}
	for _, want := range []string{"stream LF_RESULTS", "stream LF_DLQ", "kv bucket lf_jobs", "largeforge topology apply"} {
		if !strings.Contains(err.Error(), want) {
			t.Errorf("%v does not say %q", err, want)
		}
	}
}

// TestCommandRole: what a command runs fixes its role; any other command
// runs as the role its --nats-user names, else admin; the inbox prefix is
// _INBOX_<role> unless --inbox-prefix or LARGEFORGE_INBOX_PREFIX gives one.
func TestCommandRole(t *testing.T) {
	tests := []struct {
		name      string
		env       string
		args      []string
		role      string
		inbox     string
		wantError bool
	}{
		{name: "worker infer", args: []string{"worker", "--role", "infer"}, role: NATSInfer},
		{name: "worker dataset", args: []string{"worker", "--role", "dataset"}, role: NATSDatasets},
		{name: "worker results as admin", args: []string{"--nats-user", "admin", "--nats-password", "x", "worker", "--role", "results"}, role: NATSResults},
		{name: "worker train", args: []string{"worker", "--role", "train"}, role: NATSTrain},
		{name: "gateway", args: []string{"gateway"}, role: NATSAPI},
		{name: "ingest", args: []string{"ingest", "f"}, role: NATSIngest},
		{name: "submit", args: []string{"submit", "f"}, role: NATSSubmit},
		{name: "train --submit", args: []string{"train", "--submit"}, role: NATSSubmit},
		{name: "up", args: []string{"up"}, role: NATSAdmin},
		{name: "topology apply as ingest user", args: []string{"--nats-user", "ingest", "--nats-password", "x", "topology", "apply"}, role: NATSAdmin},
		{name: "jobs list", args: []string{"jobs", "list"}, role: NATSAdmin},
		{name: "jobs list as submit", args: []string{"--nats-user", "submit", "--nats-password", "x", "jobs", "list"}, role: NATSSubmit},
		{name: "jobs list as an unknown user", args: []string{"--nats-user", "bob", "--nats-password", "x", "jobs", "list"}, role: NATSAdmin},
		{name: "inbox flag", args: []string{"--inbox-prefix", "_INBOX_mine", "gateway"}, role: NATSAPI, inbox: "_INBOX_mine"},
		{name: "inbox env", env: "_INBOX.team", args: []string{"gateway"}, role: NATSAPI, inbox: "_INBOX.team"},
		{name: "bad inbox", args: []string{"--inbox-prefix", "_INBOX.>", "gateway"}, role: NATSAPI, inbox: "_INBOX.>", wantError: true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Setenv("LARGEFORGE_INBOX_PREFIX", tt.env)
			root, cfg := newRoot()
			cmd, rest, err := root.Find(tt.args)
			if err != nil {
				t.Fatal(err)
			}
			if err := cmd.ParseFlags(rest); err != nil {
				t.Fatal(err)
			}
			setRole(cmd, cfg)
			if cfg.Role != tt.role {
				t.Errorf("role %s, want %s", cfg.Role, tt.role)
			}
			want := tt.inbox
			if want == "" {
				want = "_INBOX_" + tt.role
			}
			if cfg.NATS.InboxPrefix != want {
				t.Errorf("inbox prefix %s, want %s", cfg.NATS.InboxPrefix, want)
			}
			if err := cfg.NATS.Validate(); (err != nil) != tt.wantError {
				t.Errorf("Validate() = %v, wantError %v", err, tt.wantError)
			}
		})
	}
}

// TestPasswdHashAuthenticates: the hash `largeforge passwd` prints (bcrypt,
// cost 11), set as LF_ADMIN_PASSWORD_HASH, lets the password in and keeps
// a wrong one out; an empty password is refused.
func TestPasswdHashAuthenticates(t *testing.T) {
	if _, err := hashPassword(strings.NewReader("\n")); err == nil {
		t.Error("an empty password was hashed")
	}
	h, err := hashPassword(strings.NewReader("s3cret pass\n"))
	if err != nil {
		t.Fatal(err)
	}
	if !strings.HasPrefix(h, "$2a$11$") {
		t.Fatalf("hash %q: want bcrypt cost 11", h)
	}
	pipelinetest.SetRoleHashes(t, 0)
	t.Setenv("LF_ADMIN_PASSWORD_HASH", h)
	e := pipelinetest.StartServerConf(t, pipeline.DefaultNATSConf+"\n"+pipelinetest.RolesConf(t))
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	for _, tt := range []struct {
		password string
		wantErr  bool
	}{{"s3cret pass", false}, {"wrong", true}, {h, true}} {
		b, err := pipeline.Connect(ctx, pipeline.ConnConfig{URL: e.ClientURL(), User: "admin", Password: tt.password}, pipelinetest.Logger(t))
		if (err != nil) != tt.wantErr {
			t.Errorf("password %q: %v, wantErr %v", tt.password, err, tt.wantErr)
		}
		if b != nil {
			b.Close()
		}
	}
}
