package gateway

import (
	"github.com/largeforge/largeforge/producers/gateway/console"
	"github.com/largeforge/largeforge/schemas"
)

// mountConsole serves the web console (package console) under
// /console/: its pages to anyone, its endpoints with the API keys of the
// /v1 routes.
func (g *Gateway) mountConsole() error {
	c, err := console.New(g.bus, console.Options{Authorized: g.authorized, Experts: g.currentExperts, Log: g.log})
	if err != nil {
		return err
	}
	g.mux.Handle(console.Prefix, c.Handler())
	return nil
}

// currentExperts are the experts the router holds now (Config.Experts and
// lf_experts merged), none without a router.
func (g *Gateway) currentExperts() []schemas.ExpertConfig {
	if r := g.router.Load(); r != nil {
		return r.Experts()
	}
	return nil
}
