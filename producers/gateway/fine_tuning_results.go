package gateway

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"sort"
	"strconv"

	"github.com/largeforge/largeforge/jobs"
	"github.com/largeforge/largeforge/model/train"
	"github.com/largeforge/largeforge/pipeline"
	"github.com/largeforge/largeforge/storage"
)

// A succeeded fine-tuning job has one result file, as OpenAI's: its step
// metrics as CSV (step,train_loss,train_accuracy,valid_loss,
// valid_mean_token_accuracy; a row per logged step, oldest first; a cell
// is empty where the step has no such value: valid_* on steps not
// evaluated, train_accuracy always, as the trainer measures no accuracy on
// training batches). It is rendered from the log_history of the job's
// final trainer_state.json (train/<job>/final/ in lf_artifacts, complete
// however long the run) the first time the job is read once it succeeded,
// and stored as a file of the Files API: id file-ftres-<job>, purpose
// fine-tune-results, filename step_metrics.csv, listed in result_files.

// PurposeFineTuneResults is the purpose of a fine-tuning job's result file.
const PurposeFineTuneResults = "fine-tune-results"

// resultsFilePrefix starts the id of a fine-tuning job's result file.
const resultsFilePrefix = "file-ftres-"

// ResultsFileID is the id of job's result file.
func ResultsFileID(job string) string { return resultsFilePrefix + job }

// resultsCSVHeader is OpenAI's header of the step metrics.
const resultsCSVHeader = "step,train_loss,train_accuracy,valid_loss,valid_mean_token_accuracy\n"

// finalState is what the gateway reads of a job's final trainer_state.json.
type finalState struct {
	Tokens     *int64           `json:"num_input_tokens_seen"`
	LogHistory []map[string]any `json:"log_history"`
}

// readFinalState reads job's final trainer_state.json; found is false when
// the job stored no final output.
func (ft *fineTuning) readFinalState(ctx context.Context, job string) (st finalState, found bool, err error) {
	r, err := ft.obj.Get(ctx, "train/"+job+"/final/"+train.TrainerStateFile)
	if errors.Is(err, pipeline.ErrObjectNotFound) {
		return st, false, nil
	}
	if err != nil {
		return st, false, err
	}
	defer r.Close()
	if err := json.NewDecoder(io.LimitReader(r, maxTrainerState)).Decode(&st); err != nil {
		return st, false, fmt.Errorf("read the final trainer state of %s: %w", job, err)
	}
	return st, true, nil
}

// resultFiles is a succeeded job's result_files: its step metrics file,
// rendered and stored now when it is not yet (a file deleted since stays
// listed, as OpenAI's), none when the job stored no final output.
func (ft *fineTuning) resultFiles(ctx context.Context, j jobs.Job, st finalState) ([]string, error) {
	id := ResultsFileID(j.ID)
	if !validFileID(id) {
		return []string{}, nil
	}
	var sf storedFile
	err := readSmall(ctx, ft.obj, storage.FileMeta(id), &sf)
	if err == nil {
		return []string{id}, nil
	}
	if !errors.Is(err, storage.ErrNotFound) {
		return nil, err
	}
	data := resultsCSV(st.LogHistory)
	if _, err := ft.obj.Put(ctx, storage.FileContent(id), bytes.NewReader(data)); err != nil {
		return nil, fmt.Errorf("job %s: store its result file: %w", j.ID, err)
	}
	fo := FileObject{ID: id, Object: "file", Bytes: int64(len(data)), CreatedAt: j.CompletedAt, Filename: "step_metrics.csv",
		Purpose: PurposeFineTuneResults, Status: "processed"}
	if err := ft.files.putMeta(ctx, storedFile{FileObject: fo}); err != nil {
		return nil, fmt.Errorf("job %s: store its result file: %w", j.ID, err)
	}
	return []string{id}, nil
}

// resultsCSV renders a log_history as the step metrics CSV: a row per
// step, its training loss (loss) and its evaluation's loss and accuracy
// (eval_loss, accuracy) when it has them.
func resultsCSV(history []map[string]any) []byte {
	type row struct{ train, valid, acc string }
	rows := map[int]*row{}
	num := func(h map[string]any, k string) string {
		if v, ok := h[k].(float64); ok {
			return strconv.FormatFloat(v, 'f', -1, 64)
		}
		return ""
	}
	for _, h := range history {
		s, ok := h["step"].(float64)
		if !ok || s < 1 {
			continue
		}
		valid, train := num(h, "eval_loss"), num(h, "loss")
		if valid == "" && train == "" { // the run's summary
			continue
		}
		r := rows[int(s)]
		if r == nil {
			r = &row{}
			rows[int(s)] = r
		}
		if valid != "" {
			r.valid, r.acc = valid, num(h, "accuracy")
		} else {
			r.train = train
		}
	}
	steps := make([]int, 0, len(rows))
	for s := range rows {
		steps = append(steps, s)
	}
	sort.Ints(steps)
	var b bytes.Buffer
	b.WriteString(resultsCSVHeader)
	for _, s := range steps {
		r := rows[s]
		fmt.Fprintf(&b, "%d,%s,,%s,%s\n", s, r.train, r.valid, r.acc)
	}
	return b.Bytes()
}
