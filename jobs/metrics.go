package jobs

import (
	"context"
	"fmt"
	"sync"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/rs/zerolog"
)

// Job metric names (beside the data dictionary's §5).
const (
	// MetricJobs is the jobs of lf_jobs per status.
	MetricJobs = "largeforge_jobs"
	// MetricJobAge is, per unfinished status (validating, in_progress,
	// finalizing, cancelling), the seconds since the oldest job in it
	// entered it; 0 when none is.
	MetricJobAge = "largeforge_job_age_seconds"
)

// MetricNames are the names an AgeCollector exports.
var MetricNames = []string{MetricJobs, MetricJobAge}

var allStatuses = []Status{StatusValidating, StatusInProgress, StatusFinalizing, StatusCompleted,
	StatusFailed, StatusCancelling, StatusCancelled, StatusExpired}

// AgeCollector is a prometheus.Collector of the jobs per status and the age
// of the oldest unfinished one, read from lf_jobs at a scrape; a listing is
// reused for a scrape within Every of it (each reads every job record).
type AgeCollector struct {
	store *Store
	log   zerolog.Logger
	now   func() time.Time
	// Every is how long one listing serves scrapes (default 10s).
	Every time.Duration

	mu      sync.Mutex
	listed  time.Time
	counts  map[Status]int
	entered map[Status]int64 // oldest time a job entered the status (unix s)

	jobs, age *prometheus.Desc
}

// NewAgeCollector returns the collector over store; now is the clock (nil:
// time.Now).
func NewAgeCollector(store *Store, now func() time.Time, log zerolog.Logger) (*AgeCollector, error) {
	if store == nil {
		return nil, fmt.Errorf("%w: job metrics: no store", ErrInvalidOption)
	}
	if now == nil {
		now = time.Now
	}
	return &AgeCollector{store: store, log: log, now: now, Every: 10 * time.Second,
		jobs: prometheus.NewDesc(MetricJobs, "Jobs in lf_jobs per status.", []string{"status"}, nil),
		age:  prometheus.NewDesc(MetricJobAge, "Seconds since the oldest job of an unfinished status entered it (0: none).", []string{"status"}, nil),
	}, nil
}

// Describe implements prometheus.Collector.
func (c *AgeCollector) Describe(ch chan<- *prometheus.Desc) { ch <- c.jobs; ch <- c.age }

// Collect implements prometheus.Collector. A listing that fails leaves the
// metrics out of that scrape (logged at debug).
func (c *AgeCollector) Collect(ch chan<- prometheus.Metric) {
	c.mu.Lock()
	defer c.mu.Unlock()
	now := c.now()
	if c.counts == nil || now.Sub(c.listed) >= c.Every {
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		list, err := c.store.List(ctx)
		if err != nil {
			c.log.Debug().Err(err).Msg("job metrics left out of this scrape")
			return
		}
		c.counts, c.entered, c.listed = map[Status]int{}, map[Status]int64{}, now
		for _, j := range list {
			c.counts[j.Status]++
			if j.Status.Terminal() {
				continue
			}
			at := j.enteredAt()
			if old, ok := c.entered[j.Status]; !ok || at < old {
				c.entered[j.Status] = at
			}
		}
	}
	for _, s := range allStatuses {
		ch <- prometheus.MustNewConstMetric(c.jobs, prometheus.GaugeValue, float64(c.counts[s]), string(s))
		if s.Terminal() {
			continue
		}
		age := 0.0
		if at, ok := c.entered[s]; ok {
			age = max(0, float64(now.Unix()-at))
		}
		ch <- prometheus.MustNewConstMetric(c.age, prometheus.GaugeValue, age, string(s))
	}
}

// enteredAt is when j entered its status (unix s): the status's timestamp,
// else its creation.
func (j Job) enteredAt() int64 {
	at := map[Status]int64{StatusInProgress: j.InProgressAt, StatusFinalizing: j.FinalizingAt, StatusCancelling: j.CancellingAt}[j.Status]
	if at == 0 {
		return j.CreatedAt
	}
	return at
}
