package logging

import (
	"bytes"
	"encoding/json"
	"errors"
	"regexp"
	"testing"

	"github.com/rs/zerolog"
)

func TestJSONShape(t *testing.T) {
	var buf bytes.Buffer
	log, err := New(&buf, FormatJSON, "debug")
	if err != nil {
		t.Fatal(err)
	}
	log = WithRequest(Named(log, "llm.inference.server"), "req-abc123", "trace-xyz789")
	log.Info().Dict("context", Ctx().Str("model", "largeforge-7b").Int("tokens_generated", 156).Float64("latency_ms", 245.5)).Msg("Request completed")

	var got map[string]any
	if err := json.Unmarshal(buf.Bytes(), &got); err != nil {
		t.Fatalf("not JSON: %v: %s", err, buf.String())
	}
	ts, _ := got["timestamp"].(string)
	if !regexp.MustCompile(`^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z$`).MatchString(ts) {
		t.Errorf("timestamp %q is not ISO 8601 UTC with milliseconds", ts)
	}
	want := map[string]any{"level": "INFO", "logger": "llm.inference.server", "message": "Request completed", "request_id": "req-abc123", "trace_id": "trace-xyz789"}
	for k, v := range want {
		if got[k] != v {
			t.Errorf("%s = %v, want %v", k, got[k], v)
		}
	}
	ctx, ok := got["context"].(map[string]any)
	if !ok || ctx["model"] != "largeforge-7b" || ctx["tokens_generated"] != float64(156) || ctx["latency_ms"] != 245.5 {
		t.Errorf("context = %v", got["context"])
	}
}

func TestShapeMovesExtraFieldsIntoContext(t *testing.T) {
	var buf bytes.Buffer
	log, err := New(&buf, FormatJSON, "info")
	if err != nil {
		t.Fatal(err)
	}
	// A component that adds top-level fields and names itself twice.
	named := Named(Named(log, "outer"), "pipeline")
	named.Warn().Str("stream", "LF_DLQ").Err(errors.New("boom")).
		Dict("context", Ctx().Int("n", 1)).Msg("dead-lettered")
	var got map[string]any
	if err := json.Unmarshal(buf.Bytes(), &got); err != nil {
		t.Fatalf("not JSON: %v: %s", err, buf.String())
	}
	for k := range got {
		switch k {
		case "timestamp", "level", "logger", "message", "request_id", "trace_id", "context":
		default:
			t.Errorf("top-level field %q outside the §6.1 shape", k)
		}
	}
	ctx, _ := got["context"].(map[string]any)
	if got["logger"] != "pipeline" || ctx["stream"] != "LF_DLQ" || ctx["error"] != "boom" || ctx["n"] != float64(1) {
		t.Errorf("line = %s", buf.String())
	}
	if !bytes.HasPrefix(buf.Bytes(), []byte(`{"timestamp":`)) {
		t.Errorf("fields out of the dictionary's order: %s", buf.String())
	}
}

func TestLevels(t *testing.T) {
	tests := []struct {
		name  string
		level zerolog.Level
		want  string
	}{
		{"debug", zerolog.DebugLevel, "DEBUG"},
		{"info", zerolog.InfoLevel, "INFO"},
		{"warn", zerolog.WarnLevel, "WARNING"},
		{"error", zerolog.ErrorLevel, "ERROR"},
		{"fatal", zerolog.FatalLevel, "CRITICAL"},
		{"panic", zerolog.PanicLevel, "CRITICAL"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if got := LevelName(tt.level); got != tt.want {
				t.Errorf("LevelName(%v) = %q, want %q", tt.level, got, tt.want)
			}
		})
	}
}

func TestNewRejectsBadOptions(t *testing.T) {
	tests := []struct {
		name, format, level string
		wantErr             bool
	}{
		{"json info", "json", "info", false},
		{"console warning", "console", "WARNING", false},
		{"auto", "auto", "", false},
		{"bad format", "xml", "info", true},
		{"bad level", "json", "loud", true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			_, err := New(&bytes.Buffer{}, tt.format, tt.level)
			if (err != nil) != tt.wantErr {
				t.Fatalf("err = %v, wantErr %v", err, tt.wantErr)
			}
			if err != nil && !errors.Is(err, ErrInvalidOption) {
				t.Errorf("err %v does not wrap ErrInvalidOption", err)
			}
		})
	}
}
