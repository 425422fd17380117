// Package storage is where LargeForge's artifacts live, addressed by key:
// dataset parts, manifests and rejects (datasets/<name>/...), the results of
// batch jobs (jobs/<job>/...), models (models/<name>) and training
// checkpoints (train/<job>/checkpoint-<step>). The key functions (keys.go)
// are the one place that knows this layout.
//
// Store is the interface every backend satisfies: put, create (publish an
// immutable object once), append, open and list by key. Local keeps the
// objects in directories of this machine (the --data-dir); the artifacts
// issue puts JetStream's object store behind the same interface, reached
// through pipeline. No caller builds a path from a key: Path names a file
// only where a local file is the product (output.jsonl, rejects.jsonl).
//
// Parts publishes the numbered immutable parts of one collection (a dataset,
// a job's results): a number is taken with Create, which fails when another
// writer took it first, so the parts of several writers never collide.
// Deduper says which record ids a collection holds already; Memory is the
// in-process one, seeded from the parts.
package storage
