package train

import (
	"bufio"
	"bytes"
	"context"
	"errors"
	"fmt"
	"math"
	"os"
	"path/filepath"
	"strings"

	"github.com/rs/zerolog"

	"github.com/largeforge/largeforge/model/checkpoint"
	"github.com/largeforge/largeforge/model/tokenizer"
	"github.com/largeforge/largeforge/schemas"
)

// RunConfig is a train.yaml: the method (sft or dpo), the data, and the
// §2.1 TrainingConfig fields. It is the wire contract's schemas.RunConfig,
// which a training job carries on lf.train.<job>.
type RunConfig = schemas.RunConfig

// DefaultEvalSplit is the eval_split of an SFT train.yaml that names none
// (schemas.DefaultEvalSplit).
const DefaultEvalSplit = schemas.DefaultEvalSplit

// ParseRunConfig decodes and validates a train.yaml (schemas.ParseRunConfig):
// its errors wrap schemas.ErrInvalidConfig or the §7 sentinels.
func ParseRunConfig(data []byte) (RunConfig, error) { return schemas.ParseRunConfig(data) }

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
	if err := checkEvalRecords(rc, ro.evalRecords); err != nil {
		return Result{}, err
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
	if rc.Engine != "" {
		opts = append(opts, WithEngine(rc.Engine))
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
	if ro.evalRecords != nil {
		if trainSet, evalSet, err = renderEvalRecords(ctx, r, exs, ro.evalRecords); err != nil {
			return Result{}, err
		}
	}
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
