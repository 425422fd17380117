// Package archtest holds the check that imports point the way
// ../shared/ARCHITECTURE.md says: producers never import consumers nor one
// another, consumers never import producers, model never imports the bus or
// datasets, and only pipeline and cmd talk NATS. It has no code of its own;
// run it with `go test ./internal/archtest`.
package archtest
