package gateway

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net/http"

	"github.com/largeforge/largeforge/jobs"
	"github.com/largeforge/largeforge/storage"
)

// FineTuningRecordKey is the key in lf_artifacts of what a fine-tuning job
// created over HTTP adds to its job record (fine_tuning/<job>/job.json):
// the request's validation file, resolved method and hyperparameters,
// seed and metadata, which the fine_tuning.job echoes. A training job
// submitted by the CLI has none.
func FineTuningRecordKey(job string) string { return "fine_tuning/" + job + "/job.json" }

// fineTuningRecord is FineTuningRecordKey's object.
type fineTuningRecord struct {
	ValidationFile string            `json:"validation_file,omitempty"`
	Method         *FineTuningMethod `json:"method,omitempty"`
	Seed           int64             `json:"seed"`
	Metadata       map[string]string `json:"metadata,omitempty"`
}

// putRecord stores rec as job's record.
func (ft *fineTuning) putRecord(ctx context.Context, job string, rec fineTuningRecord) error {
	data, err := json.Marshal(rec)
	if err != nil {
		return err
	}
	if _, err := ft.obj.Put(ctx, FineTuningRecordKey(job), bytes.NewReader(data)); err != nil {
		return fmt.Errorf("store the record of fine-tuning job %s: %w", job, err)
	}
	return nil
}

// jobOf is the fine_tuning.job of j with its record, when it has one.
func (ft *fineTuning) jobOf(ctx context.Context, j jobs.Job) (FineTuningJob, error) {
	var rec fineTuningRecord
	err := readSmall(ctx, ft.obj, FineTuningRecordKey(j.ID), &rec)
	rp := &rec
	switch {
	case errors.Is(err, storage.ErrNotFound):
		rp = nil
	case err != nil:
		return FineTuningJob{}, err
	}
	fj := FineTuningJobOf(j, rp)
	if j.Status == jobs.StatusCompleted {
		st, found, err := ft.readFinalState(ctx, j.ID)
		switch {
		case err != nil:
			return FineTuningJob{}, err
		case !found:
			return fj, nil
		}
		fj.TrainedTokens = st.Tokens
		if fj.ResultFiles, err = ft.resultFiles(ctx, j, st); err != nil {
			return FineTuningJob{}, err
		}
	}
	return fj, nil
}

// maxTrainerState bounds the final trainer_state.json read for
// trained_tokens and the result file (its log_history grows with the
// steps).
const maxTrainerState = 64 << 20

// writeJob answers with j's fine_tuning.job.
func (ft *fineTuning) writeJob(w http.ResponseWriter, r *http.Request, j jobs.Job) {
	fj, err := ft.jobOf(r.Context(), j)
	if err != nil {
		errServer(w, err)
		return
	}
	writeJSON(w, http.StatusOK, fj)
}
