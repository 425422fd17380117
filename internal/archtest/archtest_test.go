package archtest

import (
	"go/parser"
	"go/token"
	"io/fs"
	"os"
	"path/filepath"
	"sort"
	"strconv"
	"strings"
	"testing"
)

const module = "github.com/largeforge/largeforge"

// repoRoot is the module's directory, two levels above this package.
func repoRoot(t *testing.T) string {
	t.Helper()
	root, err := filepath.Abs(filepath.Join("..", ".."))
	if err != nil {
		t.Fatal(err)
	}
	if _, err := os.Stat(filepath.Join(root, "go.mod")); err != nil {
		t.Fatalf("no go.mod at %s: %v", root, err)
	}
	return root
}

// imports parses every non-test Go file of the module and returns each
// package's direct imports (import paths, the module's own relative to it).
func imports(t *testing.T, root string) map[string][]string {
	t.Helper()
	pkgs := map[string]map[string]bool{}
	err := filepath.WalkDir(root, func(path string, d fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		name := d.Name()
		if d.IsDir() {
			if path != root && (strings.HasPrefix(name, ".") || strings.HasPrefix(name, "_") || name == "testdata" || name == "vendor") {
				return filepath.SkipDir
			}
			if path != root {
				if _, err := os.Stat(filepath.Join(path, "go.mod")); err == nil {
					return filepath.SkipDir // another module
				}
			}
			return nil
		}
		if !strings.HasSuffix(name, ".go") || strings.HasSuffix(name, "_test.go") {
			return nil
		}
		f, err := parser.ParseFile(token.NewFileSet(), path, nil, parser.ImportsOnly)
		if err != nil {
			return err
		}
		rel, err := filepath.Rel(root, filepath.Dir(path))
		if err != nil {
			return err
		}
		pkg := filepath.ToSlash(rel)
		if pkgs[pkg] == nil {
			pkgs[pkg] = map[string]bool{}
		}
		for _, im := range f.Imports {
			p, err := strconv.Unquote(im.Path.Value)
			if err != nil {
				return err
			}
			if rest, ok := strings.CutPrefix(p, module+"/"); ok {
				p = rest
			}
			pkgs[pkg][p] = true
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	out := make(map[string][]string, len(pkgs))
	for pkg, set := range pkgs {
		for p := range set {
			out[pkg] = append(out[pkg], p)
		}
		sort.Strings(out[pkg])
	}
	return out
}

// under reports whether pkg is dir or inside it.
func under(pkg, dir string) bool { return pkg == dir || strings.HasPrefix(pkg, dir+"/") }

// group is the first two elements of a producers/ or consumers/ package
// ("producers/gateway" for producers/gateway/x), else "".
func group(pkg string) string {
	parts := strings.SplitN(pkg, "/", 3)
	if len(parts) < 2 || (parts[0] != "producers" && parts[0] != "consumers") {
		return ""
	}
	return parts[0] + "/" + parts[1]
}

// rule forbids the packages that from selects to import what forbidden
// selects. An import counts when it is direct; through the module's own
// packages when transitive is set.
type rule struct {
	name       string
	enforced   bool // false: the violations are logged, for the issue that fixes them
	transitive bool
	from       func(pkg string) bool
	forbidden  func(from, imp string) bool
}

// layer is a package's place in ARCHITECTURE.md's import direction,
// schemas ← pipeline ← jobs ← shared libraries ← producers, consumers ←
// cmd: a package imports nothing of a higher layer. The base (schemas,
// model, logging, internal helpers) comes first; storage — where datasets,
// results, models and checkpoints live, modelstore included — is a shared
// library over pipeline. Test helpers (pipelinetest, storagetest,
// traintest, ...) stand beside the tests that use them and are left out
// (-1), as are packages outside the module.
func layer(pkg string) int {
	switch {
	case strings.Contains(pkg, "."): // github.com/..., golang.org/...
		return -1
	case strings.HasSuffix(pkg, "test") && strings.Contains(pkg, "/"):
		return -1
	case under(pkg, "cmd"):
		return 5
	case under(pkg, "producers"), under(pkg, "consumers"):
		return 4
	case under(pkg, "jobs"):
		return 2
	case under(pkg, "pipeline"):
		return 1
	case under(pkg, "storage"), under(pkg, "dataset"), under(pkg, "routing"), under(pkg, "serve"):
		return 3
	}
	return 0 // schemas, model, logging, internal/..., the module root
}

var rules = []rule{
	{
		name: "imports point one way (schemas ← pipeline ← jobs ← shared libraries ← producers, consumers ← cmd)", enforced: true,
		from: func(pkg string) bool { return layer(pkg) >= 0 },
		forbidden: func(from, imp string) bool {
			return layer(imp) > layer(from)
		},
	},
	{
		name: "producers import no consumer", enforced: true, transitive: true,
		from:      func(pkg string) bool { return under(pkg, "producers") },
		forbidden: func(_, imp string) bool { return under(imp, "consumers") },
	},
	{
		name: "producers import no other producer", enforced: true, transitive: true,
		from:      func(pkg string) bool { return under(pkg, "producers") },
		forbidden: func(from, imp string) bool { return under(imp, "producers") && group(imp) != group(from) },
	},
	{
		name: "consumers import no producer", enforced: true, transitive: true,
		from:      func(pkg string) bool { return under(pkg, "consumers") },
		forbidden: func(_, imp string) bool { return under(imp, "producers") },
	},
	{
		name: "model imports no bus", enforced: true, transitive: true,
		from: func(pkg string) bool { return under(pkg, "model") },
		forbidden: func(_, imp string) bool {
			return under(imp, "pipeline") || strings.HasPrefix(imp, "github.com/nats-io/")
		},
	},
	{
		// model/train takes its records from a reader it is handed; where
		// datasets live is the storage package's business.
		name: "model imports no datasets", enforced: true, transitive: true,
		from:      func(pkg string) bool { return under(pkg, "model") },
		forbidden: func(_, imp string) bool { return under(imp, "dataset") || under(imp, "storage") },
	},
	{
		// pipeline owns JetStream: the others use its types (Msg, KV,
		// Objects, Header).
		name: "only pipeline and cmd import nats.go", enforced: true, transitive: false,
		from:      func(pkg string) bool { return !under(pkg, "pipeline") && !under(pkg, "cmd") },
		forbidden: func(_, imp string) bool { return under(imp, "github.com/nats-io/nats.go") },
	},
}

// reach returns what pkg imports, directly or (transitive) through the
// module's own packages, each with the chain that leads to it.
func reach(deps map[string][]string, pkg string, transitive bool) map[string]string {
	out := map[string]string{}
	var visit func(p, chain string)
	visit = func(p, chain string) {
		for _, imp := range deps[p] {
			if _, seen := out[imp]; seen {
				continue
			}
			out[imp] = chain + " → " + imp
			if _, own := deps[imp]; own && transitive {
				visit(imp, out[imp])
			}
		}
	}
	visit(pkg, pkg)
	return out
}

// violations are the import chains of deps that break r, sorted.
func violations(deps map[string][]string, r rule) []string {
	var bad []string
	for p := range deps {
		if !r.from(p) {
			continue
		}
		for imp, chain := range reach(deps, p, r.transitive) {
			if r.forbidden(p, imp) {
				bad = append(bad, chain)
			}
		}
	}
	sort.Strings(bad)
	return bad
}

// TestImportDirection checks the rules over every non-test package.
func TestImportDirection(t *testing.T) {
	deps := imports(t, repoRoot(t))
	if len(deps["schemas"]) == 0 || len(deps["pipeline"]) == 0 {
		t.Fatalf("parsed %d packages without schemas or pipeline: wrong root?", len(deps))
	}
	for _, r := range rules {
		t.Run(r.name, func(t *testing.T) {
			bad := violations(deps, r)
			switch {
			case len(bad) == 0:
			case r.enforced:
				t.Errorf("%d imports against the architecture:\n%s", len(bad), strings.Join(bad, "\n"))
			default:
				t.Logf("not enforced yet; %d imports to remove:\n%s", len(bad), strings.Join(bad, "\n"))
			}
		})
	}
}

// TestRules checks the rules themselves on made-up import graphs.
func TestRules(t *testing.T) {
	tests := []struct {
		name    string
		rule    string
		deps    map[string][]string
		wantBad bool
	}{
		{"producer imports consumer", "producers import no consumer", map[string][]string{"producers/gateway": {"consumers/infer"}}, true},
		{"the model store over the bus", "imports point one way (schemas ← pipeline ← jobs ← shared libraries ← producers, consumers ← cmd)", map[string][]string{"storage/modelstore": {"pipeline", "schemas"}}, false},
		{"pipeline reaches up to jobs", "imports point one way (schemas ← pipeline ← jobs ← shared libraries ← producers, consumers ← cmd)", map[string][]string{"pipeline": {"jobs"}}, true},
		{"jobs reaches up to storage", "imports point one way (schemas ← pipeline ← jobs ← shared libraries ← producers, consumers ← cmd)", map[string][]string{"jobs": {"storage"}}, true},
		{"a shared library imports a consumer", "imports point one way (schemas ← pipeline ← jobs ← shared libraries ← producers, consumers ← cmd)", map[string][]string{"storage/modelstore": {"consumers/infer"}}, true},
		{"schemas imports the bus", "imports point one way (schemas ← pipeline ← jobs ← shared libraries ← producers, consumers ← cmd)", map[string][]string{"schemas": {"pipeline"}}, true},
		{"a test helper beside its tests", "imports point one way (schemas ← pipeline ← jobs ← shared libraries ← producers, consumers ← cmd)", map[string][]string{"pipeline/pipelinetest": {"storage"}}, false},
		{"producer reaches consumer through a library", "producers import no consumer",
			map[string][]string{"producers/gateway": {"routing"}, "routing": {"consumers/infer"}}, true},
		{"producer imports its own subpackage", "producers import no other producer", map[string][]string{"producers/gateway": {"producers/gateway/x"}}, false},
		{"producer imports another", "producers import no other producer", map[string][]string{"producers/submit": {"producers/gateway"}}, true},
		{"consumer imports producer", "consumers import no producer", map[string][]string{"consumers/datasetsink": {"producers/ingest"}}, true},
		{"consumer imports shared library", "consumers import no producer", map[string][]string{"consumers/datasetsink": {"dataset/read", "schemas"}}, false},
		{"model reaches pipeline", "model imports no bus", map[string][]string{"model/train": {"dataset"}, "dataset": {"pipeline"}}, true},
		{"model imports a dataset", "model imports no datasets", map[string][]string{"model/train": {"dataset"}}, true},
		{"model reaches storage", "model imports no datasets", map[string][]string{"model/train": {"schemas"}, "schemas": {"storage"}}, true},
		{"consumer reads a dataset for model", "model imports no datasets", map[string][]string{"consumers/train": {"model/train", "dataset"}}, false},
		{"jobs imports nats.go", "only pipeline and cmd import nats.go", map[string][]string{"jobs": {"github.com/nats-io/nats.go/jetstream"}}, true},
		{"pipeline imports nats.go", "only pipeline and cmd import nats.go", map[string][]string{"pipeline": {"github.com/nats-io/nats.go"}}, false},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			var r *rule
			for i := range rules {
				if rules[i].name == tt.rule {
					r = &rules[i]
				}
			}
			if r == nil {
				t.Fatalf("no rule %q", tt.rule)
			}
			if bad := violations(tt.deps, *r); (len(bad) > 0) != tt.wantBad {
				t.Errorf("violations %q, want some: %v", bad, tt.wantBad)
			}
		})
	}
}
