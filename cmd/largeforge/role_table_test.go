package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"github.com/rs/zerolog"

	"github.com/largeforge/largeforge/pipeline"
	"github.com/largeforge/largeforge/pipeline/pipelinetest"
)

// roleOp is one operation of the role table: do runs it on a fresh
// connection of a role; allowed lists the roles that may.
type roleOp struct {
	name    string
	allowed []string
	do      func(ctx context.Context, b *pipeline.Bus) error
}

// jsAPI sends a raw JetStream API request: any answer (an API error
// included) means the request reached the API.
func jsAPI(subject, body string) func(context.Context, *pipeline.Bus) error {
	return func(ctx context.Context, b *pipeline.Bus) error {
		_, err := b.Conn().RequestWithContext(ctx, subject, []byte(body))
		return err
	}
}

// corePub publishes on subject and flushes: a denied publish is reported
// (as the connection's last error) before the flush returns.
func corePub(subject string) func(context.Context, *pipeline.Bus) error {
	return func(ctx context.Context, b *pipeline.Bus) error {
		if err := b.Conn().Publish(subject, []byte(`{}`)); err != nil {
			return err
		}
		return b.Conn().FlushWithContext(ctx)
	}
}

// coreSub subscribes subject and flushes.
func coreSub(subject string) func(context.Context, *pipeline.Bus) error {
	return func(ctx context.Context, b *pipeline.Bus) error {
		if _, err := b.Conn().SubscribeSync(subject); err != nil {
			return err
		}
		return b.Conn().FlushWithContext(ctx)
	}
}

// kvGet reads key of bucket through the KV API.
func kvGet(bucket, key string) func(context.Context, *pipeline.Bus) error {
	return func(ctx context.Context, b *pipeline.Bus) error {
		kv, err := b.KV(ctx, bucket)
		if err != nil {
			return err
		}
		_, err = kv.Get(ctx, key)
		return err
	}
}

// objectRead reads the object name of bucket whole.
func objectRead(bucket, name string) func(context.Context, *pipeline.Bus) error {
	return func(ctx context.Context, b *pipeline.Bus) error {
		o, err := b.Objects(ctx, bucket)
		if err != nil {
			return err
		}
		r, err := o.Get(ctx, name)
		if err != nil {
			return err
		}
		defer r.Close()
		_, err = io.Copy(io.Discard, r)
		return err
	}
}

// roleOps is the role table as tested: each operation, and the roles that
// may do it (admin may do everything).
func roleOps() []roleOp {
	return []roleOp{
		{"subscribe lf.res.> (read results)", nil, coreSub("lf.res.>")},
		{"consumer on LF_RESULTS", nil, func(ctx context.Context, b *pipeline.Bus) error {
			_, err := b.JetStream().CreateConsumer(ctx, pipeline.StreamResults, jetstream.ConsumerConfig{Name: "snoop", FilterSubject: "lf.res.>"})
			return err
		}},
		{"fetch from results-sink", []string{"results"}, jsAPI("$JS.API.CONSUMER.MSG.NEXT.LF_RESULTS.results-sink", `{"batch":1,"no_wait":true}`)},
		{"get lf_jobs key", []string{"submit", "infer", "train", "results", "api"}, kvGet(pipeline.BucketJobs, "j1")},
		{"write lf_jobs key", []string{"submit", "train", "results", "api"}, corePub("$KV.lf_jobs.j1")},
		{"get lf_datasets key", []string{"ingest", "api", "datasets"}, kvGet(pipeline.BucketDatasets, "d1")},
		// The Files API's listing: each file's description by id.
		{"get lf_files key", []string{"api"}, kvGet(pipeline.BucketFiles, "file-1")},
		{"write lf_files key", []string{"api"}, corePub("$KV.lf_files.file-1")},
		{"list lf_files", []string{"api"}, func(ctx context.Context, b *pipeline.Bus) error {
			kv, err := b.KV(ctx, pipeline.BucketFiles)
			if err != nil {
				return err
			}
			_, err = kv.Values(ctx, "*")
			return err
		}},
		{"purge KV_lf_jobs", nil, jsAPI("$JS.API.STREAM.PURGE.KV_lf_jobs", `{"filter":"$KV.lf_jobs.nothing"}`)},
		{"purge LF_REQUESTS (cancel a job)", []string{"api"}, jsAPI("$JS.API.STREAM.PURGE.LF_REQUESTS", `{"filter":"lf.req.nothing.>"}`)},
		{"create a stream", nil, jsAPI("$JS.API.STREAM.CREATE.LF_EVIL", `{"name":"LF_EVIL","subjects":["evil.>"]}`)},
		{"update KV_lf_jobs", nil, jsAPI("$JS.API.STREAM.UPDATE.KV_lf_jobs", `{}`)},
		{"read LF_ROUTES (the console's routing decisions)", []string{"api"}, func(ctx context.Context, b *pipeline.Bus) error {
			c, err := b.JetStream().OrderedConsumer(ctx, pipeline.StreamRoutes, jetstream.OrderedConsumerConfig{})
			if err != nil {
				return err
			}
			_, err = c.Next(jetstream.FetchMaxWait(time.Second))
			if errors.Is(err, jetstream.ErrNoMessages) || errors.Is(err, nats.ErrTimeout) {
				return nil // read, and empty
			}
			return err
		}},
		{"delete LF_ROUTES", nil, jsAPI("$JS.API.STREAM.DELETE.LF_ROUTES", ``)},
		{"publish lf.req.j1.m (requests)", []string{"submit", "api"}, corePub("lf.req.j1.m")},
		{"publish lf.train.j1", []string{"submit", "api"}, corePub("lf.train.j1")},
		{"info LF_TRAIN (start-up check)", []string{"submit", "train", "results", "api"}, jsAPI("$JS.API.STREAM.INFO.LF_TRAIN", "")},
		{"list LF_REQUESTS's consumers (every model's lag)", []string{"results"}, jsAPI("$JS.API.CONSUMER.LIST.LF_REQUESTS", `{}`)},
		{"read lf_workers (heartbeats)", []string{"submit", "infer", "results", "api"}, func(ctx context.Context, b *pipeline.Bus) error {
			kv, err := b.KV(ctx, pipeline.BucketWorkers)
			if err != nil {
				return err
			}
			keys, err := kv.Keys(ctx) // infer.w1, unless its TTL ran out
			for _, k := range keys {
				if _, err := kv.Get(ctx, k); err != nil && !errors.Is(err, pipeline.ErrKeyNotFound) {
					return err
				}
			}
			return err
		}},
		{"publish lf.res.j1 (results)", []string{"submit", "infer", "results", "api"}, corePub("lf.res.j1")},
		{"publish lf.data.d1.raw", []string{"ingest"}, corePub("lf.data.d1.raw")},
		{"publish lf.data.d1.shard (shards)", []string{"ingest", "datasets"}, corePub("lf.data.d1.shard")},
		{"publish lf.data.a.b.raw (stray)", nil, corePub("lf.data.a.b.raw")},
		{"dead-letter a stray subject (lf.dlq.stray.data)", []string{"datasets"}, corePub("lf.dlq.stray.data")},
		{"dead-letter a refused result (lf.dlq.results.j1)", []string{"results"}, corePub("lf.dlq.results.j1")},
		{"publish lf.rpc.m (interactive)", []string{"api"}, corePub("lf.rpc.m")},
		{"serve lf.rpc.m", []string{"infer"}, coreSub("lf.rpc.m")},
		{"write lf_models (the trained model)", []string{"train"}, corePub("$O.lf_models.M.x")},
		{"read lf_models", []string{"api", "infer", "train", "submit"}, objectRead(pipeline.BucketModels, "probe")},
		{"list lf_models (resolve a model_name)", []string{"api", "infer", "train", "submit"}, func(ctx context.Context, b *pipeline.Bus) error {
			o, err := b.Objects(ctx, pipeline.BucketModels)
			if err != nil {
				return err
			}
			_, err = o.List(ctx)
			return err
		}},
		{"read lf_artifacts (parts, results, files)", []string{"datasets", "train", "results", "api", "submit"}, objectRead(pipeline.BucketArtifacts, "probe")},
		{"write lf_artifacts", []string{"datasets", "train", "results", "api"}, corePub("$O.lf_artifacts.M.x")},
		{"purge OBJ_lf_artifacts (delete a file, a dropped checkpoint)", []string{"train", "api"}, jsAPI("$JS.API.STREAM.PURGE.OBJ_lf_artifacts", `{"filter":"$O.lf_artifacts.C.nothing"}`)},
		{"purge OBJ_lf_models (a dropped checkpoint's model)", []string{"train"}, jsAPI("$JS.API.STREAM.PURGE.OBJ_lf_models", `{"filter":"$O.lf_models.C.nothing"}`)},
		{"claim in lf_claims", []string{"datasets", "train", "results"}, corePub("$KV.lf_claims.x")},
		// Listing a job's parts and checking a dataset part read from the streams' leaders.
		{"leader read of lf_artifacts (a part's metadata)", []string{"datasets", "train", "results", "api", "submit"}, jsAPI("$JS.API.STREAM.MSG.GET.OBJ_lf_artifacts", `{"last_by_subj":"$O.lf_artifacts.M.eA=="}`)},
		{"leader read of lf_claims (a part's claim)", []string{"datasets", "train", "results", "api"}, jsAPI("$JS.API.STREAM.MSG.GET.KV_lf_claims", `{"last_by_subj":"$KV.lf_claims.x"}`)},
		{"write lf_dedupe", []string{"datasets"}, corePub("$KV.lf_dedupe.d1/x")},
		{"get lf_dedupe key (a dataset's part index)", []string{"datasets"}, kvGet(pipeline.BucketDedupe, "d1/base")},
		{"leader read of lf_dedupe (a part's index entry)", []string{"train", "datasets"}, jsAPI("$JS.API.STREAM.MSG.GET.KV_lf_dedupe", `{"last_by_subj":"$KV.lf_dedupe.d1/ids/0"}`)},
		{"publish lf.events.train.j1", []string{"train"}, corePub("lf.events.train.j1")},
		{"read LF_EVENTS", []string{"api"}, func(ctx context.Context, b *pipeline.Bus) error {
			c, err := b.JetStream().OrderedConsumer(ctx, pipeline.StreamEvents, jetstream.OrderedConsumerConfig{})
			if err != nil {
				return err
			}
			m, err := c.Next(jetstream.FetchMaxWait(5 * time.Second))
			if err == nil && string(m.Data()) != `{"step":1}` {
				err = fmt.Errorf("event %q", m.Data())
			}
			return err
		}},
		{"tail LF_EVENTS (the Fine-tuning API's and the console's events)", []string{"api"}, func(ctx context.Context, b *pipeline.Bus) error {
			msgs, err := b.Tail(ctx, pipeline.StreamEvents, "lf.events.train.j1", 100) // the first: the setup's
			if err == nil && (len(msgs) == 0 || string(msgs[0].Data) != `{"step":1}`) {
				err = fmt.Errorf("events %+v", msgs)
			}
			return err
		}},
		{"subscribe _INBOX.>", nil, coreSub("_INBOX.>")},
		{"subscribe _INBOX_api.>", []string{"api"}, coreSub("_INBOX_api.>")},
		{"subscribe _INBOX_infer.>", []string{"infer"}, coreSub("_INBOX_infer.>")},
		{"subscribe _INBOX_submit.>", []string{"submit"}, coreSub("_INBOX_submit.>")},
	}
}

// TestRoleTableDenies runs every operation of roleOps as every role of
// deploy/nats-roles.conf, each on a fresh connection, and wants each
// allowed or denied (a permissions violation) as the table says. The
// table, as tested, is printed in the log; admin runs last (it deletes
// LF_ROUTES).
func TestRoleTableDenies(t *testing.T) {
	e, admin := startRoles(t)
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Minute)
	defer cancel()
	jkv, err := admin.KV(ctx, pipeline.BucketJobs)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := jkv.Put(ctx, "j1", []byte(`{}`)); err != nil {
		t.Fatal(err)
	}
	dkv, err := admin.KV(ctx, pipeline.BucketDatasets)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := dkv.Put(ctx, "d1", []byte(`{}`)); err != nil {
		t.Fatal(err)
	}
	fkv, err := admin.KV(ctx, pipeline.BucketFiles)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := fkv.Put(ctx, "file-1", []byte(`{}`)); err != nil {
		t.Fatal(err)
	}
	art, err := admin.Objects(ctx, pipeline.BucketArtifacts)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := art.Put(ctx, "probe", strings.NewReader("probe")); err != nil {
		t.Fatal(err)
	}
	models, err := admin.Objects(ctx, pipeline.BucketModels)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := models.Put(ctx, "probe", strings.NewReader("probe")); err != nil {
		t.Fatal(err)
	}
	wkv, err := admin.KV(ctx, pipeline.BucketWorkers)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := wkv.Put(ctx, "infer.w1", []byte(`{}`)); err != nil {
		t.Fatal(err)
	}
	dkv, err = admin.KV(ctx, pipeline.BucketDedupe)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := dkv.Put(ctx, "d1/base", []byte("0")); err != nil {
		t.Fatal(err)
	}
	if _, err := admin.Publish(ctx, "lf.events.train.j1", []byte(`{"step":1}`), "j1/1", nil); err != nil {
		t.Fatal(err)
	}
	if _, err := admin.JetStream().CreateOrUpdateConsumer(ctx, pipeline.StreamResults, jetstream.ConsumerConfig{Durable: "results-sink", AckPolicy: jetstream.AckExplicitPolicy}); err != nil {
		t.Fatal(err)
	}
	roles := append(slices.DeleteFunc(slices.Clone(pipelinetest.Roles), func(r string) bool { return r == NATSAdmin }), NATSAdmin)
	ops := roleOps()
	got := map[string]map[string]string{}
	for _, role := range roles {
		got[role] = map[string]string{}
		for _, op := range ops {
			want := "denied"
			if role == NATSAdmin || slices.Contains(op.allowed, role) {
				want = "allowed"
			}
			have, err := tryAs(ctx, t, e, role, op)
			got[role][op.name] = have
			if have != want {
				t.Errorf("%s: %s is %s (%v), want %s", role, op.name, have, err, want)
			}
		}
	}
	var tb strings.Builder
	fmt.Fprintf(&tb, "| operation | %s |\n|---|%s\n", strings.Join(roles, " | "), strings.Repeat("---|", len(roles)))
	for _, op := range ops {
		fmt.Fprintf(&tb, "| %s |", op.name)
		for _, role := range roles {
			fmt.Fprintf(&tb, " %s |", got[role][op.name])
		}
		tb.WriteString("\n")
	}
	t.Logf("role table as tested (deploy/nats-roles.conf):\n%s", tb.String())
}

// tryAs runs op on a fresh connection of role: "denied" when the server
// reports a permissions violation, "allowed" when op succeeds without one,
// "failed" (with the error) otherwise.
func tryAs(ctx context.Context, t *testing.T, e *pipeline.Embedded, role string, op roleOp) (string, error) {
	t.Helper()
	b := pipelinetest.ConnectRole(t, e, role, zerolog.Nop()) // the server logs each violation
	defer b.Close()
	err := watchDenied(ctx, b, func(ctx context.Context) error {
		octx, cancel := context.WithTimeout(ctx, 10*time.Second)
		defer cancel()
		return op.do(octx, b)
	})
	if errors.Is(err, nats.ErrPermissionViolation) || errors.Is(b.Conn().LastError(), nats.ErrPermissionViolation) {
		return "denied", err
	}
	if err != nil {
		return "failed", err
	}
	return "allowed", nil
}
