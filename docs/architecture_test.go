package docs

import (
	"bufio"
	"bytes"
	"os"
	"os/exec"
	"slices"
	"strings"
	"testing"
)

// architecturePackages returns the packages the table under "## Packages"
// of ARCHITECTURE.md names, in order: the first cell of each row, written
// as a code span (| `jobs` | ... |), as paths relative to the module root.
func architecturePackages(doc []byte) []string {
	var out []string
	in := false
	sc := bufio.NewScanner(bytes.NewReader(doc))
	for sc.Scan() {
		line := strings.TrimSpace(sc.Text())
		if strings.HasPrefix(line, "## ") {
			in = line == "## Packages"
			continue
		}
		if !in || !strings.HasPrefix(line, "|") {
			continue
		}
		cell, _, _ := strings.Cut(strings.TrimPrefix(line, "|"), "|")
		cell = strings.TrimSpace(cell)
		if len(cell) > 2 && strings.HasPrefix(cell, "`") && strings.HasSuffix(cell, "`") {
			out = append(out, strings.Trim(cell, "`"))
		}
	}
	return out
}

// modulePackages lists the module's packages with go list ./..., each as
// its path relative to the module root ("." for the root), with the
// module's packages it imports (also relative).
func modulePackages(t *testing.T) map[string][]string {
	t.Helper()
	root := ".."
	mod := exec.CommandContext(t.Context(), "go", "list", "-m")
	mod.Dir = root
	modPath, err := mod.Output()
	if err != nil {
		t.Fatalf("go list -m: %v", err)
	}
	prefix := strings.TrimSpace(string(modPath)) + "/"
	cmd := exec.CommandContext(t.Context(), "go", "list", "-f", `{{.ImportPath}} {{join .Imports " "}}`, "./...")
	cmd.Dir = root
	out, err := cmd.Output()
	if err != nil {
		t.Fatalf("go list ./...: %v", err)
	}
	pkgs := map[string][]string{}
	sc := bufio.NewScanner(bytes.NewReader(out))
	for sc.Scan() {
		f := strings.Fields(sc.Text())
		if len(f) == 0 {
			continue
		}
		var imports []string
		for _, imp := range f[1:] {
			if rel, ok := strings.CutPrefix(imp, prefix); ok {
				imports = append(imports, rel)
			}
		}
		rel := strings.TrimPrefix(f[0], prefix)
		if f[0]+"/" == prefix {
			rel = "."
		}
		pkgs[rel] = imports
	}
	return pkgs
}

// TestArchitecturePackages keeps the table of packages in ARCHITECTURE.md
// in step with go list ./...: every package named, none that is not.
func TestArchitecturePackages(t *testing.T) {
	doc, err := os.ReadFile("ARCHITECTURE.md")
	if err != nil {
		t.Fatal(err)
	}
	named := architecturePackages(doc)
	pkgs := modulePackages(t)
	if len(pkgs) == 0 {
		t.Fatal("go list ./... listed no package")
	}
	for p := range pkgs {
		if !slices.Contains(named, p) {
			t.Errorf("package %s is missing from the table under \"## Packages\" in docs/ARCHITECTURE.md: add a row saying what it owns", p)
		}
	}
	seen := map[string]bool{}
	for _, p := range named {
		if _, ok := pkgs[p]; !ok {
			t.Errorf("docs/ARCHITECTURE.md names package %s, which go list ./... does not list: remove or rename its row", p)
		}
		if seen[p] {
			t.Errorf("docs/ARCHITECTURE.md names package %s twice", p)
		}
		seen[p] = true
	}
}

// TestArchitectureRules checks the rules of the import graph that
// ARCHITECTURE.md states.
func TestArchitectureRules(t *testing.T) {
	pkgs := modulePackages(t)
	internal := func(p string) bool { return strings.HasPrefix(p, "internal/") }
	rules := []struct {
		name    string
		applies func(pkg string) bool
		allowed func(imp string) bool
	}{
		{"store, azauth and internal/… import only internal/…",
			func(p string) bool { return p == "store" || p == "azauth" || internal(p) }, internal},
		{"runs imports only store and internal/…",
			func(p string) bool { return p == "runs" },
			func(imp string) bool { return imp == "store" || internal(imp) }},
		{"dmf, unpack and publish import neither each other nor jobs",
			func(p string) bool { return p == "dmf" || p == "unpack" || p == "publish" },
			func(imp string) bool { return !slices.Contains([]string{"dmf", "unpack", "publish", "jobs"}, imp) }},
	}
	for _, r := range rules {
		for p, imports := range pkgs {
			if !r.applies(p) {
				continue
			}
			for _, imp := range imports {
				if !r.allowed(imp) {
					t.Errorf("%s imports %s, against the rule %q of docs/ARCHITECTURE.md", p, imp, r.name)
				}
			}
		}
	}
}

func TestArchitecturePackagesTable(t *testing.T) {
	doc := []byte("# A\n| package | owns |\n|---|---|\n| `x` | y |\n## Packages\n\n| package | owns |\n|---|---|\n| `jobs` | runs |\n|`sink/postgres`| db |\n| not code | z |\n\n## Next\n| `other` | no |\n")
	if got, want := architecturePackages(doc), []string{"jobs", "sink/postgres"}; !slices.Equal(got, want) {
		t.Errorf("want %v, got %v", want, got)
	}
}
