package infer

import (
	"fmt"

	"github.com/largeforge/largeforge/pipeline"
	"github.com/largeforge/largeforge/schemas"
)

// headerReplay marks a request that `largeforge dlq replay` queued again
// (its value: the dead letter's sequence in LF_DLQ); the results sink reads
// the same header (resultsink.HeaderReplay) on the result.
const headerReplay = "Lf-Replay"

// resultID is the msg id and header of it's result. The result of a
// replayed request carries the replay mark, which lets the results sink
// replace the request's error row, under a msg id of its own: the results
// stream's duplicate window would drop a second result under the first's.
func resultID(it *item) (string, pipeline.Header) {
	id := schemas.MsgID(it.res.Job, it.res.CustomID)
	seq := it.msg.Header.Get(headerReplay)
	if seq == "" {
		return id, nil
	}
	hdr := pipeline.Header{}
	hdr.Set(headerReplay, seq)
	return fmt.Sprintf("%s/replay/%s", id, seq), hdr
}
