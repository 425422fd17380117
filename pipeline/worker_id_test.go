package pipeline

import (
	"strings"
	"testing"
	"time"
)

func TestCheckWorkerDurations(t *testing.T) {
	tests := []struct {
		name      string
		heartbeat time.Duration
		named     map[string]time.Duration
		wantErr   string
	}{
		{name: "ok", heartbeat: 10 * time.Second, named: map[string]time.Duration{"ack wait": time.Minute}},
		{name: "zero means default", named: map[string]time.Duration{"ack wait": 0}},
		{name: "negative named", heartbeat: time.Second, named: map[string]time.Duration{"ack wait": -time.Second}, wantErr: "ack wait -1s is negative"},
		{name: "negative heartbeat", heartbeat: -time.Second, wantErr: "heartbeat -1s is negative"},
		{name: "heartbeat at the TTL", heartbeat: WorkerHeartbeatTTL, wantErr: "must be below the lf_workers TTL"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			err := CheckWorkerDurations(tt.heartbeat, tt.named)
			if tt.wantErr == "" {
				if err != nil {
					t.Fatalf("unexpected error: %v", err)
				}
				return
			}
			if err == nil || !strings.Contains(err.Error(), tt.wantErr) {
				t.Fatalf("error %v, want one containing %q", err, tt.wantErr)
			}
		})
	}
	if id := DefaultWorkerID(); !strings.Contains(id, "-") {
		t.Errorf("DefaultWorkerID() = %q, want host-pid", id)
	}
}
