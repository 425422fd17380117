package main

import (
	"testing"

	"github.com/largeforge/largeforge/producers/gateway"
)

// TestGatewayFilesFlags: --batch-model-map and --max-file-bytes reach the
// gateway's Files config; a map entry without '=' is an error.
func TestGatewayFilesFlags(t *testing.T) {
	c, err := GatewayFlags{HTTP: ":0", MaxFile: 1 << 20, ModelMap: []string{"gpt-4o-mini=stories", " gpt-4o = big "}}.config()
	if err != nil {
		t.Fatal(err)
	}
	if c.Files.MaxFileBytes != 1<<20 || c.Files.ModelMap["gpt-4o-mini"] != "stories" || c.Files.ModelMap["gpt-4o"] != "big" {
		t.Errorf("files config %+v", c.Files)
	}
	if _, err := (GatewayFlags{HTTP: ":0", ModelMap: []string{"gpt-4o-mini"}}).config(); err == nil {
		t.Error("--batch-model-map gpt-4o-mini (no =) accepted")
	}
	if gateway.DefaultMaxFileBytes != 512<<20 {
		t.Errorf("default upload limit %d, want 512 MiB", gateway.DefaultMaxFileBytes)
	}
}
