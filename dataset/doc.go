// Package dataset holds the encodings of training records on the bus and in
// storage: shards (Arrow IPC with zstd, under the server's max_payload) that
// travel on lf.data.<dataset>.shard, Parquet parts (zstd) that the dataset
// sink publishes as a dataset's storage.Parts, and the manifest that
// describes a dataset. Where a dataset's objects live is the storage
// package's business; Records reads a stored dataset for a training run.
// Every object is written whole or not at all, so no reader sees a partial one.
package dataset
