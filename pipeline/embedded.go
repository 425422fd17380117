package pipeline

import (
	"context"
	"errors"
	"fmt"
	"net"
	"path/filepath"
	"slices"
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
	// DataDir: the JetStream file store goes in <DataDir>/jetstream. Required,
	// except with a ConfFile whose jetstream block names a store_dir, which
	// then wins.
	DataDir string
	Conf    []byte // contents of a nats.conf; nil means DefaultNATSConf
	// ConfFile is a nats-server configuration file used in place of Conf (a
	// cluster node's: its own server_name, store_dir and cluster block). It
	// is read as nats-server -c reads it: include resolves relative to the
	// file, $VARS from the environment, an unknown key is an error naming
	// the file, line and key.
	ConfFile string
	Listen   string // "" → the conf's listen address; "127.0.0.1:-1" → random port (tests)
}

// Validate checks the fields and parses Conf. Errors wrap ErrInvalidOption.
func (c EmbeddedConfig) Validate() error {
	_, err := c.serverOptions()
	return err
}

func (c EmbeddedConfig) serverOptions() (*server.Options, error) {
	opts, err := c.parseConf()
	if err != nil {
		return nil, err
	}
	if c.Listen != "" {
		host, port, err := parseListen(c.Listen)
		if err != nil {
			return nil, err
		}
		opts.Host, opts.Port = host, port
	}
	switch {
	case c.ConfFile != "" && opts.StoreDir != "":
		// The file's store_dir wins; a relative one is the working
		// directory's, as for nats-server.
	case strings.TrimSpace(c.DataDir) == "":
		return nil, fmt.Errorf("%w: embedded server data dir is required (or a store_dir in the config file)", ErrInvalidOption)
	default:
		abs, err := filepath.Abs(c.DataDir)
		if err != nil {
			return nil, fmt.Errorf("%w: data dir %q: %w", ErrInvalidOption, c.DataDir, err)
		}
		opts.StoreDir = abs // the server adds "jetstream"
	}
	opts.JetStream = true
	// The server must never exit the process or install signal handlers.
	opts.NoSigs = true
	return opts, nil
}

// parseConf reads ConfFile, or else Conf (DefaultNATSConf when nil). Warnings
// of the parser alone are no error.
func (c EmbeddedConfig) parseConf() (*server.Options, error) {
	opts := &server.Options{}
	if c.ConfFile != "" {
		if err := configErrors(opts.ProcessConfigFile(c.ConfFile)); err != nil {
			return nil, fmt.Errorf("%w: config file %s: %w", ErrInvalidOption, c.ConfFile, err)
		}
		return opts, nil
	}
	conf := c.Conf
	if conf == nil {
		conf = []byte(DefaultNATSConf)
	}
	if err := opts.ProcessConfigString(string(conf)); err != nil {
		return nil, fmt.Errorf("%w: nats.conf: %w", ErrInvalidOption, err)
	}
	return opts, nil
}

// configErrors drops a parse result that holds only warnings (such as a
// field the server no longer uses) and trims the newline the server's
// error ends with.
func configErrors(err error) error {
	var list interface {
		Errors() []error
		Warnings() []error
	}
	if errors.As(err, &list) {
		if len(list.Errors()) == 0 {
			return nil
		}
		return errors.New(strings.TrimSpace(err.Error()))
	}
	return err
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
			switch {
			case strings.Contains(msg, "Error listening on port"):
				return nil, fmt.Errorf("%w on %s:%d (is another server running there?): %s", ErrListen, opts.Host, opts.Port, msg)
			case strings.Contains(msg, "Error listening on"): // the cluster's route port, a leafnode's, a gateway's
				return nil, fmt.Errorf("%w (is another server running there?): %s", ErrListen, msg)
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

// Clustered reports whether the server is a node of a JetStream cluster (its
// configuration has a cluster block and a server_name).
func (e *Embedded) Clustered() bool { return e.srv.JetStreamIsClustered() }

// WaitJetStream waits until JetStream answers: at once on a single server, on
// a cluster node once the cluster has a meta leader (a quorum of its nodes
// connected), which is all a node waits for: the others may join later. It
// returns how many JetStream servers are online, this one included. While it
// waits, every warnEvery (10 s when 0) it logs a warning with the routes
// connected so far: a route that does not answer is not an error, since
// nodes start in any order and rejoin after a restart. It fails with ctx.
func (e *Embedded) WaitJetStream(ctx context.Context, warnEvery time.Duration) (int, error) {
	if !e.Clustered() {
		return 1, nil
	}
	if warnEvery <= 0 {
		warnEvery = 10 * time.Second
	}
	tick := time.NewTicker(50 * time.Millisecond)
	defer tick.Stop()
	warnAt := time.Now().Add(warnEvery)
	for {
		if online, size, ok := e.metaState(); ok {
			ev := e.log.Info()
			if online < size {
				ev = e.log.Warn()
			}
			ev.Int("online", online).Int("cluster_size", size).Strs("routes", e.routeNames()).
				Msg("jetstream cluster ready (a node not online yet joins when it starts)")
			return online, nil
		}
		if time.Now().After(warnAt) {
			warnAt = time.Now().Add(warnEvery)
			e.log.Warn().Strs("connected", e.routeNames()).Strs("configured", e.routeURLs()).
				Msg("waiting for a jetstream quorum: routes that do not answer yet are retried")
		}
		select {
		case <-ctx.Done():
			return 0, fmt.Errorf("wait for the jetstream cluster (connected routes %v of %v): %w", e.routeNames(), e.routeURLs(), ctx.Err())
		case <-tick.C:
		}
	}
}

// metaState reports the JetStream servers online and the cluster's known
// size once the meta group has a leader.
func (e *Embedded) metaState() (online, size int, ok bool) {
	jsz, err := e.srv.Jsz(nil)
	if err != nil || jsz.Meta == nil || jsz.Meta.Leader == "" {
		return 0, 0, false
	}
	online = 1 // this server
	for _, p := range jsz.Meta.Replicas {
		if !p.Offline {
			online++
		}
	}
	// Just after the first election the meta group may not list every
	// peer yet; a routed server of a JetStream cluster is one online.
	online = max(online, len(e.routeNames())+1)
	return online, max(jsz.Meta.Size, online), true
}

// MetaPeers reports, on the JetStream meta leader, the size of the meta
// group and how many of its peers, this server included, are current
// (leader false, and nothing else, on any other server: only the leader
// knows). A cluster whose every node is current in the meta group has
// persisted its peer set: stopped whole, any majority of it elects a
// leader again on restart.
func (e *Embedded) MetaPeers() (size, current int, leader bool) {
	jsz, err := e.srv.Jsz(nil)
	if err != nil || jsz.Meta == nil || jsz.Meta.Leader == "" || jsz.Meta.Leader != e.srv.Name() {
		return 0, 0, false
	}
	current = 1 // this server
	for _, p := range jsz.Meta.Replicas {
		if p.Current && !p.Offline {
			current++
		}
	}
	return jsz.Meta.Size, current, true
}

// routeNames are the names of the servers this one has a route to.
func (e *Embedded) routeNames() []string {
	rz, err := e.srv.Routez(nil)
	if err != nil {
		return nil
	}
	var names []string
	for _, r := range rz.Routes {
		if r.RemoteName != "" && !slices.Contains(names, r.RemoteName) {
			names = append(names, r.RemoteName)
		}
	}
	slices.Sort(names)
	return names
}

func (e *Embedded) routeURLs() []string {
	var urls []string
	for _, u := range e.opts.Routes {
		urls = append(urls, u.Host)
	}
	return urls
}

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
func (l *serverLogger) Errorf(format string, v ...any) {
	// A route that does not answer is retried: nodes start in any order
	// and rejoin after a restart, so it is a warning, not an error.
	if strings.HasPrefix(format, "Error trying to connect to route") {
		l.line(l.log.Warn(), format, v)
		return
	}
	l.line(l.log.Error(), format, v)
}
func (l *serverLogger) Debugf(format string, v ...any) { l.line(l.log.Debug(), format, v) }
func (l *serverLogger) Tracef(format string, v ...any) { l.line(l.log.Trace(), format, v) }

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
