package pipeline_test

import (
	"encoding/json"
	"errors"
	"reflect"
	"testing"
	"time"

	"github.com/largeforge/largeforge/pipeline"
)

func TestDecodeDLQRecord(t *testing.T) {
	tests := []struct {
		name    string
		in      string
		wantErr bool
	}{
		{name: "full", in: `{"reason":"bad","stage":"infer","stream":"LF_REQUESTS","subject":"lf.req.j.m","sequence":3,"deliveries":1,"headers":{"A":["b"]},"data":"eyJ4Ijox","data_size":6,"time":"2026-01-02T03:04:05Z"}`},
		{name: "minimal", in: `{"reason":"bad","stage":"ingest","subject":"lf.data.d.raw","data":null,"data_size":0,"time":"2026-01-02T03:04:05Z"}`},
		{name: "truncated", in: `{"reason":"bad","stage":"ingest","subject":"s","data":"AAAA","data_size":99,"truncated":true,"time":"2026-01-02T03:04:05Z"}`},
		{name: "not json", in: `nope`, wantErr: true},
		{name: "unknown field", in: `{"reason":"bad","stage":"s","subject":"s","time":"2026-01-02T03:04:05Z","extra":1}`, wantErr: true},
		{name: "no reason", in: `{"stage":"s","subject":"s","time":"2026-01-02T03:04:05Z"}`, wantErr: true},
		{name: "no stage", in: `{"reason":"r","subject":"s","time":"2026-01-02T03:04:05Z"}`, wantErr: true},
		{name: "no subject", in: `{"reason":"r","stage":"s","time":"2026-01-02T03:04:05Z"}`, wantErr: true},
		{name: "no time", in: `{"reason":"r","stage":"s","subject":"s"}`, wantErr: true},
		{name: "bad base64", in: `{"reason":"r","stage":"s","subject":"s","data":"!!","time":"2026-01-02T03:04:05Z"}`, wantErr: true},
		{name: "size below data", in: `{"reason":"r","stage":"s","subject":"s","data":"AAAA","data_size":1,"time":"2026-01-02T03:04:05Z"}`, wantErr: true},
		{name: "trailing data", in: `{"reason":"r","stage":"s","subject":"s","time":"2026-01-02T03:04:05Z"} {}`, wantErr: true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			_, err := pipeline.DecodeDLQRecord([]byte(tt.in))
			if (err != nil) != tt.wantErr {
				t.Fatalf("DecodeDLQRecord() = %v, wantErr %v", err, tt.wantErr)
			}
			if err != nil && !errors.Is(err, pipeline.ErrBadDLQRecord) {
				t.Errorf("error %v does not wrap ErrBadDLQRecord", err)
			}
		})
	}
}

func FuzzDecodeDLQRecord(f *testing.F) {
	rec := pipeline.DLQRecord{Reason: "r", Stage: "infer", Subject: "lf.req.j.m", Data: []byte{0, 1, 2}, DataSize: 3,
		Headers: map[string][]string{"Nats-Msg-Id": {"j/1"}}, Time: time.Date(2026, 1, 2, 3, 4, 5, 0, time.UTC)}
	seed, _ := json.Marshal(rec)
	f.Add(seed)
	f.Add([]byte(`{"reason":"bad","stage":"ingest","subject":"s","data":"AAAA","data_size":99,"truncated":true,"time":"2026-01-02T03:04:05Z"}`))
	f.Add([]byte(`{}`))
	f.Add([]byte(`[`))
	f.Fuzz(func(t *testing.T, data []byte) {
		got, err := pipeline.DecodeDLQRecord(data)
		if err != nil {
			if !errors.Is(err, pipeline.ErrBadDLQRecord) {
				t.Fatalf("error %v does not wrap ErrBadDLQRecord", err)
			}
			return
		}
		again, err := json.Marshal(got)
		if err != nil {
			t.Fatalf("re-encode: %v", err)
		}
		back, err := pipeline.DecodeDLQRecord(again)
		if err != nil {
			t.Fatalf("decode of re-encoded record: %v", err)
		}
		if !reflect.DeepEqual(normalize(got), normalize(back)) {
			t.Fatalf("round trip changed the record:\n%+v\n%+v", got, back)
		}
	})
}

// normalize makes empty and nil equal, and compares times by instant.
func normalize(r pipeline.DLQRecord) pipeline.DLQRecord {
	if len(r.Data) == 0 {
		r.Data = nil
	}
	if len(r.Headers) == 0 {
		r.Headers = nil
	}
	r.Time = r.Time.UTC()
	return r
}
