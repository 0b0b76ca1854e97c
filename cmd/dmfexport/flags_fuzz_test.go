package main

import (
	"errors"
	"flag"
	"slices"
	"strings"
	"testing"
)

// fuzzFlagSet is a command's flag set with each kind of flag.
func fuzzFlagSet() *flag.FlagSet {
	fs := flag.NewFlagSet("fuzz", flag.ContinueOnError)
	fs.String("config", "dmfexport.yaml", "")
	fs.Bool("json", false, "")
	fs.Int("limit", 10, "")
	return fs
}

// FuzzParseFlags checks that any command line either is refused or gives
// flag values and arguments that the plain form (flags first, then "--",
// then the arguments) gives again: where a flag sits never changes what it
// means.
func FuzzParseFlags(f *testing.F) {
	for _, seed := range []string{
		"demo --json --config x.yaml",
		"--limit 3 demo -- --json",
		"-- -h",
		"a --config=b c --json=false d",
		"--limit -1 x",
		"--config",
		"--nope",
		"- --json",
	} {
		f.Add(seed)
	}
	f.Fuzz(func(t *testing.T, line string) {
		args := strings.Split(line, " ")
		fs := fuzzFlagSet()
		pos, err := parseFlags(fs, "", args)
		if err != nil {
			var fe *flagError
			if !errors.As(err, &fe) && !errors.Is(err, flag.ErrHelp) {
				t.Fatalf("parseFlags(%q): error %v is neither a flagError nor ErrHelp", args, err)
			}
			return
		}
		var plain []string
		fs.Visit(func(f *flag.Flag) { plain = append(plain, "--"+f.Name+"="+f.Value.String()) })
		plain = append(append(plain, "--"), pos...)
		again := fuzzFlagSet()
		pos2, err := parseFlags(again, "", plain)
		if err != nil {
			t.Fatalf("plain form %q of %q refused: %v", plain, args, err)
		}
		if !slices.Equal(pos, pos2) {
			t.Fatalf("arguments of %q = %q, of its plain form %q = %q", args, pos, plain, pos2)
		}
		fs.VisitAll(func(f *flag.Flag) {
			if g := again.Lookup(f.Name).Value.String(); g != f.Value.String() {
				t.Fatalf("--%s of %q = %q, of its plain form = %q", f.Name, args, f.Value.String(), g)
			}
		})
	})
}
