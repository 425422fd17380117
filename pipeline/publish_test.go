package pipeline_test

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/largeforge/largeforge/pipeline"
	"github.com/largeforge/largeforge/pipeline/pipelinetest"
)

func streamMsgs(t *testing.T, b *pipeline.Bus, stream string) uint64 {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	s, err := b.JetStream().Stream(ctx, stream)
	if err != nil {
		t.Fatal(err)
	}
	info, err := s.Info(ctx)
	if err != nil {
		t.Fatal(err)
	}
	return info.State.Msgs
}

func TestPublishDedupe(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	_, b := pipelinetest.StartBus(t)
	subj, _ := pipeline.ResultSubject("job1")
	hdr := nats.Header{"Lf-Job": []string{"job1"}}

	first, err := b.Publish(ctx, subj, []byte("r1"), "job1/r1", hdr)
	if err != nil {
		t.Fatal(err)
	}
	if first.Duplicate {
		t.Error("first publish reported as duplicate")
	}
	if hdr.Get(jetstream.MsgIDHeader) != "" {
		t.Error("Publish changed the caller's header map")
	}
	second, err := b.Publish(ctx, subj, []byte("r1 again"), "job1/r1", hdr)
	if err != nil {
		t.Fatalf("duplicate publish returned an error: %v", err)
	}
	if !second.Duplicate || second.Sequence != first.Sequence {
		t.Errorf("duplicate ack = %+v, want Duplicate with sequence %d", second, first.Sequence)
	}
	if _, err := b.Publish(ctx, subj, []byte("r2"), "job1/r2", nil); err != nil {
		t.Fatal(err)
	}
	if n := streamMsgs(t, b, pipeline.StreamResults); n != 2 {
		t.Errorf("stream holds %d msgs, want 2", n)
	}
	// The stored message carries the header and the id.
	s, _ := b.JetStream().Stream(ctx, pipeline.StreamResults)
	m, err := s.GetMsg(ctx, first.Sequence)
	if err != nil {
		t.Fatal(err)
	}
	if m.Header.Get("Lf-Job") != "job1" || m.Header.Get(jetstream.MsgIDHeader) != "job1/r1" || string(m.Data) != "r1" {
		t.Errorf("stored msg = %v %q", m.Header, m.Data)
	}
	// No stream for the subject: retried (as a stream without a leader)
	// until ctx ends, then an error.
	nctx, ncancel := context.WithTimeout(ctx, 300*time.Millisecond)
	defer ncancel()
	if _, err := b.Publish(nctx, "nowhere.at.all", []byte("x"), "", nil); !errors.Is(err, jetstream.ErrNoStreamResponse) {
		t.Errorf("publish to a subject without a stream = %v, want ErrNoStreamResponse", err)
	}
	// Too big for max msg size.
	if _, err := b.Publish(ctx, subj, make([]byte, pipeline.MaxMsgSize+1), "", nil); err == nil {
		t.Error("publish of more than MaxMsgSize succeeded")
	}
}

func TestPublisher(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	_, b := pipelinetest.StartBus(t)
	subj, _ := pipeline.DatasetRawSubject("ds")
	const window, n = 8, 500
	p := b.NewPublisher(window)
	maxPending := 0
	for i := range n {
		if err := p.Publish(ctx, subj, []byte(fmt.Sprintf(`{"i":%d}`, i)), fmt.Sprintf("ds/%d", i), nil); err != nil {
			t.Fatalf("publish %d: %v", i, err)
		}
		maxPending = max(maxPending, p.Pending())
	}
	// Duplicates are acked, not failures.
	for i := range 10 {
		if err := p.Publish(ctx, subj, []byte("dup"), fmt.Sprintf("ds/%d", i), nil); err != nil {
			t.Fatalf("publish duplicate %d: %v", i, err)
		}
	}
	if err := p.Flush(ctx); err != nil {
		t.Fatalf("Flush: %v", err)
	}
	if maxPending > window {
		t.Errorf("pending reached %d, window is %d", maxPending, window)
	}
	st := p.Stats()
	if st.Acked != n+10 || st.Duplicates != 10 || st.Failed != 0 || st.Pending != 0 {
		t.Errorf("stats = %+v", st)
	}
	if got := streamMsgs(t, b, pipeline.StreamDatasets); got != n {
		t.Errorf("stream holds %d msgs, want %d", got, n)
	}
	if err := p.Close(ctx); err != nil {
		t.Errorf("Close: %v", err)
	}
}

func TestPublisherReportsFailure(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	_, b := pipelinetest.StartBus(t)
	p := b.NewPublisher(4)
	// A message over the stream's max msg size is rejected by the stream.
	subj, _ := pipeline.DatasetRawSubject("ds")
	if err := p.Publish(ctx, subj, make([]byte, pipeline.MaxMsgSize-100), "big", nats.Header{"X-Pad": []string{strings.Repeat("x", 200)}}); err != nil {
		// an immediate failure is acceptable too
		if !errors.Is(err, pipeline.ErrPublisherFailed) {
			t.Fatalf("Publish error %v does not wrap ErrPublisherFailed", err)
		}
	}
	err := p.Flush(ctx)
	if !errors.Is(err, pipeline.ErrPublisherFailed) {
		t.Fatalf("Flush = %v, want ErrPublisherFailed", err)
	}
	if !strings.Contains(err.Error(), "big") {
		t.Errorf("error %q does not name the msg id", err)
	}
	// The Publisher stays failed.
	if err := p.Publish(ctx, subj, []byte("ok"), "small", nil); !errors.Is(err, pipeline.ErrPublisherFailed) {
		t.Errorf("Publish after a failure = %v, want ErrPublisherFailed", err)
	}
	if st := p.Stats(); st.Failed != 1 || st.Pending != 0 {
		t.Errorf("stats = %+v", st)
	}
}

func TestPublisherCancelledContext(t *testing.T) {
	_, b := pipelinetest.StartBus(t)
	p := b.NewPublisher(1)
	subj, _ := pipeline.DatasetRawSubject("ds")
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	if err := p.Publish(ctx, subj, []byte("x"), "", nil); !errors.Is(err, context.Canceled) {
		t.Errorf("Publish with a cancelled context = %v, want context.Canceled", err)
	}
	if st := p.Stats(); st.Pending != 0 || st.Acked != 0 {
		t.Errorf("stats = %+v, want nothing sent", st)
	}
}

func TestPublishDLQ(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	_, b := pipelinetest.StartBus(t)
	big := make([]byte, 900_000) // base64 makes it larger than max_payload
	for i := range big {
		big[i] = byte(i)
	}
	tests := []struct {
		name          string
		stage, token  string
		data          []byte
		wantTruncated bool
		wantErr       bool
	}{
		{name: "small", stage: "ingest", token: "ds1", data: []byte(`{"instruction":""}`)},
		{name: "big is cut to fit", stage: "ingest", token: "ds1", data: big, wantTruncated: true},
		{name: "bad stage", stage: "in.gest", token: "ds1", data: []byte("x"), wantErr: true},
		{name: "bad token", stage: "ingest", token: "", data: []byte("x"), wantErr: true},
	}
	for i, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			rec := pipeline.DLQRecord{Reason: "instruction is empty", Subject: "lf.data.ds1.raw", Data: tt.data,
				Headers: map[string][]string{jetstream.MsgIDHeader: {"ds1/abc"}}}
			err := b.PublishDLQ(ctx, tt.stage, tt.token, rec, fmt.Sprintf("dlq-%d", i))
			if (err != nil) != tt.wantErr {
				t.Fatalf("PublishDLQ = %v, wantErr %v", err, tt.wantErr)
			}
			if err != nil {
				return
			}
			s, _ := b.JetStream().Stream(ctx, pipeline.StreamDLQ)
			subj, _ := pipeline.DLQSubject(tt.stage, tt.token)
			m, err := s.GetLastMsgForSubject(ctx, subj)
			if err != nil {
				t.Fatal(err)
			}
			var got pipeline.DLQRecord
			if err := json.Unmarshal(m.Data, &got); err != nil {
				t.Fatal(err)
			}
			if got.Reason != rec.Reason || got.Stage != tt.stage || got.Time.IsZero() || got.DataSize != len(tt.data) || got.Truncated != tt.wantTruncated {
				t.Errorf("record = reason %q stage %q time %v size %d truncated %v", got.Reason, got.Stage, got.Time, got.DataSize, got.Truncated)
			}
			if !tt.wantTruncated && string(got.Data) != string(tt.data) {
				t.Errorf("data = %q, want %q", got.Data, tt.data)
			}
			if tt.wantTruncated && (len(got.Data) == 0 || string(got.Data) != string(tt.data[:len(got.Data)])) {
				t.Errorf("truncated data (%d bytes) is not a prefix of the original", len(got.Data))
			}
			if m.Header.Get(pipeline.DLQMsgIDHeader) != "ds1/abc" {
				t.Errorf("original msg id header = %q", m.Header.Get(pipeline.DLQMsgIDHeader))
			}
		})
	}
}

// A publish that gets no stream response is retried for WithRetryFor, then
// fails; a stream that appears meanwhile takes it.
func TestPublisherRetriesNoStreamResponse(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	_, b := pipelinetest.StartBus(t)

	const retryFor = 500 * time.Millisecond
	p := b.NewPublisher(4, pipeline.WithRetryFor(retryFor))
	start := time.Now()
	if err := p.Publish(ctx, "nostream.a", []byte("x"), "a/1", nil); err != nil {
		t.Fatal(err)
	}
	err := p.Flush(ctx)
	if !errors.Is(err, pipeline.ErrPublisherFailed) || !errors.Is(err, jetstream.ErrNoStreamResponse) {
		t.Fatalf("Flush = %v, want ErrPublisherFailed wrapping ErrNoStreamResponse", err)
	}
	if took := time.Since(start); took < retryFor {
		t.Errorf("failed for good after %v, before its %v of retries", took, retryFor)
	}
	if st := p.Stats(); st.Retried < 3 || st.Failed != 1 {
		t.Errorf("stats = %+v, want retries with backoff and 1 failure", st)
	}

	// Without a msg id a retry could store twice: no retry.
	p2 := b.NewPublisher(4)
	if err := p2.Publish(ctx, "nostream.b", []byte("x"), "", nil); err != nil && !errors.Is(err, pipeline.ErrPublisherFailed) {
		t.Fatal(err)
	}
	if err := p2.Flush(ctx); !errors.Is(err, pipeline.ErrPublisherFailed) {
		t.Fatalf("Flush = %v, want ErrPublisherFailed", err)
	}
	if st := p2.Stats(); st.Retried != 0 {
		t.Errorf("publish without msg id was retried: %+v", st)
	}

	p3 := b.NewPublisher(4)
	if err := p3.Publish(ctx, "late.c", []byte("x"), "c/1", nil); err != nil {
		t.Fatal(err)
	}
	if _, err := b.JetStream().CreateStream(ctx, jetstream.StreamConfig{Name: "LATE", Subjects: []string{"late.>"}}); err != nil {
		t.Fatal(err)
	}
	if err := p3.Flush(ctx); err != nil {
		t.Fatalf("Flush after the stream appeared: %v", err)
	}
	if st := p3.Stats(); st.Acked != 1 {
		t.Errorf("stats = %+v", st)
	}
}

// A stream that answers nothing for longer than the old five quick retries
// took (1.6s; Bus.Publish's two, 0.5s; a cluster electing a stream's new leader after a node died
// took 4 to 6s) still gets the publish, stored once under its msg id; a
// Publisher with no retry time fails at once.
func TestPublisherRetriesThroughLeaderElection(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	_, b := pipelinetest.StartBus(t)

	p := b.NewPublisher(4)
	for i := range 3 {
		if err := p.Publish(ctx, "leaderless.a", []byte("x"), fmt.Sprintf("a/%d", i), nil); err != nil {
			t.Fatal(err)
		}
	}
	// So does Bus.Publish.
	sync := make(chan error, 1)
	go func() {
		_, err := b.Publish(ctx, "leaderless.b", []byte("x"), "", nil)
		sync <- err
	}()
	// The stream answers once 3s have passed and the publishes were retried.
	pipelinetest.CheckFor(t, 10*time.Second, 10*time.Millisecond, func() error {
		if st := p.Stats(); st.Retried < 3 {
			return fmt.Errorf("stats %+v, want retries", st)
		}
		return nil
	})
	time.Sleep(3 * time.Second) // the outage's length is the point here, not a wait for a state
	if err := p.Err(); err != nil {
		t.Fatalf("the publisher gave up during a 3s outage: %v (stats %+v)", err, p.Stats())
	}
	if _, err := b.JetStream().CreateStream(ctx, jetstream.StreamConfig{Name: "LEADERLESS", Subjects: []string{"leaderless.>"}}); err != nil {
		t.Fatal(err)
	}
	if err := p.Flush(ctx); err != nil {
		t.Fatalf("Flush once the stream answers: %v (stats %+v)", err, p.Stats())
	}
	if st := p.Stats(); st.Acked != 3 || st.Failed != 0 {
		t.Errorf("stats = %+v, want 3 acked", st)
	}
	if err := <-sync; err != nil {
		t.Errorf("Bus.Publish during the outage: %v", err)
	}
	if got := streamMsgs(t, b, "LEADERLESS"); got != 4 {
		t.Errorf("stream holds %d msgs, want 4", got)
	}

	never := b.NewPublisher(4, pipeline.WithRetryFor(0))
	if err := never.Publish(ctx, "nostream.b", []byte("x"), "b/1", nil); err != nil && !errors.Is(err, pipeline.ErrPublisherFailed) {
		t.Fatal(err)
	}
	if err := never.Flush(ctx); !errors.Is(err, jetstream.ErrNoStreamResponse) {
		t.Fatalf("Flush = %v, want ErrNoStreamResponse at once", err)
	}
	if st := never.Stats(); st.Retried != 0 {
		t.Errorf("a publisher with no retry time retried: %+v", st)
	}
}
