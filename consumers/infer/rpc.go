package infer

import (
	"context"
	"encoding/json"
	"errors"
	"math/rand/v2"
	"net/http"
	"time"

	"github.com/largeforge/largeforge/logging"
	"github.com/largeforge/largeforge/pipeline"
	"github.com/largeforge/largeforge/schemas"
	"github.com/largeforge/largeforge/serve"
)

// The interactive path: each worker also answers requests on
// lf.rpc.<model> (queue group rpc-<model>, so the workers of a model share
// them), through the same Batcher as the batch path. A request's body is a
// schemas.CompletionRequest (prompt or messages); when it asks to stream,
// the text goes back in "chunk" messages as it is generated. The "final"
// message holds the schemas.CompletionResponse; an "error" message holds an
// schemas.RPCErrorBody. A cancel from the caller stops the generation.

// StatusCancelled counts interactive requests whose caller went away.
const StatusCancelled = "cancelled"

// ServeRPC starts answering the model's interactive requests until ctx ends
// or the server is stopped.
func (h *Handler) ServeRPC(ctx context.Context) (*pipeline.RPCServer, error) {
	return h.bus.ServeRPC(ctx, pipeline.RPCSubject(h.s.Name), pipeline.RPCQueue(h.s.Name), h.handleRPC)
}

func (h *Handler) rpcError(req *pipeline.RPCRequest, status int, typ, code, msg string) {
	h.sendError(req, schemas.RPCErrorBody{Status: status, Type: typ, Code: code, Message: msg})
}

// requestError answers 400 for a request the worker refuses with the
// schemas.ValidationMessage of err: the §7.1 message, and for a field over
// its limit (a *schemas.LimitError, such as max_tokens beyond the model's
// context) the field in param and the code invalid_request.
func (h *Handler) requestError(req *pipeline.RPCRequest, code string, err error) {
	msg, param := schemas.ValidationMessage(err)
	body := schemas.RPCErrorBody{Status: http.StatusBadRequest, Type: schemas.ErrTypeInvalidRequest, Code: code, Message: msg}
	var le *schemas.LimitError
	if errors.As(err, &le) {
		body.Code, body.Param = "invalid_request", param
	}
	h.sendError(req, body)
}

func (h *Handler) sendError(req *pipeline.RPCRequest, body schemas.RPCErrorBody) {
	data, _ := json.Marshal(body)
	_ = req.Send(pipeline.RPCError, data)
	h.met.Requests.WithLabelValues(h.s.Name, StatusError).Inc()
}

func (h *Handler) handleRPC(ctx context.Context, req *pipeline.RPCRequest) {
	log := logging.WithRequest(h.log, req.RequestID, req.TraceID)
	c, err := schemas.DecodeCompletionRequest(req.Data)
	if err == nil {
		err = c.Validate()
	}
	if err != nil {
		h.requestError(req, "invalid_request", err)
		return
	}
	tr, err := serve.TextRequest(h.s.Tok, c, rand.Int64N(1<<62))
	if err != nil {
		h.requestError(req, "invalid_request", err)
		return
	}
	var onText func(string)
	if c.Stream {
		onText = func(s string) { _ = req.Send(pipeline.RPCChunk, []byte(s)) }
	}
	active := h.met.Active.WithLabelValues(h.s.Name)
	active.Inc()
	t0 := time.Now()
	out, err := h.gen.Submit(ctx, h.s.Batcher, tr, onText)
	active.Dec()
	switch {
	case err != nil && ctx.Err() != nil:
		h.met.Requests.WithLabelValues(h.s.Name, StatusCancelled).Inc()
		log.Debug().Msg("interactive request cancelled")
		return
	case serve.Refused(err):
		h.requestError(req, "model_error", err)
		return
	case err != nil:
		log.Error().Err(err).Msg("interactive generation failed")
		h.rpcError(req, http.StatusInternalServerError, schemas.ErrTypeServer, "model_error", err.Error())
		return
	}
	lat := time.Since(t0)
	h.met.Latency.WithLabelValues(h.s.Name).Observe(lat.Seconds())
	h.met.TokensGenerated.WithLabelValues(h.s.Name).Add(float64(out.CompletionTokens))
	if s := lat.Seconds(); s > 0 && out.CompletionTokens > 0 {
		h.met.TokensPerSecond.WithLabelValues(h.s.Name).Set(float64(out.CompletionTokens) / s)
	}
	h.met.Requests.WithLabelValues(h.s.Name, StatusSuccess).Inc()
	id := req.RequestID
	if id == "" {
		id = shortHash(time.Now().String())
	}
	prefix := "cmpl-"
	if c.IsChat() {
		prefix = "chatcmpl-"
	}
	resp := serve.Response(prefix+id, h.s.Name, c, out)
	data, err := json.Marshal(resp)
	if err != nil {
		h.rpcError(req, http.StatusInternalServerError, schemas.ErrTypeServer, "encode", err.Error())
		return
	}
	if err := req.Send(pipeline.RPCFinal, data); err != nil {
		log.Warn().Err(err).Msg("interactive reply")
	}
	log.Debug().Dur("latency", lat).Int("tokens_generated", out.CompletionTokens).Msg("interactive request done")
}
