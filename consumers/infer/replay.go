package infer

import (
	"github.com/largeforge/largeforge/pipeline"
	"github.com/largeforge/largeforge/schemas"
)

// resultID is the msg id and header of it's result. The result of a
// replayed request carries the replay mark, which lets the results sink
// replace the request's error row, under a msg id of its own: the results
// stream's duplicate window would drop a second result under the first's.
func resultID(it *item) (string, pipeline.Header) {
	id := schemas.MsgID(it.res.Job, it.res.CustomID)
	seq := it.msg.Header.Get(schemas.HeaderReplay)
	if seq == "" {
		return id, nil
	}
	hdr := pipeline.Header{}
	hdr.Set(schemas.HeaderReplay, seq)
	return schemas.ReplayMsgID(id, seq), hdr
}
