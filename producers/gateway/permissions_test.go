package gateway_test

import (
	"context"
	"encoding/json"
	"errors"
	"net"
	"net/http"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/nats-io/nats-server/v2/server"
	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"github.com/prometheus/client_golang/prometheus"

	"github.com/largeforge/largeforge"
	"github.com/largeforge/largeforge/consumers/infer"
	"github.com/largeforge/largeforge/internal/testenv"
	"github.com/largeforge/largeforge/pipeline"
	"github.com/largeforge/largeforge/pipeline/pipelinetest"
	"github.com/largeforge/largeforge/producers/gateway"
	"github.com/largeforge/largeforge/schemas"
)

// TestNATSConfShowsRoles: the commented example in nats.conf is
// deploy/nats-roles.conf, line for line.
func TestNATSConfShowsRoles(t *testing.T) {
	var example []string
	in := false
	for _, line := range strings.Split(string(largeforge.NATSConf), "\n") {
		switch {
		case strings.HasPrefix(line, "# authorization {"):
			in = true
		case !in:
			continue
		}
		if !strings.HasPrefix(line, "#") {
			break
		}
		example = append(example, strings.TrimPrefix(strings.TrimPrefix(line, "#"), " "))
		if line == "# }" {
			break
		}
	}
	roles := pipelinetest.RolesConf(t)
	block := roles[strings.Index(roles, "authorization {"):]
	if got, want := strings.Join(example, "\n"), strings.TrimSpace(block); got != want {
		t.Errorf("nats.conf's commented authorization block differs from deploy/nats-roles.conf's:\n%s\n---\n%s", got, want)
	}
}

// TestGatewayRolePermissions starts a server with the role users of
// deploy/nats-roles.conf, a real infer worker as the infer user and the real gateway
// as the api user (each on its own inbox prefix): the gateway serves completions (lf.rpc.<model>),
// lists live workers (lf_workers) and models (lf_models), applies experts
// from lf_experts and publishes routing decisions to LF_ROUTES; the same
// credential cannot consume LF_RESULTS, subscribe to results, or publish
// work requests.
func TestGatewayRolePermissions(t *testing.T) {
	dir := filepath.Dir(testenv.SharedFile(t, "models/stories260K/model.safetensors"))
	e, admin := pipelinetest.StartRoles(t, nil)
	log := pipelinetest.Logger(t)
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()

	ekv, err := admin.KV(ctx, pipeline.BucketExperts)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := ekv.Put(ctx, "stories", []byte(`{"name":"stories","model_path":"models/stories","keywords":["story"]}`)); err != nil {
		t.Fatal(err)
	}
	// The infer worker runs with the infer role's credential.
	worker := pipelinetest.ConnectRole(t, e, "infer", log)
	wctx, stopWorkers := context.WithCancel(ctx)
	w, err := infer.StartDirs(wctx, worker, map[string]string{"stories": dir},
		infer.Config{Slots: 2, HeartbeatEvery: time.Second, MaxWait: 50 * time.Millisecond}, log, nil)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		stopWorkers()
		_ = w.Wait()
	})

	gw := pipelinetest.ConnectRole(t, e, "api", log)
	reg := prometheus.NewRegistry()
	g, err := gateway.New(ctx, gw, gateway.Config{}, log, reg, reg)
	if err != nil {
		t.Fatalf("gateway with the api credential: %v", err)
	}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	gctx, stopGateway := context.WithCancel(ctx)
	served := make(chan error, 1)
	go func() { served <- g.Serve(gctx, ln) }()
	t.Cleanup(func() {
		stopGateway()
		if err := <-served; err != nil {
			t.Errorf("serve: %v", err)
		}
	})
	s := &stack{bus: gw, url: "http://" + ln.Addr().String(), http: &http.Client{Timeout: 30 * time.Second}}

	t.Run("can", func(t *testing.T) {
		pipelinetest.CheckFor(t, 10*time.Second, 50*time.Millisecond, func() error {
			resp := s.post(t, ctx, "/v1/completions", `{"model":"stories","prompt":"Once upon a time","max_tokens":4,"temperature":0}`, nil)
			defer resp.Body.Close()
			var c schemas.CompletionResponse
			if err := json.NewDecoder(resp.Body).Decode(&c); err != nil || resp.StatusCode != 200 || len(c.Choices) != 1 {
				return errors.New("completion " + resp.Status)
			}
			return nil
		})
		resp := s.post(t, ctx, "/v1/route", `{"prompt":"a story please"}`, map[string]string{"X-Request-Id": "perm-route"})
		var d schemas.RouteDecision
		if err := json.NewDecoder(resp.Body).Decode(&d); err != nil || resp.StatusCode != 200 || d.Expert != "stories" {
			t.Fatalf("route %s %+v %v", resp.Status, d, err)
		}
		resp.Body.Close()
		req, _ := http.NewRequestWithContext(ctx, http.MethodGet, s.url+"/health", nil)
		hr, err := s.http.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		var h schemas.HealthResponse
		if err := json.NewDecoder(hr.Body).Decode(&h); err != nil || h.Status != schemas.StatusHealthy {
			t.Errorf("health %+v %v", h, err)
		}
		hr.Body.Close()
		// The decision is in LF_ROUTES (read as admin).
		st, err := admin.JetStream().Stream(ctx, pipeline.StreamRoutes)
		if err != nil {
			t.Fatal(err)
		}
		pipelinetest.CheckFor(t, 5*time.Second, 20*time.Millisecond, func() error {
			m, err := st.GetLastMsgForSubject(ctx, "lf.route."+gateway.RouteJobInteractive)
			if err != nil {
				return err
			}
			var rec schemas.RouteRecord
			if err := json.Unmarshal(m.Data, &rec); err != nil || rec.RequestID != "perm-route" {
				return errors.New("no LF_ROUTES record of perm-route yet")
			}
			return nil
		})
		for name, b := range map[string]*pipeline.Bus{"api": gw, "infer": worker} {
			if err := b.Conn().LastError(); err != nil {
				t.Errorf("the %s role's own work raised %v", name, err)
			}
		}
	})

	t.Run("can run batches", func(t *testing.T) { runBatchAsAPI(t, ctx, s, gw) })
	t.Run("can run fine-tuning jobs", func(t *testing.T) { runFineTuningAsAPI(t, ctx, s, gw, admin, dir) })

	// denied runs f with a short deadline and wants it to fail with a
	// permissions violation of the api connection on subject.
	denied := func(t *testing.T, subject string, f func(ctx context.Context) error) {
		t.Helper()
		dctx, cancel := context.WithTimeout(ctx, time.Second)
		defer cancel()
		if err := f(dctx); err == nil {
			t.Fatalf("allowed; want a permissions violation on %s", subject)
		}
		pipelinetest.CheckFor(t, 2*time.Second, 10*time.Millisecond, func() error {
			if err := gw.Conn().LastError(); err == nil || !errors.Is(err, nats.ErrPermissionViolation) || !strings.Contains(err.Error(), subject) {
				return errors.New("last error " + errString(err) + ", want a permissions violation on " + subject)
			}
			return nil
		})
	}
	t.Run("cannot consume LF_RESULTS", func(t *testing.T) {
		denied(t, "$JS.API.CONSUMER.CREATE.LF_RESULTS", func(ctx context.Context) error {
			_, err := gw.JetStream().CreateConsumer(ctx, pipeline.StreamResults, jetstream.ConsumerConfig{Durable: "snoop", FilterSubject: "lf.res.>"})
			return err
		})
		denied(t, "$JS.API.CONSUMER.MSG.NEXT.LF_RESULTS.results-sink", func(ctx context.Context) error {
			_, err := gw.Conn().RequestWithContext(ctx, "$JS.API.CONSUMER.MSG.NEXT.LF_RESULTS.results-sink", []byte(`{"batch":1}`))
			return err
		})
	})
	t.Run("cannot subscribe to results", func(t *testing.T) {
		denied(t, "lf.res.>", func(ctx context.Context) error {
			sub, err := gw.Conn().SubscribeSync("lf.res.>")
			if err != nil {
				return err
			}
			defer func() { _ = sub.Unsubscribe() }()
			_ = gw.Conn().FlushWithContext(ctx)
			if _, err := admin.Publish(ctx, "lf.res.job1", []byte(`{"job":"job1"}`), "job1/x", nil); err != nil {
				t.Fatal(err)
			}
			_, err = sub.NextMsgWithContext(ctx)
			return err
		})
	})
	t.Run("cannot publish raw records", func(t *testing.T) {
		denied(t, "lf.data.d1.raw", func(ctx context.Context) error {
			_, err := gw.Publish(ctx, "lf.data.d1.raw", []byte(`{}`), "d1/1", nil)
			return err
		})
	})
}

func errString(err error) string {
	if err == nil {
		return "none"
	}
	return err.Error()
}

// TestClusterConfRoles: deploy/nats-cluster.conf parses and includes every
// role user of nats-roles.conf, each with a bcrypt hash.
func TestClusterConfRoles(t *testing.T) {
	t.Setenv("SERVER_NAME", "lf-1")
	pipelinetest.SetRoleHashes(t, 0)
	opts := &server.Options{}
	if err := opts.ProcessConfigFile(filepath.Join("..", "..", "deploy", "nats-cluster.conf")); err != nil {
		t.Fatal(err)
	}
	var users []string
	for _, u := range opts.Users {
		users = append(users, u.Username)
		if !strings.HasPrefix(u.Password, "$2a$") {
			t.Errorf("user %s: the password is not a bcrypt hash", u.Username)
		}
		if u.Username != "admin" && (u.Permissions == nil || u.Permissions.Publish == nil || len(u.Permissions.Publish.Allow) < 5) {
			t.Errorf("user %s: permissions %+v", u.Username, u.Permissions)
		}
	}
	if got, want := strings.Join(users, ","), strings.Join(pipelinetest.Roles, ","); got != want {
		t.Errorf("users %s, want %s", got, want)
	}
}
