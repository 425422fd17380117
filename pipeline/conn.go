package pipeline

import (
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"net/url"
	"strings"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"github.com/rs/zerolog"
)

// DefaultConnName is the connection name used when ConnConfig.Name is empty.
const DefaultConnName = "largeforge"

// ConnConfig says how to reach a NATS server and authenticate to it. At most
// one authentication method may be set: User+Password, Token, NKeySeedFile or
// CredsFile. TLS settings combine with any of them.
type ConnConfig struct {
	URL  string // one or more comma-separated nats://, tls://, ws:// or wss:// URLs (required)
	Name string // connection name shown by the server; "" means DefaultConnName

	User, Password string
	Token          string
	NKeySeedFile   string
	CredsFile      string

	TLSCertFile, TLSKeyFile string // client certificate; both or neither
	TLSCAFile               string
	TLSInsecureSkipVerify   bool

	// ReconnectWait is the pause between reconnect attempts (default 1s). The
	// client retries for ever; the disconnects and reconnects are logged.
	ReconnectWait time.Duration
	// WaitForServer is how long Connect keeps trying while no server
	// answers at all (one still starting, as `largeforge up &` is); 0 tries
	// once. Connect's ctx bounds it too.
	WaitForServer time.Duration

	// InboxPrefix replaces _INBOX as the prefix of the connection's reply
	// subjects: RPC replies, JetStream API answers, pull fetches, KV and
	// object-store reads all arrive under <InboxPrefix>.>, so a role's user
	// may subscribe that alone (deploy/nats-roles.conf: _INBOX_<role>).
	// "" keeps nats.go's _INBOX. One token or more, no wildcards.
	InboxPrefix string
}

// Validate checks the URL and that credentials are given in one consistent way.
// Errors wrap ErrInvalidOption.
func (c ConnConfig) Validate() error {
	if strings.TrimSpace(c.URL) == "" {
		return fmt.Errorf("%w: nats url is required", ErrInvalidOption)
	}
	for _, u := range strings.Split(c.URL, ",") {
		u = strings.TrimSpace(u)
		pu, err := url.Parse(u)
		if err != nil {
			return fmt.Errorf("%w: nats url %q: %v", ErrInvalidOption, u, err)
		}
		switch pu.Scheme {
		case "nats", "tls", "ws", "wss":
		default:
			return fmt.Errorf("%w: nats url %q: scheme must be nats, tls, ws or wss", ErrInvalidOption, u)
		}
		if pu.Host == "" {
			return fmt.Errorf("%w: nats url %q has no host", ErrInvalidOption, u)
		}
		if pu.User != nil && (c.User != "" || c.Token != "" || c.NKeySeedFile != "" || c.CredsFile != "") {
			return fmt.Errorf("%w: nats url %q carries credentials and the config sets them too", ErrInvalidOption, u)
		}
	}
	if c.User != "" && c.Password == "" {
		return fmt.Errorf("%w: user %q given without a password", ErrInvalidOption, c.User)
	}
	if c.Password != "" && c.User == "" {
		return fmt.Errorf("%w: password given without a user", ErrInvalidOption)
	}
	methods := 0
	for _, set := range []bool{c.User != "", c.Token != "", c.NKeySeedFile != "", c.CredsFile != ""} {
		if set {
			methods++
		}
	}
	if methods > 1 {
		return fmt.Errorf("%w: give only one of user/password, token, nkey seed file, creds file", ErrInvalidOption)
	}
	if (c.TLSCertFile == "") != (c.TLSKeyFile == "") {
		return fmt.Errorf("%w: tls cert file and tls key file go together", ErrInvalidOption)
	}
	if c.InboxPrefix != "" {
		for _, tok := range strings.Split(c.InboxPrefix, ".") {
			if err := ValidToken(tok); err != nil {
				return fmt.Errorf("%w: inbox prefix %q: %w", ErrInvalidOption, c.InboxPrefix, err)
			}
		}
	}
	if c.ReconnectWait < 0 {
		return fmt.Errorf("%w: reconnect wait %v is negative", ErrInvalidOption, c.ReconnectWait)
	}
	return nil
}

func (c ConnConfig) options(log zerolog.Logger) ([]nats.Option, error) {
	name := c.Name
	if name == "" {
		name = DefaultConnName
	}
	wait := c.ReconnectWait
	if wait == 0 {
		wait = time.Second
	}
	opts := []nats.Option{
		nats.Name(name),
		nats.MaxReconnects(-1),
		nats.ReconnectWait(wait),
		nats.DisconnectErrHandler(func(nc *nats.Conn, err error) {
			ev := log.Warn()
			if err == nil {
				ev = log.Debug() // a deliberate close
			}
			ev.Err(err).Msg("nats disconnected")
		}),
		nats.ReconnectHandler(func(nc *nats.Conn) {
			log.Info().Str("url", nc.ConnectedUrlRedacted()).Uint64("reconnects", nc.Stats().Reconnects).Msg("nats reconnected")
		}),
		nats.ClosedHandler(func(nc *nats.Conn) {
			ev := log.Debug()
			if err := nc.LastError(); err != nil {
				ev = log.Warn().Err(err)
			}
			ev.Msg("nats connection closed")
		}),
		nats.ErrorHandler(func(nc *nats.Conn, sub *nats.Subscription, err error) {
			ev := log.Error().Err(err)
			if sub != nil {
				ev = ev.Str("subject", sub.Subject)
			}
			ev.Msg("nats async error")
		}),
	}
	if c.InboxPrefix != "" {
		opts = append(opts, nats.CustomInboxPrefix(c.InboxPrefix))
	}
	switch {
	case c.User != "":
		opts = append(opts, nats.UserInfo(c.User, c.Password))
	case c.Token != "":
		opts = append(opts, nats.Token(c.Token))
	case c.NKeySeedFile != "":
		o, err := nats.NkeyOptionFromSeed(c.NKeySeedFile)
		if err != nil {
			return nil, fmt.Errorf("nkey seed file %s: %w", c.NKeySeedFile, err)
		}
		opts = append(opts, o)
	case c.CredsFile != "":
		opts = append(opts, nats.UserCredentials(c.CredsFile))
	}
	if c.TLSInsecureSkipVerify { // first: Secure replaces the TLS config the others add to
		opts = append(opts, nats.Secure(&tls.Config{MinVersion: tls.VersionTLS12, InsecureSkipVerify: true})) //nolint:gosec // asked for explicitly
	}
	if c.TLSCertFile != "" {
		opts = append(opts, nats.ClientCert(c.TLSCertFile, c.TLSKeyFile))
	}
	if c.TLSCAFile != "" {
		opts = append(opts, nats.RootCAs(c.TLSCAFile))
	}
	return opts, nil
}

// Bus is a connection to NATS with its JetStream context.
type Bus struct {
	nc  *nats.Conn
	js  jetstream.JetStream
	log zerolog.Logger
}

// Connect validates cfg and connects. The first connection must succeed before
// ctx ends; later disconnects are retried for ever and logged.
func Connect(ctx context.Context, cfg ConnConfig, log zerolog.Logger) (*Bus, error) {
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	log = log.With().Str("logger", "pipeline").Logger()
	opts, err := cfg.options(log)
	if err != nil {
		return nil, fmt.Errorf("%w: %w", ErrConnect, err)
	}
	if dl, ok := ctx.Deadline(); ok {
		opts = append(opts, nats.Timeout(max(time.Until(dl), time.Millisecond)))
	}
	giveUp := time.Now().Add(cfg.WaitForServer)
	for {
		nc, err := connectOnce(ctx, cfg.URL, opts)
		if err == nil {
			return NewBus(nc, log)
		}
		if !errors.Is(err, nats.ErrNoServers) || !time.Now().Before(giveUp) || ctx.Err() != nil {
			return nil, fmt.Errorf("%w %s: %w", ErrConnect, redactURL(cfg.URL), err)
		}
		log.Debug().Str("url", redactURL(cfg.URL)).Msg("no NATS server answers yet; trying again")
		select { // no server listening yet: try again
		case <-time.After(connectRetryPause):
		case <-ctx.Done():
			return nil, fmt.Errorf("%w %s: %w (%w)", ErrConnect, redactURL(cfg.URL), ctx.Err(), err)
		}
	}
}

// connectRetryPause is the pause between connection attempts while Connect
// waits for a server.
const connectRetryPause = 100 * time.Millisecond

// connectOnce makes one connection attempt, abandoned when ctx ends.
func connectOnce(ctx context.Context, url string, opts []nats.Option) (*nats.Conn, error) {
	type result struct {
		nc  *nats.Conn
		err error
	}
	done := make(chan result, 1)
	go func() {
		nc, err := nats.Connect(url, opts...)
		done <- result{nc, err}
	}()
	select {
	case res := <-done:
		return res.nc, res.err
	case <-ctx.Done():
		go func() { // close the connection if it comes up after all
			if r := <-done; r.nc != nil {
				r.nc.Close()
			}
		}()
		return nil, ctx.Err()
	}
}

// NewBus wraps an established connection (Close closes it).
func NewBus(nc *nats.Conn, log zerolog.Logger) (*Bus, error) {
	if nc == nil {
		return nil, fmt.Errorf("%w: nil connection", ErrInvalidOption)
	}
	js, err := jetstream.New(nc)
	if err != nil {
		return nil, fmt.Errorf("jetstream: %w", err)
	}
	log.Debug().Str("url", nc.ConnectedUrlRedacted()).Str("server", nc.ConnectedServerName()).Msg("nats connected")
	return &Bus{nc: nc, js: js, log: log}, nil
}

func redactURL(u string) string {
	parts := strings.Split(u, ",")
	for i, p := range parts {
		if pu, err := url.Parse(strings.TrimSpace(p)); err == nil && pu.User != nil {
			pu.User = url.User("redacted")
			parts[i] = pu.String()
		}
	}
	return strings.Join(parts, ",")
}

// Conn returns the NATS connection.
func (b *Bus) Conn() *nats.Conn { return b.nc }

// Connected reports whether the connection is up now (it reconnects by
// itself after an outage).
func (b *Bus) Connected() bool { return b.nc.IsConnected() }

// MaxPayload is the largest message the server accepts (its max_payload).
func (b *Bus) MaxPayload() int64 { return b.nc.MaxPayload() }

// JetStream returns the JetStream context.
func (b *Bus) JetStream() jetstream.JetStream { return b.js }

// Close flushes and closes the connection.
func (b *Bus) Close() {
	if b.nc.IsClosed() {
		return
	}
	if b.nc.IsConnected() {
		if err := b.nc.FlushTimeout(5 * time.Second); err != nil {
			b.log.Debug().Err(err).Msg("flush before close")
		}
	}
	b.nc.Close()
}
