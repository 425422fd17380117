package pipeline_test

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/largeforge/largeforge/pipeline"
	"github.com/largeforge/largeforge/pipeline/pipelinetest"
)

// fastConfig is a consumer on LF_REQUESTS with short timings for tests.
func fastConfig() pipeline.ConsumerConfig {
	return pipeline.ConsumerConfig{
		Stream:   pipeline.StreamRequests,
		Durable:  "infer",
		Stage:    "infer",
		Batch:    8,
		MaxWait:  100 * time.Millisecond,
		NakDelay: 20 * time.Millisecond,
	}
}

// runConsumer starts c.Run in a goroutine; the returned stop cancels it and
// returns Run's error.
func runConsumer(t *testing.T, c *pipeline.Consumer) (stop func() error) {
	t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	errc := make(chan error, 1)
	go func() { errc <- c.Run(ctx) }()
	var once sync.Once
	var err error
	stop = func() error {
		once.Do(func() {
			cancel()
			select {
			case err = <-errc:
			case <-time.After(time.Minute): // a hang, not a speed
				err = errors.New("Run did not return within a minute of cancel")
			}
		})
		return err
	}
	t.Cleanup(func() { _ = stop() })
	return stop
}

func newConsumer(t *testing.T, b *pipeline.Bus, cfg pipeline.ConsumerConfig, h pipeline.Handler) *pipeline.Consumer {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	c, err := pipeline.NewConsumer(ctx, b, cfg, h, pipelinetest.Logger(t))
	if err != nil {
		t.Fatalf("NewConsumer: %v", err)
	}
	return c
}

func publishRequests(t *testing.T, b *pipeline.Bus, job string, n int) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	subj, err := pipeline.RequestSubject(job, "m")
	if err != nil {
		t.Fatal(err)
	}
	for i := range n {
		hdr := nats.Header{"Lf-Trace": []string{fmt.Sprintf("trace-%d", i)}}
		if _, err := b.Publish(ctx, subj, []byte(fmt.Sprintf(`{"n":%d}`, i)), fmt.Sprintf("%s/%d", job, i), hdr); err != nil {
			t.Fatal(err)
		}
	}
}

func consumerInfo(t *testing.T, b *pipeline.Bus, stream, durable string) *jetstream.ConsumerInfo {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	c, err := b.JetStream().Consumer(ctx, stream, durable)
	if err != nil {
		t.Fatal(err)
	}
	info, err := c.Info(ctx)
	if err != nil {
		t.Fatal(err)
	}
	return info
}

// stopReturns calls stop and fails if it does not return within a minute (a
// hang, not a speed: every stop the tests make returns in milliseconds).
func stopReturns(t *testing.T, stop func() error) {
	t.Helper()
	done := make(chan error, 1)
	go func() { done <- stop() }()
	select {
	case err := <-done:
		if err != nil {
			t.Fatal(err)
		}
	case <-time.After(time.Minute):
		t.Fatal("Run did not return after its ctx ended")
	}
}

// dlqRecords reads every record on lf.dlq.<stage>.<token>.
func dlqRecords(t *testing.T, b *pipeline.Bus, stage, token string) []pipeline.DLQRecord {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	subj, _ := pipeline.DLQSubject(stage, token)
	cons, err := b.JetStream().OrderedConsumer(ctx, pipeline.StreamDLQ, jetstream.OrderedConsumerConfig{FilterSubjects: []string{subj}})
	if err != nil {
		t.Fatal(err)
	}
	batch, err := cons.FetchNoWait(1000)
	if err != nil {
		t.Fatal(err)
	}
	var recs []pipeline.DLQRecord
	for m := range batch.Messages() {
		var r pipeline.DLQRecord
		if err := json.Unmarshal(m.Data(), &r); err != nil {
			t.Fatalf("dlq record: %v", err)
		}
		recs = append(recs, r)
	}
	return recs
}

func TestConsumerConfigValidate(t *testing.T) {
	base := fastConfig
	tests := []struct {
		name    string
		mod     func(*pipeline.ConsumerConfig)
		wantErr bool
	}{
		{name: "valid", mod: func(*pipeline.ConsumerConfig) {}},
		{name: "all defaults", mod: func(c *pipeline.ConsumerConfig) { *c = pipeline.ConsumerConfig{Stream: "S", Durable: "d", Stage: "s"} }},
		{name: "filters", mod: func(c *pipeline.ConsumerConfig) { c.FilterSubjects = []string{"lf.req.a.>", "lf.req.b.*"} }},
		{name: "no stream", mod: func(c *pipeline.ConsumerConfig) { c.Stream = "" }, wantErr: true},
		{name: "no durable", mod: func(c *pipeline.ConsumerConfig) { c.Durable = "" }, wantErr: true},
		{name: "durable with dot", mod: func(c *pipeline.ConsumerConfig) { c.Durable = "a.b" }, wantErr: true},
		{name: "no stage", mod: func(c *pipeline.ConsumerConfig) { c.Stage = "" }, wantErr: true},
		{name: "stage with space", mod: func(c *pipeline.ConsumerConfig) { c.Stage = "in fer" }, wantErr: true},
		{name: "blank filter", mod: func(c *pipeline.ConsumerConfig) { c.FilterSubjects = []string{" "} }, wantErr: true},
		{name: "negative batch", mod: func(c *pipeline.ConsumerConfig) { c.Batch = -1 }, wantErr: true},
		{name: "negative max deliver", mod: func(c *pipeline.ConsumerConfig) { c.MaxDeliver = -1 }, wantErr: true},
		{name: "negative max ack pending", mod: func(c *pipeline.ConsumerConfig) { c.MaxAckPending = -1 }, wantErr: true},
		{name: "max ack pending below batch", mod: func(c *pipeline.ConsumerConfig) { c.Batch, c.MaxAckPending = 10, 5 }, wantErr: true},
		{name: "gather", mod: func(c *pipeline.ConsumerConfig) { c.Gather = 50 * time.Millisecond }},
		{name: "negative gather", mod: func(c *pipeline.ConsumerConfig) { c.Gather = -time.Second }, wantErr: true},
		{name: "gather below 1ms", mod: func(c *pipeline.ConsumerConfig) { c.Gather = time.Microsecond }, wantErr: true},
		{name: "negative ack wait", mod: func(c *pipeline.ConsumerConfig) { c.AckWait = -time.Second }, wantErr: true},
		{name: "negative nak delay", mod: func(c *pipeline.ConsumerConfig) { c.NakDelay = -time.Second }, wantErr: true},
		{name: "in progress not below ack wait", mod: func(c *pipeline.ConsumerConfig) { c.AckWait, c.InProgressEvery = time.Second, time.Second }, wantErr: true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			cfg := base()
			tt.mod(&cfg)
			err := cfg.Validate()
			if (err != nil) != tt.wantErr {
				t.Fatalf("Validate() = %v, wantErr %v", err, tt.wantErr)
			}
			if err != nil && !errors.Is(err, pipeline.ErrInvalidOption) {
				t.Errorf("error %v does not wrap ErrInvalidOption", err)
			}
		})
	}
}

func TestConsumerDefaultsAndIdempotentCreate(t *testing.T) {
	_, b := pipelinetest.StartBus(t)
	cfg := pipeline.ConsumerConfig{Stream: pipeline.StreamRequests, Durable: "infer", Stage: "infer", FilterSubjects: []string{"lf.req.>"}}
	h := pipeline.PerMessage(func(context.Context, pipeline.Msg) error { return nil })
	c := newConsumer(t, b, cfg, h)
	got := c.Config()
	if got.Batch != 64 || got.MaxWait != time.Second || got.MaxAckPending != 256 || got.AckWait != 30*time.Second ||
		got.MaxDeliver != 5 || got.NakDelay != time.Second || got.InProgressEvery != 10*time.Second {
		t.Errorf("defaults = %+v", got)
	}
	newConsumer(t, b, cfg, h) // a second start with the same config
	info := consumerInfo(t, b, pipeline.StreamRequests, "infer")
	if info.Config.MaxAckPending != 256 || info.Config.AckWait != 30*time.Second || info.Config.AckPolicy != jetstream.AckExplicitPolicy {
		t.Errorf("server consumer config = %+v", info.Config)
	}
	if _, err := pipeline.NewConsumer(context.Background(), b, cfg, nil, pipelinetest.Logger(t)); !errors.Is(err, pipeline.ErrInvalidOption) {
		t.Errorf("NewConsumer without a handler = %v", err)
	}
	if got := pipeline.ThirdToken("lf.data.ds1.raw"); got != "ds1" {
		t.Errorf("ThirdToken = %q", got)
	}
	if got := pipeline.ThirdToken("lf.res"); got != "unknown" {
		t.Errorf("ThirdToken of a short subject = %q", got)
	}
}

func TestConsumerAcksSuccess(t *testing.T) {
	_, b := pipelinetest.StartBus(t)
	var mu sync.Mutex
	seen := map[string]int{}
	var maxBatch atomic.Int64
	h := handlerFunc(func(ctx context.Context, msgs []pipeline.Msg) []error {
		maxBatch.Store(max(maxBatch.Load(), int64(len(msgs))))
		mu.Lock()
		defer mu.Unlock()
		for _, m := range msgs {
			seen[m.ID]++
		}
		return make([]error, len(msgs))
	})
	publishRequests(t, b, "job1", 50) // before the consumer runs: full batches
	c := newConsumer(t, b, fastConfig(), h)
	stop := runConsumer(t, c)
	pipelinetest.CheckFor(t, 10*time.Second, 10*time.Millisecond, func() error {
		if s := c.Stats(); s.Acked != 50 {
			return fmt.Errorf("acked %d of 50", s.Acked)
		}
		return nil
	})
	publishRequests(t, b, "job2", 1) // a lone message while idle
	pipelinetest.CheckFor(t, 5*time.Second, 10*time.Millisecond, func() error {
		if s := c.Stats(); s.Acked != 51 {
			return fmt.Errorf("acked %d of 51", s.Acked)
		}
		return nil
	})
	if err := stop(); err != nil {
		t.Fatalf("Run: %v", err)
	}
	mu.Lock()
	if len(seen) != 51 {
		t.Errorf("%d distinct messages handled, want 51", len(seen))
	}
	for k, n := range seen {
		if n != 1 {
			t.Errorf("%s handled %d times", k, n)
		}
	}
	mu.Unlock()
	if mb := maxBatch.Load(); mb != 8 {
		t.Errorf("largest batch = %d, want the batch size 8", mb)
	}
	// Work queue: acked messages are gone.
	pipelinetest.CheckFor(t, 5*time.Second, 10*time.Millisecond, func() error {
		if n := streamMsgs(t, b, pipeline.StreamRequests); n != 0 {
			return fmt.Errorf("%d msgs left in the work queue", n)
		}
		return nil
	})
	if s := c.Stats(); s.Nakked != 0 || s.DeadLetter != 0 || s.Fetched != 51 {
		t.Errorf("stats = %+v", s)
	}
}

type handlerFunc func(ctx context.Context, msgs []pipeline.Msg) []error

func (f handlerFunc) Handle(ctx context.Context, msgs []pipeline.Msg) []error { return f(ctx, msgs) }

func TestConsumerNakRedelivers(t *testing.T) {
	_, b := pipelinetest.StartBus(t)
	var calls atomic.Int64
	h := pipeline.PerMessage(func(ctx context.Context, m pipeline.Msg) error {
		calls.Add(1)
		if m.Deliveries < 3 {
			return fmt.Errorf("model busy (delivery %d)", m.Deliveries)
		}
		return nil
	})
	c := newConsumer(t, b, fastConfig(), h)
	runConsumer(t, c)
	publishRequests(t, b, "job1", 1)
	pipelinetest.CheckFor(t, 10*time.Second, 10*time.Millisecond, func() error {
		if s := c.Stats(); s.Acked != 1 {
			return fmt.Errorf("stats %+v", s)
		}
		return nil
	})
	if n := calls.Load(); n != 3 {
		t.Errorf("handler called %d times, want 3", n)
	}
	if s := c.Stats(); s.Nakked != 2 || s.DeadLetter != 0 {
		t.Errorf("stats = %+v, want 2 naks and no dead letter", s)
	}
}

func TestConsumerInvalidGoesToDLQ(t *testing.T) {
	_, b := pipelinetest.StartBus(t)
	var calls atomic.Int64
	h := pipeline.PerMessage(func(ctx context.Context, m pipeline.Msg) error {
		calls.Add(1)
		var v struct{ Prompt string }
		if err := json.Unmarshal(m.Data, &v); err != nil {
			return pipeline.Invalid("request is not JSON", err)
		}
		return nil
	})
	c := newConsumer(t, b, fastConfig(), h)
	runConsumer(t, c)
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	subj, _ := pipeline.RequestSubject("job7", "m")
	bad := []byte(`{"prompt": "unterminated`)
	ack, err := b.Publish(ctx, subj, bad, "job7/r1", nats.Header{"Lf-Trace": []string{"t-1"}})
	if err != nil {
		t.Fatal(err)
	}
	pipelinetest.CheckFor(t, 10*time.Second, 10*time.Millisecond, func() error {
		if s := c.Stats(); s.DeadLetter != 1 {
			return fmt.Errorf("stats %+v", s)
		}
		return nil
	})
	recs := dlqRecords(t, b, "infer", "job7")
	if len(recs) != 1 {
		t.Fatalf("%d dlq records, want 1", len(recs))
	}
	r := recs[0]
	if r.Reason != "request is not JSON" || r.Stage != "infer" || r.Stream != pipeline.StreamRequests || r.Subject != subj ||
		r.Sequence != ack.Sequence || r.Deliveries != 1 || string(r.Data) != string(bad) || r.Error == "" {
		t.Errorf("dlq record = %+v", r)
	}
	if r.Headers["Lf-Trace"][0] != "t-1" || r.Headers[jetstream.MsgIDHeader][0] != "job7/r1" {
		t.Errorf("dlq headers = %v", r.Headers)
	}
	// Terminated: gone from the work queue with nothing pending, so the
	// server has nothing left to redeliver.
	pipelinetest.CheckFor(t, time.Minute, 10*time.Millisecond, func() error {
		if n := streamMsgs(t, b, pipeline.StreamRequests); n != 0 {
			return fmt.Errorf("%d msgs left on the work queue", n)
		}
		if info := consumerInfo(t, b, pipeline.StreamRequests, "infer"); info.NumAckPending != 0 || info.NumRedelivered != 0 {
			return fmt.Errorf("consumer ack pending %d redelivered %d", info.NumAckPending, info.NumRedelivered)
		}
		return nil
	})
	if n := calls.Load(); n != 1 {
		t.Errorf("handler called %d times, want 1", n)
	}
}

func TestConsumerMaxDeliverGoesToDLQ(t *testing.T) {
	_, b := pipelinetest.StartBus(t)
	var calls atomic.Int64
	h := pipeline.PerMessage(func(ctx context.Context, m pipeline.Msg) error {
		calls.Add(1)
		return io.ErrUnexpectedEOF
	})
	cfg := fastConfig()
	cfg.MaxDeliver = 3
	c := newConsumer(t, b, cfg, h)
	runConsumer(t, c)
	publishRequests(t, b, "job3", 1)
	pipelinetest.CheckFor(t, 10*time.Second, 10*time.Millisecond, func() error {
		if s := c.Stats(); s.DeadLetter != 1 {
			return fmt.Errorf("stats %+v", s)
		}
		return nil
	})
	if n := calls.Load(); n != 3 {
		t.Errorf("handler called %d times, want MaxDeliver=3", n)
	}
	recs := dlqRecords(t, b, "infer", "job3")
	if len(recs) != 1 {
		t.Fatalf("%d dlq records, want 1", len(recs))
	}
	if r := recs[0]; r.Reason != "max deliveries exceeded" || r.Deliveries != 3 || r.Error == "" || string(r.Data) != `{"n":0}` {
		t.Errorf("dlq record = %+v", r)
	}
	if s := c.Stats(); s.Nakked != 2 {
		t.Errorf("stats = %+v, want 2 naks", s)
	}
}

// A message whose last allowed delivery never finished (a crashed worker)
// comes back once more and goes to the DLQ without reaching the handler.
func TestConsumerUnfinishedLastDeliveryGoesToDLQ(t *testing.T) {
	_, b := pipelinetest.StartBus(t)
	cfg := fastConfig()
	cfg.MaxDeliver = 2
	var calls atomic.Int64
	c := newConsumer(t, b, cfg, pipeline.PerMessage(func(context.Context, pipeline.Msg) error { calls.Add(1); return nil }))
	publishRequests(t, b, "job4", 1)
	// Two deliveries that "crash": taken and given back without an outcome.
	raw, err := b.JetStream().Consumer(context.Background(), pipeline.StreamRequests, "infer")
	if err != nil {
		t.Fatal(err)
	}
	for range 2 {
		batch, err := raw.Fetch(1, jetstream.FetchMaxWait(2*time.Second))
		if err != nil {
			t.Fatal(err)
		}
		for m := range batch.Messages() {
			if err := m.Nak(); err != nil {
				t.Fatal(err)
			}
		}
	}
	runConsumer(t, c)
	pipelinetest.CheckFor(t, 10*time.Second, 10*time.Millisecond, func() error {
		if s := c.Stats(); s.DeadLetter != 1 {
			return fmt.Errorf("stats %+v", s)
		}
		return nil
	})
	if n := calls.Load(); n != 0 {
		t.Errorf("handler called %d times, want 0", n)
	}
	if recs := dlqRecords(t, b, "infer", "job4"); len(recs) != 1 || recs[0].Deliveries != 3 || recs[0].Reason != "max deliveries exceeded" {
		t.Errorf("dlq records = %+v", recs)
	}
}

func TestConsumerInProgressPreventsRedelivery(t *testing.T) {
	_, b := pipelinetest.StartBus(t)
	var calls atomic.Int64
	h := pipeline.PerMessage(func(ctx context.Context, m pipeline.Msg) error {
		calls.Add(1)
		select { // three times the ack wait
		case <-time.After(3 * time.Second):
		case <-ctx.Done():
			return ctx.Err()
		}
		return nil
	})
	cfg := fastConfig()
	// InProgress every 50ms against a 1s ack wait: only a process stalled
	// for most of a second could miss one.
	cfg.AckWait = time.Second
	cfg.InProgressEvery = 50 * time.Millisecond
	c := newConsumer(t, b, cfg, h)
	// A second loop on the same durable would take a redelivered message at once.
	runConsumer(t, c)
	runConsumer(t, c)
	publishRequests(t, b, "job5", 1)
	pipelinetest.CheckFor(t, 10*time.Second, 10*time.Millisecond, func() error {
		if s := c.Stats(); s.Acked != 1 {
			return fmt.Errorf("stats %+v", s)
		}
		return nil
	})
	if n := calls.Load(); n != 1 {
		t.Errorf("handler called %d times, want 1 (redelivered while in progress)", n)
	}
	if info := consumerInfo(t, b, pipeline.StreamRequests, "infer"); info.NumRedelivered != 0 {
		t.Errorf("consumer redelivered %d msgs", info.NumRedelivered)
	}
}

func TestConsumerDrainOnCancel(t *testing.T) {
	_, b := pipelinetest.StartBus(t)
	entered := make(chan struct{})
	release := make(chan struct{})
	var handlerCtxErr atomic.Value
	var once sync.Once
	h := handlerFunc(func(ctx context.Context, msgs []pipeline.Msg) []error {
		once.Do(func() { close(entered) })
		<-release
		handlerCtxErr.Store(fmt.Sprint(ctx.Err()))
		return make([]error, len(msgs))
	})
	publishRequests(t, b, "job6", 5)
	c := newConsumer(t, b, fastConfig(), h)
	stop := runConsumer(t, c)
	select {
	case <-entered:
	case <-time.After(10 * time.Second):
		t.Fatal("handler never called")
	}
	// Run must not return before the handler has: whenever stop returns,
	// the handler must already be done.
	stopped := make(chan error, 1)
	var doneAtStop atomic.Bool
	go func() {
		err := stop()
		doneAtStop.Store(handlerCtxErr.Load() != nil)
		stopped <- err
	}()
	close(release)
	if err := <-stopped; err != nil {
		t.Fatalf("Run = %v, want nil", err)
	}
	if !doneAtStop.Load() {
		t.Fatal("Run returned while the batch was in flight")
	}
	if got := handlerCtxErr.Load(); got != "<nil>" {
		t.Errorf("handler ctx was cancelled during drain: %v", got)
	}
	if s := c.Stats(); s.Acked != 5 || s.Batches != 1 {
		t.Errorf("stats = %+v, want the in-flight batch of 5 acked", s)
	}
	pipelinetest.CheckFor(t, 5*time.Second, 10*time.Millisecond, func() error {
		if info := consumerInfo(t, b, pipeline.StreamRequests, "infer"); info.NumAckPending != 0 {
			return fmt.Errorf("%d acks pending", info.NumAckPending)
		}
		if n := streamMsgs(t, b, pipeline.StreamRequests); n != 0 {
			return fmt.Errorf("%d msgs left", n)
		}
		return nil
	})
}

// A handler still running at DrainTimeout, or a Deferred outcome still
// waiting, is cancelled and its message nakked; Run returns only then.
func TestConsumerDrainTimeoutCancelsHandler(t *testing.T) {
	for _, tc := range []struct {
		name     string
		deferred bool
	}{
		{name: "handler"},
		{name: "deferred outcome", deferred: true},
	} {
		t.Run(tc.name, func(t *testing.T) {
			_, b := pipelinetest.StartBus(t)
			entered := make(chan struct{}, 10)
			wait := func(ctx context.Context) error {
				entered <- struct{}{}
				<-ctx.Done()
				return ctx.Err()
			}
			h := pipeline.PerMessage(func(ctx context.Context, m pipeline.Msg) error {
				if tc.deferred {
					return pipeline.Deferred(wait)
				}
				return wait(ctx)
			})
			cfg := fastConfig()
			cfg.DrainTimeout = 100 * time.Millisecond
			c := newConsumer(t, b, cfg, h)
			stop := runConsumer(t, c)
			publishRequests(t, b, "job8", 1)
			<-entered
			// The wait ends with its ctx alone: stop returns only if the
			// drain timeout cancels it.
			stopReturns(t, stop)
			if s := c.Stats(); s.Nakked != 1 || s.Acked != 0 {
				t.Errorf("stats = %+v, want the cancelled message nakked", s)
			}
		})
	}
}

func TestConsumerIdleCancelIsPrompt(t *testing.T) {
	_, b := pipelinetest.StartBus(t)
	cfg := fastConfig()
	cfg.MaxWait = 500 * time.Millisecond
	c := newConsumer(t, b, cfg, pipeline.PerMessage(func(context.Context, pipeline.Msg) error { return nil }))
	stop := runConsumer(t, c)
	// Let it block in a fetch: the server holds its pull request.
	pipelinetest.CheckFor(t, time.Minute, 5*time.Millisecond, func() error {
		if info := consumerInfo(t, b, pipeline.StreamRequests, "infer"); info.NumWaiting == 0 {
			return errors.New("no pull request waiting")
		}
		return nil
	})
	stopReturns(t, stop)
}

func TestConsumerHandlerPanicAndBadOutcomes(t *testing.T) {
	_, b := pipelinetest.StartBus(t)
	var calls atomic.Int64
	h := handlerFunc(func(ctx context.Context, msgs []pipeline.Msg) []error {
		switch calls.Add(1) {
		case 1:
			panic("boom")
		case 2:
			return nil // wrong count
		}
		return make([]error, len(msgs))
	})
	cfg := fastConfig()
	cfg.Batch = 1
	cfg.MaxAckPending = 1
	c := newConsumer(t, b, cfg, h)
	runConsumer(t, c)
	publishRequests(t, b, "job9", 1)
	pipelinetest.CheckFor(t, 10*time.Second, 10*time.Millisecond, func() error {
		if s := c.Stats(); s.Acked != 1 {
			return fmt.Errorf("stats %+v", s)
		}
		return nil
	})
	if s := c.Stats(); s.Nakked != 2 || calls.Load() != 3 {
		t.Errorf("stats = %+v calls %d, want 2 naks then success on call 3", s, calls.Load())
	}
}

func TestInvalid(t *testing.T) {
	cause := io.ErrUnexpectedEOF
	err := fmt.Errorf("decode: %w", pipeline.Invalid("bad json", cause))
	if !errors.Is(err, pipeline.ErrInvalid) || !errors.Is(err, cause) {
		t.Errorf("Invalid does not wrap ErrInvalid and the cause: %v", err)
	}
	if got := pipeline.InvalidReason(err); got != "bad json" {
		t.Errorf("InvalidReason = %q", got)
	}
	if got := pipeline.InvalidReason(cause); got != cause.Error() {
		t.Errorf("InvalidReason of a plain error = %q", got)
	}
	if got := pipeline.Invalid("empty", nil).Error(); got != "empty" {
		t.Errorf("Invalid without cause = %q", got)
	}
}

// Several loops on one durable share the work; a full MaxAckPending window
// only makes them wait.
func TestConsumerConcurrentRuns(t *testing.T) {
	_, b := pipelinetest.StartBus(t)
	var mu sync.Mutex
	seen := map[string]int{}
	h := pipeline.PerMessage(func(ctx context.Context, m pipeline.Msg) error {
		time.Sleep(2 * time.Millisecond)
		mu.Lock()
		seen[m.ID]++
		mu.Unlock()
		return nil
	})
	cfg := fastConfig()
	cfg.Batch, cfg.MaxAckPending = 4, 4
	c := newConsumer(t, b, cfg, h)
	for range 3 {
		runConsumer(t, c)
	}
	publishRequests(t, b, "jobc", 60)
	pipelinetest.CheckFor(t, time.Minute, 5*time.Millisecond, func() error {
		if s := c.Stats(); s.Acked != 60 {
			return fmt.Errorf("stats %+v", s)
		}
		return nil
	})
	mu.Lock()
	defer mu.Unlock()
	if len(seen) != 60 {
		t.Errorf("%d distinct messages handled, want 60", len(seen))
	}
	for id, n := range seen {
		if n != 1 {
			t.Errorf("%s handled %d times", id, n)
		}
	}
}

func TestConsumerRunEndsWhenConnectionCloses(t *testing.T) {
	e, _ := pipelinetest.StartBus(t)
	b := pipelinetest.Connect(t, e)
	c := newConsumer(t, b, fastConfig(), pipeline.PerMessage(func(context.Context, pipeline.Msg) error { return nil }))
	errc := make(chan error, 1)
	go func() { errc <- c.Run(context.Background()) }()
	time.Sleep(50 * time.Millisecond)
	b.Close()
	select {
	case err := <-errc:
		if !errors.Is(err, nats.ErrConnectionClosed) {
			t.Errorf("Run = %v, want nats.ErrConnectionClosed", err)
		}
	case <-time.After(5 * time.Second):
		t.Fatal("Run still running after the connection closed")
	}
}

// Per-model consumers on the work queue: disjoint filters work side by side; a
// filter overlapping one of them is refused by the server.
func TestConsumersPerModelOnWorkQueue(t *testing.T) {
	_, b := pipelinetest.StartBus(t)
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	got := map[string]*atomic.Int64{"m1": {}, "m2": {}}
	var cs []*pipeline.Consumer
	for _, model := range []string{"m1", "m2"} {
		f, err := pipeline.RequestFilter(pipeline.AnyToken, model)
		if err != nil {
			t.Fatal(err)
		}
		cfg := fastConfig()
		cfg.Durable, cfg.FilterSubjects = "infer-"+model, []string{f}
		c := newConsumer(t, b, cfg, pipeline.PerMessage(func(ctx context.Context, m pipeline.Msg) error {
			if !strings.HasSuffix(m.Subject, "."+model) {
				return fmt.Errorf("consumer for %s got %s", model, m.Subject)
			}
			got[model].Add(1)
			return nil
		}))
		runConsumer(t, c)
		cs = append(cs, c)
	}
	for i, model := range []string{"m1", "m2", "m1"} {
		subj, _ := pipeline.RequestSubject(fmt.Sprintf("job%d", i), model)
		if _, err := b.Publish(ctx, subj, []byte("{}"), "", nil); err != nil {
			t.Fatal(err)
		}
	}
	pipelinetest.CheckFor(t, 5*time.Second, 10*time.Millisecond, func() error {
		if got["m1"].Load() != 2 || got["m2"].Load() != 1 {
			return fmt.Errorf("m1 %d m2 %d", got["m1"].Load(), got["m2"].Load())
		}
		return nil
	})
	for _, c := range cs {
		if s := c.Stats(); s.Nakked != 0 {
			t.Errorf("stats = %+v", s)
		}
	}
	all, _ := pipeline.RequestFilter(pipeline.AnyToken, pipeline.AnyToken)
	cfg := fastConfig()
	cfg.Durable, cfg.FilterSubjects = "router", []string{all}
	if _, err := pipeline.NewConsumer(ctx, b, cfg, pipeline.PerMessage(func(context.Context, pipeline.Msg) error { return nil }), pipelinetest.Logger(t)); err == nil {
		t.Error("an overlapping consumer on the work queue stream was accepted")
	}
}
