package main

import (
	"bufio"
	"bytes"
	"context"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/largeforge/largeforge/internal/testenv"
)

// readmeBlock is one fenced code block of README.md.
type readmeBlock struct {
	info string // the fence's info string: sh, text, yaml, ...
	line int    // line of the opening fence
	body string
}

func readmeBlocks(t *testing.T) (string, []readmeBlock) {
	t.Helper()
	path := filepath.Join(testenv.ModuleRoot(t), "README.md")
	data, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	var blocks []readmeBlock
	var cur *readmeBlock
	sc := bufio.NewScanner(bytes.NewReader(data))
	for n := 1; sc.Scan(); n++ {
		l := sc.Text()
		switch {
		case cur == nil && strings.HasPrefix(l, "```"):
			cur = &readmeBlock{info: strings.TrimSpace(strings.TrimPrefix(l, "```")), line: n}
		case cur != nil && strings.TrimSpace(l) == "```":
			blocks = append(blocks, *cur)
			cur = nil
		case cur != nil:
			cur.body += l + "\n"
		}
	}
	if cur != nil {
		t.Fatalf("README.md:%d: a code block is not closed", cur.line)
	}
	return string(data), blocks
}

// TestREADMEMarks: every code block says whether it runs as written (sh) or
// holds placeholders (text), and the README cites nothing the repository
// does not hold.
func TestREADMEMarks(t *testing.T) {
	text, blocks := readmeBlocks(t)
	for _, b := range blocks {
		switch b.info {
		case "sh", "text", "yaml", "json":
		default:
			t.Errorf("README.md:%d: code block marked %q: want sh (runs as written) or text (placeholders)", b.line, b.info)
		}
		if b.info == "sh" {
			if m := regexp.MustCompile(`\b(DIR|JOB|FILE)\b`).FindString(b.body); m != "" {
				t.Errorf("README.md:%d: a runnable block holds the placeholder %s", b.line, m)
			}
		}
	}
	for _, word := range []string{"§", "DATA_DICTIONARY", "data dictionary"} {
		if strings.Contains(text, word) {
			t.Errorf("README.md cites %q, which the repository does not hold", word)
		}
	}
	// Paths in backquotes under the repository's own folders exist.
	root := testenv.ModuleRoot(t)
	for _, m := range regexp.MustCompile("`((?:cmd|consumers|producers|pipeline|schemas|dataset|jobs|model|internal|deploy|scripts|logging)/[A-Za-z0-9_./-]*)`").FindAllStringSubmatch(text, -1) {
		if _, err := os.Stat(filepath.Join(root, m[1])); err != nil {
			t.Errorf("README.md names %s, which the repository does not hold", m[1])
		}
	}
}

// TestHelpCitesNothingAbsent: no --help text points at a document the
// repository does not hold.
func TestHelpCitesNothingAbsent(t *testing.T) {
	var walk func(args []string)
	walk = func(args []string) {
		root := newRootCmd()
		var out bytes.Buffer
		root.SetOut(&out)
		root.SetErr(&out)
		root.SetArgs(append(args, "--help"))
		if err := root.Execute(); err != nil {
			t.Fatalf("%v --help: %v", args, err)
		}
		for _, word := range []string{"§", "DATA_DICTIONARY"} {
			if strings.Contains(out.String(), word) {
				t.Errorf("largeforge %s --help cites %q", strings.Join(args, " "), word)
			}
		}
		cmd, _, err := root.Find(args)
		if err != nil {
			t.Fatal(err)
		}
		for _, sub := range cmd.Commands() {
			if !sub.Hidden && sub.Name() != "help" && sub.Name() != "completion" {
				walk(append(append([]string{}, args...), sub.Name()))
			}
		}
	}
	walk(nil)
}

// TestREADME runs the README's sh blocks as written, in order, as one bash
// session, from the repository's folder, with a fresh HOME, largeforge
// installed by the first block into a temporary GOBIN, and NATS on a free
// port (LARGEFORGE_NATS, which `up` listens on).
func TestREADME(t *testing.T) {
	if testing.Short() {
		t.Skip("installs largeforge and runs the README's commands")
	}
	if _, err := exec.LookPath("make"); err != nil {
		t.Fatal("make is not installed: the README's first block needs it")
	}
	_, blocks := readmeBlocks(t)
	var script strings.Builder
	script.WriteString("set -euo pipefail\n")
	for _, b := range blocks {
		if b.info == "sh" {
			script.WriteString("# README.md:" + strconv.Itoa(b.line) + "\n" + b.body)
		}
	}
	home := t.TempDir()
	gobin := filepath.Join(t.TempDir(), "bin")
	goenv := func(name string) string {
		out, err := exec.Command("go", "env", name).Output()
		if err != nil {
			t.Fatalf("go env %s: %v", name, err)
		}
		return strings.TrimSpace(string(out))
	}
	env := append(os.Environ(),
		"HOME="+home, "GOBIN="+gobin, "PATH="+gobin+string(os.PathListSeparator)+os.Getenv("PATH"),
		// The Go caches stay where they are: a fresh HOME would move them.
		"GOPATH="+goenv("GOPATH"), "GOMODCACHE="+goenv("GOMODCACHE"), "GOCACHE="+goenv("GOCACHE"),
		"LARGEFORGE_NATS=nats://127.0.0.1:"+strconv.Itoa(freePort(t)), "LARGEFORGE_METRICS_ADDR=127.0.0.1:0")
	ctx, cancel := context.WithTimeout(context.Background(), 8*time.Minute)
	defer cancel()
	cmd := exec.CommandContext(ctx, "bash", "-c", script.String())
	cmd.Dir = testenv.ModuleRoot(t)
	cmd.Env = env
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true} // `up &` is in the group: killed below whatever happens
	cmd.Cancel = func() error { return syscall.Kill(-cmd.Process.Pid, syscall.SIGKILL) }
	var out bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &out
	err := cmd.Start()
	if err != nil {
		t.Fatal(err)
	}
	err = cmd.Wait()
	_ = syscall.Kill(-cmd.Process.Pid, syscall.SIGKILL)
	upLog, _ := os.ReadFile(filepath.Join(home, "lf-try", "up.log"))
	if err != nil {
		t.Fatalf("the README's sh blocks failed: %v\n%s\nup.log:\n%s", err, out.String(), upLog)
	}
	t.Logf("README session:\n%s", out.String())
	for _, want := range []string{"rejected    5", "completed: 25 requests, 24 completed, 1 failed", "completed"} {
		if !strings.Contains(out.String(), want) {
			t.Errorf("the README session printed no %q", want)
		}
	}
	if _, err := os.Stat(filepath.Join(home, "lf-try", "out", "tiny-sft", "model.safetensors")); err != nil {
		t.Errorf("the training job wrote no model: %v", err)
	}
}
