package pipeline

import (
	"context"
	"fmt"
	"net"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/nats-io/nats-server/v2/server"
	"github.com/rs/zerolog"

	"github.com/largeforge/largeforge"
)

// DefaultNATSConf is the repository's nats.conf (embedded in the binary as
// largeforge.NATSConf); it is used when EmbeddedConfig.Conf is nil.
var DefaultNATSConf = string(largeforge.NATSConf)

// DefaultStartTimeout bounds how long StartEmbedded waits for the server when
// ctx has no earlier deadline.
const DefaultStartTimeout = 30 * time.Second

// EmbeddedConfig configures the in-process NATS server.
type EmbeddedConfig struct {
	DataDir string // JetStream file store goes in <DataDir>/jetstream (required)
	Conf    []byte // contents of a nats.conf; nil means DefaultNATSConf
	Listen  string // "" → the conf's listen address; "127.0.0.1:-1" → random port (tests)
}

// Validate checks the fields and parses Conf. Errors wrap ErrInvalidOption.
func (c EmbeddedConfig) Validate() error {
	_, err := c.serverOptions()
	return err
}

func (c EmbeddedConfig) serverOptions() (*server.Options, error) {
	if strings.TrimSpace(c.DataDir) == "" {
		return nil, fmt.Errorf("%w: embedded server data dir is required", ErrInvalidOption)
	}
	conf := c.Conf
	if conf == nil {
		conf = []byte(DefaultNATSConf)
	}
	opts := &server.Options{}
	if err := opts.ProcessConfigString(string(conf)); err != nil {
		return nil, fmt.Errorf("%w: nats.conf: %w", ErrInvalidOption, err)
	}
	if c.Listen != "" {
		host, port, err := parseListen(c.Listen)
		if err != nil {
			return nil, err
		}
		opts.Host, opts.Port = host, port
	}
	abs, err := filepath.Abs(c.DataDir)
	if err != nil {
		return nil, fmt.Errorf("%w: data dir %q: %w", ErrInvalidOption, c.DataDir, err)
	}
	opts.JetStream = true
	opts.StoreDir = abs // the server adds "jetstream"
	// The server must never exit the process or install signal handlers.
	opts.NoSigs = true
	return opts, nil
}

func parseListen(s string) (string, int, error) {
	host, ps, err := net.SplitHostPort(s)
	if err != nil {
		return "", 0, fmt.Errorf("%w: listen address %q: %w", ErrInvalidOption, s, err)
	}
	port, err := strconv.Atoi(ps)
	if err != nil || port < -1 || port > 65535 {
		return "", 0, fmt.Errorf("%w: listen address %q: port must be -1 (random), 0 (default 4222) or 1-65535", ErrInvalidOption, s)
	}
	if host == "" {
		host = "0.0.0.0"
	}
	return host, port, nil
}

// Embedded is a running in-process NATS server with JetStream.
type Embedded struct {
	srv  *server.Server
	opts *server.Options
	log  zerolog.Logger
	once sync.Once
}

// StartEmbedded starts the server and waits until it accepts connections. It
// fails with an error wrapping ErrListen when the address is taken, and with
// ErrEmbeddedStart for any other start failure or when ctx ends first.
func StartEmbedded(ctx context.Context, cfg EmbeddedConfig, log zerolog.Logger) (*Embedded, error) {
	opts, err := cfg.serverOptions()
	if err != nil {
		return nil, err
	}
	log = log.With().Str("logger", "pipeline.embedded").Logger()
	srv, err := server.NewServer(opts)
	if err != nil {
		return nil, fmt.Errorf("%w: %w", ErrEmbeddedStart, err)
	}
	sl := &serverLogger{log: log, fatal: make(chan string, 1)}
	srv.SetLoggerV2(sl, opts.Debug, opts.Trace, false)
	go srv.Start()

	ctx, cancel := context.WithTimeout(ctx, DefaultStartTimeout)
	defer cancel()
	for {
		if srv.ReadyForConnections(50 * time.Millisecond) {
			break
		}
		select {
		case msg := <-sl.fatal:
			srv.Shutdown()
			srv.WaitForShutdown()
			if strings.Contains(msg, "Error listening on port") {
				return nil, fmt.Errorf("%w on %s:%d (is another server running there?): %s", ErrListen, opts.Host, opts.Port, msg)
			}
			return nil, fmt.Errorf("%w: %s", ErrEmbeddedStart, msg)
		case <-ctx.Done():
			srv.Shutdown()
			srv.WaitForShutdown()
			return nil, fmt.Errorf("%w: not ready: %w", ErrEmbeddedStart, ctx.Err())
		default:
		}
	}
	if !srv.JetStreamEnabled() {
		srv.Shutdown()
		srv.WaitForShutdown()
		return nil, fmt.Errorf("%w: jetstream is not enabled", ErrEmbeddedStart)
	}
	e := &Embedded{srv: srv, opts: opts, log: log}
	log.Info().Str("url", e.ClientURL()).Str("store_dir", e.StoreDir()).Msg("embedded nats server ready")
	return e, nil
}

// ClientURL is the nats:// URL clients connect to.
func (e *Embedded) ClientURL() string { return e.srv.ClientURL() }

// StoreDir is the JetStream store directory (<DataDir>/jetstream).
func (e *Embedded) StoreDir() string { return e.srv.JetStreamConfig().StoreDir }

// Server exposes the underlying server (monitoring, tests).
func (e *Embedded) Server() *server.Server { return e.srv }

// Shutdown stops the server and waits until it has stopped. It is safe to call
// more than once.
func (e *Embedded) Shutdown() {
	e.once.Do(func() {
		e.srv.Shutdown()
		e.srv.WaitForShutdown()
		e.log.Info().Msg("embedded nats server stopped")
	})
}

// serverLogger sends the server's log lines to zerolog. Fatal lines are logged
// as errors and reported to StartEmbedded instead of exiting the process.
type serverLogger struct {
	log   zerolog.Logger
	fatal chan string
}

func (l *serverLogger) Noticef(format string, v ...any) { l.line(l.log.Info(), format, v) }
func (l *serverLogger) Warnf(format string, v ...any)   { l.line(l.log.Warn(), format, v) }
func (l *serverLogger) Errorf(format string, v ...any)  { l.line(l.log.Error(), format, v) }
func (l *serverLogger) Debugf(format string, v ...any)  { l.line(l.log.Debug(), format, v) }
func (l *serverLogger) Tracef(format string, v ...any)  { l.line(l.log.Trace(), format, v) }

// line logs one line of the server's, dropping the blank ones its banner
// is spaced with.
func (l *serverLogger) line(e *zerolog.Event, format string, v []any) {
	msg := fmt.Sprintf(format, v...)
	if strings.TrimSpace(msg) == "" {
		e.Discard()
		return
	}
	e.Msg(msg)
}
func (l *serverLogger) Fatalf(format string, v ...any) {
	msg := fmt.Sprintf(format, v...)
	l.log.Error().Bool("fatal", true).Msg(msg)
	select {
	case l.fatal <- msg:
	default:
	}
}
