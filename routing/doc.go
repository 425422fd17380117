// Package routing decides which expert model takes a request: the §2.3
// experts (from a file and the lf_experts bucket, merged by name), the
// liveness of their workers (heartbeats in lf_workers), and a Router that
// decides in stages, keyword and domain rules first, then the learned
// classifier (package routing/classifier) for what no rule decides. The
// gateway (interactive requests) and submit (batch rows) both route through
// it; its decisions are schemas.RouteDecision values, published by them to
// LF_ROUTES as schemas.RouteRecord.
package routing
