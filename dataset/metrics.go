package dataset

import (
	"github.com/prometheus/client_golang/prometheus"

	"github.com/largeforge/largeforge/internal/promreg"
)

// Metrics are the ingestion counters, shared by the ingest producer, the raw-record
// consumer and the dataset sink. Each process registers them once on its registry.
type Metrics struct {
	Accepted   *prometheus.CounterVec // records that passed validation {dataset}
	Rejected   *prometheus.CounterVec // records that failed validation {dataset, rule}
	Duplicates *prometheus.CounterVec // records dropped as already persisted {dataset}
	Bytes      *prometheus.CounterVec // input bytes read {dataset}
	Shards     *prometheus.CounterVec // shards published {dataset}
	Rows       *prometheus.CounterVec // records persisted in parts {dataset}
	Parts      *prometheus.CounterVec // Parquet parts written {dataset}
}

// NewMetrics creates the counters and registers them on reg (nil: not
// registered); counters already on reg are shared.
func NewMetrics(reg prometheus.Registerer) (*Metrics, error) {
	m := &Metrics{
		Accepted:   prometheus.NewCounterVec(prometheus.CounterOpts{Name: "ingest_records_accepted_total", Help: "Records that passed validation."}, []string{"dataset"}),
		Rejected:   prometheus.NewCounterVec(prometheus.CounterOpts{Name: "ingest_records_rejected_total", Help: "Records rejected, by the rule they broke."}, []string{"dataset", "rule"}),
		Duplicates: prometheus.NewCounterVec(prometheus.CounterOpts{Name: "ingest_records_duplicate_total", Help: "Records dropped because the dataset already holds them."}, []string{"dataset"}),
		Bytes:      prometheus.NewCounterVec(prometheus.CounterOpts{Name: "ingest_bytes_total", Help: "Input bytes read."}, []string{"dataset"}),
		Shards:     prometheus.NewCounterVec(prometheus.CounterOpts{Name: "ingest_shards_published_total", Help: "Shards published to lf.data.<dataset>.shard."}, []string{"dataset"}),
		Rows:       prometheus.NewCounterVec(prometheus.CounterOpts{Name: "ingest_rows_persisted_total", Help: "Records written to Parquet parts."}, []string{"dataset"}),
		Parts:      prometheus.NewCounterVec(prometheus.CounterOpts{Name: "ingest_parts_written_total", Help: "Parquet parts written."}, []string{"dataset"}),
	}
	if reg == nil {
		return m, nil
	}
	for _, c := range []**prometheus.CounterVec{&m.Accepted, &m.Rejected, &m.Duplicates, &m.Bytes, &m.Shards, &m.Rows, &m.Parts} {
		var err error
		if *c, err = promreg.Register(reg, *c); err != nil {
			return nil, err
		}
	}
	return m, nil
}
