package pipeline

import (
	"errors"
	"fmt"
	"testing"

	"github.com/nats-io/nats.go/jetstream"
)

// TestClusterForming: the answers of a cluster still forming are retried,
// anything else is not.
func TestClusterForming(t *testing.T) {
	for _, tc := range []struct {
		err  error
		want bool
	}{
		{&jetstream.APIError{Code: 400, ErrorCode: 10005, Description: "no suitable peers for placement, peer offline"}, true},
		{fmt.Errorf("create stream LF_DATASETS: %w", &jetstream.APIError{Code: 503, ErrorCode: 10008}), true},
		{&jetstream.APIError{Code: 503, ErrorCode: 10023, Description: "insufficient resources"}, true},
		{&jetstream.APIError{Code: 400, ErrorCode: jetstream.JSErrCodeStreamNameInUse}, false},
		{errors.New("permissions violation"), false},
		{nil, false},
	} {
		if got := ClusterForming(tc.err); got != tc.want {
			t.Errorf("ClusterForming(%v) = %v, want %v", tc.err, got, tc.want)
		}
	}
}
