// Package schemas defines the data dictionary (DATA_DICTIONARY.md) as Go
// types: training records, configs, API structures, metrics and log records,
// with the dictionary's JSON Schemas, validation rules and exact error
// messages, and the Arrow schemas of each record kind. It does no I/O apart
// from reading config files in the Load* helpers.
//
// Training records (§1): DecodeRecord decodes and validates one JSON object
// against a Format's JSON Schema. It is a hand-written scanner that accepts
// exactly what the embedded draft-07 schemas (Schema, compiled with
// santhosh-tekuri/jsonschema) accept, and is several times faster; a
// differential fuzz test holds the two together. Rejections are
// *ValidationError values naming the field and rule, and all match
// ErrInvalidRecord. Record.ID is the SHA-256 of Record.CanonicalJSON, the
// record's identity across key order, whitespace and escaping.
//
// Configs (§2): ParseTrainingConfig, ParseLoraConfig and ParseExperts read
// YAML or JSON, apply the dictionary's defaults to absent fields, reject
// unknown keys and validate. API types (§3): DecodeCompletionRequest and
// CompletionRequest.Validate apply the §7.1 rules with the dictionary's exact
// error strings (the sentinels in errors.go).
//
// The wire contract: every message that crosses the bus is a type of this
// package. Batch jobs (job.go): Request on lf.req.<job>.<model> (a
// completion or a ScoreInput), Result on lf.res.<job> (a response, a
// ScoreOutput, an error row, or a control marker), and the OutputLine of
// output.jsonl. Training jobs (train.go): TrainJob on lf.train.<job>, a
// job id and its RunConfig (a train.yaml, ParseRunConfig), with
// DecodeTrainJob.
//
// Arrow (shards and Parquet parts): ArrowSchema, AppendRecord,
// RecordsToArrow and RecordsFromArrow.
package schemas
