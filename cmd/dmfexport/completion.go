package main

import (
	"bytes"
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"slices"
	"strings"
)

type completionCommand struct{ g globalFlags }

func (c *completionCommand) Usage() string {
	return `Usage: dmfexport completion bash|zsh|fish

Prints a script that completes dmfexport's command names and each command's
flags in the shell named; other arguments complete as file names. Load it with
  bash:  source <(dmfexport completion bash)   (or save it in /etc/bash_completion.d/dmfexport)
  zsh:   source <(dmfexport completion zsh)    (after compinit; or save it as _dmfexport in $fpath)
  fish:  dmfexport completion fish | source    (or save it in ~/.config/fish/completions/dmfexport.fish)
`
}

func (c *completionCommand) Line(cl *commandLine) {
	cl.Log(&c.g, "warn")
}

func (c *completionCommand) Run(_ context.Context, pos []string) error {
	if len(pos) != 1 {
		return usageMistake("name one shell (bash, zsh or fish), got %d arguments", len(pos))
	}
	flags, err := allCommandFlags()
	if err != nil {
		return err
	}
	var script string
	switch pos[0] {
	case "bash":
		script = bashCompletion(flags)
	case "zsh":
		script = zshCompletion(flags)
	case "fish":
		script = fishCompletion(flags)
	default:
		return usageMistake("unknown shell %q: want bash, zsh or fish", pos[0])
	}
	_, err = io.WriteString(helpOut, script)
	return err
}

// commandFlags are the flags of each command as its --help lists them, so
// the completion scripts never drift from the flag sets.
type commandFlags struct {
	names []string            // every command, and help, sorted
	flags map[string][]string // command name → its flags, "--config" ...
}

// allCommandFlags asks every command for its --help and collects the flags.
func allCommandFlags() (commandFlags, error) {
	cf := commandFlags{names: sortedCommandNames(), flags: map[string][]string{}}
	old := helpOut
	defer func() { helpOut = old }()
	for name, cmd := range commands() {
		var buf bytes.Buffer
		helpOut = &buf
		if err := parseAndRun(context.Background(), name, cmd, []string{"--help"}); !errors.Is(err, flag.ErrHelp) {
			return cf, fmt.Errorf("list the flags of %s: %w", name, err)
		}
		_, list, _ := strings.Cut(buf.String(), "\nFlags:\n")
		var flags []string
		for _, line := range strings.Split(list, "\n") {
			if strings.HasPrefix(line, "  --") {
				flags = append(flags, strings.Fields(line)[0])
			}
		}
		flags = append(flags, "--help")
		slices.Sort(flags)
		cf.flags[name] = flags
	}
	return cf, nil
}

// commandsWithFlags lists the commands that have flags, sorted.
func (cf commandFlags) commandsWithFlags() []string {
	var names []string
	for _, n := range cf.names {
		if len(cf.flags[n]) > 0 {
			names = append(names, n)
		}
	}
	return names
}

func bashCompletion(cf commandFlags) string {
	var b strings.Builder
	fmt.Fprintf(&b, `# bash completion for dmfexport: source <(dmfexport completion bash)
_dmfexport() {
    local cur=${COMP_WORDS[COMP_CWORD]} words=""
    COMPREPLY=()
    if [[ $COMP_CWORD -eq 1 ]]; then
        words="%s --help --version"
    elif [[ $cur == -* ]]; then
        case ${COMP_WORDS[1]} in
`, strings.Join(cf.names, " "))
	for _, n := range cf.commandsWithFlags() {
		fmt.Fprintf(&b, "            %s) words=%q ;;\n", n, strings.Join(cf.flags[n], " "))
	}
	fmt.Fprintf(&b, `        esac
    elif [[ $COMP_CWORD -eq 2 ]]; then
        case ${COMP_WORDS[1]} in
            help) words=%q ;;
            completion) words="bash zsh fish" ;;
            sink) words="replay-dead" ;;
        esac
    fi
    if [[ -n $words ]]; then
        mapfile -t COMPREPLY < <(compgen -W "$words" -- "$cur")
    fi
}
complete -o default -F _dmfexport dmfexport
`, strings.Join(cf.names, " "))
	return b.String()
}

func zshCompletion(cf commandFlags) string {
	var b strings.Builder
	fmt.Fprintf(&b, `#compdef dmfexport
# zsh completion for dmfexport: source <(dmfexport completion zsh) after compinit,
# or save it as _dmfexport in a directory of $fpath.
_dmfexport() {
    if (( CURRENT == 2 )); then
        compadd -- %s --help --version
        return
    fi
    if [[ ${words[CURRENT]} == -* ]]; then
        case ${words[2]} in
`, strings.Join(cf.names, " "))
	for _, n := range cf.commandsWithFlags() {
		fmt.Fprintf(&b, "            %s) compadd -- %s ;;\n", n, strings.Join(cf.flags[n], " "))
	}
	fmt.Fprintf(&b, `        esac
        return
    fi
    if (( CURRENT == 3 )); then
        case ${words[2]} in
            help) compadd -- %s; return ;;
            completion) compadd -- bash zsh fish; return ;;
        esac
    fi
    _files
}
if [[ ${funcstack[1]} == _dmfexport ]]; then
    _dmfexport "$@"
else
    compdef _dmfexport dmfexport
fi
`, strings.Join(cf.names, " "))
	return b.String()
}

func fishCompletion(cf commandFlags) string {
	var b strings.Builder
	names := strings.Join(cf.names, " ")
	b.WriteString("# fish completion for dmfexport: dmfexport completion fish | source\n")
	fmt.Fprintf(&b, "complete -c dmfexport -n __fish_use_subcommand -f -a '%s'\n", names)
	b.WriteString("complete -c dmfexport -n __fish_use_subcommand -l version -d 'print the version'\n")
	fmt.Fprintf(&b, "complete -c dmfexport -n '__fish_seen_subcommand_from help' -f -a '%s'\n", names)
	b.WriteString("complete -c dmfexport -n '__fish_seen_subcommand_from completion' -f -a 'bash zsh fish'\n")
	for _, n := range cf.commandsWithFlags() {
		fmt.Fprintf(&b, "complete -c dmfexport -n '__fish_seen_subcommand_from %s'", n)
		for _, f := range cf.flags[n] {
			b.WriteString(" -l " + strings.TrimPrefix(f, "--"))
		}
		b.WriteString("\n")
	}
	return b.String()
}
