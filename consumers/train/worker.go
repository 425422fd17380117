package train

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"sync/atomic"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/rs/zerolog"

	"github.com/largeforge/largeforge/jobs"
	"github.com/largeforge/largeforge/logging"
	"github.com/largeforge/largeforge/model/train"
	"github.com/largeforge/largeforge/pipeline"
	"github.com/largeforge/largeforge/schemas"
	"github.com/largeforge/largeforge/storage"
)

// Worker defaults.
const (
	// Durable is the consumer every train worker shares.
	Durable = "train"
	// Stage names the DLQ subject of training jobs (lf.dlq.train.<job>).
	Stage               = "train"
	DefaultAckWait      = 30 * time.Second
	DefaultMaxDeliver   = 5
	DefaultProgressEach = time.Second
	// DefaultDrainTimeout is how long a job may go on training after the
	// worker is told to stop; then it stops and the job's message goes back
	// to the queue for another worker, which resumes from the newest
	// checkpoint.
	DefaultDrainTimeout   = 2 * time.Second
	DefaultHeartbeatEvery = 10 * time.Second
	// uploadTimeout bounds the storing of one checkpoint, or of the final
	// output and its push to lf_models.
	uploadTimeout = 30 * time.Minute
	// MaxConcurrentJobs bounds the training jobs running at once across all
	// the workers (the consumer's MaxAckPending); each worker runs one.
	MaxConcurrentJobs = 64
)

// Config configures a train worker.
type Config struct {
	// AckWait is how long a silent (dead) worker keeps its job before the
	// message is redelivered to another worker (default 30s); InProgress
	// is sent every AckWait/3 while a job trains.
	AckWait time.Duration
	// MaxDeliver is how many deliveries a job gets (default 5): each
	// worker that dies on it uses one.
	MaxDeliver int
	// ProgressEvery is the least time between progress writes to lf_jobs
	// (default 1s); the last step is always written.
	ProgressEvery  time.Duration
	DrainTimeout   time.Duration // default 2s
	HeartbeatEvery time.Duration // lf_workers heartbeat period (default 10s)
	WorkerID       string        // default <host>-<pid>
	Backend        string        // GoMLX backend ("": the trainer's default)
	MaxWait        time.Duration // fetch wait (default: the pipeline's)
	// DataDir is where ingested datasets live on this worker's machine (the
	// data directory of `up`, or worker's --data-dir): a job that names a
	// dataset without a data_dir of its own reads it from here.
	DataDir string
	// ModelCache is where a job's model_name that names a model of
	// lf_models is fetched (<cache>/<name>/<digest>); default
	// <DataDir>/models.
	ModelCache string
	// OutputRoot, when set, is where this worker keeps its local copy of
	// each job's output: <OutputRoot>/<job> instead of the job's
	// output_dir (a path of the submitter's machine). Either way the
	// checkpoints and the final output are stored in lf_artifacts, which
	// is what another worker resumes from. A relative root is the worker's
	// working directory's.
	OutputRoot string
}

// Validate checks the config; errors wrap ErrInvalidOption.
func (c Config) Validate() error {
	if c.MaxDeliver < 0 {
		return fmt.Errorf("%w: max deliver %d is negative", ErrInvalidOption, c.MaxDeliver)
	}
	if c.DataDir != "" && !filepath.IsAbs(c.DataDir) {
		return fmt.Errorf("%w: data dir %s is not an absolute path", ErrInvalidOption, c.DataDir)
	}
	if c.ModelCache != "" && !filepath.IsAbs(c.ModelCache) {
		return fmt.Errorf("%w: model cache %s is not an absolute path", ErrInvalidOption, c.ModelCache)
	}
	err := pipeline.CheckWorkerDurations(c.HeartbeatEvery, map[string]time.Duration{"ack wait": c.AckWait,
		"progress every": c.ProgressEvery, "drain timeout": c.DrainTimeout, "max wait": c.MaxWait})
	if err != nil {
		return fmt.Errorf("%w: %w", ErrInvalidOption, err)
	}
	return nil
}

func (c Config) withDefaults() Config {
	if c.AckWait == 0 {
		c.AckWait = DefaultAckWait
	}
	if c.MaxDeliver == 0 {
		c.MaxDeliver = DefaultMaxDeliver
	}
	if c.ProgressEvery == 0 {
		c.ProgressEvery = DefaultProgressEach
	}
	if c.DrainTimeout == 0 {
		c.DrainTimeout = DefaultDrainTimeout
	}
	if c.HeartbeatEvery == 0 {
		c.HeartbeatEvery = DefaultHeartbeatEvery
	}
	if c.WorkerID == "" {
		c.WorkerID = pipeline.DefaultWorkerID()
	}
	if c.ModelCache == "" && c.DataDir != "" {
		c.ModelCache = storage.DirsUnder(c.DataDir).Models
	}
	return c
}

// Worker is a running train worker.
type Worker struct {
	ID   string
	cfg  Config
	bus  *pipeline.Bus
	jobs *jobs.Store
	log  zerolog.Logger
	reg  prometheus.Registerer
	cons *pipeline.Consumer

	current atomic.Value // string: the job being trained, "" when idle

	// Group runs the consume loop, then the heartbeat stops; its Wait
	// returns the loop's error.
	*pipeline.Group
}

// Start starts a train worker: a consume loop of the durable consumer
// "train" on lf.train.> taking one job at a time, and a heartbeat in
// lf_workers (key train.<id>). It runs until ctx ends; then the job in hand
// is stopped (after DrainTimeout) and its message nakked, so another worker
// resumes it. reg, when not nil, gets the trainer's §5.1 gauges.
func Start(ctx context.Context, bus *pipeline.Bus, cfg Config, log zerolog.Logger, reg prometheus.Registerer) (*Worker, error) {
	if bus == nil {
		return nil, fmt.Errorf("%w: a train worker needs a bus", ErrInvalidOption)
	}
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	cfg = cfg.withDefaults()
	if cfg.OutputRoot != "" {
		abs, err := filepath.Abs(cfg.OutputRoot)
		if err != nil {
			return nil, fmt.Errorf("%w: output root %s: %w", ErrInvalidOption, cfg.OutputRoot, err)
		}
		cfg.OutputRoot = abs
	}
	store, err := jobs.Open(ctx, bus)
	if err != nil {
		return nil, err
	}
	hb, err := bus.KV(ctx, pipeline.BucketWorkers)
	if err != nil {
		return nil, err
	}
	w := &Worker{ID: cfg.WorkerID, cfg: cfg, bus: bus, jobs: store, reg: reg,
		log: logging.Named(log, "largeforge.train.worker").With().Str("worker_id", cfg.WorkerID).Logger()}
	w.current.Store("")
	filter, _ := pipeline.TrainFilter(pipeline.AnyToken)
	w.cons, err = pipeline.NewConsumer(ctx, bus, pipeline.ConsumerConfig{
		Stream: pipeline.StreamTrain, Durable: Durable, FilterSubjects: []string{filter}, Stage: Stage,
		Batch: 1, MaxAckPending: MaxConcurrentJobs, AckWait: cfg.AckWait, MaxDeliver: cfg.MaxDeliver,
		DrainTimeout: cfg.DrainTimeout, MaxWait: cfg.MaxWait, OnDeadLetter: w.deadLettered,
	}, pipeline.PerMessage(w.handle), logging.Named(log, "largeforge.consumer."+Durable))
	if err != nil {
		return nil, err
	}
	// The heartbeat goes on while the job in hand drains.
	beats := pipeline.NewGroup(context.WithoutCancel(ctx))
	beat := schemas.Heartbeat{ID: w.ID, Role: schemas.WorkerTrain, PID: os.Getpid(), StartedAt: time.Now().Unix()}
	beats.Go(func(ctx context.Context) error {
		hb.Heartbeat(ctx, HeartbeatKey(w.ID), cfg.HeartbeatEvery, func() []byte {
			beat.UpdatedAt = time.Now().Unix()
			beat.Job, _ = w.current.Load().(string)
			data, _ := json.Marshal(beat)
			return data
		}, w.log)
		return nil
	})
	w.Group = pipeline.NewGroup(ctx)
	w.Go(func(ctx context.Context) error {
		err := w.cons.Run(ctx)
		beats.Stop()
		_ = beats.Wait()
		return err
	})
	return w, nil
}

// HeartbeatKey is a train worker's key in lf_workers (its value a
// schemas.Heartbeat).
func HeartbeatKey(id string) string { return schemas.HeartbeatKey(schemas.WorkerTrain, id) }

// handle runs one training job. Outcomes: nil (ack) when the job completed,
// was cancelled or had already ended; Invalid (DLQ) when its message or
// training fails for good (the job is marked failed); a plain error (nak,
// redelivery) when the worker is stopping mid-job.
func (w *Worker) handle(ctx context.Context, msg pipeline.Msg) error {
	m, err := schemas.DecodeTrainJob(msg.Data)
	if err != nil {
		if id := pipeline.ThirdToken(msg.Subject); id != "unknown" {
			w.failJob(ctx, id, "invalid_config", err)
		}
		return pipeline.Invalid("bad training job message", err)
	}
	log := w.log.With().Str("request_id", m.Job).Logger()
	j, err := w.jobs.Get(ctx, m.Job)
	if errors.Is(err, jobs.ErrNotFound) {
		return pipeline.Invalid("no job record", err)
	}
	if err != nil {
		return err
	}
	switch {
	case j.Status.Terminal():
		log.Info().Str("status", string(j.Status)).Msg("job already ended; dropped")
		return nil
	case j.Status == jobs.StatusCancelling:
		_, err := w.jobs.Transition(ctx, m.Job, jobs.StatusCancelled, nil)
		return err
	}
	attempt := int(msg.Deliveries)
	rc := m.Run
	var objects *storage.Objects
	var parts *storage.Parts
	if rc.Dataset != "" && rc.DataDir == "" {
		// The dataset's parts are read from lf_artifacts, on any machine; a
		// dataset stored only in the worker's data dir (before the parts
		// went to the bus) is read there.
		if objects, parts, err = w.datasetParts(ctx, rc.Dataset); err != nil {
			return err // the bus failed: the job is redelivered
		}
		if objects == nil {
			if w.cfg.DataDir == "" {
				err := fmt.Errorf("%w: dataset %s: no parts in %s, and the job has no data_dir and worker %s no data dir", ErrInvalidOption, rc.Dataset, pipeline.BucketArtifacts, w.ID)
				w.failJob(ctx, m.Job, "invalid_config", err)
				return pipeline.Invalid("no dataset", err)
			}
			rc.DataDir = w.cfg.DataDir
		}
	}
	if rc, err = w.fetchModel(ctx, rc, log); err != nil {
		if ctx.Err() != nil || !errors.Is(err, schemas.ErrInvalidModelPath) {
			return err // stopping, or the bus failed: the job is redelivered
		}
		w.failJob(ctx, m.Job, "invalid_config", err)
		return pipeline.Invalid("model", err)
	}
	var records train.RecordReader
	if objects != nil {
		records, err = RecordsFrom(rc, objects, parts)
	} else {
		records, err = Records(rc)
	}
	if err != nil {
		w.failJob(ctx, m.Job, "invalid_config", err)
		return pipeline.Invalid("records", err)
	}
	evalRecords, busErr, err := w.evalRecords(ctx, rc)
	if busErr {
		return err // the bus failed: the job is redelivered
	} else if err != nil {
		w.failJob(ctx, m.Job, "invalid_config", err)
		return pipeline.Invalid("eval records", err)
	}
	if w.cfg.OutputRoot != "" {
		rc.Training.OutputDir = filepath.Join(w.cfg.OutputRoot, m.Job)
	}
	art, err := w.artifacts(ctx, m.Job)
	if err != nil {
		return err // the bus failed: the job is redelivered
	}
	// A checkpoint stored by a worker elsewhere, newer than any here, is
	// fetched into output_dir: the trainer resumes from it as from its own.
	if fetched, err := art.restore(ctx, rc.Training.OutputDir); err != nil {
		return fmt.Errorf("job %s: restore a stored checkpoint: %w", m.Job, err)
	} else if fetched != "" {
		log.Info().Str("checkpoint", fetched).Msg("stored checkpoint fetched")
	}
	resumed := ""
	if cks, err := train.CompleteCheckpoints(rc.Training.OutputDir); err == nil && len(cks) > 0 {
		resumed = cks[len(cks)-1]
	}
	if _, err := w.jobs.Update(ctx, m.Job, func(jj *jobs.Job) error {
		if jj.Status == jobs.StatusValidating {
			if err := jj.SetStatus(jobs.StatusInProgress, time.Now()); err != nil {
				return err
			}
		}
		p := jobs.TrainingProgress{OutputDir: rc.Training.OutputDir}
		if jj.Training != nil {
			p = *jj.Training
		}
		p.OutputDir, p.Artifacts = rc.Training.OutputDir, JobArtifacts(m.Job)
		p.Worker, p.Attempt, p.ResumedFrom, p.UpdatedAt = w.ID, attempt, resumed, time.Now().Unix()
		jj.Training = &p
		return nil
	}); err != nil {
		return err
	}
	w.current.Store(m.Job)
	defer w.current.Store("")
	log.Info().Dict("context", logging.Ctx().Str("output_dir", rc.Training.OutputDir).Int("attempt", attempt).
		Str("resumed_from", resumed)).Msg("training job started")

	tctx, stop := context.WithCancel(ctx)
	defer stop()
	var cancelled atomic.Bool
	watchDone := make(chan struct{})
	go func() { // a cancel in lf_jobs stops the trainer before its next step
		defer close(watchDone)
		_, _ = w.jobs.Watch(tctx, m.Job, func(j jobs.Job) bool {
			if j.Status == jobs.StatusCancelling || j.Status.Terminal() {
				cancelled.Store(true)
				stop()
				return false
			}
			return true
		})
	}()
	pw := newProgressWriter(w.jobs, m.Job, w.cfg.ProgressEvery, log)
	events, err := newEventPublisher(w.bus, m.Job, attempt, log)
	if err != nil {
		return pipeline.Invalid("job id", err)
	}
	// A checkpoint is stored whole even when the job is stopped meanwhile:
	// the trainer checks its ctx before the next step.
	upload := func(dir string, step int) error {
		uctx, cancel := context.WithTimeout(context.WithoutCancel(tctx), uploadTimeout)
		defer cancel()
		if err := art.storeCheckpoint(uctx, dir, step); err != nil {
			return err
		}
		if err := w.pushCheckpoint(uctx, art, rc, dir, step, log); err != nil {
			return err
		}
		log.Info().Str("checkpoint", dir).Str("stored", JobArtifacts(m.Job)+checkpointName(step)).Msg("checkpoint stored")
		return nil
	}
	opts := []train.Option{train.WithRecords(records), train.WithCheckpoint(upload), train.WithRunName(m.Job),
		train.WithProgress(func(p train.Progress) { pw.report(p); events.report(p) })}
	if evalRecords != nil {
		opts = append(opts, train.WithEvalRecords(evalRecords))
	}
	if w.cfg.Backend != "" {
		opts = append(opts, train.WithBackend(w.cfg.Backend))
	}
	if w.reg != nil {
		opts = append(opts, train.WithRegisterer(w.reg))
	}
	res, terr := runTraining(tctx, rc, logging.Named(log, "largeforge.train"), opts...)
	dropRunGauges(w.reg)
	stop()
	<-watchDone
	last := pw.close()
	events.close()

	var pub published
	if terr == nil && !cancelled.Load() {
		// The final output goes to lf_artifacts and lf_models before the
		// job completes; on failure the job goes back to the queue (the
		// next worker resumes from the last checkpoint and saves it again).
		uctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), uploadTimeout)
		defer cancel()
		if pub, terr = w.publishFinal(uctx, art, rc, res.GlobalStep); terr == nil {
			log.Info().Dict("context", logging.Ctx().Str("fine_tuned_model", pub.model).Str("digest", pub.digest).
				Str("fine_tuned_adapter", pub.adapter)).Msg("trained model pushed")
		}
	}
	// The job's outcome is written with a ctx of its own: the handler's may
	// be ending.
	octx, cancel := context.WithTimeout(context.WithoutCancel(ctx), 30*time.Second)
	defer cancel()
	switch {
	case terr == nil:
		_, err := w.jobs.Update(octx, m.Job, func(jj *jobs.Job) error {
			setProgress(jj, last, rc.Training.OutputDir)
			jj.Training.ETASeconds = 0
			if pub.model != "" {
				jj.Training.FineTunedModel, jj.Training.FineTunedDigest = pub.model, pub.digest
				jj.Training.FineTunedAdapter = pub.adapter
			}
			if jj.Status == jobs.StatusCancelling { // cancelled after the last step
				return jj.SetStatus(jobs.StatusCancelled, time.Now())
			}
			if jj.Status.Terminal() {
				return jobs.ErrSkip
			}
			if err := jj.SetStatus(jobs.StatusFinalizing, time.Now()); err != nil {
				return err
			}
			return jj.SetStatus(jobs.StatusCompleted, time.Now())
		})
		if err != nil {
			return err
		}
		log.Info().Dict("context", logging.Ctx().Int("global_step", res.GlobalStep).Float64("train_loss", res.TrainLoss).
			Str("output_dir", rc.Training.OutputDir)).Msg("training job completed")
		return nil
	case cancelled.Load() && errors.Is(terr, context.Canceled):
		_, err := w.jobs.Update(octx, m.Job, func(jj *jobs.Job) error {
			setProgress(jj, last, rc.Training.OutputDir)
			jj.Training.ETASeconds = 0
			if jj.Status.Terminal() {
				return jobs.ErrSkip
			}
			return jj.SetStatus(jobs.StatusCancelled, time.Now())
		})
		if err != nil {
			return err
		}
		log.Info().Int("step", last.Step).Msg("training job cancelled")
		return nil
	case ctx.Err() != nil || errors.Is(terr, errUpload):
		// The worker is stopping, or the bus would not take the artifacts: the message goes back to the queue and
		// another worker resumes from the newest checkpoint.
		if ctx.Err() == nil {
			log.Warn().Err(terr).Int("step", last.Step).Msg("artifacts not stored; the job goes back to the queue")
			return fmt.Errorf("job %s: step %d: %w", m.Job, last.Step, terr)
		}
		log.Warn().Int("step", last.Step).Msg("worker stopping mid-job; the job goes back to the queue")
		return fmt.Errorf("job %s: worker stopped at step %d: %w", m.Job, last.Step, ctx.Err())
	default:
		w.failJob(octx, m.Job, "training_failed", terr)
		return pipeline.Invalid("training failed", terr)
	}
}

// runTraining is train.Run with a GoMLX panic turned into an error.
func runTraining(ctx context.Context, rc train.RunConfig, log zerolog.Logger, opts ...train.Option) (res train.Result, err error) {
	defer func() {
		if r := recover(); r != nil {
			err = fmt.Errorf("training panicked: %v", r)
		}
	}()
	if err := os.MkdirAll(filepath.Dir(rc.Training.OutputDir), 0o755); err != nil {
		return res, err
	}
	return train.Run(ctx, rc, log, opts...)
}

// failJob ends a job failed with a report, unless it has ended already.
func (w *Worker) failJob(ctx context.Context, id, code string, cause error) {
	failed := false
	_, err := w.jobs.Update(ctx, id, func(jj *jobs.Job) error {
		failed = false
		if jj.Status.Terminal() {
			return jobs.ErrSkip
		}
		jj.AddError(jobs.ErrorReport{Code: code, Message: cause.Error()})
		failed = true
		return jj.SetStatus(jobs.StatusFailed, time.Now())
	})
	if err != nil && !errors.Is(err, jobs.ErrNotFound) {
		w.log.Warn().Err(err).Str("request_id", id).Msg("mark job failed")
	}
	if failed && err == nil {
		w.log.Error().Err(cause).Str("request_id", id).Str("code", code).Msg("training job failed")
	}
}

// deadLettered is the consumer's OnDeadLetter: a training job whose message
// went to the DLQ (out of deliveries, its last worker dead or stopped, or a
// poison message) ends failed with the reason, never stuck in_progress. A job
// the handler ended already keeps its outcome.
func (w *Worker) deadLettered(ctx context.Context, rec pipeline.DLQRecord) {
	id := pipeline.ThirdToken(rec.Subject)
	if id == "unknown" {
		return
	}
	msg := rec.Reason
	if rec.Error != "" {
		msg = rec.Error
	}
	w.failJob(ctx, id, schemas.CodeDeadLetter, fmt.Errorf("%s (after %d deliveries)", msg, rec.Deliveries))
}

// setProgress copies the last progress (when there was a step) into the
// record.
func setProgress(jj *jobs.Job, p train.Progress, outputDir string) {
	if jj.Training == nil {
		jj.Training = &jobs.TrainingProgress{OutputDir: outputDir}
	}
	if p.Step > 0 {
		applyProgress(jj.Training, p)
	}
	jj.Training.UpdatedAt = time.Now().Unix()
}

func applyProgress(tp *jobs.TrainingProgress, p train.Progress) {
	tp.Step, tp.MaxSteps, tp.Loss, tp.LearningRate, tp.Epoch = p.Step, p.MaxSteps, p.Loss, p.LearningRate, p.Epoch
	tp.GradNorm, tp.SamplesPerSecond = p.GradNorm, p.SamplesPerSecond
	tp.ETASeconds = p.ETA.Seconds()
}

// datasetParts is DatasetParts on the worker's bus.
func (w *Worker) datasetParts(ctx context.Context, name string) (*storage.Objects, *storage.Parts, error) {
	return DatasetParts(ctx, w.bus, name, w.log)
}
