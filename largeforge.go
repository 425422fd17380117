// Package largeforge holds the files that ship inside the largeforge binary:
// the single-node nats.conf that the embedded default starts with.
package largeforge

import _ "embed"

// NATSConf is the repository's nats.conf, embedded so that `largeforge up`
// works on a machine that has only the binary.
//
//go:embed nats.conf
var NATSConf []byte

// Version is the version reported by the binary and the health endpoint.
var Version = "0.1.0-dev"
