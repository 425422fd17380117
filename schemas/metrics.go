package schemas

// TrainingMetrics is one training log step (§5.1).
type TrainingMetrics struct {
	Loss                  float64 `json:"loss"`
	LearningRate          float64 `json:"learning_rate"`
	Epoch                 float64 `json:"epoch"`
	GlobalStep            int64   `json:"global_step"`
	GradNorm              float64 `json:"grad_norm"`
	TrainSamplesPerSecond float64 `json:"train_samples_per_second"`
}

// EvalMetrics is one evaluation result (§5.2).
type EvalMetrics struct {
	EvalLoss   float64 `json:"eval_loss"`
	Perplexity float64 `json:"perplexity"`
	Accuracy   float64 `json:"accuracy"`
}

// Prometheus metric names of §5.3 (inference) and §5.4 (router), with their
// label names. Types: counters end in _total, latencies are histograms, the
// rest are gauges.
const (
	MetricInferenceRequestsTotal  = "inference_requests_total"  // counter; labels model, status
	MetricInferenceLatencySeconds = "inference_latency_seconds" // histogram; label model
	MetricTokensGeneratedTotal    = "tokens_generated_total"    // counter; label model
	MetricTokensPerSecond         = "tokens_per_second"         // gauge; label model
	MetricGPUMemoryUsedBytes      = "gpu_memory_used_bytes"     // gauge; label device
	MetricActiveRequests          = "active_requests"           // gauge; label model

	MetricRoutingDecisionsTotal = "routing_decisions_total" // counter; label expert
	MetricRoutingLatencySeconds = "routing_latency_seconds" // histogram; label classifier
	MetricExpertAvailability    = "expert_availability"     // gauge; label expert
)

// Metric label names (§5.3, §5.4).
const (
	LabelModel      = "model"
	LabelStatus     = "status"
	LabelDevice     = "device"
	LabelExpert     = "expert"
	LabelClassifier = "classifier"
)

// MetricLabels gives each §5.3/§5.4 metric's label names, in the
// dictionary's order.
var MetricLabels = map[string][]string{
	MetricInferenceRequestsTotal:  {LabelModel, LabelStatus},
	MetricInferenceLatencySeconds: {LabelModel},
	MetricTokensGeneratedTotal:    {LabelModel},
	MetricTokensPerSecond:         {LabelModel},
	MetricGPUMemoryUsedBytes:      {LabelDevice},
	MetricActiveRequests:          {LabelModel},
	MetricRoutingDecisionsTotal:   {LabelExpert},
	MetricRoutingLatencySeconds:   {LabelClassifier},
	MetricExpertAvailability:      {LabelExpert},
}
