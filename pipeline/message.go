package pipeline

// Msg is a message as a Handler sees it: what it carries and where it
// stands in its stream. It has no ack, nak or term: the consume loop settles
// each message from the outcome its handler returns.
type Msg struct {
	Subject string
	Data    []byte
	Header  Header
	// ID is the message's Nats-Msg-Id ("" when it has none).
	ID string
	// Deliveries counts this delivery: 1 the first time, more when the
	// message comes back after a failure or a worker's death.
	Deliveries uint64
	// Stream and Sequence say where the message is stored ("" and 0 for
	// a message without JetStream metadata).
	Stream   string
	Sequence uint64
}
