package storage

import (
	"fmt"
	"strconv"
	"strings"
)

// The kinds of artifact: the first element of every key.
const (
	KindDatasets = "datasets" // datasets/<name>/: parts, manifest.json, rejects.jsonl
	KindJobs     = "jobs"     // jobs/<job>/: parts/, then output.jsonl, errors.jsonl, results.parquet
	KindModels   = "models"   // models/<name>: models fetched from lf_models
	KindTrain    = "train"    // train/<job>/checkpoint-<step>: training checkpoints
)

// File names inside a dataset.
const (
	ManifestFile = "manifest.json"
	RejectsFile  = "rejects.jsonl"
)

// Dataset is the key prefix of a dataset's objects.
func Dataset(name string) string { return KindDatasets + "/" + name + "/" }

// DatasetManifest is the key of a dataset's manifest.
func DatasetManifest(name string) string { return Dataset(name) + ManifestFile }

// DatasetRejects is the key of a dataset's rejected records (a log).
func DatasetRejects(name string) string { return Dataset(name) + RejectsFile }

// Job is the key prefix of a batch job's results.
func Job(job string) string { return KindJobs + "/" + job + "/" }

// JobFile is the key of one of a job's final files (output.jsonl, ...).
func JobFile(job, file string) string { return Job(job) + file }

// Model is the key of a model directory.
func Model(name string) string { return KindModels + "/" + name }

// Checkpoint is the key of a training job's checkpoint directory.
func Checkpoint(job string, step int) string {
	return fmt.Sprintf("%s/%s/checkpoint-%d", KindTrain, job, step)
}

// CheckpointIndex is the key of a training job's index of its stored
// checkpoints, train/<job>/checkpoints.json (a CheckpointSteps), so the
// trainer that resumes the job and the Fine-tuning API's listing find the
// checkpoints without listing lf_artifacts, whose listing reads every
// object's metadata. Its trainer names a checkpoint there before storing
// it, and rewrites it after removing older ones: it names every complete
// checkpoint (one whose manifest, train/<job>/checkpoint-<step>.json, is
// stored), and may name one whose store was cut short or that was removed
// since, which readers pass over for want of its manifest.
func CheckpointIndex(job string) string { return KindTrain + "/" + job + "/checkpoints.json" }

// CheckpointManifest is the key of the manifest of a training job's stored
// checkpoint, which makes it complete.
func CheckpointManifest(job string, step int) string { return Checkpoint(job, step) + ".json" }

// CheckpointManifestStep reports whether key is the manifest of one of
// job's checkpoints (CheckpointManifest; a file of the checkpoint is not
// one), and its step.
func CheckpointManifestStep(job, key string) (int, bool) {
	rest, ok := strings.CutPrefix(key, KindTrain+"/"+job+"/checkpoint-")
	if !ok {
		return 0, false
	}
	num, ok := strings.CutSuffix(rest, ".json")
	if n, err := strconv.Atoi(num); ok && err == nil && n > 0 {
		return n, true
	}
	return 0, false
}

// CheckpointSteps is what a CheckpointIndex holds: the steps of the stored
// checkpoints, oldest first.
type CheckpointSteps struct {
	Steps []int `json:"steps"`
}

// elements splits a key (or, with prefix, a key prefix ending in '/') into
// its elements and checks them: relative, slash-separated, none empty, "."
// or "..", no backslash.
func elements(key string, prefix bool) ([]string, error) {
	k := key
	if prefix {
		k = strings.TrimSuffix(k, "/")
	}
	parts := strings.Split(k, "/")
	for _, p := range parts {
		if p == "" || p == "." || p == ".." || strings.ContainsRune(p, '\\') {
			return nil, fmt.Errorf("%w: %q", ErrInvalidKey, key)
		}
	}
	return parts, nil
}
