package schemas

// Worker roles that keep a heartbeat in lf_workers: the first token of the
// key (HeartbeatKey).
const (
	WorkerInfer = "infer"
	WorkerTrain = "train"
)

// Heartbeat is the value of a worker's key in lf_workers, put every few
// seconds while the worker runs (the bucket's TTL drops a dead worker's). An
// infer worker names the models it serves and its capacity (concurrent
// requests: slots per model times models); a train worker the job it runs.
type Heartbeat struct {
	ID        string   `json:"id"`
	Role      string   `json:"role"` // WorkerInfer or WorkerTrain
	Models    []string `json:"models,omitempty"`
	Capacity  int      `json:"capacity,omitempty"`
	Job       string   `json:"job,omitempty"`
	PID       int      `json:"pid"`
	StartedAt int64    `json:"started_at"`
	UpdatedAt int64    `json:"updated_at"`
}

// HeartbeatKey is the lf_workers key of the worker id of a role:
// "<role>.<id>".
func HeartbeatKey(role, id string) string { return role + "." + id }
