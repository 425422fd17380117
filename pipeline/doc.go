// Package pipeline is the only package that talks to NATS JetStream: it connects to a server or starts the embedded one, declares the streams, consumers, key-value buckets and object stores idempotently, publishes with Nats-Msg-Id, and runs the one consume loop with its ack, nak, term and dead-letter rules.
package pipeline
