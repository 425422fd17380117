package schemas

// RouteDecision is a routing decision (§3.5) and the stage that made it
// ("rules", "classifier" or "default"): the body of POST /v1/route.
type RouteDecision struct {
	RouteResponse
	Stage string `json:"stage"`
}

// RouteRecord is a routing decision as published to LF_ROUTES on
// lf.route.<job> ("interactive" for the gateway's): the request's id, the
// decision and when it was made (RFC 3339).
type RouteRecord struct {
	RequestID string `json:"request_id"`
	RouteDecision
	At string `json:"at"`
}
