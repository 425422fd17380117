// Package read reads the rows of input files, streaming with bounded memory,
// for ingest and submit alike: training records (Open: JSONL, a JSON array,
// Parquet, or stdin), batch job rows (NewLines: bounded JSONL lines;
// NewRequestParquet), and decodes training records into accepted ones or
// rejects (Decode) with the dead-letter record of a reject (RejectRecord).
// The raw-record handler of the dataset sink decodes with it too.
package read
