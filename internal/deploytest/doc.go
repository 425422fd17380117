// Package deploytest checks what deploy/ ships against the code: the
// Kubernetes manifests decoded strictly against k8s.io/api, the Prometheus
// rules parsed and unit-tested, the Grafana dashboard's metrics, and the
// topology's limits dropping nothing a job still needs. It has no code of
// its own beside its tests.
package deploytest
