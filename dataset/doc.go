// Package dataset holds the encodings of training records on the bus and on disk:
// shards (Arrow IPC with zstd, under the server's max_payload) that travel on
// lf.data.<dataset>.shard, Parquet parts (zstd) that the dataset sink writes under
// <data-dir>/datasets/<name>/, and the manifest that describes a dataset.
// Every file is written to a temporary name and renamed, so no reader sees a partial one.
package dataset
