// Package ingest turns training data into validated records on the bus.
//
// It reads JSONL, JSON arrays and Parquet files (or stdin) in the alpaca, sharegpt
// and dpo formats of DATA_DICTIONARY §1 through dataset/read, streaming with
// bounded memory. Each record is decoded, validated against the dictionary's
// schema and identified by the sha256 of its canonical JSON. Accepted records travel in shards (Arrow IPC, zstd)
// on lf.data.<dataset>.shard; rejected ones go to the dead-letter stream with the
// source, line, field, rule, message and original bytes. The dataset sink's
// RawHandler does the same for single records that any NATS client publishes to
// lf.data.<dataset>.raw.
package ingest
