package train

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"path/filepath"
	"slices"
	"sort"
	"strconv"
	"strings"
	"time"

	"github.com/largeforge/largeforge/model/checkpoint"
	"github.com/largeforge/largeforge/model/train"
	"github.com/largeforge/largeforge/pipeline"
	"github.com/largeforge/largeforge/storage"
	"github.com/largeforge/largeforge/storage/modelstore"
)

// Where a training job's artifacts live in lf_artifacts.
const (
	// ArtifactsPrefix starts every key of a training job: train/<job>/.
	ArtifactsPrefix = "train/"
	// FinalName is the stored copy of the final output: train/<job>/final/...
	FinalName = "final"
	// ManifestSuffix ends the object that marks a stored directory complete
	// (train/<job>/checkpoint-<step>.json, train/<job>/final.json): it is
	// written after every file it lists, so a directory without one is
	// never read back.
	ManifestSuffix = ".json"
)

// JobArtifacts is the prefix of a job's artifacts: train/<job>/.
func JobArtifacts(job string) string { return ArtifactsPrefix + job + "/" }

// StoredFile is one file of a stored directory.
type StoredFile struct {
	Path   string `json:"path"`   // relative, '/'-separated
	Size   int64  `json:"size"`   // bytes
	Digest string `json:"digest"` // the object store's digest (SHA-256=<base64url>)
}

// StoredDir is the manifest of a directory stored under train/<job>/<name>/.
type StoredDir struct {
	Job   string       `json:"job"`
	Name  string       `json:"name"` // checkpoint-<step> or final
	Step  int          `json:"global_step"`
	Files []StoredFile `json:"files"`
	Time  time.Time    `json:"time"`
}

// artifacts copies one job's checkpoints and final output to lf_artifacts
// and back.
type artifacts struct {
	objs *pipeline.Objects
	job  string
}

func (w *Worker) artifacts(ctx context.Context, job string) (artifacts, error) {
	objs, err := w.bus.Objects(ctx, pipeline.BucketArtifacts)
	if err != nil {
		return artifacts{}, err
	}
	return artifacts{objs: objs, job: job}, nil
}

func (a artifacts) key(name, file string) string { return JobArtifacts(a.job) + name + "/" + file }
func (a artifacts) manifestKey(name string) string {
	return JobArtifacts(a.job) + name + ManifestSuffix
}

// localFiles lists the regular files of dir to store: every one under it,
// or only those directly in it (the final output, whose checkpoint-<step>
// directories are stored on their own). Hidden names are left out.
func localFiles(dir string, top bool) ([]string, error) {
	var out []string
	err := filepath.WalkDir(dir, func(p string, d fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		if p == dir {
			return nil
		}
		if strings.HasPrefix(d.Name(), ".") || (d.IsDir() && top) {
			if d.IsDir() {
				return filepath.SkipDir
			}
			return nil
		}
		if d.Type().IsRegular() {
			rel, err := filepath.Rel(dir, p)
			if err != nil {
				return err
			}
			out = append(out, filepath.ToSlash(rel))
		}
		return nil
	})
	if err != nil {
		return nil, fmt.Errorf("list %s: %w", dir, err)
	}
	sort.Strings(out)
	return out, nil
}

// store uploads the files of dir as train/<job>/<name>/... and then its
// manifest, which makes it complete.
func (a artifacts) store(ctx context.Context, dir, name string, step int, top bool) (StoredDir, error) {
	files, err := localFiles(dir, top)
	if err != nil {
		return StoredDir{}, err
	}
	m := StoredDir{Job: a.job, Name: name, Step: step, Time: time.Now().UTC()}
	for _, f := range files {
		info, err := a.putFile(ctx, filepath.Join(dir, filepath.FromSlash(f)), a.key(name, f))
		if err != nil {
			return StoredDir{}, err
		}
		m.Files = append(m.Files, StoredFile{Path: f, Size: int64(info.Size), Digest: info.Digest})
	}
	data, err := json.Marshal(m)
	if err != nil {
		return StoredDir{}, err
	}
	if _, err := a.objs.Put(ctx, a.manifestKey(name), bytes.NewReader(data)); err != nil {
		return StoredDir{}, fmt.Errorf("store %s: manifest: %w", name, err)
	}
	return m, nil
}

func (a artifacts) putFile(ctx context.Context, file, key string) (pipeline.ObjectInfo, error) {
	f, err := os.Open(file)
	if err != nil {
		return pipeline.ObjectInfo{}, fmt.Errorf("store %s: %w", key, err)
	}
	defer f.Close()
	info, err := a.objs.Put(ctx, key, f)
	if err != nil {
		return info, fmt.Errorf("store %s: %w", key, err)
	}
	return info, nil
}

// checkpoints lists the steps of the job's stored checkpoints, oldest
// first, from the job's checkpoint index (storage.CheckpointIndex). A job
// without one (stored by an older trainer, or new) has its checkpoints
// found by listing lf_artifacts once, and the index written.
func (a artifacts) checkpoints(ctx context.Context) ([]int, error) {
	steps, err := a.readIndex(ctx)
	if err == nil {
		return steps, nil
	}
	if !errors.Is(err, pipeline.ErrObjectNotFound) {
		return nil, err
	}
	if steps, err = a.listCheckpoints(ctx); err != nil {
		return nil, err
	}
	return steps, a.writeIndex(ctx, steps)
}

// readIndex reads the steps of the job's checkpoint index; a job without
// one wraps pipeline.ErrObjectNotFound.
func (a artifacts) readIndex(ctx context.Context) ([]int, error) {
	r, err := a.objs.Get(ctx, storage.CheckpointIndex(a.job))
	if err != nil {
		return nil, err
	}
	defer r.Close()
	var idx storage.CheckpointSteps
	if err := json.NewDecoder(io.LimitReader(r, 1<<20)).Decode(&idx); err != nil {
		return nil, fmt.Errorf("%s: %w", storage.CheckpointIndex(a.job), err)
	}
	if _, err := io.Copy(io.Discard, r); err != nil { // the digest, checked at the end
		return nil, err
	}
	return idx.Steps, nil
}

// writeIndex stores steps as the job's checkpoint index.
func (a artifacts) writeIndex(ctx context.Context, steps []int) error {
	data, _ := json.Marshal(storage.CheckpointSteps{Steps: append([]int{}, steps...)})
	if _, err := a.objs.Put(ctx, storage.CheckpointIndex(a.job), bytes.NewReader(data)); err != nil {
		return fmt.Errorf("store the checkpoint index of %s: %w", a.job, err)
	}
	return nil
}

// listCheckpoints finds the steps of the job's complete checkpoints in
// the listing of every object of lf_artifacts, oldest first.
func (a artifacts) listCheckpoints(ctx context.Context) ([]int, error) {
	all, err := a.objs.List(ctx)
	if err != nil {
		return nil, err
	}
	var steps []int
	for _, in := range all {
		if n, ok := CheckpointManifest(a.job, in.Name); ok {
			steps = append(steps, n)
		}
	}
	sort.Ints(steps)
	return steps, nil
}

// CheckpointManifest reports whether key is the manifest of one of job's
// stored checkpoints, train/<job>/checkpoint-<step>.json (which makes that
// checkpoint complete; a file of the checkpoint is not one), and its step.
func CheckpointManifest(job, key string) (int, bool) { return storage.CheckpointManifestStep(job, key) }

// manifest reads the manifest of train/<job>/<name>.
func (a artifacts) manifest(ctx context.Context, name string) (StoredDir, error) {
	r, err := a.objs.Get(ctx, a.manifestKey(name))
	if err != nil {
		return StoredDir{}, err
	}
	defer r.Close()
	var m StoredDir
	if err := json.NewDecoder(r).Decode(&m); err != nil {
		return StoredDir{}, fmt.Errorf("manifest of %s%s: %w", JobArtifacts(a.job), name, err)
	}
	return m, r.Close()
}

// fetch downloads the stored directory name into dir/name, checking every
// file against its manifest: it is written under a hidden name and renamed
// into place whole, so a download cut short never looks like a checkpoint.
func (a artifacts) fetch(ctx context.Context, name, dir string) (string, error) {
	m, err := a.manifest(ctx, name)
	if err != nil {
		return "", err
	}
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return "", err
	}
	tmp, err := os.MkdirTemp(dir, "."+name+"-")
	if err != nil {
		return "", err
	}
	defer os.RemoveAll(tmp)
	for _, f := range m.Files {
		if !fs.ValidPath(f.Path) {
			return "", fmt.Errorf("fetch %s: %w: file %q", name, pipeline.ErrDigestMismatch, f.Path)
		}
		dst := filepath.Join(tmp, filepath.FromSlash(f.Path))
		if err := os.MkdirAll(filepath.Dir(dst), 0o755); err != nil {
			return "", err
		}
		key := a.key(name, f.Path)
		info, err := a.objs.Info(ctx, key)
		if err != nil {
			return "", fmt.Errorf("fetch %s: %w", name, err)
		}
		if int64(info.Size) != f.Size || info.Digest != f.Digest {
			return "", fmt.Errorf("fetch %s: %s: %w: not the file its manifest lists", name, key, pipeline.ErrDigestMismatch)
		}
		if err := a.objs.GetFile(ctx, key, dst); err != nil {
			return "", fmt.Errorf("fetch %s: %w", name, err)
		}
	}
	final := filepath.Join(dir, name)
	if err := os.RemoveAll(final); err != nil {
		return "", err
	}
	if err := os.Rename(tmp, final); err != nil {
		return "", fmt.Errorf("fetch %s: %w", name, err)
	}
	return final, nil
}

// remove deletes a stored directory, its manifest first (so that it is no
// longer complete), then its files.
func (a artifacts) remove(ctx context.Context, name string) error {
	m, err := a.manifest(ctx, name)
	if err != nil {
		return err
	}
	if err := a.objs.Delete(ctx, a.manifestKey(name)); err != nil {
		return err
	}
	for _, f := range m.Files {
		if err := a.objs.Delete(ctx, a.key(name, f.Path)); err != nil && !errors.Is(err, pipeline.ErrObjectNotFound) {
			return err
		}
	}
	return nil
}

// checkpointName is checkpoint-<step>.
func checkpointName(step int) string { return train.CheckpointPrefix + strconv.Itoa(step) }

// newestLocal is the step of the newest complete checkpoint in dir (0: none).
func newestLocal(dir string) int {
	cks, err := train.CompleteCheckpoints(dir)
	if err != nil || len(cks) == 0 {
		return 0
	}
	n, _ := strconv.Atoi(strings.TrimPrefix(filepath.Base(cks[len(cks)-1]), train.CheckpointPrefix))
	return n
}

// restore brings the job's newest stored checkpoint into outputDir when it
// is newer than the newest complete one there (none, on a machine that has
// not run the job): the trainer then resumes from it as from its own. It
// returns the checkpoint fetched, "" when none was. A checkpoint the index
// names whose manifest is gone (removed by a trainer that died before it
// rewrote the index) is passed over for the one before.
func (a artifacts) restore(ctx context.Context, outputDir string) (string, error) {
	steps, err := a.checkpoints(ctx)
	if err != nil {
		return "", err
	}
	local := newestLocal(outputDir)
	for i := len(steps) - 1; i >= 0 && steps[i] > local; i-- {
		dir, err := a.fetch(ctx, checkpointName(steps[i]), outputDir)
		if errors.Is(err, pipeline.ErrObjectNotFound) {
			if _, merr := a.objs.Info(ctx, a.manifestKey(checkpointName(steps[i]))); errors.Is(merr, pipeline.ErrObjectNotFound) {
				continue
			}
		}
		return dir, err
	}
	return "", nil
}

// storeCheckpoint is the trainer's WithCheckpoint callback: it names the
// checkpoint just written in the job's checkpoint index, then stores it, so
// the index names every complete checkpoint (and, until the next one, one
// whose store was cut short, which readers pass over for want of its
// manifest); then it removes the stored ones that the trainer removed here
// (save_total_limit) and rewrites the index without them.
func (a artifacts) storeCheckpoint(ctx context.Context, dir string, step int) error {
	steps, err := a.checkpoints(ctx)
	if err != nil {
		return fmt.Errorf("%w: %w", errUpload, err)
	}
	if !slices.Contains(steps, step) {
		steps = append(steps, step)
		sort.Ints(steps)
		if err := a.writeIndex(ctx, steps); err != nil {
			return fmt.Errorf("%w: %w", errUpload, err)
		}
	}
	if _, err := a.store(ctx, dir, checkpointName(step), step, false); err != nil {
		return fmt.Errorf("%w: %w", errUpload, err)
	}
	kept := make([]int, 0, len(steps))
	for _, s := range steps {
		if s < step {
			if _, err := os.Stat(filepath.Join(filepath.Dir(dir), checkpointName(s))); errors.Is(err, os.ErrNotExist) {
				if err := a.remove(ctx, checkpointName(s)); err != nil && !errors.Is(err, pipeline.ErrObjectNotFound) {
					return fmt.Errorf("%w: remove stored %s: %w", errUpload, checkpointName(s), err)
				}
				continue
			}
		}
		kept = append(kept, s)
	}
	if len(kept) < len(steps) {
		if err := a.writeIndex(ctx, kept); err != nil {
			return fmt.Errorf("%w: %w", errUpload, err)
		}
	}
	return nil
}

// errUpload marks a failure to store an artifact on the bus: the job goes
// back to the queue rather than failing.
var errUpload = errors.New("store training artifacts")

// FineTunedModel is the lf_models name a training job's model is pushed
// under: the job id. For a LoRA job it is the base with the adapter merged
// in (what `largeforge adapters merge` writes), which any infer worker
// serves by name.
func FineTunedModel(job string) string { return job }

// AdapterSuffix ends the lf_models name of a LoRA job's adapter.
const AdapterSuffix = "-adapter"

// FineTunedAdapter is the lf_models name a LoRA job's PEFT adapter
// (adapter_config.json, adapter_model.safetensors, its README.md model
// card, tokenizer and trainer state) is pushed under: <job>-adapter.
func FineTunedAdapter(job string) string { return job + AdapterSuffix }

// published is what publishFinal pushed to lf_models.
type published struct {
	model, digest string // FineTunedModel(job) and its version
	adapter       string // FineTunedAdapter(job) for a LoRA job, else ""
}

// publishFinal stores the final output of outputDir (its files, not its
// checkpoints) as train/<job>/final/... and pushes the trained model to
// lf_models as FineTunedModel(job). For a LoRA job (rc.LoRA) the output is
// the adapter: it is pushed as FineTunedAdapter(job), and the model pushed
// as the job id is rc's base (a directory here) with the adapter merged in.
func (w *Worker) publishFinal(ctx context.Context, a artifacts, rc train.RunConfig, step int) (published, error) {
	outputDir := rc.Training.OutputDir
	m, err := a.store(ctx, outputDir, FinalName, step, true)
	if err != nil {
		return published{}, fmt.Errorf("%w: %w", errUpload, err)
	}
	// The push reads a directory of the final files alone: links to them.
	paths := make([]string, len(m.Files))
	for i, f := range m.Files {
		paths[i] = f.Path
	}
	stage, err := stageLinks(outputDir, paths)
	if err != nil {
		return published{}, err
	}
	defer os.RemoveAll(stage)
	ms, err := modelstore.New(ctx, w.bus)
	if err != nil {
		return published{}, fmt.Errorf("%w: %w", errUpload, err)
	}
	var out published
	if rc.LoRA != nil {
		out.adapter = FineTunedAdapter(a.job)
		if _, err := ms.Push(ctx, out.adapter, stage); err != nil {
			return published{}, fmt.Errorf("%w: push %s: %w", errUpload, out.adapter, err)
		}
	}
	out.model = FineTunedModel(a.job)
	pushed, err := pushTrained(ctx, ms, rc, out.model, outputDir, stage)
	if err != nil {
		return published{}, err
	}
	out.digest = pushed.Digest
	return out, nil
}

// mergeFinal writes base with the adapter of outputDir merged in into
// dir/model, as `largeforge adapters merge` does, with the tokenizer files
// of the output (the base's, and the chat template the job set), and
// returns that directory.
func mergeFinal(base, outputDir, dir string) (string, error) {
	model := filepath.Join(dir, "model")
	if err := train.MergeAdapter(base, outputDir, model); err != nil {
		return "", fmt.Errorf("merge the trained adapter into %s: %w", base, err)
	}
	if _, err := checkpoint.CopyTokenizer(outputDir, model); err != nil && !errors.Is(err, os.ErrNotExist) {
		return "", fmt.Errorf("merge the trained adapter into %s: %w", base, err)
	}
	return model, nil
}
