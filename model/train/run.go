package train

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"math"
	"os"
	"path/filepath"
	"strings"

	"github.com/rs/zerolog"
	"sigs.k8s.io/yaml"

	"github.com/largeforge/largeforge/model/checkpoint"
	"github.com/largeforge/largeforge/model/tokenizer"
	"github.com/largeforge/largeforge/schemas"
)

// RunConfig is a train.yaml: the method (sft or dpo), the data, and the
// §2.1 TrainingConfig fields (inline, with the table's defaults), whose
// model_name is the base model.
type RunConfig struct {
	Method string `json:"method"` // "sft" or "dpo"
	// BaseModel is an alias of model_name (the base model, a Hugging Face
	// checkpoint directory); Model() is the one to read.
	BaseModel    string   `json:"base_model"`
	Dataset      string   `json:"dataset"`        // an ingested dataset's name, read from DataDir (by the RecordReader handed to Run)
	DataDir      string   `json:"data_dir"`       // where ingested datasets live (a --data-dir)
	DataFiles    []string `json:"data_files"`     // Parquet parts or JSONL files
	Format       string   `json:"format"`         // the JSONL files' format (detected when empty)
	MaxSeqLength int      `json:"max_seq_length"` // 0: DefaultMaxSeqLen, or the model's max_position_embeddings when shorter
	Seed         int64    `json:"seed"`           // default DefaultSeed
	// Resume requires a checkpoint to continue from; without it the newest
	// checkpoint in output_dir, if any, is resumed all the same.
	Resume bool `json:"resume"`
	// EvalSplit is the fraction of the rendered examples held out (chosen
	// from the seed) and evaluated every eval_steps; 0 evaluates nothing.
	// A train.yaml without it holds out DefaultEvalSplit (SFT).
	EvalSplit float64 `json:"eval_split"`
	// Beta is the DPO loss's beta (default DefaultDPOBeta).
	Beta float64 `json:"beta"`
	// Packing packs SFT examples into rows of max_seq_length (WithPacking).
	Packing bool `json:"packing"`
	// PromptTemplate renders Alpaca records: PromptTemplateAlpaca (the
	// default) or PromptTemplateChat (the model's chat template).
	PromptTemplate string                 `json:"prompt_template"`
	Training       schemas.TrainingConfig `json:"-"`
	// LoRA, when the yaml has a lora: section (§2.2 fields with their
	// defaults), trains adapters instead of every weight.
	LoRA *schemas.LoraConfig `json:"-"`
}

// DefaultEvalSplit is the eval_split of an SFT train.yaml that names none:
// a tenth of the examples (at least one) is held out and evaluated every
// eval_steps and at the end.
const DefaultEvalSplit = 0.1

var runKeys = []string{"method", "base_model", "dataset", "data_dir", "data_files", "format", "max_seq_length", "seed", "resume", "lora", "eval_split", "beta", "packing", "prompt_template"}

// ParseRunConfig decodes a train.yaml (YAML or JSON). The TrainingConfig
// fields get the §2.1 defaults; base_model is an alias of model_name (both
// given, they must agree). An SFT run without eval_split gets
// DefaultEvalSplit. Unknown keys are an error. The config is validated;
// that the model directory exists is checked by CheckModel.
func ParseRunConfig(data []byte) (RunConfig, error) {
	var raw map[string]any
	if err := yaml.Unmarshal(data, &raw); err != nil {
		return RunConfig{}, fmt.Errorf("%w: train config: %w", ErrInvalidOption, err)
	}
	own := map[string]any{}
	for _, k := range runKeys {
		if v, ok := raw[k]; ok {
			own[k] = v
			delete(raw, k)
		}
	}
	rc := RunConfig{Method: "sft", Seed: DefaultSeed, Beta: DefaultDPOBeta}
	if b, err := json.Marshal(own); err != nil {
		return RunConfig{}, fmt.Errorf("%w: train config: %w", ErrInvalidOption, err)
	} else if err := json.Unmarshal(b, &rc); err != nil {
		return RunConfig{}, fmt.Errorf("%w: train config: %w", ErrInvalidOption, err)
	}
	if l, ok := own["lora"]; ok {
		b, err := json.Marshal(l)
		if err != nil {
			return RunConfig{}, fmt.Errorf("%w: train config: %w", ErrInvalidOption, err)
		}
		if string(b) == "null" {
			b = []byte("{}")
		}
		lc, err := schemas.ParseLoraConfig(b)
		if err != nil {
			return RunConfig{}, err
		}
		rc.LoRA = &lc
	}
	if name, ok := raw["model_name"]; !ok && rc.BaseModel != "" {
		raw["model_name"] = rc.BaseModel
	} else if s, _ := name.(string); ok && rc.BaseModel != "" && s != rc.BaseModel {
		return RunConfig{}, fmt.Errorf("%w: model_name %v and its alias base_model %s differ", ErrInvalidOption, name, rc.BaseModel)
	}
	if _, ok := own["eval_split"]; !ok && rc.Method == "sft" {
		rc.EvalSplit = DefaultEvalSplit
	}
	rest, err := json.Marshal(raw)
	if err != nil {
		return RunConfig{}, fmt.Errorf("%w: train config: %w", ErrInvalidOption, err)
	}
	rc.Training, err = schemas.ParseTrainingConfig(rest)
	if err != nil {
		return RunConfig{}, err
	}
	rc.BaseModel = rc.Training.ModelName
	return rc, rc.Validate()
}

// Model is the base model: model_name, or its alias base_model when only
// that is set.
func (rc RunConfig) Model() string {
	if rc.Training.ModelName != "" {
		return rc.Training.ModelName
	}
	return rc.BaseModel
}

// WithModel is rc with its base model set to dir (model_name and the alias).
func (rc RunConfig) WithModel(dir string) RunConfig {
	rc.BaseModel, rc.Training.ModelName = dir, dir
	return rc
}

// CheckModel checks that the base model is a model directory here (one
// holding config.json): otherwise "Invalid model path" (it wraps
// schemas.ErrInvalidModelPath, and an empty name is
// schemas.ErrModelNameRequired). Run checks it before loading anything;
// a submitter checks it before the job is queued.
func CheckModel(rc RunConfig) error {
	name := rc.Model()
	if strings.TrimSpace(name) == "" {
		return schemas.ErrModelNameRequired
	}
	if strings.Contains(name, "..") {
		return schemas.ErrInvalidModelPath
	}
	if st, err := os.Stat(filepath.Join(name, "config.json")); err != nil || st.IsDir() {
		return fmt.Errorf("%w: %s is not a model directory (no config.json)", schemas.ErrInvalidModelPath, name)
	}
	return nil
}

// Validate checks the run config (the TrainingConfig included). A dataset
// name follows the rule of ingested datasets (schemas.ValidateDatasetName). What
// depends on the base model (max_seq_length against its
// max_position_embeddings, the memory the run needs) is checked by
// CheckRun.
func (rc RunConfig) Validate() error {
	if rc.Dataset != "" {
		if err := schemas.ValidateDatasetName(rc.Dataset); err != nil {
			return fmt.Errorf("%w: dataset: %w", ErrInvalidOption, err)
		}
	}
	switch {
	case rc.Method != "sft" && rc.Method != "dpo":
		return fmt.Errorf("%w: method %q (want sft or dpo)", ErrInvalidOption, rc.Method)
	case !(rc.Beta > 0) || math.IsInf(rc.Beta, 0):
		return fmt.Errorf("%w: beta %v must be a positive number", ErrInvalidOption, rc.Beta)
	case rc.BaseModel != "" && rc.Training.ModelName != "" && rc.BaseModel != rc.Training.ModelName:
		return fmt.Errorf("%w: model_name %s and its alias base_model %s differ", ErrInvalidOption, rc.Training.ModelName, rc.BaseModel)
	case rc.Method == "dpo" && rc.EvalSplit != 0:
		return fmt.Errorf("%w: eval_split %v: dpo runs no evaluation (leave eval_split out or 0)", ErrInvalidOption, rc.EvalSplit)
	case rc.Training.LRSchedulerType == "reduce_lr_on_plateau" && (rc.Method == "dpo" || rc.EvalSplit == 0):
		return fmt.Errorf("%w: lr_scheduler_type reduce_lr_on_plateau needs evaluation: an sft run with eval_split > 0", ErrInvalidOption)
	case (rc.Dataset == "") == (len(rc.DataFiles) == 0):
		return fmt.Errorf("%w: give either dataset or data_files", ErrInvalidOption)
	case rc.Training.OutputDir == "":
		return fmt.Errorf("%w: output_dir is required", ErrInvalidOption)
	case !(rc.EvalSplit >= 0 && rc.EvalSplit < 1):
		return fmt.Errorf("%w: eval_split %v not in [0, 1)", ErrInvalidOption, rc.EvalSplit)
	case rc.MaxSeqLength != 0 && rc.MaxSeqLength < 2:
		return fmt.Errorf("%w: max_seq_length %d is below 2", ErrInvalidOption, rc.MaxSeqLength)
	case rc.PromptTemplate != "" && rc.PromptTemplate != PromptTemplateAlpaca && rc.PromptTemplate != PromptTemplateChat:
		return fmt.Errorf("%w: prompt_template %q (want %s or %s)", ErrInvalidOption, rc.PromptTemplate, PromptTemplateAlpaca, PromptTemplateChat)
	}
	tc := rc.Training
	tc.ModelName = rc.Model()
	return tc.Validate()
}

// RecordReader gives a run its training records. Run is handed one with
// WithRecords: an ingested dataset's parts, or data files of any kind, are
// read by the caller's reader (consumers/train.Records), not by this package.
type RecordReader interface {
	ReadRecords(ctx context.Context) ([]schemas.Record, error)
}

// JSONLFiles is the RecordReader of JSONL files, each line decoded with
// schemas.DecodeRecord in Format (detected per line when empty). Run reads
// a config's data_files with it when it is handed no reader.
type JSONLFiles struct {
	Paths  []string
	Format string
}

// ReadRecords reads the files' records in order.
func (j JSONLFiles) ReadRecords(context.Context) ([]schemas.Record, error) {
	return LoadRecords(j.Paths, j.Format)
}

// String names the files, for messages about what was read.
func (j JSONLFiles) String() string { return strings.Join(j.Paths, ", ") }

// LoadRecords reads the records of JSONL files (each line decoded with
// schemas.DecodeRecord in format f, or detected).
func LoadRecords(paths []string, f string) ([]schemas.Record, error) {
	var out []schemas.Record
	for _, p := range paths {
		recs, err := readJSONL(p, f)
		if err != nil {
			return nil, err
		}
		out = append(out, recs...)
	}
	return out, nil
}

func readJSONL(path, f string) ([]schemas.Record, error) {
	file, err := os.Open(path)
	if err != nil {
		return nil, fmt.Errorf("read %s: %w", path, err)
	}
	defer file.Close()
	var format schemas.Format
	if f != "" {
		if format, err = schemas.ParseFormat(f); err != nil {
			return nil, err
		}
	}
	var out []schemas.Record
	sc := bufio.NewScanner(file)
	sc.Buffer(make([]byte, 0, 1<<16), 16<<20)
	for line := 1; sc.Scan(); line++ {
		b := bytes.TrimSpace(sc.Bytes())
		if len(b) == 0 {
			continue
		}
		ff := format
		if f == "" {
			var ok bool
			if ff, ok = schemas.DetectFormat(b); !ok {
				return nil, fmt.Errorf("%s:%d: %w: cannot detect the record format", path, line, ErrUnsupportedRecord)
			}
		}
		r, err := schemas.DecodeRecord(ff, b)
		if err != nil {
			return nil, fmt.Errorf("%s:%d: %w", path, line, err)
		}
		out = append(out, r)
	}
	if err := sc.Err(); err != nil {
		return nil, fmt.Errorf("read %s: %w", path, err)
	}
	return out, nil
}

// Run trains as rc says: it loads the base model and its tokenizer, the
// records (from the RecordReader of WithRecords; without one, data_files as
// JSONL), renders them, trains, and saves into output_dir. The other extra
// options (WithRegisterer, WithBackend) are passed to New.
func Run(ctx context.Context, rc RunConfig, log zerolog.Logger, extra ...Option) (Result, error) {
	if err := rc.Validate(); err != nil {
		return Result{}, err
	}
	if err := CheckModel(rc); err != nil {
		return Result{}, err
	}
	rc = rc.WithModel(rc.Model())
	var ro options
	for _, o := range extra {
		if err := o(&ro); err != nil {
			return Result{}, err
		}
	}
	mcfg, err := checkpoint.LoadConfig(rc.Model())
	if err != nil {
		return Result{}, fmt.Errorf("load base model: %w", err)
	}
	if err := CheckRun(rc, mcfg, log); err != nil {
		return Result{}, err
	}
	ck, err := checkpoint.Load(rc.Model())
	if err != nil {
		return Result{}, fmt.Errorf("load base model: %w", err)
	}
	tok, err := tokenizer.LoadDir(rc.Model())
	if err != nil {
		return Result{}, fmt.Errorf("load tokenizer: %w", err)
	}
	recs, err := readRecords(ctx, rc, ro.records)
	if err != nil {
		return Result{}, err
	}
	data := rc.Dataset
	if data == "" {
		data = strings.Join(rc.DataFiles, ", ")
	}
	opts := []Option{WithLogger(log), WithSeed(rc.Seed), WithTokenizerDir(rc.Model()), WithDatasetName(data)}
	if rc.MaxSeqLength != 0 {
		opts = append(opts, WithMaxSeqLen(rc.MaxSeqLength))
	}
	if rc.LoRA != nil {
		opts = append(opts, WithLoRA(*rc.LoRA))
	}
	if rc.Packing {
		opts = append(opts, WithPacking())
	}
	if tmpl := TrainedChatTemplate(tok, recs, rc.PromptTemplate); tmpl != "" && rc.Method != "dpo" {
		opts = append(opts, WithChatTemplate(tmpl))
	}
	tr, err := New(rc.Training, ck, append(opts, extra...)...)
	if err != nil {
		return Result{}, err
	}
	defer tr.Close()
	cks, err := CompleteCheckpoints(rc.Training.OutputDir)
	if err != nil && !errors.Is(err, os.ErrNotExist) {
		return Result{}, err
	}
	switch {
	case len(cks) > 0:
		if err := tr.Resume(cks[len(cks)-1]); err != nil {
			return Result{}, err
		}
	case rc.Resume:
		return Result{}, fmt.Errorf("%w: resume asked for but %s holds no checkpoint", ErrInvalidOption, rc.Training.OutputDir)
	}
	r, err := NewRenderer(tok, tr.MaxSeqLen(), rc.PromptTemplate)
	if err != nil {
		return Result{}, err
	}
	if rc.Method == "dpo" {
		pairs := make([]DPOPair, 0, len(recs))
		truncated := 0
		for i, rec := range recs {
			p, cut, err := r.RenderDPO(rec)
			if err != nil {
				return Result{}, fmt.Errorf("record %d: %w", i, err)
			}
			if cut {
				truncated++
			}
			pairs = append(pairs, p)
		}
		log.Info().Int("records", len(recs)).Int("truncated", truncated).Int("max_seq_len", tr.MaxSeqLen()).Msg("preference pairs rendered")
		res, _, err := tr.TrainDPO(ctx, pairs, rc.Beta)
		return res, err
	}
	exs, truncated, err := r.RenderAll(recs)
	if err != nil {
		return Result{}, err
	}
	trainSet, evalSet := SplitEval(exs, rc.EvalSplit, rc.Seed)
	log.Info().Int("records", len(recs)).Int("truncated", truncated).Int("train", len(trainSet)).Int("eval", len(evalSet)).
		Int("max_seq_len", tr.MaxSeqLen()).Msg("training data rendered")
	return tr.TrainEval(ctx, trainSet, evalSet)
}

// readRecords reads a run's records with r, or without one its data_files
// as JSONL; none is ErrNoExamples.
func readRecords(ctx context.Context, rc RunConfig, r RecordReader) ([]schemas.Record, error) {
	if r == nil {
		for _, f := range rc.DataFiles {
			if strings.HasSuffix(f, ".parquet") {
				return nil, fmt.Errorf("%w: data file %s: Parquet needs a RecordReader (WithRecords)", ErrInvalidOption, f)
			}
		}
		if rc.Dataset != "" {
			return nil, fmt.Errorf("%w: dataset %s: no RecordReader (WithRecords)", ErrInvalidOption, rc.Dataset)
		}
		r = JSONLFiles{Paths: rc.DataFiles, Format: rc.Format}
	}
	recs, err := r.ReadRecords(ctx)
	if err != nil {
		return nil, err
	}
	if len(recs) == 0 {
		return nil, fmt.Errorf("%w: %v holds no records", ErrNoExamples, r)
	}
	return recs, nil
}

// SeqLen is the longest sequence a run trains on for a requested
// max_seq_length n: n itself, or for 0 DefaultMaxSeqLen (the model's
// max_position_embeddings when that is shorter). An n over the model's
// max_position_embeddings is a *schemas.LimitError ("Invalid
// max_seq_length").
func SeqLen(n int, mc checkpoint.Config) (int, error) {
	switch {
	case n == 0:
		return min(DefaultMaxSeqLen, mc.MaxPositionEmbeddings), nil
	case n > mc.MaxPositionEmbeddings:
		return 0, schemas.ConfigLimitError("max_seq_length", n, mc.MaxPositionEmbeddings, "the model's max_position_embeddings")
	}
	return n, nil
}

// CheckRun checks rc against the base model's config before anything of
// the run is allocated: max_seq_length against max_position_embeddings
// (SeqLen), then the run's estimated memory (EstimateMemory) against what
// the machine has available (AvailableMemory). Where the available memory
// cannot be read (no /proc) the memory check is skipped with a warning.
func CheckRun(rc RunConfig, mc checkpoint.Config, log zerolog.Logger) error {
	seq, err := SeqLen(rc.MaxSeqLength, mc)
	if err != nil {
		return err
	}
	est := EstimateMemory(mc, rc.Training, rc.LoRA, rc.Method, seq)
	avail, err := AvailableMemory()
	if err != nil {
		log.Warn().Err(err).Int64("estimated_bytes", est.Total()).Msg("memory check skipped")
		return nil
	}
	if err := CheckMemory(est, avail); err != nil {
		return err
	}
	log.Info().Str("estimated", FormatBytes(est.Total())).Str("available", FormatBytes(avail)).Msg("memory check passed")
	return nil
}

// SplitEval holds out round(frac*len(exs)) examples (at least one when frac
// > 0 and there are two or more), chosen from the seed, for evaluation.
func SplitEval(exs []Example, frac float64, seed int64) (train, eval []Example) {
	k := int(math.Round(frac * float64(len(exs))))
	if frac > 0 && k == 0 && len(exs) > 1 {
		k = 1
	}
	if k == 0 || k >= len(exs) {
		return exs, nil
	}
	order := EpochOrder(seed, -1, len(exs))
	held := make(map[int]bool, k)
	for _, i := range order[:k] {
		held[i] = true
	}
	for i, e := range exs {
		if held[i] {
			eval = append(eval, e)
		} else {
			train = append(train, e)
		}
	}
	return train, eval
}
