package datasetsink

import "time"

// SetClaimLease sets the lease of the sink's part claims in lf_dedupe
// (before the sink first touches a dataset).
func SetClaimLease(s *Sink, d time.Duration) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.claimLease = d
}

// SetAfterPublish makes f run between each part's publication and its
// commit; an error from f is the sink dying there.
func SetAfterPublish(s *Sink, f func(part string) error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.afterPublish = f
}
