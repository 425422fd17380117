package main

import (
	"fmt"
	"net/http"
	"strings"
	"sync"

	"github.com/largeforge/largeforge/pipeline"
)

// probes answer a process's /health and /ready beside its /metrics, for
// Kubernetes' liveness and readiness probes (deploy/kubernetes).
//
// /health is liveness: 200 "ok" while the process serves HTTP at all.
// /ready is readiness: 200 "ready" once every check added has passed and
// still passes (connected to the bus, the role's consumers or listener up),
// else 503 with one line per failing check; with no check added yet it is
// 503 "starting". A check is added when the part it watches has started.
type probes struct {
	mu     sync.Mutex
	names  []string
	checks map[string]func() error
}

func newProbes() *probes { return &probes{checks: map[string]func() error{}} }

// add registers check under name (a later add of the same name replaces it).
func (p *probes) add(name string, check func() error) {
	if p == nil {
		return
	}
	p.mu.Lock()
	defer p.mu.Unlock()
	if _, ok := p.checks[name]; !ok {
		p.names = append(p.names, name)
	}
	p.checks[name] = check
}

// addBus adds the check "bus": connected to NATS.
func (p *probes) addBus(bus *pipeline.Bus) {
	p.add("bus", func() error {
		if !bus.Connected() {
			return fmt.Errorf("not connected to NATS")
		}
		return nil
	})
}

// addRunning adds a check that passes until done is closed (the consumers
// or listener it stands for stopped).
func (p *probes) addRunning(name string, done <-chan struct{}) {
	p.add(name, func() error {
		select {
		case <-done:
			return fmt.Errorf("stopped")
		default:
			return nil
		}
	})
}

// ready returns nil when every check passes, else one line per failure.
func (p *probes) ready() error {
	p.mu.Lock()
	defer p.mu.Unlock()
	if len(p.names) == 0 {
		return fmt.Errorf("starting")
	}
	var bad []string
	for _, n := range p.names {
		if err := p.checks[n](); err != nil {
			bad = append(bad, n+": "+err.Error())
		}
	}
	if len(bad) > 0 {
		return fmt.Errorf("%s", strings.Join(bad, "\n"))
	}
	return nil
}

// register serves /health and /ready on mux.
func (p *probes) register(mux *http.ServeMux) {
	mux.HandleFunc("/health", func(w http.ResponseWriter, _ *http.Request) {
		w.Header().Set("Content-Type", "text/plain; charset=utf-8")
		_, _ = fmt.Fprintln(w, "ok")
	})
	mux.HandleFunc("/ready", func(w http.ResponseWriter, _ *http.Request) {
		w.Header().Set("Content-Type", "text/plain; charset=utf-8")
		if err := p.ready(); err != nil {
			w.WriteHeader(http.StatusServiceUnavailable)
			_, _ = fmt.Fprintln(w, err)
			return
		}
		_, _ = fmt.Fprintln(w, "ready")
	})
}

// waitReady adds a check name that passes while wait (the Wait of the
// consumers or listener started) has not returned, and returns wait's error.
func waitReady(p *probes, name string, wait func() error) error {
	done := make(chan struct{})
	p.addRunning(name, done)
	defer close(done)
	return wait()
}
