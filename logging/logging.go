// Package logging builds the zerolog loggers of LargeForge: JSON lines in exactly the
// shape of DATA_DICTIONARY §6.1 (timestamp, level, logger, message, request_id,
// trace_id, context), or a readable console form for a terminal.
//
// Components receive a zerolog.Logger; they name themselves with Named and put
// additional fields under the "context" object with Context.
package logging

import (
	"errors"
	"fmt"
	"io"
	"os"
	"strings"
	"sync"
	"time"

	"github.com/rs/zerolog"
)

// Formats accepted by New.
const (
	FormatJSON    = "json"
	FormatConsole = "console"
	FormatAuto    = "auto" // console on a terminal, JSON otherwise
)

// ErrInvalidOption is returned for an unknown format or level.
var ErrInvalidOption = errors.New("invalid logging option")

// TimeFormat is ISO 8601 in UTC with milliseconds and a Z suffix.
const TimeFormat = "2006-01-02T15:04:05.000Z"

var setup sync.Once

// configure sets zerolog's field names to the dictionary's. zerolog keeps these
// in package variables; they are set once, to the same values, by every New.
func configure() {
	setup.Do(func() {
		zerolog.TimestampFieldName = "timestamp"
		zerolog.LevelFieldName = "level"
		zerolog.MessageFieldName = "message"
		zerolog.ErrorFieldName = "error"
		zerolog.TimeFieldFormat = TimeFormat
		zerolog.TimestampFunc = func() time.Time { return time.Now().UTC() }
		zerolog.LevelFieldMarshalFunc = LevelName
	})
}

// LevelName maps zerolog levels to the dictionary's: DEBUG, INFO, WARNING, ERROR, CRITICAL.
func LevelName(l zerolog.Level) string {
	switch l {
	case zerolog.TraceLevel, zerolog.DebugLevel:
		return "DEBUG"
	case zerolog.InfoLevel, zerolog.NoLevel:
		return "INFO"
	case zerolog.WarnLevel:
		return "WARNING"
	case zerolog.ErrorLevel:
		return "ERROR"
	default:
		return "CRITICAL"
	}
}

// ParseLevel accepts the dictionary's names and zerolog's, in any case.
func ParseLevel(s string) (zerolog.Level, error) {
	switch strings.ToUpper(s) {
	case "DEBUG", "TRACE":
		return zerolog.DebugLevel, nil
	case "INFO", "":
		return zerolog.InfoLevel, nil
	case "WARNING", "WARN":
		return zerolog.WarnLevel, nil
	case "ERROR":
		return zerolog.ErrorLevel, nil
	case "CRITICAL", "FATAL":
		return zerolog.FatalLevel, nil
	}
	return zerolog.InfoLevel, fmt.Errorf("%w: log level %q (want debug, info, warning, error or critical)", ErrInvalidOption, s)
}

// New returns the root logger writing to w. format is json, console or auto.
// The root logger has no "logger" field: each component names itself once with
// Named (zerolog appends fields, so naming a named logger would repeat the key).
func New(w io.Writer, format, level string) (zerolog.Logger, error) {
	configure()
	lvl, err := ParseLevel(level)
	if err != nil {
		return zerolog.Nop(), err
	}
	switch format = Resolve(format, w); format {
	case FormatJSON, FormatConsole:
	default:
		return zerolog.Nop(), fmt.Errorf("%w: log format %q (want json, console or auto)", ErrInvalidOption, format)
	}
	if format == FormatJSON {
		w = &shapeWriter{out: w}
	}
	if format == FormatConsole {
		w = zerolog.ConsoleWriter{
			Out:           w,
			TimeFormat:    "15:04:05.000",
			FormatLevel:   func(i any) string { return fmt.Sprintf("%-8s", i) },
			FieldsExclude: nil,
		}
	}
	return zerolog.New(w).Level(lvl).With().Timestamp().Logger(), nil
}

// Resolve returns the format New writes to w in: auto (or "") is console on a
// terminal and json elsewhere; any other value is returned as it is.
func Resolve(format string, w io.Writer) string {
	if format != FormatAuto && format != "" {
		return format
	}
	if isTerminal(w) {
		return FormatConsole
	}
	return FormatJSON
}

// Named returns a child logger whose "logger" field is name (e.g. "largeforge.ingest").
func Named(l zerolog.Logger, name string) zerolog.Logger {
	return l.With().Str("logger", name).Logger()
}

// Context returns a child logger that adds fields under the dictionary's "context" object.
// Use it for the fields that §6.1 nests (model, dataset, tokens_generated, latency_ms, ...).
func Context(l zerolog.Logger, fields map[string]any) zerolog.Logger {
	return l.With().Dict("context", zerolog.Dict().Fields(fields)).Logger()
}

// Ctx returns a zerolog dictionary for one event's "context" object:
//
//	log.Info().Dict("context", logging.Ctx().Str("dataset", name)).Msg("part written")
func Ctx() *zerolog.Event { return zerolog.Dict() }

// WithRequest adds request_id and trace_id (when not empty) as top-level fields.
func WithRequest(l zerolog.Logger, requestID, traceID string) zerolog.Logger {
	c := l.With()
	if requestID != "" {
		c = c.Str("request_id", requestID)
	}
	if traceID != "" {
		c = c.Str("trace_id", traceID)
	}
	return c.Logger()
}

func isTerminal(w io.Writer) bool {
	f, ok := w.(*os.File)
	if !ok {
		return false
	}
	fi, err := f.Stat()
	if err != nil {
		return false
	}
	return fi.Mode()&os.ModeCharDevice != 0
}
