package main

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"maps"
	"net/http"
	"slices"
	"strings"
	"time"

	"github.com/nats-io/nats.go/jetstream"
	"github.com/spf13/cobra"

	"github.com/largeforge/largeforge/consumers/datasetsink"
	"github.com/largeforge/largeforge/consumers/infer"
	"github.com/largeforge/largeforge/consumers/resultsink"
	trainjobs "github.com/largeforge/largeforge/consumers/train"
	"github.com/largeforge/largeforge/pipeline"
	"github.com/largeforge/largeforge/schemas"
)

// ErrDoctor is returned by doctor when it found problems.
var ErrDoctor = errors.New("doctor found problems")

// doctorOptions are doctor's flags.
type doctorOptions struct {
	Gateway string        // gateway base URL ("" skips the check)
	Full    float64       // a store or stream this full (0..1) is a problem
	Stale   time.Duration // a heartbeat older than this is a problem
}

// finding is one line of doctor's report: ok, or a problem and the command
// that fixes it.
type finding struct {
	Area, Text, Fix string
	Problem         bool
}

// report collects findings.
type report struct{ lines []finding }

func (r *report) ok(area, format string, args ...any) {
	r.lines = append(r.lines, finding{Area: area, Text: fmt.Sprintf(format, args...)})
}

func (r *report) bad(area, fix, format string, args ...any) {
	r.lines = append(r.lines, finding{Area: area, Text: fmt.Sprintf(format, args...), Fix: fix, Problem: true})
}

func (r *report) problems() int {
	n := 0
	for _, l := range r.lines {
		if l.Problem {
			n++
		}
	}
	return n
}

func (r *report) write(w io.Writer) {
	for _, l := range r.lines {
		mark := "ok  "
		if l.Problem {
			mark = "FAIL"
		}
		fmt.Fprintf(w, "%s %-9s %s\n", mark, l.Area, l.Text)
		if l.Fix != "" {
			fmt.Fprintf(w, "     %-9s fix: %s\n", "", l.Fix)
		}
	}
}

func newDoctorCmd() *cobra.Command {
	o := doctorOptions{Full: 0.9, Stale: pipeline.WorkerHeartbeatTTL}
	cmd := &cobra.Command{
		Use:   "doctor [--gateway URL]",
		Short: "Check the bus, topology, workers, lag, store usage and the gateway; print what is wrong and how to fix it (as admin)",
		Long: `Check a running LargeForge: that the NATS server answers with these credentials, that every
stream, KV bucket and object store exists with the replicas the cluster wants, that the
consumers of the sinks and workers have someone fetching while messages wait, that a live
infer worker serves each model with queued requests, that no heartbeat is stale, how much
lies in the dead-letter stream, how full the account, the streams and the stores are, and
(with --gateway) that the gateway answers /health and /ready. Each problem is printed
with the command that fixes it; the exit status is non-zero when there is one. An
unreachable server or wrong credentials is one line. Runs as admin (any role that may
read the stream and consumer info would do).`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			if o.Full <= 0 || o.Full > 1 {
				return fmt.Errorf("--full %v: want a fraction in (0, 1]", o.Full)
			}
			if o.Stale < minStale() {
				return fmt.Errorf("--stale %v: want at least %v, twice the workers' heartbeat interval (a live worker's heartbeat is up to one interval old)", o.Stale, minStale())
			}
			return runDoctor(cmd.Context(), cmd.OutOrStdout(), o)
		},
	}
	f := cmd.Flags()
	f.StringVar(&o.Gateway, "gateway", "", "the gateway's base URL (http://host:8080) to check /health and /ready")
	f.Float64Var(&o.Full, "full", o.Full, "a stream, store or account this full (a fraction of its limit) is a problem")
	f.DurationVar(&o.Stale, "stale", o.Stale, fmt.Sprintf("a worker heartbeat older than this is a problem (at least %v)", minStale()))
	return cmd
}

// minStale is the least --stale: twice the heartbeat interval of the infer
// and train workers, so that a live worker's heartbeat is never stale.
func minStale() time.Duration {
	return 2 * max(infer.DefaultHeartbeatEvery, trainjobs.DefaultHeartbeatEvery)
}

// runDoctor connects and runs every check, printing the report to w.
func runDoctor(ctx context.Context, w io.Writer, o doctorOptions) error {
	c := configFrom(ctx).NATS
	c.Name = "largeforge-doctor"
	c.WaitForServer = min(c.WaitForServer, 2*time.Second)
	cctx, cancel := context.WithTimeout(ctx, 10*time.Second)
	defer cancel()
	bus, err := pipeline.Connect(cctx, c, newLogger(ctx).Level(99))
	if err != nil {
		// One line: the URL (without credentials) and why.
		return fmt.Errorf("doctor: cannot reach the bus: %w (check --nats, the role's credentials, and that the server runs: largeforge up)", err)
	}
	defer bus.Close()
	r := &report{}
	d := &doctor{bus: bus, js: bus.JetStream(), o: o, r: r}
	d.checkBus(ctx)
	d.checkTopology(ctx)
	d.checkAccount(ctx)
	d.checkWorkers(ctx)
	d.checkConsumers(ctx)
	d.checkDLQ(ctx)
	if o.Gateway != "" {
		d.checkGateway(ctx)
	}
	r.write(w)
	if n := r.problems(); n > 0 {
		return fmt.Errorf("%w: %d (see the FAIL lines)", ErrDoctor, n)
	}
	fmt.Fprintln(w, "no problems found")
	return nil
}

type doctor struct {
	bus    *pipeline.Bus
	js     jetstream.JetStream
	o      doctorOptions
	r      *report
	models map[string]bool // models a live infer worker serves
}

func (d *doctor) checkBus(ctx context.Context) {
	nc := d.bus.Conn()
	where := "a single server"
	if cl := nc.ConnectedClusterName(); cl != "" {
		where = fmt.Sprintf("cluster %s (%d servers known)", cl, len(nc.Servers()))
	}
	d.r.ok("bus", "connected to %s (%s, server %s)", nc.ConnectedUrlRedacted(), where, nc.ConnectedServerVersion())
}

// wantReplicas is the replica count the topology should have here.
func (d *doctor) wantReplicas() int {
	if d.bus.Conn().ConnectedClusterName() != "" {
		return 3
	}
	return 1
}

func (d *doctor) checkTopology(ctx context.Context) {
	topo := pipeline.DefaultTopology(d.wantReplicas())
	apply := "largeforge topology apply   (as admin; --replicas N to set the count)"
	missing := 0
	check := func(kind, name, stream string, want int) {
		s, err := d.js.Stream(ctx, stream)
		if err != nil {
			missing++
			d.r.bad("topology", apply, "%s %s is missing: %v", kind, name, err)
			return
		}
		info := s.CachedInfo()
		if have := max(info.Config.Replicas, 1); have < want {
			d.r.bad("topology", "largeforge topology apply --replicas "+fmt.Sprint(want), "%s %s has %d replica(s); the cluster wants %d", kind, name, have, want)
		}
		if info.Cluster != nil && info.Cluster.Leader == "" && want > 1 {
			d.r.bad("topology", "bring the cluster's nodes back (largeforge up --config on each); `largeforge doctor` again", "%s %s has no leader", kind, name)
		}
		d.full(kind+" "+name, info)
	}
	for _, s := range topo.Streams {
		check("stream", s.Name, s.Name, max(s.Replicas, 1))
	}
	for _, kv := range topo.KeyValues {
		check("kv bucket", kv.Bucket, "KV_"+kv.Bucket, max(kv.Replicas, 1))
	}
	for _, ob := range topo.ObjectStores {
		check("object store", ob.Bucket, "OBJ_"+ob.Bucket, max(ob.Replicas, 1))
	}
	if missing == 0 {
		d.r.ok("topology", "%d streams, %d kv buckets, %d object stores present", len(topo.Streams), len(topo.KeyValues), len(topo.ObjectStores))
	}
}

// full reports a stream (or the stream under a bucket) past o.Full of its
// byte or message limit.
func (d *doctor) full(what string, info *jetstream.StreamInfo) {
	if lim := info.Config.MaxBytes; lim > 0 {
		if frac := float64(info.State.Bytes) / float64(lim); frac >= d.o.Full {
			d.r.bad("store", fmt.Sprintf("free space in %s (purge or delete what is done: largeforge dlq purge, largeforge jobs, largeforge datasets), or raise its max bytes", what),
				"%s holds %d of its %d bytes (%.0f%%)", what, info.State.Bytes, lim, frac*100)
		}
	}
	if lim := info.Config.MaxMsgs; lim > 0 {
		if frac := float64(info.State.Msgs) / float64(lim); frac >= d.o.Full {
			d.r.bad("store", fmt.Sprintf("remove messages of %s, or raise its max messages", what), "%s holds %d of its %d messages (%.0f%%)", what, info.State.Msgs, lim, frac*100)
		}
	}
}

func (d *doctor) checkAccount(ctx context.Context) {
	ai, err := d.js.AccountInfo(ctx)
	if err != nil {
		d.r.bad("store", "check the NATS server's JetStream configuration (jetstream { store_dir, max_file })", "JetStream account info: %v", err)
		return
	}
	if lim := ai.Limits.MaxStore; lim > 0 {
		frac := float64(ai.Store) / float64(lim)
		if frac >= d.o.Full {
			d.r.bad("store", "raise jetstream max_file in nats.conf, or free space: largeforge dlq purge, largeforge jobs, largeforge datasets",
				"JetStream file storage %d of %d bytes (%.0f%%)", ai.Store, lim, frac*100)
			return
		}
		d.r.ok("store", "JetStream file storage %d of %d bytes (%.0f%%)", ai.Store, lim, frac*100)
		return
	}
	d.r.ok("store", "JetStream file storage %d bytes (no account limit)", ai.Store)
}

func (d *doctor) checkWorkers(ctx context.Context) {
	d.models = map[string]bool{}
	kv, err := d.js.KeyValue(ctx, pipeline.BucketWorkers)
	if err != nil {
		return // reported by checkTopology
	}
	lister, err := kv.ListKeys(ctx)
	if err != nil {
		d.r.bad("workers", "largeforge doctor again; if it persists check the server's log", "list %s: %v", pipeline.BucketWorkers, err)
		return
	}
	var keys []string
	for k := range lister.Keys() {
		keys = append(keys, k)
	}
	slices.Sort(keys)
	now := time.Now()
	infer, train := 0, 0
	for _, k := range keys {
		e, err := kv.Get(ctx, k)
		if err != nil {
			continue // expired while we read
		}
		var hb schemas.Heartbeat
		if err := json.Unmarshal(e.Value(), &hb); err != nil {
			d.r.bad("workers", fmt.Sprintf("remove the entry: nats kv del %s %s", pipeline.BucketWorkers, k), "heartbeat %s is not JSON: %v", k, err)
			continue
		}
		age := now.Sub(time.Unix(hb.UpdatedAt, 0)) // unix seconds, as routing reads it
		if hb.UpdatedAt == 0 {
			age = now.Sub(e.Created())
		}
		if age > d.o.Stale {
			d.r.bad("workers", fmt.Sprintf("restart the worker (largeforge worker --role %s ...); a dead one's entry expires with the bucket's TTL", hb.Role),
				"%s worker %s (pid %d): last heartbeat %s ago", hb.Role, hb.ID, hb.PID, age.Round(time.Second))
			continue
		}
		switch hb.Role {
		case schemas.WorkerInfer:
			infer++
			for _, m := range hb.Models {
				d.models[m] = true
			}
		case schemas.WorkerTrain:
			train++
		}
	}
	models := slices.Sorted(maps.Keys(d.models))
	d.r.ok("workers", "%d infer worker(s) serving %s; %d train worker(s)", infer, orNone(models), train)
}

func orNone(s []string) string {
	if len(s) == 0 {
		return "no models"
	}
	return strings.Join(s, ", ")
}

// consumerFix is the command that starts someone to fetch from a durable.
func consumerFix(durable string) string {
	switch {
	case strings.HasPrefix(durable, "infer-"):
		return "largeforge worker --role infer --model " + strings.TrimPrefix(durable, "infer-") + "=DIR   (or largeforge up)"
	case strings.HasPrefix(durable, "dataset-") || durable == datasetsink.DurableSink:
		return "largeforge worker --role dataset   (or largeforge up)"
	case durable == resultsink.DurableResults || durable == resultsink.DurableDLQ:
		return "largeforge worker --role results   (or largeforge up)"
	case strings.HasPrefix(durable, "train"):
		return "largeforge worker --role train   (or largeforge up)"
	}
	return "start the process that consumes " + durable
}

func (d *doctor) checkConsumers(ctx context.Context) {
	var lagging int
	for _, stream := range []string{pipeline.StreamDatasets, pipeline.StreamRequests, pipeline.StreamRoutes, pipeline.StreamResults, pipeline.StreamDLQ, pipeline.StreamTrain} {
		s, err := d.js.Stream(ctx, stream)
		if err != nil {
			continue // reported by checkTopology
		}
		cl := s.ListConsumers(ctx)
		for ci := range cl.Info() {
			if ci.Config.Durable == "" {
				continue // ordered and ephemeral readers
			}
			lag := ci.NumPending
			if lag == 0 && ci.NumAckPending == 0 {
				continue
			}
			lagging++
			if ci.NumWaiting == 0 && ci.NumAckPending == 0 {
				d.r.bad("lag", consumerFix(ci.Config.Durable), "%s/%s: %d message(s) waiting and nobody fetching", stream, ci.Config.Durable, lag)
				continue
			}
			d.r.ok("lag", "%s/%s: %d waiting, %d in progress", stream, ci.Config.Durable, lag, ci.NumAckPending)
		}
		if err := cl.Err(); err != nil {
			d.r.bad("lag", "largeforge doctor again", "list the consumers of %s: %v", stream, err)
		}
	}
	// Queued requests for a model no live worker serves.
	if s, err := d.js.Stream(ctx, pipeline.StreamRequests); err == nil {
		if info, err := s.Info(ctx, jetstream.WithSubjectFilter("lf.req.>")); err == nil {
			queued := map[string]uint64{}
			for subj, n := range info.State.Subjects {
				if parts := strings.Split(subj, "."); len(parts) == 4 {
					queued[parts[3]] += n
				}
			}
			for _, m := range slices.Sorted(maps.Keys(queued)) {
				if !d.models[m] {
					d.r.bad("workers", consumerFix(infer.Durable(m)), "%d request(s) queued for model %s and no live infer worker serves it", queued[m], m)
				}
			}
		}
	}
	if lagging == 0 {
		d.r.ok("lag", "no consumer has messages waiting")
	}
}

func (d *doctor) checkDLQ(ctx context.Context) {
	s, err := d.js.Stream(ctx, pipeline.StreamDLQ)
	if err != nil {
		return
	}
	info, err := s.Info(ctx, jetstream.WithSubjectFilter("lf.dlq.>"))
	if err != nil {
		return
	}
	per := map[string]uint64{}
	for subj, n := range info.State.Subjects {
		if parts := strings.Split(subj, "."); len(parts) >= 3 {
			per[parts[2]] += n
		}
	}
	if len(per) == 0 {
		d.r.ok("dlq", "no dead letters")
		return
	}
	var stages []string
	for st, n := range per {
		stages = append(stages, fmt.Sprintf("%s %d", st, n))
	}
	slices.Sort(stages)
	// Dead letters are not a fault of the system; they wait for a look.
	d.r.ok("dlq", "dead letters: %s (largeforge dlq ls --stage STAGE; replay or purge them)", strings.Join(stages, ", "))
}

func (d *doctor) checkGateway(ctx context.Context) {
	base := strings.TrimRight(d.o.Gateway, "/")
	client := &http.Client{Timeout: 5 * time.Second}
	for _, p := range []string{"/health", "/ready"} {
		req, err := http.NewRequestWithContext(ctx, http.MethodGet, base+p, nil)
		if err != nil {
			d.r.bad("gateway", "give --gateway as http://host:port", "%s: %v", base, err)
			return
		}
		resp, err := client.Do(req)
		if err != nil {
			d.r.bad("gateway", "start it: largeforge gateway (or largeforge up)", "%s%s: %v", base, p, err)
			return
		}
		body, _ := io.ReadAll(io.LimitReader(resp.Body, 512))
		resp.Body.Close()
		if resp.StatusCode != http.StatusOK {
			d.r.bad("gateway", "see the gateway's log; largeforge doctor lists what it waits for", "%s%s: %s %s", base, p, resp.Status, strings.TrimSpace(string(body)))
			return
		}
	}
	d.r.ok("gateway", "%s answers /health and /ready", base)
}
