package infer

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/url"
	"strings"
	"time"

	"github.com/largeforge/largeforge/schemas"
)

// Endpoint defaults.
const (
	DefaultEndpointTimeout = 5 * time.Minute
	DefaultHealthTimeout   = 2 * time.Second
	DefaultHealthEvery     = 5 * time.Second
)

// ErrEndpoint is wrapped by a failure to reach an expert's endpoint or to
// read its answer (transient: a batch row is retried).
var ErrEndpoint = errors.New("expert endpoint")

// Endpoint is an OpenAI-compatible HTTP server that serves an expert (§2.3
// endpoint): another LargeForge gateway, vLLM, llama.cpp's server. Requests
// go to <base>/v1/completions or <base>/v1/chat/completions (base is the
// URL, with or without a trailing /v1) under the model name Model.
type Endpoint struct {
	base    string
	model   string
	timeout time.Duration
	client  *http.Client
}

// NewEndpoint validates rawURL (http or https, with a host) and returns the
// endpoint serving model. timeout bounds one request, streamed or not
// (0: DefaultEndpointTimeout).
func NewEndpoint(rawURL, model string, timeout time.Duration) (*Endpoint, error) {
	u, err := url.Parse(strings.TrimSpace(rawURL))
	if err != nil || (u.Scheme != "http" && u.Scheme != "https") || u.Host == "" {
		return nil, fmt.Errorf("%w: endpoint %q: want an http:// or https:// URL", ErrInvalidOption, rawURL)
	}
	if model == "" {
		return nil, fmt.Errorf("%w: endpoint %s: no model name", ErrInvalidOption, rawURL)
	}
	if timeout < 0 {
		return nil, fmt.Errorf("%w: endpoint timeout %v is negative", ErrInvalidOption, timeout)
	}
	if timeout == 0 {
		timeout = DefaultEndpointTimeout
	}
	base := strings.TrimSuffix(strings.TrimSuffix(u.String(), "/"), "/v1")
	tr := &http.Transport{DialContext: (&net.Dialer{Timeout: 5 * time.Second}).DialContext,
		ResponseHeaderTimeout: timeout, MaxIdleConnsPerHost: 16}
	return &Endpoint{base: base, model: model, timeout: timeout, client: &http.Client{Transport: tr}}, nil
}

// URL is the endpoint's base URL.
func (e *Endpoint) URL() string { return e.base }

// Healthy checks the endpoint: GET <base>/health answers 2xx (a server
// without /health: GET <base>/v1/models does), within DefaultHealthTimeout.
func (e *Endpoint) Healthy(ctx context.Context) error {
	ctx, cancel := context.WithTimeout(ctx, DefaultHealthTimeout)
	defer cancel()
	status, err := e.get(ctx, "/health")
	if err == nil && status == http.StatusNotFound {
		status, err = e.get(ctx, "/v1/models")
	}
	if err != nil {
		return err
	}
	if status/100 != 2 {
		return fmt.Errorf("%w %s: health check: status %d", ErrEndpoint, e.base, status)
	}
	return nil
}

func (e *Endpoint) get(ctx context.Context, path string) (int, error) {
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, e.base+path, nil)
	if err != nil {
		return 0, fmt.Errorf("%w %s: %w", ErrEndpoint, e.base, err)
	}
	resp, err := e.client.Do(req)
	if err != nil {
		return 0, fmt.Errorf("%w %s: %w", ErrEndpoint, e.base, err)
	}
	_, _ = io.Copy(io.Discard, io.LimitReader(resp.Body, 1<<16))
	_ = resp.Body.Close()
	return resp.StatusCode, nil
}

// EndpointError is an error answer of the endpoint (status 4xx or 5xx) with
// its OpenAI error object.
type EndpointError struct {
	Status int
	Body   schemas.RPCErrorBody
}

func (e *EndpointError) Error() string {
	return fmt.Sprintf("expert endpoint answered %d: %s", e.Status, e.Body.Message)
}

// Complete sends c to the endpoint (as Model) and returns its response.
// With onText, the request streams and onText gets each piece of text as
// it comes. A 4xx or 5xx answer is an *EndpointError; a failure to reach
// or read the endpoint wraps ErrEndpoint.
func (e *Endpoint) Complete(ctx context.Context, c schemas.CompletionRequest, onText func(string)) (schemas.CompletionResponse, error) {
	ctx, cancel := context.WithTimeout(ctx, e.timeout)
	defer cancel()
	c.Model, c.Stream = e.model, onText != nil
	path := "/v1/completions"
	if c.IsChat() {
		path = "/v1/chat/completions"
	}
	body, err := json.Marshal(c)
	if err != nil {
		return schemas.CompletionResponse{}, fmt.Errorf("%w %s: encode: %w", ErrEndpoint, e.base, err)
	}
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, e.base+path, bytes.NewReader(body))
	if err != nil {
		return schemas.CompletionResponse{}, fmt.Errorf("%w %s: %w", ErrEndpoint, e.base, err)
	}
	req.Header.Set("Content-Type", "application/json")
	resp, err := e.client.Do(req)
	if err != nil {
		return schemas.CompletionResponse{}, fmt.Errorf("%w %s: %w", ErrEndpoint, e.base, err)
	}
	defer resp.Body.Close()
	if resp.StatusCode/100 != 2 {
		return schemas.CompletionResponse{}, endpointError(resp)
	}
	if onText == nil {
		var out schemas.CompletionResponse
		if err := json.NewDecoder(resp.Body).Decode(&out); err != nil {
			return out, fmt.Errorf("%w %s: decode response: %w", ErrEndpoint, e.base, err)
		}
		return out, nil
	}
	return readStream(resp.Body, c.IsChat(), onText)
}

// endpointError reads an OpenAI error answer.
func endpointError(resp *http.Response) error {
	data, _ := io.ReadAll(io.LimitReader(resp.Body, 1<<16))
	var eb struct {
		Error struct {
			Message string  `json:"message"`
			Type    string  `json:"type"`
			Param   *string `json:"param"`
			Code    any     `json:"code"`
		} `json:"error"`
	}
	body := schemas.RPCErrorBody{Status: resp.StatusCode, Type: schemas.ErrTypeServer, Message: strings.TrimSpace(string(data))}
	if json.Unmarshal(data, &eb) == nil && eb.Error.Message != "" {
		body.Message, body.Type = eb.Error.Message, eb.Error.Type
		if eb.Error.Param != nil {
			body.Param = *eb.Error.Param
		}
		if s, ok := eb.Error.Code.(string); ok {
			body.Code = s
		}
	}
	return &EndpointError{Status: resp.StatusCode, Body: body}
}

// streamChunk is one server-sent event of a streamed completion.
type streamChunk struct {
	ID      string `json:"id"`
	Created int64  `json:"created"`
	Choices []struct {
		Text  string `json:"text"`
		Delta struct {
			Content string `json:"content"`
		} `json:"delta"`
		FinishReason *string `json:"finish_reason"`
	} `json:"choices"`
	Usage *schemas.Usage `json:"usage"`
	Error *struct {
		Message string `json:"message"`
	} `json:"error"`
}

// readStream reads server-sent events up to data: [DONE] into one response.
func readStream(r io.Reader, chat bool, onText func(string)) (schemas.CompletionResponse, error) {
	var out schemas.CompletionResponse
	var text strings.Builder
	finish := ""
	sc := bufio.NewScanner(r)
	sc.Buffer(make([]byte, 64<<10), 4<<20)
	done := false
	for sc.Scan() {
		data, ok := strings.CutPrefix(sc.Text(), "data:")
		if !ok {
			continue
		}
		data = strings.TrimSpace(data)
		if data == "[DONE]" {
			done = true
			break
		}
		var ch streamChunk
		if err := json.Unmarshal([]byte(data), &ch); err != nil {
			return out, fmt.Errorf("%w: bad stream event: %w", ErrEndpoint, err)
		}
		if ch.Error != nil {
			return out, &EndpointError{Status: http.StatusBadGateway, Body: schemas.RPCErrorBody{Status: http.StatusBadGateway, Type: schemas.ErrTypeServer, Message: ch.Error.Message}}
		}
		out.ID, out.Created = ch.ID, ch.Created
		if ch.Usage != nil {
			out.Usage = *ch.Usage
		}
		for _, c := range ch.Choices {
			s := c.Text + c.Delta.Content
			if s != "" {
				text.WriteString(s)
				onText(s)
			}
			if c.FinishReason != nil && *c.FinishReason != "" {
				finish = *c.FinishReason
			}
		}
	}
	if err := sc.Err(); err != nil {
		return out, fmt.Errorf("%w: read stream: %w", ErrEndpoint, err)
	}
	if !done {
		return out, fmt.Errorf("%w: stream ended before [DONE]", ErrEndpoint)
	}
	ch := schemas.Choice{FinishReason: finish}
	out.Object = schemas.ObjectTextCompletion
	if chat {
		out.Object = schemas.ObjectChatCompletion
		ch.Message = &schemas.ChatMessage{Role: schemas.RoleAssistant, Content: text.String()}
	} else {
		ch.Text = text.String()
	}
	out.Choices = []schemas.Choice{ch}
	return out, nil
}
