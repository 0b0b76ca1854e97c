package main

import (
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"testing"
)

// TestVersionFlag checks that --version and -version print what the version
// command prints.
func TestVersionFlag(t *testing.T) {
	want, stderr, code := runBinary(t, nil, "version")
	if code != 0 || !strings.HasPrefix(want, "dmfexport ") {
		t.Fatalf("version: exit %d\nstdout: %s\nstderr: %s", code, want, stderr)
	}
	for _, arg := range []string{"--version", "-version"} {
		t.Run(arg, func(t *testing.T) {
			stdout, stderr, code := runBinary(t, nil, arg)
			if code != 0 || stdout != want || stderr != "" {
				t.Errorf("exit %d, stdout %q, stderr %q; want exit 0 and %q", code, stdout, stderr, want)
			}
		})
	}
}

// TestHelpCommand checks that help CMD prints that command's usage and flags,
// the same as CMD --help, and that an unknown name is refused with the known
// ones.
func TestHelpCommand(t *testing.T) {
	for _, name := range commandNames() {
		t.Run(name, func(t *testing.T) {
			want, _, code := runBinary(t, nil, name, "--help")
			if code != 0 {
				t.Fatalf("%s --help: exit %d", name, code)
			}
			stdout, stderr, code := runBinary(t, nil, "help", name)
			if code != 0 || stdout != want || stderr != "" {
				t.Errorf("help %s: exit %d, stderr %q; want exit 0 and the output of %s --help\ngot:\n%s\nwant:\n%s", name, code, stderr, name, stdout, want)
			}
			if !strings.HasPrefix(stdout, "Usage: dmfexport "+name) || strings.Contains(stdout, "Commands:") {
				t.Errorf("help %s does not print the command's own usage:\n%s", name, stdout)
			}
		})
	}
	t.Run("run lists its flags", func(t *testing.T) {
		stdout, _, code := runBinary(t, nil, "help", "run")
		if code != 0 || !strings.Contains(stdout, "--stop-timeout") {
			t.Errorf("help run: exit %d, want 0 and --stop-timeout listed:\n%s", code, stdout)
		}
	})
	for _, args := range [][]string{{"help"}, {"help", "help"}, {"--help"}} {
		t.Run(strings.Join(args, " "), func(t *testing.T) {
			stdout, stderr, code := runBinary(t, nil, args...)
			if code != 0 || !strings.Contains(stdout, "Commands:") || !strings.Contains(stdout, "completion") {
				t.Errorf("exit %d, want 0 and the general usage naming completion\nstdout: %s\nstderr: %s", code, stdout, stderr)
			}
		})
	}
	t.Run("unknown command", func(t *testing.T) {
		stdout, stderr, code := runBinary(t, nil, "help", "nosuch")
		if code != 2 || stdout != "" || !strings.Contains(stderr, `unknown command "nosuch"`) {
			t.Errorf("exit %d, want 2 and the name refused on stderr\nstdout: %s\nstderr: %s", code, stdout, stderr)
		}
		for _, name := range commandNames() {
			if !strings.Contains(stderr, name) {
				t.Errorf("the refusal does not name the command %s: %s", name, stderr)
			}
		}
	})
}

// TestCompletionBash sources the bash script, checks it registers a
// completion for dmfexport and drives its function for several command
// lines, comparing the whole COMPREPLY.
func TestCompletionBash(t *testing.T) {
	bash, err := exec.LookPath("bash")
	if err != nil {
		t.Skip("bash is not installed: the bash completion script is not checked")
	}
	script, stderr, code := runBinary(t, nil, "completion", "bash")
	if code != 0 {
		t.Fatalf("completion bash: exit %d: %s", code, stderr)
	}
	file := writeFile(t, t.TempDir(), "dmfexport.bash", script)
	complete := func(t *testing.T, line string) []string {
		t.Helper()
		// The last word is the one being completed; a trailing space starts
		// an empty one.
		words := strings.Fields(line)
		if strings.HasSuffix(line, " ") {
			words = append(words, "")
		}
		var quoted []string
		for _, w := range words {
			quoted = append(quoted, "'"+w+"'")
		}
		prog := `source "$1" || exit 3
complete -p dmfexport || exit 4
COMP_WORDS=(` + strings.Join(quoted, " ") + `)
COMP_CWORD=$((${#COMP_WORDS[@]} - 1))
COMP_LINE="$2"
COMP_POINT=${#COMP_LINE}
_dmfexport dmfexport "${COMP_WORDS[COMP_CWORD]}" "${COMP_WORDS[COMP_CWORD-1]}"
printf '%s\n' "${COMPREPLY[@]}"`
		out, err := exec.CommandContext(t.Context(), bash, "--norc", "--noprofile", "-c", prog, "bash", file, line).CombinedOutput()
		if err != nil {
			t.Fatalf("bash: %v\n%s", err, out)
		}
		lines := strings.Split(strings.TrimSpace(string(out)), "\n")
		if lines[0] != "complete -o default -F _dmfexport dmfexport" {
			t.Fatalf("complete -p dmfexport printed %q, want the script's completion registered", lines[0])
		}
		got := slices.DeleteFunc(lines[1:], func(s string) bool { return s == "" })
		slices.Sort(got)
		return got
	}
	tests := []struct {
		line string
		want []string
	}{
		{"dmfexport tr", []string{"trigger"}},
		{"dmfexport re", []string{"reconcile", "replay"}},
		{"dmfexport --v", []string{"--version"}},
		{"dmfexport status --j", []string{"--json"}},
		{"dmfexport run --", []string{"--config", "--help", "--listen", "--log-format", "--log-level", "--stop-timeout"}},
		{"dmfexport help tr", []string{"trigger"}},
		{"dmfexport completion ", []string{"bash", "fish", "zsh"}},
		{"dmfexport sink re", []string{"replay-dead"}},
		{"dmfexport trigger de", nil}, // export names are left to the shell's default
	}
	for _, tt := range tests {
		t.Run(tt.line, func(t *testing.T) {
			if got := complete(t, tt.line); !slices.Equal(got, tt.want) {
				t.Errorf("COMPREPLY for %q: %q, want %q", tt.line, got, tt.want)
			}
		})
	}
	t.Run("every command", func(t *testing.T) {
		got := complete(t, "dmfexport ")
		for _, name := range append(commandNames(), "help") {
			if !slices.Contains(got, name) {
				t.Errorf("COMPREPLY for \"dmfexport \" lacks %s: %q", name, got)
			}
		}
	})
}

// TestCompletionSyntax checks the zsh and fish scripts with the shells'
// syntax check, where the shell is installed, and refuses an unknown shell.
func TestCompletionSyntax(t *testing.T) {
	for _, shell := range []string{"zsh", "fish"} {
		t.Run(shell, func(t *testing.T) {
			script, stderr, code := runBinary(t, nil, "completion", shell)
			if code != 0 || !strings.Contains(script, "trigger") {
				t.Fatalf("completion %s: exit %d, want 0 and a script naming the commands\nstdout: %s\nstderr: %s", shell, code, script, stderr)
			}
			path, err := exec.LookPath(shell)
			if err != nil {
				t.Skipf("%s is not installed: the script is not syntax-checked", shell)
			}
			file := filepath.Join(t.TempDir(), "dmfexport."+shell)
			if err := os.WriteFile(file, []byte(script), 0o644); err != nil {
				t.Fatal(err)
			}
			if out, err := exec.CommandContext(t.Context(), path, "-n", file).CombinedOutput(); err != nil {
				t.Errorf("%s -n: %v\n%s", shell, err, out)
			}
		})
	}
	t.Run("unknown shell", func(t *testing.T) {
		_, stderr, code := runBinary(t, nil, "completion", "tcsh")
		if code != 2 || !strings.Contains(stderr, `unknown shell "tcsh": want bash, zsh or fish`) {
			t.Errorf("exit %d, want 2 naming the shell\nstderr: %s", code, stderr)
		}
	})
}
