package main

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/rs/zerolog"
	"github.com/spf13/cobra"

	"github.com/largeforge/largeforge"
	"github.com/largeforge/largeforge/pipeline"
	"github.com/largeforge/largeforge/producers/gateway"
	"github.com/largeforge/largeforge/routing"
	"github.com/largeforge/largeforge/routing/classifier"
	"github.com/largeforge/largeforge/schemas"
)

// GatewayFlags are the flags of `largeforge gateway` (and --http of up).
type GatewayFlags struct {
	HTTP        string
	WorkerWait  time.Duration
	MaxBody     int64
	Experts     string        // experts file (YAML or JSON): enables model "auto" and /v1/route
	RouterModel string        // directory of `largeforge router train`: the router's learned stage
	KeysFile    string        // API keys, one a line (# comments); also LARGEFORGE_API_KEYS, comma separated
	MaxConns    int           // connections served at once
	MaxFile     int64         // POST /v1/files limit in bytes
	ModelMap    []string      // --batch-model-map NAME=SERVED: a batch line's model → the served model
	PubLease    time.Duration // --batch-publish-lease: a batch's publisher lease
}

// errNoAPIKeys is returned when an API-keys source is configured but yields
// no key: that must never turn authentication off.
var errNoAPIKeys = errors.New("no API key in it (blank lines and # comments only); authentication would be off")

// apiKeys reads the keys of --api-keys-file and LARGEFORGE_API_KEYS. A
// source that is set but holds no key is an error.
func (g GatewayFlags) apiKeys() ([]string, error) {
	var keys []string
	if env, set := os.LookupEnv("LARGEFORGE_API_KEYS"); set {
		for _, k := range strings.Split(env, ",") {
			if k = strings.TrimSpace(k); k != "" {
				keys = append(keys, k)
			}
		}
		if len(keys) == 0 {
			return nil, fmt.Errorf("LARGEFORGE_API_KEYS is set: %w", errNoAPIKeys)
		}
	}
	if g.KeysFile != "" {
		data, err := os.ReadFile(g.KeysFile)
		if err != nil {
			return nil, fmt.Errorf("--api-keys-file: %w", err)
		}
		n := len(keys)
		for _, line := range strings.Split(string(data), "\n") {
			if line = strings.TrimSpace(line); line != "" && !strings.HasPrefix(line, "#") {
				keys = append(keys, line)
			}
		}
		if len(keys) == n {
			return nil, fmt.Errorf("--api-keys-file %s: %w", g.KeysFile, errNoAPIKeys)
		}
	}
	return keys, nil
}

// Validate checks the gateway flags.
func (g GatewayFlags) Validate() error {
	if g.HTTP == "" {
		return fmt.Errorf("--http is required")
	}
	if _, _, err := net.SplitHostPort(g.HTTP); err != nil {
		return fmt.Errorf("--http %q: want host:port: %w", g.HTTP, err)
	}
	_, err := g.config()
	if err == nil && g.RouterModel != "" {
		if _, serr := os.Stat(filepath.Join(g.RouterModel, classifier.MetaFile)); serr != nil {
			err = fmt.Errorf("--router-model %s: not a router model directory (largeforge router train): %w", g.RouterModel, serr)
		}
	}
	return err
}

func (g GatewayFlags) config() (gateway.Config, error) {
	c := gateway.Config{Addr: g.HTTP, WorkerWait: g.WorkerWait, MaxBodyBytes: g.MaxBody, MaxConnections: g.MaxConns, Version: largeforge.Version}
	keys, err := g.apiKeys()
	if err != nil {
		return c, err
	}
	c.APIKeys = keys
	c.Files.MaxFileBytes, c.Files.PublishLease = g.MaxFile, g.PubLease
	for _, m := range g.ModelMap {
		from, to, ok := strings.Cut(m, "=")
		if !ok {
			return c, fmt.Errorf("--batch-model-map %q: want NAME=SERVED", m)
		}
		if c.Files.ModelMap == nil {
			c.Files.ModelMap = map[string]string{}
		}
		c.Files.ModelMap[strings.TrimSpace(from)] = strings.TrimSpace(to)
	}
	if g.Experts != "" {
		experts, err := schemas.LoadExperts(g.Experts)
		if err != nil {
			return c, fmt.Errorf("--experts %s: %w", g.Experts, err)
		}
		c.Experts = experts
	}
	return c, c.Validate()
}

func newGatewayCmd() *cobra.Command {
	var gf GatewayFlags
	cmd := &cobra.Command{
		Use:   "gateway",
		Short: "Serve the OpenAI-compatible HTTP API over the bus",
		Long: `Serve the OpenAI-compatible HTTP API: POST /v1/completions, POST /v1/chat/completions
(stream: true for server-sent events), GET /v1/models, GET /health and GET /metrics; with
--experts FILE, model "auto" and POST /v1/route choose an expert by keyword and domain rules. The
gateway holds no model: each request goes over NATS to an infer worker serving the model
(largeforge up --model, or largeforge worker), and a client that disconnects cancels its
generation.`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			if err := gf.Validate(); err != nil {
				return err
			}
			ctx := cmd.Context()
			log := newLogger(ctx)
			bus, err := connectAs(ctx, "largeforge-gateway", log)
			if err != nil {
				return err
			}
			defer bus.Close()
			reg := newRegistry()
			// The streams only the gateway's role reads (the workers report the others).
			if err := registerBusMetrics(ctx, bus, reg, pipeline.BusMetricsConfig{Streams: []string{pipeline.StreamRoutes, pipeline.StreamEvents}}, false, log); err != nil {
				return err
			}
			done, err := startGateway(ctx, bus, gf, log, reg)
			if err != nil {
				return err
			}
			return <-done
		},
	}
	addGatewayFlags(cmd, &gf, ":8080")
	return cmd
}

func addGatewayFlags(cmd *cobra.Command, gf *GatewayFlags, httpDefault string) {
	cmd.Flags().StringVar(&gf.HTTP, "http", httpDefault, "serve the OpenAI-compatible HTTP API on this address (host:port)")
	cmd.Flags().DurationVar(&gf.WorkerWait, "worker-wait", gateway.DefaultWorkerWait, "how long a request waits for a live worker of its model before 503")
	cmd.Flags().Int64Var(&gf.MaxBody, "max-body", gateway.DefaultMaxBodyBytes, "request body limit in bytes")
	cmd.Flags().StringVar(&gf.KeysFile, "api-keys-file", "", "require one of these API keys (one a line) as a bearer token on /v1 (also env LARGEFORGE_API_KEYS, comma separated); a file or variable with no key is an error")
	cmd.Flags().IntVar(&gf.MaxConns, "max-connections", gateway.DefaultMaxConnections, "HTTP connections served at once; more wait until one closes")
	cmd.Flags().StringVar(&gf.Experts, "experts", "", "experts file (YAML or JSON; largeforge samples writes an example): enables model \"auto\" and POST /v1/route")
	cmd.Flags().Int64Var(&gf.MaxFile, "max-file-bytes", gateway.DefaultMaxFileBytes, "POST /v1/files upload limit in bytes")
	cmd.Flags().DurationVar(&gf.PubLease, "batch-publish-lease", gateway.DefaultPublishLease, "how long a gateway publishing a batch's requests holds it without renewing; another gateway resumes a batch whose lease ran out (its gateway died)")
	cmd.Flags().StringArrayVar(&gf.ModelMap, "batch-model-map", nil, "NAME=SERVED: run the batch lines whose body names model NAME (e.g. gpt-4o-mini) on the served model SERVED (repeatable)")
	cmd.Flags().StringVar(&gf.RouterModel, "router-model", "", "router model directory (largeforge router train): the learned stage for prompts no rule decides")
}

// startGateway listens on gf.HTTP and serves the gateway until ctx ends; the
// channel gets Serve's error then. Its /metrics serves reg.
func startGateway(ctx context.Context, bus *pipeline.Bus, gf GatewayFlags, log zerolog.Logger, reg *prometheus.Registry) (<-chan error, error) {
	c, err := gf.config()
	if err != nil {
		return nil, err
	}
	if gf.RouterModel != "" {
		if c.Classifier, err = classifier.Load(gf.RouterModel, ""); err != nil {
			return nil, fmt.Errorf("--router-model: %w", err)
		}
	}
	closeClf := func() {
		if c.Classifier != nil {
			_ = c.Classifier.Close()
		}
	}
	g, err := gateway.New(ctx, bus, c, log, reg, reg)
	if err != nil {
		closeClf()
		return nil, err
	}
	ln, err := net.Listen("tcp", gf.HTTP)
	if err != nil {
		closeClf()
		return nil, fmt.Errorf("gateway: %w", err)
	}
	done := make(chan error, 1)
	go func() {
		err := g.Serve(ctx, ln)
		closeClf()
		done <- err
	}()
	return done, nil
}

func newRouteCmd() *cobra.Command {
	gatewayURL := os.Getenv("LARGEFORGE_GATEWAY")
	if gatewayURL == "" {
		gatewayURL = "http://127.0.0.1:8080"
	}
	apiKey := os.Getenv("LARGEFORGE_API_KEY")
	var experts, routerModel string
	cmd := &cobra.Command{
		Use:   "route TEXT",
		Short: "Ask the gateway which expert would take a prompt (POST /v1/route), without generating",
		Long: `Print the routing decision for TEXT (the RouteResponse and the deciding stage: rules,
classifier or default). By default the running gateway answers (POST /v1/route). With
--experts FILE the decision is made here instead, with the same router (and --router-model
DIR as its learned stage), counting every expert as live.`,
		Args: cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			if experts != "" {
				return routeLocal(cmd.OutOrStdout(), experts, routerModel, args[0])
			}
			if routerModel != "" {
				return fmt.Errorf("--router-model needs --experts (the gateway uses its own --router-model)")
			}
			body, _ := json.Marshal(map[string]string{"prompt": args[0]})
			ctx, cancel := context.WithTimeout(cmd.Context(), 30*time.Second)
			defer cancel()
			req, err := http.NewRequestWithContext(ctx, http.MethodPost, strings.TrimRight(gatewayURL, "/")+"/v1/route", bytes.NewReader(body))
			if err != nil {
				return err
			}
			req.Header.Set("Content-Type", "application/json")
			if apiKey != "" {
				req.Header.Set("Authorization", "Bearer "+apiKey)
			}
			resp, err := http.DefaultClient.Do(req)
			if err != nil {
				return fmt.Errorf("route (is a gateway at %s? set --gateway or LARGEFORGE_GATEWAY): %w", gatewayURL, err)
			}
			defer resp.Body.Close()
			out, err := io.ReadAll(io.LimitReader(resp.Body, 1<<20))
			if err != nil {
				return err
			}
			if resp.StatusCode != http.StatusOK {
				return fmt.Errorf("route: %s: %s", resp.Status, bytes.TrimSpace(out))
			}
			_, err = cmd.OutOrStdout().Write(out)
			return err
		},
	}
	cmd.Flags().StringVar(&gatewayURL, "gateway", gatewayURL, "gateway base URL (env LARGEFORGE_GATEWAY)")
	cmd.Flags().StringVar(&apiKey, "api-key", apiKey, "API key of the gateway (env LARGEFORGE_API_KEY; as a flag, ps shows it: prefer the variable)")
	cmd.Flags().StringVar(&experts, "experts", "", "route here with this experts file instead of asking the gateway")
	cmd.Flags().StringVar(&routerModel, "router-model", "", "with --experts: the router's learned stage (largeforge router train)")
	return cmd
}

// routeLocal routes text with the experts of expertsFile (and the
// classifier of modelDir when set) and prints the decision as JSON.
func routeLocal(w io.Writer, expertsFile, modelDir, text string) error {
	experts, err := schemas.LoadExperts(expertsFile)
	if err != nil {
		return fmt.Errorf("--experts %s: %w", expertsFile, err)
	}
	var opts []routing.Option
	if modelDir != "" {
		c, err := classifier.Load(modelDir, "")
		if err != nil {
			return fmt.Errorf("--router-model: %w", err)
		}
		defer c.Close()
		opts = append(opts, routing.WithClassifier(c))
	}
	r, err := routing.New(experts, opts...)
	if err != nil {
		return err
	}
	d, err := r.Route(text, nil)
	if err != nil {
		return err
	}
	return json.NewEncoder(w).Encode(d)
}
