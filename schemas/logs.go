package schemas

import (
	"encoding/json"
	"fmt"
	"time"
)

// Log levels (§6.2).
const (
	LevelDebug    = "DEBUG"
	LevelInfo     = "INFO"
	LevelWarning  = "WARNING"
	LevelError    = "ERROR"
	LevelCritical = "CRITICAL"
)

// LogTimeFormat is the §6.1 timestamp layout: ISO 8601 in UTC with
// milliseconds, e.g. "2024-12-01T10:30:00.000Z".
const LogTimeFormat = "2006-01-02T15:04:05.000Z07:00"

// Log field names (§6.2), for loggers that write them one by one.
const (
	LogFieldTimestamp = "timestamp"
	LogFieldLevel     = "level"
	LogFieldLogger    = "logger"
	LogFieldMessage   = "message"
	LogFieldRequestID = "request_id"
	LogFieldTraceID   = "trace_id"
	LogFieldContext   = "context"
)

// LogEntry is one structured log line (§6).
type LogEntry struct {
	Timestamp time.Time      `json:"timestamp"`
	Level     string         `json:"level"`
	Logger    string         `json:"logger"`
	Message   string         `json:"message"`
	RequestID string         `json:"request_id,omitempty"`
	TraceID   string         `json:"trace_id,omitempty"`
	Context   map[string]any `json:"context,omitempty"`
}

type logEntryJSON struct {
	Timestamp string         `json:"timestamp"`
	Level     string         `json:"level"`
	Logger    string         `json:"logger"`
	Message   string         `json:"message"`
	RequestID string         `json:"request_id,omitempty"`
	TraceID   string         `json:"trace_id,omitempty"`
	Context   map[string]any `json:"context,omitempty"`
}

// MarshalJSON writes the timestamp with LogTimeFormat in UTC.
func (e LogEntry) MarshalJSON() ([]byte, error) {
	return json.Marshal(logEntryJSON{
		Timestamp: e.Timestamp.UTC().Format(LogTimeFormat),
		Level:     e.Level, Logger: e.Logger, Message: e.Message,
		RequestID: e.RequestID, TraceID: e.TraceID, Context: e.Context,
	})
}

// UnmarshalJSON reads any RFC 3339 timestamp.
func (e *LogEntry) UnmarshalJSON(data []byte) error {
	var w logEntryJSON
	if err := json.Unmarshal(data, &w); err != nil {
		return err
	}
	ts, err := time.Parse(time.RFC3339Nano, w.Timestamp)
	if err != nil {
		return fmt.Errorf("log entry timestamp: %w", err)
	}
	*e = LogEntry{Timestamp: ts, Level: w.Level, Logger: w.Logger, Message: w.Message,
		RequestID: w.RequestID, TraceID: w.TraceID, Context: w.Context}
	return nil
}

// ValidLogLevel reports whether s is one of the §6.2 levels.
func ValidLogLevel(s string) bool {
	switch s {
	case LevelDebug, LevelInfo, LevelWarning, LevelError, LevelCritical:
		return true
	}
	return false
}
