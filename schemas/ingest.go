package schemas

// What ingestion puts on the bus besides the shards (whose headers are the
// dataset package's): rejects travel on the dead-letter stream under
// lf.dlq.<StageIngest>.<dataset>, one DLQ record each, with the reject's
// line, field and rule in these headers.
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

// Headers of a reject's dead-letter record (beside dataset.HeaderSource and
// dataset.HeaderRun).
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
)
