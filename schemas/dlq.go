package schemas

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"time"
)

// ErrBadDLQRecord is wrapped by DecodeDLQRecord for bytes that are not a DLQ
// record.
var ErrBadDLQRecord = errors.New("bad dlq record")

// DLQRecord is what the dead-letter stream stores for a message that could not
// be processed.
type DLQRecord struct {
	Reason     string              `json:"reason"`
	Error      string              `json:"error,omitempty"` // the full error text, when it says more than Reason
	Stage      string              `json:"stage"`
	Stream     string              `json:"stream,omitempty"`
	Subject    string              `json:"subject"`
	Sequence   uint64              `json:"sequence,omitempty"`
	Deliveries uint64              `json:"deliveries,omitempty"`
	Headers    map[string][]string `json:"headers,omitempty"`
	Data       []byte              `json:"data"`                // original bytes (base64 in JSON)
	DataSize   int                 `json:"data_size"`           // length of the original bytes
	Truncated  bool                `json:"truncated,omitempty"` // Data was cut to fit max_payload
	Time       time.Time           `json:"time"`
}

// DecodeDLQRecord parses a record read from LF_DLQ. It rejects unknown fields
// and records without a reason, stage, subject or time; errors wrap
// ErrBadDLQRecord.
func DecodeDLQRecord(data []byte) (DLQRecord, error) {
	var rec DLQRecord
	dec := json.NewDecoder(bytes.NewReader(data))
	dec.DisallowUnknownFields()
	if err := dec.Decode(&rec); err != nil {
		return DLQRecord{}, fmt.Errorf("%w: %w", ErrBadDLQRecord, err)
	}
	if dec.More() {
		return DLQRecord{}, fmt.Errorf("%w: trailing data after the record", ErrBadDLQRecord)
	}
	switch {
	case rec.Reason == "":
		return DLQRecord{}, fmt.Errorf("%w: no reason", ErrBadDLQRecord)
	case rec.Stage == "":
		return DLQRecord{}, fmt.Errorf("%w: no stage", ErrBadDLQRecord)
	case rec.Subject == "":
		return DLQRecord{}, fmt.Errorf("%w: no subject", ErrBadDLQRecord)
	case rec.Time.IsZero():
		return DLQRecord{}, fmt.Errorf("%w: no time", ErrBadDLQRecord)
	case rec.DataSize < len(rec.Data):
		return DLQRecord{}, fmt.Errorf("%w: data_size %d is less than the %d data bytes", ErrBadDLQRecord, rec.DataSize, len(rec.Data))
	}
	return rec, nil
}

// HeaderReplay marks a message `largeforge dlq replay` published again: a
// request re-run (its value is the dead letter's DLQ sequence), and the
// result the infer worker publishes for it, which the results sink lets
// replace the request's error row.
const HeaderReplay = "Lf-Replay"

// ReplayMsgID is the msg id of the replay of the message whose msg id was
// id from the dead letter of DLQ sequence seq (HeaderReplay's value): a replay of its own to the
// duplicate window, the same when run twice.
func ReplayMsgID(id, seq string) string { return id + "/replay/" + seq }
