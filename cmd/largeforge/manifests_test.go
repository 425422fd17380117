package main

import (
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"testing"

	"sigs.k8s.io/yaml"

	"github.com/largeforge/largeforge/internal/testenv"
)

// TestManifestArgsParse: the args of every container in
// deploy/kubernetes name a largeforge command and only flags it has
// (internal/deploytest checks the manifests against k8s.io/api).
func TestManifestArgsParse(t *testing.T) {
	files, err := filepath.Glob(filepath.Join(testenv.ModuleRoot(t), "deploy/kubernetes/*/*.yaml"))
	if err != nil {
		t.Fatal(err)
	}
	n := 0
	for _, f := range files {
		data, err := os.ReadFile(f)
		if err != nil {
			t.Fatal(err)
		}
		for _, doc := range regexp.MustCompile(`(?m)^---\s*$`).Split(string(data), -1) {
			var obj struct {
				Spec struct {
					Template struct {
						Spec struct {
							Containers []struct {
								Args []string `json:"args"`
							} `json:"containers"`
						} `json:"spec"`
					} `json:"template"`
				} `json:"spec"`
			}
			if err := yaml.Unmarshal([]byte(doc), &obj); err != nil {
				t.Fatalf("%s: %v", f, err)
			}
			for _, c := range obj.Spec.Template.Spec.Containers {
				if len(c.Args) == 0 {
					continue
				}
				n++
				root := newRootCmd()
				cmd, rest, err := root.Find(c.Args)
				if err != nil || cmd == root {
					t.Errorf("%s: %v: no such command (%v)", f, c.Args, err)
					continue
				}
				if err := cmd.ParseFlags(rest); err != nil {
					t.Errorf("%s: largeforge %s: %v", f, strings.Join(c.Args, " "), err)
				}
			}
		}
	}
	if n < 6 {
		t.Fatalf("%d containers with args in deploy/kubernetes, want the base's six", n)
	}
}
