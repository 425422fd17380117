package gateway

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"math"
	"net/http"
	"os"
	"path/filepath"
	"strings"

	"github.com/rs/zerolog"

	"github.com/largeforge/largeforge/dataset"
	"github.com/largeforge/largeforge/dataset/read"
	"github.com/largeforge/largeforge/jobs"
	"github.com/largeforge/largeforge/model/train"
	"github.com/largeforge/largeforge/pipeline"
	"github.com/largeforge/largeforge/schemas"
	"github.com/largeforge/largeforge/storage"
	"github.com/largeforge/largeforge/storage/modelstore"
)

// POST /v1/fine_tuning/jobs makes a bus training job of OpenAI's request:
//
//   - training_file: a file of purpose fine-tune, in the dictionary's
//     formats or OpenAI's chat or preference format (dataset/read.FromOpenAI).
//     Every line is checked first; a bad line is a 400 naming it, and
//     nothing is created. The records are stored as the job's dataset (one
//     Parquet part under datasets/<job>/ in lf_artifacts), which the train
//     worker reads.
//   - model: a model pushed to lf_models (pinned to its current version).
//   - method.type: supervised (sft; alpaca or sharegpt records) or dpo (dpo
//     records); hyperparameters n_epochs, batch_size (per device, no
//     accumulation), learning_rate_multiplier (times the §2.1 default
//     learning rate), and beta for dpo; "auto" or absent keeps the default.
//     The legacy top-level hyperparameters are supervised's.
//   - suffix (letters, digits, '-', '_', up to 40) goes into the job id,
//     which is the fine_tuned_model name: ftjob-<suffix>-<hex>.
//   - seed: the run's seed.
//
//   - validation_file (supervised only): a fine-tune file checked as the
//     training file is, stored as the job's eval dataset
//     (datasets/<job>-validation/): the trainer evaluates on it every
//     eval_steps and at the last step (the eval events, "validation
//     loss") and trains on every training record. Without one, the trainer
//     holds out eval_split of the training data.
//
// integrations and any other field are refused with a 400 naming it. The
// job logs every step (its events) and trains in fp32.

// fineTuningRequest is OpenAI's create request.
type fineTuningRequest struct {
	TrainingFile    string               `json:"training_file"`
	ValidationFile  *string              `json:"validation_file"`
	Model           string               `json:"model"`
	Suffix          *string              `json:"suffix"`
	Seed            *int64               `json:"seed"`
	Method          *fineTuningMethod    `json:"method"`
	Hyperparameters *fineTuningHyperOpts `json:"hyperparameters"`
	Integrations    json.RawMessage      `json:"integrations"`
	Metadata        map[string]string    `json:"metadata"`
}

type fineTuningMethod struct {
	Type       string `json:"type"`
	Supervised *struct {
		Hyperparameters fineTuningHyperOpts `json:"hyperparameters"`
	} `json:"supervised"`
	DPO *struct {
		Hyperparameters fineTuningHyperOpts `json:"hyperparameters"`
	} `json:"dpo"`
}

// fineTuningHyperOpts holds "auto" or a number each.
type fineTuningHyperOpts struct {
	NEpochs                json.RawMessage `json:"n_epochs"`
	BatchSize              json.RawMessage `json:"batch_size"`
	LearningRateMultiplier json.RawMessage `json:"learning_rate_multiplier"`
	Beta                   json.RawMessage `json:"beta"`
}

// MaxSuffix is the longest suffix.
const MaxSuffix = 40

// badRequest is a 400 naming param.
type badRequest struct{ param, code, msg string }

func (e *badRequest) Error() string { return e.msg }

// badParam is the badRequest of e.
func badParam(e *ParamError) error {
	return &badRequest{param: e.Param, code: e.code(), msg: e.Error()}
}

func bad(param, code, format string, args ...any) error {
	return &badRequest{param: param, code: code, msg: fmt.Sprintf(format, args...)}
}

// number reads an "auto"-or-number hyperparameter into dst (untouched for
// auto or absent); integer wants a whole number; it must be positive.
func number(param string, v json.RawMessage, integer bool, dst *float64) error {
	s := strings.TrimSpace(string(v))
	if s == "" || s == "null" || s == `"auto"` {
		return nil
	}
	var f float64
	if json.Unmarshal(v, &f) != nil || !(f > 0) || math.IsInf(f, 0) || (integer && f != math.Trunc(f)) {
		kind := "a positive number"
		if integer {
			kind = "a positive integer"
		}
		return bad(param, "invalid_value", "Invalid value for '%s': %s; want \"auto\" or %s", param, s, kind)
	}
	*dst = f
	return nil
}

// runConfig is the training job's config for the request, over dataset
// name, with the model's pinned digest.
func (req fineTuningRequest) runConfig(id, digest string) (schemas.RunConfig, *FineTuningMethod, error) {
	method, hp, path := "sft", fineTuningHyperOpts{}, "method.supervised.hyperparameters"
	if req.Hyperparameters != nil {
		hp, path = *req.Hyperparameters, "hyperparameters"
	}
	if m := req.Method; m != nil {
		switch {
		case m.Type == "supervised" && m.DPO == nil:
			if m.Supervised != nil {
				hp = m.Supervised.Hyperparameters
			}
		case m.Type == "dpo" && m.Supervised == nil:
			method, path = "dpo", "method.dpo.hyperparameters"
			if m.DPO != nil {
				hp = m.DPO.Hyperparameters
			}
		default:
			return schemas.RunConfig{}, nil, bad("method.type", "invalid_value", "Invalid method: type %q with its own settings only (want supervised or dpo)", m.Type)
		}
		if req.Hyperparameters != nil {
			return schemas.RunConfig{}, nil, bad("hyperparameters", "invalid_value", "Give hyperparameters under method, not both")
		}
	}
	def := schemas.DefaultTrainingConfig()
	epochs, batch, mult, beta := float64(def.NumEpochs), float64(def.PerDeviceBatchSize*def.GradientAccumulationSteps), 1.0, schemas.DefaultDPOBeta
	for _, p := range []struct {
		name    string
		v       json.RawMessage
		integer bool
		dst     *float64
	}{{"n_epochs", hp.NEpochs, true, &epochs}, {"batch_size", hp.BatchSize, true, &batch}, {"learning_rate_multiplier", hp.LearningRateMultiplier, false, &mult}, {"beta", hp.Beta, false, &beta}} {
		if err := number(path+"."+p.name, p.v, p.integer, p.dst); err != nil {
			return schemas.RunConfig{}, nil, err
		}
	}
	if method == "sft" && len(bytes.TrimSpace(hp.Beta)) > 0 {
		return schemas.RunConfig{}, nil, bad(path+".beta", "invalid_value", "beta is a dpo hyperparameter")
	}
	cfg := map[string]any{"method": method, "model_name": req.Model, "dataset": id,
		"output_dir": filepath.Join(os.TempDir(), "largeforge-fine-tuning", id), "num_epochs": int(epochs),
		"per_device_batch_size": int(batch), "gradient_accumulation_steps": 1, "learning_rate": def.LearningRate * mult,
		"logging_steps": 1, "bf16": false}
	if method == "dpo" {
		cfg["beta"] = beta
	}
	if req.Seed != nil {
		cfg["seed"] = *req.Seed
	}
	data, _ := json.Marshal(cfg)
	rc, err := train.ParseRunConfig(data)
	if err != nil {
		return rc, nil, bad(path, "invalid_value", "Invalid hyperparameters: %v", err)
	}
	rc.ModelDigest = digest
	hps := &FineTuningHyperparameters{NEpochs: int(epochs), BatchSize: int(batch), LearningRateMultiplier: mult}
	m := &FineTuningMethod{Type: "supervised", Supervised: &FineTuningMethodSettings{Hyperparameters: hps}}
	if method == "dpo" {
		hps.Beta = &beta
		m = &FineTuningMethod{Type: "dpo", DPO: &FineTuningMethodSettings{Hyperparameters: hps}}
	}
	return rc, m, nil
}

// create serves POST /v1/fine_tuning/jobs.
func (ft *fineTuning) create(w http.ResponseWriter, r *http.Request, l zerolog.Logger) {
	j, rec, err := ft.submit(r.Context(), w, r)
	var br *badRequest
	switch {
	case errors.As(err, &br):
		writeError(w, http.StatusBadRequest, "invalid_request_error", br.param, br.code, br.msg)
	case err != nil:
		errServer(w, err)
	default:
		l.Info().Str("job", j.ID).Str("model", j.Model).Msg("fine-tuning job created")
		writeJSON(w, http.StatusOK, FineTuningJobOf(j, rec))
	}
}

func (ft *fineTuning) submit(ctx context.Context, w http.ResponseWriter, r *http.Request) (jobs.Job, *fineTuningRecord, error) {
	body, err := readBody(w, r, ft.g.cfg.MaxBodyBytes)
	if err != nil {
		return jobs.Job{}, nil, bad("", "invalid_request", "Cannot read the request body: %v", err)
	}
	var req fineTuningRequest
	dec := json.NewDecoder(bytes.NewReader(body))
	dec.DisallowUnknownFields()
	if err := dec.Decode(&req); err != nil {
		if f, ok := unknownField(err); ok {
			return jobs.Job{}, nil, badParam(unknownParam(f))
		}
		return jobs.Job{}, nil, bad("", "invalid_request", "Invalid request: %v", err)
	}
	switch {
	case req.TrainingFile == "":
		return jobs.Job{}, nil, badParam(missingParam("training_file"))
	case req.Model == "":
		return jobs.Job{}, nil, badParam(missingParam("model"))
	case !empty(req.Integrations):
		return jobs.Job{}, nil, bad("integrations", "unsupported_parameter", "integrations are not supported")
	}
	id := "ftjob-" + strings.TrimPrefix(jobs.NewTrainingID(), "train_")
	if req.Suffix != nil && *req.Suffix != "" {
		s := *req.Suffix
		if len(s) > MaxSuffix || schemas.ValidJobID(s) != nil {
			return jobs.Job{}, nil, bad("suffix", "invalid_value", "Invalid suffix %q: up to %d letters, digits, '-' and '_'", s, MaxSuffix)
		}
		id = "ftjob-" + s + "-" + strings.TrimPrefix(id, "ftjob-")
	}
	ms, err := modelstore.New(ctx, ft.g.bus)
	if err != nil {
		return jobs.Job{}, nil, err
	}
	digest, err := ms.Resolve(ctx, req.Model)
	if err != nil {
		if errors.Is(err, modelstore.ErrNotFound) || errors.Is(err, modelstore.ErrNoManifest) {
			return jobs.Job{}, nil, bad("model", "model_not_found", "The model `%s` is not in the model store (largeforge model push)", req.Model)
		}
		return jobs.Job{}, nil, err
	}
	if err := validMetadata(req.Metadata); err != nil {
		return jobs.Job{}, nil, bad("metadata", "invalid_value", "Invalid 'metadata': %v.", err)
	}
	rc, method, err := req.runConfig(id, digest)
	if err != nil {
		return jobs.Job{}, nil, err
	}
	fo, err := ft.fineTuneFile(ctx, "training_file", req.TrainingFile)
	if err != nil {
		return jobs.Job{}, nil, err
	}
	rc, evalData, err := ft.validation(ctx, req, id, rc)
	if err != nil {
		return jobs.Job{}, nil, err
	}
	data, records, err := ft.checkDataset(ctx, "training_file", fo.ID, rc.Method)
	if err != nil {
		return jobs.Job{}, nil, err
	}
	rc = epochCheckpoints(rc, records)
	if err := ft.storeDataset(ctx, id, data); err != nil {
		return jobs.Job{}, nil, err
	}
	if evalData != nil {
		if err := ft.storeDataset(ctx, rc.EvalDataset, evalData); err != nil {
			return jobs.Job{}, nil, err
		}
	}
	rec := fineTuningRecord{Method: method, Seed: rc.Seed, Metadata: req.Metadata}
	if evalData != nil {
		rec.ValidationFile = *req.ValidationFile
	}
	if err := ft.putRecord(ctx, id, rec); err != nil {
		return jobs.Job{}, nil, err
	}
	j, err := ft.jobs.Create(ctx, jobs.Spec{ID: id, Kind: jobs.KindTraining, Model: req.Model, InputFile: fo.ID})
	if err != nil {
		return jobs.Job{}, nil, err
	}
	subj, err := pipeline.TrainSubject(id)
	if err == nil {
		var data []byte
		if data, err = (schemas.TrainJob{Job: id, Run: rc}).Encode(); err == nil {
			_, err = ft.g.bus.Publish(ctx, subj, data, id, nil)
		}
	}
	if err != nil {
		_, _ = ft.jobs.Fail(context.WithoutCancel(ctx), id, jobs.ErrorReport{Code: "submit_failed", Message: err.Error()})
		return j, nil, fmt.Errorf("submit fine-tuning job %s: %w", id, err)
	}
	return j, &rec, nil
}

// storeDataset stores a part of checkDataset as dataset name (its only
// part).
func (ft *fineTuning) storeDataset(ctx context.Context, name string, part *bytes.Buffer) error {
	if _, err := ft.obj.Put(ctx, storage.Dataset(name)+storage.DatasetPartName(0), part); err != nil {
		return fmt.Errorf("store the records of %s: %w", name, err)
	}
	return nil
}

// checkDataset checks every line of file and encodes its records as a
// Parquet part, returned with their number: a bad line, or a format the
// method does not train on, is a 400 naming param.
func (ft *fineTuning) checkDataset(ctx context.Context, param, file, method string) (*bytes.Buffer, int, error) {
	var rows []read.Row
	var format schemas.Format
	err := ft.files.eachLine(ctx, file, func(n int, data []byte) error {
		if format == "" {
			f, ok := schemas.DetectFormat(data)
			if !ok {
				f, ok = read.OpenAIFormat(data)
			}
			if !ok {
				return bad(param, "invalid_file", "Line %d of %s is in none of the formats alpaca, sharegpt, dpo or OpenAI's chat or preference format", n, file)
			}
			format = f
		}
		rows = append(rows, read.Row{Line: int64(n), Data: append([]byte(nil), data...)})
		return nil
	})
	if err != nil {
		return nil, 0, err
	}
	switch {
	case len(rows) == 0:
		return nil, 0, bad(param, "invalid_file", "File %s has no examples", file)
	case method == "dpo" && format != schemas.FormatDPO:
		return nil, 0, bad(param, "invalid_file", "A dpo job takes preference data; file %s is %s", file, format)
	case method == "sft" && format == schemas.FormatDPO:
		return nil, 0, bad(param, "invalid_file", "A supervised job takes chat or instruction data; file %s is preference data (method dpo)", file)
	}
	recs, ids := make([]schemas.Record, 0, len(rows)), make([]string, 0, len(rows))
	for _, it := range read.Decode(file, format, rows, 0) {
		if it.Rej != nil {
			return nil, 0, bad(param, "invalid_file", "Invalid file %s: %s", file, it.Rej.Error)
		}
		recs, ids = append(recs, it.Acc.Record), append(ids, it.Acc.ID)
	}
	var buf bytes.Buffer
	if err := dataset.EncodePart(&buf, format, recs, ids, nil); err != nil {
		return nil, 0, err
	}
	return &buf, len(recs), nil
}
