package pipeline_test

import (
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"github.com/nats-io/nkeys"
	"github.com/rs/zerolog"

	"github.com/largeforge/largeforge/pipeline"
	"github.com/largeforge/largeforge/pipeline/pipelinetest"
)

func TestConnConfigValidate(t *testing.T) {
	const u = "nats://127.0.0.1:4222"
	tests := []struct {
		name    string
		cfg     pipeline.ConnConfig
		wantErr bool
	}{
		{name: "url only", cfg: pipeline.ConnConfig{URL: u}},
		{name: "several urls", cfg: pipeline.ConnConfig{URL: u + ", tls://10.0.0.2:4222"}},
		{name: "user and password", cfg: pipeline.ConnConfig{URL: u, User: "a", Password: "b"}},
		{name: "token", cfg: pipeline.ConnConfig{URL: u, Token: "t"}},
		{name: "nkey", cfg: pipeline.ConnConfig{URL: u, NKeySeedFile: "/x.nk"}},
		{name: "creds", cfg: pipeline.ConnConfig{URL: u, CredsFile: "/x.creds"}},
		{name: "tls cert and key with ca", cfg: pipeline.ConnConfig{URL: "tls://h:4222", TLSCertFile: "c", TLSKeyFile: "k", TLSCAFile: "ca"}},
		{name: "token with tls", cfg: pipeline.ConnConfig{URL: u, Token: "t", TLSCAFile: "ca", TLSInsecureSkipVerify: true}},
		{name: "no url", cfg: pipeline.ConnConfig{}, wantErr: true},
		{name: "bad scheme", cfg: pipeline.ConnConfig{URL: "http://h:4222"}, wantErr: true},
		{name: "no host", cfg: pipeline.ConnConfig{URL: "nats://"}, wantErr: true},
		{name: "user without password", cfg: pipeline.ConnConfig{URL: u, User: "a"}, wantErr: true},
		{name: "password without user", cfg: pipeline.ConnConfig{URL: u, Password: "b"}, wantErr: true},
		{name: "token with user", cfg: pipeline.ConnConfig{URL: u, User: "a", Password: "b", Token: "t"}, wantErr: true},
		{name: "nkey with creds", cfg: pipeline.ConnConfig{URL: u, NKeySeedFile: "n", CredsFile: "c"}, wantErr: true},
		{name: "token with creds", cfg: pipeline.ConnConfig{URL: u, Token: "t", CredsFile: "c"}, wantErr: true},
		{name: "cert without key", cfg: pipeline.ConnConfig{URL: u, TLSCertFile: "c"}, wantErr: true},
		{name: "key without cert", cfg: pipeline.ConnConfig{URL: u, TLSKeyFile: "k"}, wantErr: true},
		{name: "url user and token", cfg: pipeline.ConnConfig{URL: "nats://a:b@h:4222", Token: "t"}, wantErr: true},
		{name: "negative reconnect wait", cfg: pipeline.ConnConfig{URL: u, ReconnectWait: -time.Second}, wantErr: true},
		{name: "inbox prefix", cfg: pipeline.ConnConfig{URL: u, InboxPrefix: "_INBOX_api"}},
		{name: "inbox prefix of two tokens", cfg: pipeline.ConnConfig{URL: u, InboxPrefix: "_INBOX.api"}},
		{name: "inbox prefix with a wildcard", cfg: pipeline.ConnConfig{URL: u, InboxPrefix: "_INBOX_*"}, wantErr: true},
		{name: "inbox prefix ending in a dot", cfg: pipeline.ConnConfig{URL: u, InboxPrefix: "_INBOX_api."}, wantErr: true},
		{name: "inbox prefix with a space", cfg: pipeline.ConnConfig{URL: u, InboxPrefix: "_INBOX api"}, wantErr: true},
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

func TestConnectAuth(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	confWith := func(auth string) []byte {
		return []byte(pipeline.DefaultNATSConf + "\n" + auth + "\n")
	}
	userSrv := pipelinetest.StartServerWith(t, pipeline.EmbeddedConfig{DataDir: t.TempDir(), Conf: confWith(`authorization { user: lf, password: s3cret }`)})
	tokenSrv := pipelinetest.StartServerWith(t, pipeline.EmbeddedConfig{DataDir: t.TempDir(), Conf: confWith(`authorization { token: tok-123 }`)})

	tests := []struct {
		name    string
		cfg     pipeline.ConnConfig
		wantErr bool
	}{
		{name: "user password", cfg: pipeline.ConnConfig{URL: userSrv.ClientURL(), User: "lf", Password: "s3cret"}},
		{name: "wrong password", cfg: pipeline.ConnConfig{URL: userSrv.ClientURL(), User: "lf", Password: "nope"}, wantErr: true},
		{name: "no credentials", cfg: pipeline.ConnConfig{URL: userSrv.ClientURL()}, wantErr: true},
		{name: "token", cfg: pipeline.ConnConfig{URL: tokenSrv.ClientURL(), Token: "tok-123"}},
		{name: "wrong token", cfg: pipeline.ConnConfig{URL: tokenSrv.ClientURL(), Token: "tok-999"}, wantErr: true},
		{name: "nkey seed file missing", cfg: pipeline.ConnConfig{URL: tokenSrv.ClientURL(), NKeySeedFile: "/does/not/exist.nk"}, wantErr: true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			b, err := pipeline.Connect(ctx, tt.cfg, pipelinetest.Logger(t))
			if (err != nil) != tt.wantErr {
				t.Fatalf("Connect() = %v, wantErr %v", err, tt.wantErr)
			}
			if err != nil {
				if !errors.Is(err, pipeline.ErrConnect) {
					t.Errorf("error %v does not wrap ErrConnect", err)
				}
				if tt.cfg.Password != "" && strings.Contains(err.Error(), tt.cfg.Password) {
					t.Errorf("error leaks the password: %v", err)
				}
				return
			}
			defer b.Close()
			if err := b.EnsureTopology(ctx); err != nil {
				t.Fatalf("EnsureTopology over an authenticated connection: %v", err)
			}
		})
	}
}

func TestConnectNoServer(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	e := pipelinetest.StartServer(t)
	url := e.ClientURL()
	e.Shutdown()
	_, err := pipeline.Connect(ctx, pipeline.ConnConfig{URL: url}, zerolog.Nop())
	if !errors.Is(err, pipeline.ErrConnect) {
		t.Fatalf("Connect to a stopped server = %v, want ErrConnect", err)
	}
}

// With WaitForServer, Connect keeps trying while nothing listens, and
// connects once a server starts there (as `largeforge up &` then a command).
func TestConnectWaitsForServer(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	e := pipelinetest.StartServer(t)
	url := e.ClientURL()
	addr := strings.TrimPrefix(url, "nats://")
	e.Shutdown()
	type result struct {
		bus *pipeline.Bus
		err error
	}
	done := make(chan result, 1)
	var logs pipelinetest.Buffer
	go func() {
		bus, err := pipeline.Connect(ctx, pipeline.ConnConfig{URL: url, WaitForServer: time.Minute}, zerolog.New(&logs).Level(zerolog.DebugLevel))
		done <- result{bus, err}
	}()
	// Start the server only once an attempt has found none: the retry is
	// what connects.
	pipelinetest.CheckFor(t, time.Minute, 5*time.Millisecond, func() error {
		if !strings.Contains(logs.String(), "no NATS server answers yet") {
			return errors.New("no failed attempt yet")
		}
		return nil
	})
	pipelinetest.StartServerWith(t, pipeline.EmbeddedConfig{DataDir: t.TempDir(), Listen: addr})
	r := <-done
	if r.err != nil {
		t.Fatalf("Connect while the server started = %v", r.err)
	}
	r.bus.Close()
}

func ExampleConnect() {
	ctx := context.Background()
	e, err := pipeline.StartEmbedded(ctx, pipeline.EmbeddedConfig{DataDir: exampleDir(), Listen: "127.0.0.1:-1"}, zerolog.Nop())
	if err != nil {
		fmt.Println(err)
		return
	}
	defer e.Shutdown()
	bus, err := pipeline.Connect(ctx, pipeline.ConnConfig{URL: e.ClientURL(), Name: "example"}, zerolog.Nop())
	if err != nil {
		fmt.Println(err)
		return
	}
	defer bus.Close()
	if err := bus.EnsureTopology(ctx); err != nil {
		fmt.Println(err)
		return
	}
	subj, _ := pipeline.RequestSubject("job1", "stories260K")
	ack, err := bus.Publish(ctx, subj, []byte(`{"prompt":"Once upon a time"}`), "job1/req-1", nil)
	if err != nil {
		fmt.Println(err)
		return
	}
	again, _ := bus.Publish(ctx, subj, []byte(`{"prompt":"Once upon a time"}`), "job1/req-1", nil)
	fmt.Println(ack.Stream, ack.Sequence, again.Duplicate)
	// Output: LF_REQUESTS 1 true
}

func TestConnectNKey(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	user, err := nkeys.CreateUser()
	if err != nil {
		t.Fatal(err)
	}
	pub, err := user.PublicKey()
	if err != nil {
		t.Fatal(err)
	}
	seed, err := user.Seed()
	if err != nil {
		t.Fatal(err)
	}
	seedFile := filepath.Join(t.TempDir(), "user.nk")
	if err := os.WriteFile(seedFile, seed, 0o600); err != nil {
		t.Fatal(err)
	}
	other, _ := nkeys.CreateUser()
	otherSeed, _ := other.Seed()
	otherFile := filepath.Join(t.TempDir(), "other.nk")
	if err := os.WriteFile(otherFile, otherSeed, 0o600); err != nil {
		t.Fatal(err)
	}
	conf := pipeline.DefaultNATSConf + "\nauthorization { users: [ { nkey: " + pub + " } ] }\n"
	e := pipelinetest.StartServerWith(t, pipeline.EmbeddedConfig{DataDir: t.TempDir(), Conf: []byte(conf)})

	b, err := pipeline.Connect(ctx, pipeline.ConnConfig{URL: e.ClientURL(), NKeySeedFile: seedFile}, pipelinetest.Logger(t))
	if err != nil {
		t.Fatalf("Connect with the nkey: %v", err)
	}
	defer b.Close()
	if err := b.EnsureTopology(ctx); err != nil {
		t.Fatal(err)
	}
	if _, err := pipeline.Connect(ctx, pipeline.ConnConfig{URL: e.ClientURL(), NKeySeedFile: otherFile}, pipelinetest.Logger(t)); !errors.Is(err, pipeline.ErrConnect) {
		t.Errorf("Connect with an unknown nkey = %v, want ErrConnect", err)
	}
}

// TestInboxPrefixCarriesEveryReply: a user that may subscribe only
// _INBOX_r.> gets, with InboxPrefix _INBOX_r, every kind of reply the
// pipeline reads: JetStream API answers and publish acks, KV reads and
// watches, object-store writes and reads, pull fetches and streamed RPC
// replies; with nats.go's default _INBOX the same KV read is denied.
func TestInboxPrefixCarriesEveryReply(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	e := pipelinetest.StartServerConf(t, pipeline.DefaultNATSConf+`
authorization { users: [
  { user: admin, password: a, permissions: { publish: [">"], subscribe: [">"] } }
  { user: r, password: r, permissions: { publish: [">"], subscribe: ["_INBOX_r.>"] } }
] }`)
	log := pipelinetest.Logger(t)
	admin := pipelinetest.ConnectAs(t, e, "admin", "a", log)
	if err := admin.EnsureTopology(ctx); err != nil {
		t.Fatal(err)
	}
	srv, err := admin.ServeRPC(ctx, pipeline.RPCSubject("m"), pipeline.RPCQueue("m"), func(_ context.Context, req *pipeline.RPCRequest) {
		_ = req.Send(pipeline.RPCChunk, []byte("chunk"))
		_ = req.Send(pipeline.RPCFinal, []byte("final"))
	})
	if err != nil {
		t.Fatal(err)
	}
	defer srv.Stop(true)

	r, err := pipeline.Connect(ctx, pipeline.ConnConfig{URL: e.ClientURL(), User: "r", Password: "r", InboxPrefix: "_INBOX_r"}, log)
	if err != nil {
		t.Fatal(err)
	}
	defer r.Close()
	if got := r.Conn().NewInbox(); !strings.HasPrefix(got, "_INBOX_r.") {
		t.Fatalf("NewInbox() = %s, want _INBOX_r.*", got)
	}
	kv, err := r.KV(ctx, pipeline.BucketJobs)
	if err != nil {
		t.Fatalf("kv over _INBOX_r: %v", err)
	}
	if _, err := kv.Put(ctx, "j1", []byte("v")); err != nil {
		t.Fatal(err)
	}
	if got, err := kv.Get(ctx, "j1"); err != nil || string(got.Value) != "v" {
		t.Fatalf("kv get: %q %v", got.Value, err)
	}
	if keys, err := kv.Keys(ctx); err != nil || len(keys) != 1 {
		t.Fatalf("kv keys (a watch): %v %v", keys, err)
	}
	obj, err := r.Objects(ctx, pipeline.BucketModels)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := obj.Put(ctx, "m/file", strings.NewReader("weights")); err != nil {
		t.Fatal(err)
	}
	dst := filepath.Join(t.TempDir(), "file")
	if err := obj.GetFile(ctx, "m/file", dst); err != nil {
		t.Fatalf("object get: %v", err)
	}
	if _, err := r.Publish(ctx, "lf.res.j1", []byte("row"), "j1/a", nil); err != nil {
		t.Fatal(err)
	}
	c, err := r.JetStream().CreateOrUpdateConsumer(ctx, pipeline.StreamResults, jetstream.ConsumerConfig{Durable: "inbox-test", FilterSubject: "lf.res.>"})
	if err != nil {
		t.Fatal(err)
	}
	batch, err := c.Fetch(1, jetstream.FetchMaxWait(10*time.Second))
	if err != nil {
		t.Fatal(err)
	}
	n := 0
	for m := range batch.Messages() {
		n++
		_ = m.Ack()
	}
	if n != 1 || batch.Error() != nil {
		t.Fatalf("fetched %d messages, %v", n, batch.Error())
	}
	var chunks []string
	final, err := r.StreamRPC(ctx, pipeline.RPCCall{Subject: pipeline.RPCSubject("m")}, nil, func(b []byte) error {
		chunks = append(chunks, string(b))
		return nil
	})
	if err != nil || string(final) != "final" || len(chunks) != 1 {
		t.Fatalf("rpc: %q %v %v", final, chunks, err)
	}
	if err := r.Conn().LastError(); err != nil {
		t.Fatalf("a reply was denied: %v", err)
	}

	// The default prefix is outside what r may subscribe.
	d := pipelinetest.ConnectAs(t, e, "r", "r", log)
	dctx, dcancel := context.WithTimeout(ctx, 2*time.Second)
	defer dcancel()
	if _, err := d.KV(dctx, pipeline.BucketJobs); err == nil {
		t.Fatal("kv over _INBOX: allowed, want denied")
	}
	pipelinetest.CheckFor(t, 5*time.Second, 10*time.Millisecond, func() error {
		if err := d.Conn().LastError(); !errors.Is(err, nats.ErrPermissionViolation) {
			return fmt.Errorf("last error %v, want a permissions violation", err)
		}
		return nil
	})
}
