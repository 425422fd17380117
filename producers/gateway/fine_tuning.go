package gateway

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"net/http"
	"sort"
	"strconv"
	"time"

	"github.com/rs/zerolog"

	"github.com/largeforge/largeforge/jobs"
	"github.com/largeforge/largeforge/pipeline"
	"github.com/largeforge/largeforge/schemas"
	"github.com/largeforge/largeforge/storage"
)

// The Fine-tuning API over the bus training jobs (kind training in lf_jobs,
// run by `worker --role train`):
//
//	POST /v1/fine_tuning/jobs                  a job from a fine-tune file (fine_tuning_create.go)
//	GET  /v1/fine_tuning/jobs                  list, newest first (after, limit)
//	GET  /v1/fine_tuning/jobs/{id}             the fine_tuning.job
//	POST /v1/fine_tuning/jobs/{id}/cancel      jobs.Cancel: cancelling, then cancelled
//	GET  /v1/fine_tuning/jobs/{id}/events      the job's LF_EVENTS (lf.events.train.<id>), newest first
//	GET  /v1/fine_tuning/jobs/{id}/checkpoints its stored checkpoints (lf_artifacts train/<id>/checkpoint-<step>.json);
//	                                           fine_tuned_model_checkpoint is the lf_models name each is pushed under
//
// Statuses: validating → "queued" (submitted, no worker yet); in_progress,
// finalizing and cancelling → "running" (a cancelled job stops before its
// next step); completed → "succeeded"; failed and expired → "failed";
// cancelled → "cancelled". fine_tuned_model is the name the trained model
// is pushed under in lf_models (the job id), set once it is there.

// FineTuningJob is OpenAI's fine_tuning.job.
type FineTuningJob struct {
	ID             string   `json:"id"`
	Object         string   `json:"object"`
	CreatedAt      int64    `json:"created_at"`
	FinishedAt     *int64   `json:"finished_at"`
	Model          string   `json:"model"`
	FineTunedModel *string  `json:"fine_tuned_model"`
	OrganizationID string   `json:"organization_id"`
	Status         string   `json:"status"`
	TrainingFile   string   `json:"training_file"`
	ValidationFile *string  `json:"validation_file"`
	ResultFiles    []string `json:"result_files"`
	TrainedTokens  *int64   `json:"trained_tokens"`
	// Hyperparameters are the method's, as the job runs them ("auto"
	// resolved), beta included for dpo; {} for a job the CLI submitted.
	Hyperparameters any               `json:"hyperparameters"`
	Method          *FineTuningMethod `json:"method,omitempty"`
	Error           *FineTuningError  `json:"error"`
	Seed            int64             `json:"seed"`
	EstimatedFinish *int64            `json:"estimated_finish"`
	// Integrations is null: the gateway has none (a job asking for one is
	// refused).
	Integrations []any `json:"integrations"`
	// Metadata is the job's, null when it has none (as OpenAI's).
	Metadata map[string]string `json:"metadata"`
}

// FineTuningMethod is the job's method as OpenAI echoes it: its type and,
// under supervised or dpo, the hyperparameters it runs with.
type FineTuningMethod struct {
	Type       string                    `json:"type"`
	Supervised *FineTuningMethodSettings `json:"supervised,omitempty"`
	DPO        *FineTuningMethodSettings `json:"dpo,omitempty"`
}

// FineTuningMethodSettings holds a method's hyperparameters.
type FineTuningMethodSettings struct {
	Hyperparameters *FineTuningHyperparameters `json:"hyperparameters"`
}

// FineTuningHyperparameters are resolved hyperparameters: batch_size per
// device (no accumulation), learning_rate_multiplier times the §2.1
// default learning rate, beta (dpo only).
type FineTuningHyperparameters struct {
	NEpochs                int      `json:"n_epochs"`
	BatchSize              int      `json:"batch_size"`
	LearningRateMultiplier float64  `json:"learning_rate_multiplier"`
	Beta                   *float64 `json:"beta,omitempty"`
}

// FineTuningError is a failed job's error.
type FineTuningError struct {
	Code    string  `json:"code"`
	Message string  `json:"message"`
	Param   *string `json:"param"`
}

// FineTuningStatus maps a job status to OpenAI's.
func FineTuningStatus(s jobs.Status) string {
	switch s {
	case jobs.StatusValidating:
		return "queued"
	case jobs.StatusInProgress, jobs.StatusFinalizing, jobs.StatusCancelling:
		return "running"
	case jobs.StatusCompleted:
		return "succeeded"
	case jobs.StatusCancelled:
		return "cancelled"
	}
	return "failed"
}

// FineTuningJobOf is the fine_tuning.job of a training job record and,
// for a job created over HTTP, what its request added (rec).
func FineTuningJobOf(j jobs.Job, rec *fineTuningRecord) FineTuningJob {
	ft := FineTuningJob{ID: j.ID, Object: jobs.ObjectFineTuningJob, CreatedAt: j.CreatedAt, Model: j.Model,
		Status: FineTuningStatus(j.Status), TrainingFile: j.InputFile, ResultFiles: []string{}, Hyperparameters: map[string]any{}}
	if rec != nil {
		ft.Method, ft.Seed, ft.Metadata = rec.Method, rec.Seed, rec.Metadata
		if rec.ValidationFile != "" {
			v := rec.ValidationFile
			ft.ValidationFile = &v
		}
		if m := rec.Method; m != nil && m.Supervised != nil {
			ft.Hyperparameters = m.Supervised.Hyperparameters
		} else if m != nil && m.DPO != nil {
			ft.Hyperparameters = m.DPO.Hyperparameters
		}
	}
	for _, at := range []int64{j.CompletedAt, j.FailedAt, j.CancelledAt, j.ExpiredAt} {
		if at != 0 {
			ft.FinishedAt = &at
			break
		}
	}
	if t := j.Training; t != nil {
		if t.FineTunedModel != "" && j.Status == jobs.StatusCompleted {
			name := t.FineTunedModel
			ft.FineTunedModel = &name
		}
		if t.ETASeconds > 0 && t.UpdatedAt > 0 {
			eta := t.UpdatedAt/1000 + int64(t.ETASeconds)
			ft.EstimatedFinish = &eta
		}
	}
	if ft.Status == "failed" && len(j.Errors) > 0 {
		e := j.Errors[len(j.Errors)-1]
		ft.Error = &FineTuningError{Code: e.Code, Message: e.Message}
	}
	return ft
}

// FineTuningEvent is OpenAI's fine_tuning.job.event.
type FineTuningEvent struct {
	ID        string             `json:"id"`
	Object    string             `json:"object"`
	CreatedAt int64              `json:"created_at"`
	Level     string             `json:"level"`
	Message   string             `json:"message"`
	Type      string             `json:"type"`
	Data      schemas.TrainEvent `json:"data"`
}

// FineTuningCheckpoint is OpenAI's fine_tuning.job.checkpoint.
type FineTuningCheckpoint struct {
	ID                       string         `json:"id"`
	Object                   string         `json:"object"`
	CreatedAt                int64          `json:"created_at"`
	FineTunedModelCheckpoint string         `json:"fine_tuned_model_checkpoint"`
	FineTuningJobID          string         `json:"fine_tuning_job_id"`
	StepNumber               int            `json:"step_number"`
	Metrics                  map[string]any `json:"metrics"`
}

// MaxFineTuningEvents bounds the events one GET .../events reads.
const MaxFineTuningEvents = 1000

type fineTuning struct {
	g     *Gateway
	jobs  *jobs.Store
	obj   *pipeline.Objects // lf_artifacts
	files *files            // the Files API's store (training files)
}

// registerFineTuning adds the Fine-tuning routes.
func (g *Gateway) registerFineTuning(ctx context.Context) error {
	store, err := jobs.Open(ctx, g.bus)
	if err != nil {
		return err
	}
	obj, err := g.bus.Objects(ctx, pipeline.BucketArtifacts)
	if err != nil {
		return err
	}
	ft := &fineTuning{g: g, jobs: store, obj: obj, files: &files{g: g, obj: obj, jobs: store}}
	g.handle("POST /v1/fine_tuning/jobs", "/v1/fine_tuning/jobs", ft.create)
	g.handle("GET /v1/fine_tuning/jobs", "/v1/fine_tuning/jobs", ft.list)
	g.handle("GET /v1/fine_tuning/jobs/{id}", "/v1/fine_tuning/jobs/{id}", ft.get)
	g.handle("POST /v1/fine_tuning/jobs/{id}/cancel", "/v1/fine_tuning/jobs/{id}/cancel", ft.cancel)
	g.handle("GET /v1/fine_tuning/jobs/{id}/events", "/v1/fine_tuning/jobs/{id}/events", ft.events)
	g.handle("GET /v1/fine_tuning/jobs/{id}/checkpoints", "/v1/fine_tuning/jobs/{id}/checkpoints", ft.checkpoints)
	return nil
}

// job reads the training job of the path's id, or answers 404.
func (ft *fineTuning) job(w http.ResponseWriter, r *http.Request) (jobs.Job, bool) {
	id := r.PathValue("id")
	j, err := ft.jobs.Get(r.Context(), id)
	switch {
	case errors.Is(err, jobs.ErrNotFound) || errors.Is(err, jobs.ErrInvalidOption) || (err == nil && j.Kind != jobs.KindTraining):
		errNoSuch(w, "fine-tuning job", id)
		return j, false
	case err != nil:
		errServer(w, err)
		return j, false
	}
	return j, true
}

func (ft *fineTuning) get(w http.ResponseWriter, r *http.Request, _ zerolog.Logger) {
	if j, ok := ft.job(w, r); ok {
		ft.writeJob(w, r, j)
	}
}

func (ft *fineTuning) list(w http.ResponseWriter, r *http.Request, _ zerolog.Logger) {
	limit, ok := listLimit(w, r.URL.Query().Get("limit"), 20)
	if !ok {
		return
	}
	all, err := ft.jobs.List(r.Context())
	if err != nil {
		errServer(w, err)
		return
	}
	var training []jobs.Job
	for _, j := range all {
		if j.Kind == jobs.KindTraining {
			training = append(training, j)
		}
	}
	sort.SliceStable(training, func(a, b int) bool { return training[a].CreatedAt > training[b].CreatedAt })
	p := page(training, r.URL.Query().Get("after"), limit, func(j jobs.Job) string { return j.ID })
	res := listPage[FineTuningJob]{Object: p.Object, FirstID: p.FirstID, LastID: p.LastID, HasMore: p.HasMore, Data: make([]FineTuningJob, 0, len(p.Data))}
	for _, j := range p.Data { // only the page's records are read
		fj, err := ft.jobOf(r.Context(), j)
		if err != nil {
			errServer(w, err)
			return
		}
		res.Data = append(res.Data, fj)
	}
	writeJSON(w, http.StatusOK, res)
}

func (ft *fineTuning) cancel(w http.ResponseWriter, r *http.Request, l zerolog.Logger) {
	j, ok := ft.job(w, r)
	if !ok {
		return
	}
	if j.Status.Terminal() {
		writeError(w, http.StatusBadRequest, "invalid_request_error", "id", "invalid_state", fmt.Sprintf("Fine-tuning job %s is %s and cannot be cancelled", j.ID, FineTuningStatus(j.Status)))
		return
	}
	j, _, err := jobs.Cancel(r.Context(), ft.g.bus, ft.jobs, j.ID)
	if err != nil {
		errServer(w, err)
		return
	}
	l.Info().Str("job", j.ID).Msg("fine-tuning job cancelled")
	ft.writeJob(w, r, j)
}

// eventMessage is an event's line of text, as OpenAI's "Step 3/10: training loss=1.20".
func eventMessage(e schemas.TrainEvent) string {
	if e.Kind == schemas.TrainEventEval && e.EvalLoss != nil {
		return fmt.Sprintf("Step %d/%d: validation loss=%.4f", e.GlobalStep, e.MaxSteps, *e.EvalLoss)
	}
	return fmt.Sprintf("Step %d/%d: training loss=%.4f", e.GlobalStep, e.MaxSteps, e.Loss)
}

func (ft *fineTuning) events(w http.ResponseWriter, r *http.Request, l zerolog.Logger) {
	j, ok := ft.job(w, r)
	if !ok {
		return
	}
	limit, ok := listLimit(w, r.URL.Query().Get("limit"), 20)
	if !ok {
		return
	}
	all, err := ft.trainEvents(r.Context(), j.ID, l)
	if err != nil {
		errServer(w, err)
		return
	}
	evs := make([]FineTuningEvent, 0, len(all))
	for i := len(all) - 1; i >= 0; i-- { // newest first, as OpenAI lists them
		e := all[i]
		evs = append(evs, FineTuningEvent{ID: eventID(j.ID, e.seq), Object: "fine_tuning.job.event",
			CreatedAt: e.Time / 1000, Level: "info", Message: eventMessage(e.TrainEvent), Type: "metrics", Data: e.TrainEvent})
	}
	writeJSON(w, http.StatusOK, page(evs, r.URL.Query().Get("after"), limit, func(e FineTuningEvent) string { return e.ID }))
}

// storedCheckpoint is a job's checkpoint stored in lf_artifacts: its step
// and when its manifest was stored (which made it complete).
type storedCheckpoint struct {
	step int
	at   time.Time
}

// storedCheckpoints returns the job's stored checkpoints: those its
// checkpoint index names whose manifest is there (its trainer may have
// died between removing one and rewriting the index), or, for a job whose
// trainer wrote no index, those found in the listing of lf_artifacts.
func (ft *fineTuning) storedCheckpoints(ctx context.Context, job string) ([]storedCheckpoint, error) {
	var idx storage.CheckpointSteps
	err := readSmall(ctx, ft.obj, storage.CheckpointIndex(job), &idx)
	if errors.Is(err, storage.ErrNotFound) {
		return ft.listCheckpoints(ctx, job)
	}
	if err != nil {
		return nil, err
	}
	var out []storedCheckpoint
	for _, step := range idx.Steps {
		in, err := ft.obj.Info(ctx, storage.CheckpointManifest(job, step))
		if errors.Is(err, pipeline.ErrObjectNotFound) {
			continue
		}
		if err != nil {
			return nil, err
		}
		out = append(out, storedCheckpoint{step: step, at: in.ModTime})
	}
	return out, nil
}

// listCheckpoints finds a job's checkpoints by their manifests in the
// listing of every object of lf_artifacts.
func (ft *fineTuning) listCheckpoints(ctx context.Context, job string) ([]storedCheckpoint, error) {
	infos, err := ft.obj.List(ctx)
	if err != nil {
		return nil, err
	}
	var out []storedCheckpoint
	for _, in := range infos {
		// The manifest, written last: the checkpoint is complete.
		if step, ok := storage.CheckpointManifestStep(job, in.Name); ok && !in.Deleted {
			out = append(out, storedCheckpoint{step: step, at: in.ModTime})
		}
	}
	return out, nil
}

func (ft *fineTuning) checkpoints(w http.ResponseWriter, r *http.Request, l zerolog.Logger) {
	j, ok := ft.job(w, r)
	if !ok {
		return
	}
	limit, ok := listLimit(w, r.URL.Query().Get("limit"), 10)
	if !ok {
		return
	}
	stored, err := ft.storedCheckpoints(r.Context(), j.ID)
	if err != nil {
		errServer(w, err)
		return
	}
	evs, err := ft.trainEvents(r.Context(), j.ID, l)
	if err != nil {
		errServer(w, err)
		return
	}
	metrics := stepMetrics(evs)
	var cps []FineTuningCheckpoint
	for _, c := range stored {
		cps = append(cps, FineTuningCheckpoint{ID: fmt.Sprintf("ftckpt-%s-%d", j.ID, c.step), Object: "fine_tuning.job.checkpoint",
			CreatedAt: c.at.Unix(), FineTunedModelCheckpoint: schemas.CheckpointModel(j.ID, c.step),
			FineTuningJobID: j.ID, StepNumber: c.step, Metrics: metrics[c.step]})
		if cps[len(cps)-1].Metrics == nil { // its events are gone (LF_EVENTS' limits)
			cps[len(cps)-1].Metrics = map[string]any{"step": c.step}
		}
	}
	sort.Slice(cps, func(a, b int) bool { return cps[a].StepNumber > cps[b].StepNumber })
	writeJSON(w, http.StatusOK, page(cps, r.URL.Query().Get("after"), limit, func(c FineTuningCheckpoint) string { return c.ID }))
}

// eventID is a training event's id, unique across jobs and across buses
// (the stream sequence alone repeats on another bus or a recreated
// stream): ftevent-<the job id's hash>-<sequence>.
func eventID(job string, seq uint64) string {
	sum := sha256.Sum256([]byte(job))
	return "ftevent-" + hex.EncodeToString(sum[:6]) + "-" + strconv.FormatUint(seq, 10)
}
