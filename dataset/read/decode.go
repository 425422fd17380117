package read

import (
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"strconv"
	"time"

	"github.com/largeforge/largeforge/pipeline"
	"github.com/largeforge/largeforge/schemas"
)

// Reject is one record that failed: where it came from, which field broke which
// rule, the message, and the original bytes.
type Reject struct {
	Source   string `json:"source"`
	Line     int64  `json:"line"`
	Field    string `json:"field"`
	Rule     string `json:"rule"`
	Error    string `json:"error"`
	Original []byte `json:"-"`
}

// Accepted is one validated record with its id, canonical size and the bytes
// it was read from.
type Accepted struct {
	Line     int64
	Record   schemas.Record
	ID       string
	Size     int
	Original []byte
}

// Item is the outcome of one row: Rej when it was rejected, else Acc.
type Item struct {
	Acc Accepted
	Rej *Reject
}

// Decode validates rows of format f read from source, one Item per row in
// order: a row that could not be read whole, or whose record breaks the
// format's schema, is rejected with the rule it broke; a record whose
// canonical JSON is over maxRecord bytes (when > 0) with
// schemas.schemas.RuleMaxRecordBytes.
func Decode(source string, f schemas.Format, rows []Row, maxRecord int) []Item {
	items := make([]Item, len(rows))
	var canon []byte // reused from row to row: only its length and hash are kept
	for i, row := range rows {
		if row.Rule != "" {
			items[i].Rej = &Reject{Source: source, Line: row.Line, Rule: row.Rule,
				Error: fmt.Sprintf("line %d: %s: %s", row.Line, row.Rule, row.Problem), Original: row.Data}
			continue
		}
		rec, err := decodeRecord(f, row.Data)
		if err != nil {
			items[i].Rej = rejectFor(source, row, err)
			continue
		}
		canon = rec.AppendCanonicalJSON(canon[:0])
		if maxRecord > 0 && len(canon) > maxRecord {
			field := largestField(rec)
			items[i].Rej = &Reject{Source: source, Line: row.Line, Field: field, Rule: schemas.RuleMaxRecordBytes, Original: row.Data,
				Error: fmt.Sprintf("line %d: field %q: %s: the record is %d bytes (canonical JSON), over the %d bytes one shard may carry under the server's max_payload",
					row.Line, field, schemas.RuleMaxRecordBytes, len(canon), maxRecord)}
			continue
		}
		items[i].Acc = Accepted{Line: row.Line, Record: rec, ID: schemas.RecordID(canon), Size: len(canon), Original: row.Data}
	}
	return items
}

// largestField names the field that makes a record large: the longest string
// of an alpaca or dpo record, the conversation of a sharegpt one.
func largestField(r schemas.Record) string {
	var names, values []string
	switch r.Format {
	case schemas.FormatAlpaca:
		names, values = []string{"instruction", "input", "output"}, []string{r.Alpaca.Instruction, r.Alpaca.Input, r.Alpaca.Output}
	case schemas.FormatDPO:
		names, values = []string{"prompt", "chosen", "rejected"}, []string{r.DPO.Prompt, r.DPO.Chosen, r.DPO.Rejected}
	default:
		return "conversations"
	}
	best := 0
	for i := range values {
		if len(values[i]) > len(values[best]) {
			best = i
		}
	}
	return names[best]
}

func rejectFor(source string, row Row, err error) *Reject {
	r := &Reject{Source: source, Line: row.Line, Rule: "invalid", Error: err.Error(), Original: row.Data}
	var ve *schemas.ValidationError
	if errors.As(err, &ve) {
		r.Field, r.Rule, r.Error = ve.Field, ve.Rule, ve.Message
	}
	return r
}

// shardOverhead is what a shard message adds to its records' canonical bytes
// at most: the Arrow schema and framing, the record ids, headers and subject.
const shardOverhead = 16 << 10

// ShardLimit is the canonical bytes one shard may gather, and so the largest
// record Decode should accept: want, or less when the server's max_payload
// is too small for it.
func ShardLimit(bus *pipeline.Bus, want int) int {
	if most := int(bus.MaxPayload()) - shardOverhead; most > 0 && most < want {
		return most
	}
	return want
}

// RejectRecord builds the dead-letter record of a reject and its message id.
// Its subject is lf.data.<ds>.raw, where a record of the dataset enters the
// bus and where dlq replay sends it once it validates (a record read from a
// file never travelled on another): schemas.DecodeDLQRecord, and so dlq show
// and replay, refuse a record without one.
func RejectRecord(ds, run string, r Reject) (pipeline.DLQRecord, string) {
	subj, err := pipeline.DatasetRawSubject(ds)
	if err != nil {
		subj = "lf.data." + ds + ".raw" // not reached: both callers validated ds
	}
	h := sha256.New()
	fmt.Fprintf(h, "%s\x00%d\x00", r.Source, r.Line)
	h.Write(r.Original)
	msgID := ds + "/reject/" + hex.EncodeToString(h.Sum(nil))
	rec := pipeline.DLQRecord{
		Reason:  r.Error,
		Stage:   schemas.StageIngest,
		Subject: subj,
		Headers: map[string][]string{
			schemas.HeaderSource: {r.Source},
			schemas.HeaderLine:   {strconv.FormatInt(r.Line, 10)},
			schemas.HeaderField:  {r.Field},
			schemas.HeaderRule:   {r.Rule},
			schemas.HeaderRun:    {run},
		},
		Data:     r.Original,
		DataSize: len(r.Original),
		Time:     time.Now().UTC(),
	}
	return rec, msgID
}

// decodeRecord decodes a row of format f, in the dictionary's form or in
// OpenAI's form of it (FromOpenAI).
func decodeRecord(f schemas.Format, data []byte) (schemas.Record, error) {
	if of, ok := OpenAIFormat(data); ok && of == f {
		conv, err := FromOpenAI(f, data)
		if err != nil {
			return schemas.Record{}, err
		}
		data = conv
	}
	return schemas.DecodeRecord(f, data)
}
