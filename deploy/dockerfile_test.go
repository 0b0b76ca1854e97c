package deploy

import (
	"bufio"
	"encoding/json"
	"fmt"
	"maps"
	"os"
	"regexp"
	"slices"
	"strings"
	"testing"
)

// instruction is one Dockerfile instruction, continuation lines joined.
type instruction struct {
	line    int
	keyword string // upper case
	args    string
}

// stage is the instructions from one FROM to the next.
type stage struct {
	from         string // the image, --platform dropped
	name         string // after AS
	instructions []instruction
}

// parseDockerfile reads the Dockerfile's instructions by stage, enough for
// the few instructions this project's Dockerfile uses.
func parseDockerfile(t *testing.T, file string) (global []instruction, stages []stage) {
	t.Helper()
	f, err := os.Open(file)
	if err != nil {
		t.Fatal(err)
	}
	defer func() { _ = f.Close() }()
	sc := bufio.NewScanner(f)
	var cur *instruction
	n := 0
	for sc.Scan() {
		n++
		line := strings.TrimSpace(sc.Text())
		if cur == nil && (line == "" || strings.HasPrefix(line, "#")) {
			continue
		}
		if cur != nil && strings.HasPrefix(line, "#") {
			continue // a comment inside a continued instruction
		}
		cont := strings.HasSuffix(line, `\`)
		line = strings.TrimSuffix(line, `\`)
		if cur == nil {
			kw, rest, _ := strings.Cut(line, " ")
			cur = &instruction{line: n, keyword: strings.ToUpper(kw), args: strings.TrimSpace(rest)}
		} else {
			cur.args += " " + strings.TrimSpace(line)
		}
		if cont {
			continue
		}
		if cur.keyword == "FROM" {
			fields := strings.Fields(cur.args)
			fields = slices.DeleteFunc(fields, func(s string) bool { return strings.HasPrefix(s, "--platform=") })
			st := stage{from: fields[0]}
			if len(fields) == 3 && strings.EqualFold(fields[1], "AS") {
				st.name = fields[2]
			}
			stages = append(stages, st)
		} else if len(stages) == 0 {
			global = append(global, *cur)
		} else {
			stages[len(stages)-1].instructions = append(stages[len(stages)-1].instructions, *cur)
		}
		cur = nil
	}
	if err := sc.Err(); err != nil {
		t.Fatal(err)
	}
	return global, stages
}

// words splits s at spaces outside double quotes and unquotes each word:
// `a="b c" d` is [a=b c, d].
func words(s string) []string {
	var out []string
	var w strings.Builder
	inWord, quoted := false, false
	for i := 0; i < len(s); i++ {
		c := s[i]
		switch {
		case c == '\\' && quoted && i+1 < len(s):
			i++
			w.WriteByte(s[i])
		case c == '"':
			quoted = !quoted
			inWord = true
		case (c == ' ' || c == '\t') && !quoted:
			if inWord {
				out = append(out, w.String())
				w.Reset()
				inWord = false
			}
		default:
			w.WriteByte(c)
			inWord = true
		}
	}
	if inWord {
		out = append(out, w.String())
	}
	return out
}

// keyValues parses ENV or LABEL arguments in the key=value form.
func keyValues(t *testing.T, in instruction) map[string]string {
	t.Helper()
	out := map[string]string{}
	for _, w := range words(in.args) {
		k, v, ok := strings.Cut(w, "=")
		if !ok {
			t.Errorf("Dockerfile:%d: %s %q: use the key=value form", in.line, in.keyword, w)
			continue
		}
		out[k] = v
	}
	return out
}

var argRef = regexp.MustCompile(`\$\{(\w+)\}`)

// TestDockerfileMatchesImage holds the Dockerfile against BuildImage: the
// final stage must say what ImageConfig says (user, entrypoint, cmd,
// environment, working directory, exposed port, labels), be built from
// scratch with no RUN (there is no shell in it), and the binary must be
// built with the flags of GoBuildArgs, from the Go version go.mod names.
func TestDockerfileMatchesImage(t *testing.T) {
	global, stages := parseDockerfile(t, "../Dockerfile")
	if len(stages) < 2 {
		t.Fatalf("Dockerfile: %d stages, want a build stage and a final one", len(stages))
	}
	final := stages[len(stages)-1]
	if final.from != "scratch" {
		t.Errorf("Dockerfile: the final stage is FROM %s, want scratch", final.from)
	}

	// Build arguments as a build would pass them, to compare labels.
	const version, revision = "v9.9.9-test", "deadbeef"
	args := map[string]string{"VERSION": version, "REVISION": revision}
	expand := func(s string) string {
		return argRef.ReplaceAllStringFunc(s, func(m string) string {
			if v, ok := args[argRef.FindStringSubmatch(m)[1]]; ok {
				return v
			}
			return m
		})
	}

	var got dockerfileConfig
	got.Env, got.Labels, got.Ports = map[string]string{}, map[string]string{}, map[string]bool{}
	for _, in := range final.instructions {
		switch in.keyword {
		case "RUN", "SHELL", "HEALTHCHECK":
			t.Errorf("Dockerfile:%d: %s in the final stage: it has no shell nor any other program", in.line, in.keyword)
		case "USER":
			got.User = in.args
		case "WORKDIR":
			got.WorkingDir = in.args
		case "EXPOSE":
			for _, p := range strings.Fields(in.args) {
				got.Ports[p] = true
			}
		case "ENV":
			maps.Copy(got.Env, keyValues(t, in))
		case "LABEL":
			for k, v := range keyValues(t, in) {
				got.Labels[k] = expand(v)
			}
		case "ENTRYPOINT", "CMD":
			var list []string
			if err := json.Unmarshal([]byte(in.args), &list); err != nil {
				t.Errorf("Dockerfile:%d: %s %s: use the exec form, a JSON array (the shell form needs /bin/sh): %v", in.line, in.keyword, in.args, err)
			}
			if in.keyword == "ENTRYPOINT" {
				got.Entrypoint = list
			} else {
				got.Cmd = list
			}
		}
	}
	want := ImageConfig(version, revision)
	wantEnv := map[string]string{}
	for _, e := range want.Env {
		k, v, _ := strings.Cut(e, "=")
		wantEnv[k] = v
	}
	wantPorts := map[string]bool{}
	for p := range want.ExposedPorts {
		wantPorts[p] = true
	}
	for _, c := range []struct {
		what      string
		got, want any
	}{
		{"USER", got.User, want.User},
		{"WORKDIR", got.WorkingDir, want.WorkingDir},
		{"ENTRYPOINT", got.Entrypoint, want.Entrypoint},
		{"CMD", got.Cmd, want.Cmd},
		{"ENV", got.Env, wantEnv},
		{"LABEL", got.Labels, want.Labels},
		{"EXPOSE", got.Ports, wantPorts},
	} {
		if fmt.Sprint(c.got) != fmt.Sprint(c.want) {
			t.Errorf("Dockerfile's final stage: %s %v; BuildImage's image: %v", c.what, c.got, c.want)
		}
	}

	// The files of the final stage: the binary where the entrypoint
	// names it, passwd and group as BuildImage writes them.
	var build stage
	for _, st := range stages[:len(stages)-1] {
		for _, in := range st.instructions {
			if strings.Contains(in.args, "go build") {
				build = st
			}
		}
	}
	if build.name == "" {
		t.Fatal("Dockerfile: no named stage runs go build")
	}
	copied := map[string]bool{}
	for _, in := range final.instructions {
		if in.keyword == "COPY" {
			w := words(in.args)
			copied[w[len(w)-1]] = true
			if !strings.Contains(in.args, "--from="+build.name) {
				t.Errorf("Dockerfile:%d: COPY %s: the final stage copies only from stage %s", in.line, in.args, build.name)
			}
		}
	}
	if !copied[BinaryPath] {
		t.Errorf("Dockerfile: no COPY puts the binary at %s", BinaryPath)
	}
	var buildRun, filesRun string
	for _, in := range build.instructions {
		if in.keyword == "RUN" && strings.Contains(in.args, "go build") {
			buildRun = in.args
		}
		if in.keyword == "RUN" && strings.Contains(in.args, "/etc/passwd") {
			filesRun = in.args
		}
	}
	escaped := func(s string) string { return strings.ReplaceAll(s, "\n", `\n`) }
	for what, content := range map[string]string{"/etc/passwd": etcPasswd(), "/etc/group": etcGroup()} {
		if !strings.Contains(filesRun, "'"+escaped(content)+"'") {
			t.Errorf("Dockerfile: the build stage does not write %s as BuildImage does (%q)", what, content)
		}
	}
	if !strings.Contains(filesRun, CABundlePath) {
		t.Errorf("Dockerfile: the build stage does not copy the CA bundle to %s", CABundlePath)
	}

	// go build: the same environment and arguments as BuildBinary.
	w := words(buildRun)
	goAt := slices.Index(w, "go")
	outAt := slices.Index(w, "-o")
	if goAt < 0 || outAt < goAt || w[goAt+1] != "build" {
		t.Fatalf("Dockerfile: cannot read the go build command %q", buildRun)
	}
	wantBuildEnv := GoBuildEnv("${TARGETARCH}")
	if gotEnv := w[:goAt]; !equalSets(gotEnv, wantBuildEnv) {
		t.Errorf("Dockerfile: go build runs with %q, BuildBinary with %q", gotEnv, wantBuildEnv)
	}
	if gotArgs, wantArgs := w[goAt+2:outAt], GoBuildArgs("${VERSION}"); !slices.Equal(gotArgs, wantArgs) {
		t.Errorf("Dockerfile: go build %q, BuildBinary: go build %q", gotArgs, wantArgs)
	}

	// The Go of the build stage is the one go.mod names.
	gomod, err := os.ReadFile("../go.mod")
	if err != nil {
		t.Fatal(err)
	}
	goVersion := regexp.MustCompile(`(?m)^go (\S+)$`).FindSubmatch(gomod)
	var argGo string
	for _, in := range global {
		if v, ok := strings.CutPrefix(in.args, "GO_VERSION="); in.keyword == "ARG" && ok {
			argGo = v
		}
	}
	if goVersion == nil {
		t.Fatal("go.mod has no go directive")
	}
	if argGo != string(goVersion[1]) {
		t.Errorf("Dockerfile: ARG GO_VERSION=%s, go.mod: go %s", argGo, goVersion[1])
	}
	if !strings.Contains(build.from, "golang:${GO_VERSION}") {
		t.Errorf("Dockerfile: the build stage is FROM %s, want golang:${GO_VERSION}", build.from)
	}

	// The build context leaves out what is not source.
	ignore, err := os.ReadFile("../.dockerignore")
	if err != nil {
		t.Fatalf("no .dockerignore: the build context would carry bin/, .tools/ (Azurite) and .git: %v", err)
	}
	for _, p := range []string{".git", ".tools", "bin"} {
		if !slices.Contains(strings.Fields(string(ignore)), p) {
			t.Errorf(".dockerignore does not leave out %s", p)
		}
	}
}

// dockerfileConfig is what the Dockerfile's final stage sets.
type dockerfileConfig struct {
	User, WorkingDir string
	Entrypoint, Cmd  []string
	Env, Labels      map[string]string
	Ports            map[string]bool
}

func equalSets(a, b []string) bool {
	a, b = slices.Sorted(slices.Values(a)), slices.Sorted(slices.Values(b))
	return slices.Equal(a, b)
}
