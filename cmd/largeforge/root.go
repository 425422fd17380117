package main

import (
	"cmp"
	"context"
	"errors"
	"fmt"
	"net"
	"net/http"
	"os"
	"strings"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"
	"github.com/prometheus/client_golang/prometheus/promhttp"
	"github.com/rs/zerolog"
	"github.com/spf13/cobra"

	"github.com/largeforge/largeforge"
	"github.com/largeforge/largeforge/logging"
	"github.com/largeforge/largeforge/pipeline"
)

// defaultNATSURL is where `largeforge up` listens unless nats.conf says otherwise.
const defaultNATSURL = "nats://127.0.0.1:4222"

// Config holds the flags every command shares.
type Config struct {
	NATS        pipeline.ConnConfig
	LogFormat   string
	LogLevel    string
	MetricsAddr string
	// Logger names the running command's log lines ("largeforge.train"),
	// those no component names itself.
	Logger string
	// Role is the NATS role the command runs as (commandRole).
	Role string
	// PasswordFile and TokenFile hold the NATS password or token (read at
	// start, one trailing newline dropped), so no secret is on the
	// command line.
	PasswordFile, TokenFile string
}

// secretFlags are the flags that put a secret on the command line, where
// ps shows it to every user of the machine, and where to put it instead.
var secretFlags = map[string]string{
	"nats-password": "--nats-password-file or LARGEFORGE_NATS_PASSWORD",
	"nats-token":    "--nats-token-file or LARGEFORGE_NATS_TOKEN",
	"api-key":       "LARGEFORGE_API_KEY",
}

// readSecrets fills the NATS password and token from their files; a file
// and a value of the same secret together are an error.
func (c *Config) readSecrets() error {
	for _, s := range []struct {
		flag, file string
		val        *string
	}{{"--nats-password-file", c.PasswordFile, &c.NATS.Password}, {"--nats-token-file", c.TokenFile, &c.NATS.Token}} {
		if s.file == "" {
			continue
		}
		data, err := os.ReadFile(s.file)
		if err != nil {
			return fmt.Errorf("%s: %w", s.flag, err)
		}
		v := strings.TrimSuffix(strings.TrimSuffix(string(data), "\n"), "\r")
		if v == "" {
			return fmt.Errorf("%s %s: the file is empty", s.flag, s.file)
		}
		if *s.val != "" && *s.val != v {
			return fmt.Errorf("%s: give the secret once (the file, the flag or the environment)", s.flag)
		}
		*s.val = v
	}
	return nil
}

// warnSecretFlags logs a warning for each secret given as a flag.
func warnSecretFlags(cmd *cobra.Command, log zerolog.Logger) {
	for name, instead := range secretFlags {
		if f := cmd.Flags().Lookup(name); f != nil && f.Changed {
			log.Warn().Str("flag", "--"+name).Msgf("--%s puts a secret on the command line, where ps shows it to every user of this machine; use %s", name, instead)
		}
	}
}

// Validate checks the shared flags.
func (c Config) Validate() error {
	if _, err := logging.ParseLevel(c.LogLevel); err != nil {
		return err
	}
	switch c.LogFormat {
	case logging.FormatAuto, logging.FormatJSON, logging.FormatConsole:
	default:
		return fmt.Errorf("--log-format %q: want auto, json or console", c.LogFormat)
	}
	if c.MetricsAddr != "" {
		if _, _, err := net.SplitHostPort(c.MetricsAddr); err != nil {
			return fmt.Errorf("--metrics-addr %q: %v", c.MetricsAddr, err)
		}
	}
	return c.NATS.Validate()
}

// configKey is the context key of the running command's Config.
type configKey struct{}

// configFrom returns the Config the root command put in ctx before running
// a command: the shared flags of that invocation. Outside a command run
// (a function called on its own) it is the flags' defaults.
func configFrom(ctx context.Context) *Config {
	if c, ok := ctx.Value(configKey{}).(*Config); ok {
		return c
	}
	d := defaultConfig()
	return &d
}

// defaultConfig is the shared flags' defaults (some from the environment).
func defaultConfig() Config {
	c := Config{LogFormat: logging.FormatAuto, LogLevel: "info", MetricsAddr: os.Getenv("LARGEFORGE_METRICS_ADDR")}
	c.NATS.URL = cmp.Or(os.Getenv("LARGEFORGE_NATS"), defaultNATSURL)
	c.NATS.Password, c.NATS.Token = os.Getenv("LARGEFORGE_NATS_PASSWORD"), os.Getenv("LARGEFORGE_NATS_TOKEN")
	c.NATS.WaitForServer = 5 * time.Second
	return c
}

func newRootCmd() *cobra.Command {
	root, _ := newRoot()
	return root
}

// newRoot returns the root command and the Config its shared flags fill; a
// command reads it with configFrom(cmd.Context()).
func newRoot() (*cobra.Command, *Config) {
	cfg := &Config{}
	root := &cobra.Command{
		Use:           "largeforge",
		Short:         "Run LLM work (ingestion, batch inference, scoring, routing, fine-tuning) through NATS JetStream",
		Version:       largeforge.Version,
		SilenceUsage:  true,
		SilenceErrors: true,
		PersistentPreRunE: func(cmd *cobra.Command, args []string) error {
			cfg.Logger = strings.ReplaceAll(cmd.CommandPath(), " ", ".")
			setRole(cmd, cfg)
			if err := cfg.readSecrets(); err != nil {
				return err
			}
			if err := cfg.Validate(); err != nil {
				return err
			}
			warnSecretFlags(cmd, loggerFor(cfg))
			cmd.SetContext(context.WithValue(cmd.Context(), configKey{}, cfg))
			return nil
		},
	}
	f := root.PersistentFlags()
	d := defaultConfig()
	f.StringVar(&cfg.NATS.URL, "nats", d.NATS.URL, "NATS server URL(s), comma separated (env LARGEFORGE_NATS)")
	f.StringVar(&cfg.NATS.User, "nats-user", "", "NATS user name")
	f.StringVar(&cfg.NATS.Password, "nats-password", d.NATS.Password, "NATS password (env LARGEFORGE_NATS_PASSWORD; as a flag, ps shows it: prefer --nats-password-file)")
	f.StringVar(&cfg.PasswordFile, "nats-password-file", os.Getenv("LARGEFORGE_NATS_PASSWORD_FILE"), "file holding the NATS password (env LARGEFORGE_NATS_PASSWORD_FILE)")
	f.StringVar(&cfg.NATS.Token, "nats-token", d.NATS.Token, "NATS token (env LARGEFORGE_NATS_TOKEN; as a flag, ps shows it: prefer --nats-token-file)")
	f.StringVar(&cfg.TokenFile, "nats-token-file", os.Getenv("LARGEFORGE_NATS_TOKEN_FILE"), "file holding the NATS token (env LARGEFORGE_NATS_TOKEN_FILE)")
	f.StringVar(&cfg.NATS.NKeySeedFile, "nats-nkey", "", "NATS nkey seed file")
	f.StringVar(&cfg.NATS.CredsFile, "nats-creds", "", "NATS credentials file (JWT + nkey)")
	f.StringVar(&cfg.NATS.TLSCertFile, "tls-cert", "", "client TLS certificate")
	f.StringVar(&cfg.NATS.TLSKeyFile, "tls-key", "", "client TLS key")
	f.StringVar(&cfg.NATS.TLSCAFile, "tls-ca", "", "CA certificate to verify the server")
	f.BoolVar(&cfg.NATS.TLSInsecureSkipVerify, "tls-insecure", false, "do not verify the server's certificate")
	f.StringVar(&cfg.NATS.InboxPrefix, "inbox-prefix", os.Getenv("LARGEFORGE_INBOX_PREFIX"), "prefix of this process's reply subjects (env LARGEFORGE_INBOX_PREFIX; default _INBOX_<role>: the command's role, see deploy/README.md)")
	f.DurationVar(&cfg.NATS.WaitForServer, "wait-for-nats", d.NATS.WaitForServer, "keep trying this long while no NATS server answers (one still starting)")
	f.StringVar(&cfg.LogFormat, "log-format", d.LogFormat, "log format: json (timestamp, level, logger, message, request_id, trace_id, context), console, or auto (console on a terminal)")
	f.StringVar(&cfg.LogLevel, "log-level", d.LogLevel, "log level: debug, info, warning, error, critical")
	f.StringVar(&cfg.MetricsAddr, "metrics-addr", d.MetricsAddr, "serve Prometheus /metrics on this address (host:port; env LARGEFORGE_METRICS_ADDR; up's default 127.0.0.1:9464)")

	root.AddCommand(newUpCmd(), newIngestCmd(), newDatasetsCmd(), newSamplesCmd(),
		newModelCmd(), newGenerateCmd(), newScoreCmd(),
		newSubmitCmd(), newJobsCmd(), newWorkerCmd(), newGatewayCmd(), newRouteCmd(), newRouterCmd(), newExpertsCmd(), newTrainCmd(), newAdaptersCmd(), newTopologyCmd(), newPasswdCmd(), newDoctorCmd(), newDLQCmd())
	return root, cfg
}

// newLogger builds the root logger on stderr, named for the running command
// (components name their own lines).
func newLogger(ctx context.Context) zerolog.Logger {
	return loggerFor(configFrom(ctx))
}

// loggerFor builds the root logger of cfg on stderr.
func loggerFor(cfg *Config) zerolog.Logger {
	log, err := logging.New(os.Stderr, cfg.LogFormat, cfg.LogLevel)
	if err != nil {
		return zerolog.New(os.Stderr)
	}
	name := cfg.Logger
	if name == "" {
		name = "largeforge"
	}
	return logging.Named(log, name)
}

// newRegistry returns the process's metrics registry with the Go and process collectors.
func newRegistry() *prometheus.Registry {
	reg := prometheus.NewRegistry()
	reg.MustRegister(collectors.NewGoCollector(), collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}))
	return reg
}

// serveMetrics serves /metrics, and pr's /health and /ready, on addr until
// ctx ends; "" serves nothing.
func serveMetrics(ctx context.Context, addr string, reg *prometheus.Registry, pr *probes, log zerolog.Logger) error {
	if addr == "" {
		return nil
	}
	ln, err := net.Listen("tcp", addr)
	if err != nil {
		return fmt.Errorf("metrics: %w", err)
	}
	mlog := logging.Named(log, "largeforge.metrics")
	mux := metricsMux(reg, pr)
	srv := &http.Server{Handler: mux, ReadHeaderTimeout: 10 * time.Second}
	go func() {
		<-ctx.Done()
		sctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		_ = srv.Shutdown(sctx)
	}()
	go func() {
		if err := srv.Serve(ln); err != nil && !errors.Is(err, http.ErrServerClosed) {
			mlog.Error().Err(err).Msg("metrics server")
		}
	}()
	mlog.Info().Dict("context", logging.Ctx().Str("addr", ln.Addr().String())).Msg("serving /metrics, /health, /ready")
	return nil
}

// metricsMux serves reg on /metrics and pr's /health and /ready.
func metricsMux(reg *prometheus.Registry, pr *probes) *http.ServeMux {
	mux := http.NewServeMux()
	mux.Handle("/metrics", promhttp.HandlerFor(reg, promhttp.HandlerOpts{Registry: reg}))
	pr.register(mux)
	return mux
}

// connect opens the bus for a client command: as admin it applies the
// topology, as any other role it checks that its part exists (connectAs).
func connect(ctx context.Context, log zerolog.Logger) (*pipeline.Bus, error) {
	return connectAs(ctx, "largeforge-cli", log)
}
