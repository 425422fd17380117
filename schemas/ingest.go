package schemas

// What ingestion puts on the bus: shards on lf.data.<dataset>.shard with the
// shard headers below, and rejects on the dead-letter stream under
// lf.dlq.<StageIngest>.<dataset>, one DLQ record each, with the reject's
// source, run, line, field and rule in headers.
const (
	// StageIngest is the stage of ingestion's dead-letter records.
	StageIngest = "ingest"
	// RawRun is the run under which records published to
	// lf.data.<dataset>.raw are counted.
	RawRun = "raw"
	// DatasetSinkDurable is the durable consumer of the dataset sink on
	// LF_DATASETS, whose ack floor tells ingest when its shards are
	// persisted.
	DatasetSinkDurable = "dataset-sink"
)

// Headers of a shard message (an Lf-Format header also names the format of
// a raw record).
const (
	HeaderFormat = "Lf-Format"
	HeaderSource = "Lf-Source"
	HeaderRun    = "Lf-Run"
	HeaderRows   = "Lf-Rows"
)

// Headers of a reject's dead-letter record (beside HeaderSource and
// HeaderRun).
const (
	HeaderLine  = "Lf-Line"
	HeaderField = "Lf-Field"
	HeaderRule  = "Lf-Rule"
)

// Rules of rejects that are not the schema's (ValidationError has those).
const (
	// RuleFormat: the record is not of the dataset's format (or its format
	// cannot be told).
	RuleFormat = "format"
	// RuleMaxRecordBytes: the record's canonical JSON is larger than one
	// shard may be, so it cannot travel on the bus under max_payload.
	RuleMaxRecordBytes = "maxRecordBytes"
	// RuleRecordID: a shard row's id is not RecordID of its canonical JSON
	// (a forged or corrupted shard); the dataset sink rejects it.
	RuleRecordID = "recordId"
)
