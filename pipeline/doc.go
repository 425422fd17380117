// Package pipeline is the only package that talks to NATS JetStream: it connects to a server or starts the embedded one, declares the streams, consumers, key-value buckets and object stores idempotently, publishes with Nats-Msg-Id, and runs the one consume loop with its ack, nak, term and dead-letter rules.
//
// # Server and connection
//
// StartEmbedded runs nats-server in the process with JetStream on a file store
// under EmbeddedConfig.DataDir/jetstream, configured by a nats.conf (the
// repository's, DefaultNATSConf, unless another is given). Connect reaches any
// server (embedded or a cluster) with one of user/password, token, nkey or
// creds, optionally over TLS; it reconnects for ever and logs each disconnect.
//
// # Topology
//
// EnsureTopology applies DefaultTopology(1): the streams LF_DATASETS
// (lf.data.>), LF_REQUESTS (lf.req.>, work queue), LF_ROUTES (lf.route.>),
// LF_RESULTS (lf.res.>), LF_TRAIN (lf.train.>, work queue: training jobs) and
// LF_DLQ (lf.dlq.>), all on file storage with 1 MiB
// messages and a 2 minute duplicate window; the KV buckets lf_jobs, lf_workers
// (30s TTL), lf_experts and lf_datasets; the object store lf_models. It creates
// what is missing, updates what may change and never deletes: an incompatible
// existing stream is logged and left alone. Subjects are built with
// DatasetRawSubject, RequestSubject and the like, which reject tokens with
// spaces, '.', '*' or '>'.
//
// # Publishing
//
// Bus.Publish waits for the stream's ack; the msgID goes out as Nats-Msg-Id,
// so a repeated publish within the duplicate window is acked as a duplicate
// (PubAck.Duplicate) and stored once. A Publisher keeps a bounded window of
// asynchronous publishes in flight for bulk producers; Flush waits for them.
//
// # Consuming
//
// NewConsumer declares a durable pull consumer (explicit acks, MaxAckPending
// always bounded) and Consumer.Run feeds batches of Msg (subject, data,
// header, id, deliveries, stream sequence: no way to ack) to a Handler, which returns
// one outcome per message: nil → Ack; an error wrapping ErrInvalid (made with
// Invalid) → a DLQRecord on lf.dlq.<stage>.<token> and TermWithReason; any
// other error → NakWithDelay, until the MaxDeliver-th failed delivery, which
// goes to the DLQ too. The server's MaxDeliver is one more than ours, so a
// message whose last attempt never finished (a crashed worker) comes back once
// and is dead-lettered without reaching the handler. While Handle runs, every
// message of the batch gets InProgress every InProgressEvery. When Run's ctx
// ends it stops fetching, lets the batch in hand finish (its ctx stays alive
// for DrainTimeout), settles it and returns nil.
//
// # Workers, buckets and objects
//
// A Group holds a worker's goroutines (consume loops, sweeps, heartbeats):
// Stop ends them, Wait returns the first error. Bus.KV opens a bucket as a
// KV (Get, Put, Create, Update by revision, Keys, Watch, Heartbeat) and
// Bus.Objects an object store; their errors wrap ErrKeyNotFound,
// ErrKeyExists and ErrWrongRevision, so no other package needs nats.go.
package pipeline
