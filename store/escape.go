package store

import (
	"fmt"
	"strings"
)

const upperHex = "0123456789ABCDEF"

// keepByte reports the bytes EscapeName leaves as they are.
func keepByte(c byte) bool {
	switch {
	case 'a' <= c && c <= 'z', 'A' <= c && c <= 'Z', '0' <= c && c <= '9':
		return true
	}
	switch c {
	case ' ', '-', '_', '.', '(', ')':
		return true
	}
	return false
}

// EscapeName turns any string (an entity name, a job name, an execution ID)
// into one readable, valid store key segment, and is reversed by UnescapeName.
//
// ASCII letters, digits, space, '-', '_', '.', '(' and ')' stay; every other
// byte (including '/', '%' and each byte of a non-ASCII character) becomes
// %XX with upper-case hex. Four whole names are special so that every result
// is a valid, distinct segment: "" becomes "_", "_" becomes "%5F", "." becomes
// "%2E" and ".." becomes "%2E%2E". A final '.' becomes "%2E" too, because
// Azure Blob Storage and Windows drop trailing dots from names.
func EscapeName(s string) string {
	switch s {
	case "":
		return "_"
	case "_":
		return "%5F"
	case ".":
		return "%2E"
	case "..":
		return "%2E%2E"
	}
	last := len(s) - 1
	keep := func(i int) bool { return keepByte(s[i]) && !(i == last && s[i] == '.') }
	n := 0
	for i := 0; i < len(s); i++ {
		if !keep(i) {
			n++
		}
	}
	if n == 0 {
		return s
	}
	var b strings.Builder
	b.Grow(len(s) + 2*n)
	for i := 0; i < len(s); i++ {
		c := s[i]
		if keep(i) {
			b.WriteByte(c)
			continue
		}
		b.WriteByte('%')
		b.WriteByte(upperHex[c>>4])
		b.WriteByte(upperHex[c&15])
	}
	return b.String()
}

// UnescapeName reverses EscapeName. It accepts only what EscapeName can
// produce (upper- or lower-case hex is accepted) and reports any other byte
// or a malformed %XX sequence as an error.
func UnescapeName(s string) (string, error) {
	if s == "" {
		return "", fmt.Errorf("unescape name: empty string is not an escaped name")
	}
	if s == "_" {
		return "", nil
	}
	var b strings.Builder
	b.Grow(len(s))
	for i := 0; i < len(s); i++ {
		c := s[i]
		if c == '%' {
			if i+2 >= len(s) {
				return "", fmt.Errorf("unescape name %q: incomplete %%XX sequence at byte %d", s, i)
			}
			hi, ok1 := unhex(s[i+1])
			lo, ok2 := unhex(s[i+2])
			if !ok1 || !ok2 {
				return "", fmt.Errorf("unescape name %q: invalid %%XX sequence at byte %d", s, i)
			}
			b.WriteByte(hi<<4 | lo)
			i += 2
			continue
		}
		if !keepByte(c) {
			return "", fmt.Errorf("unescape name %q: byte %q at %d should have been escaped", s, c, i)
		}
		b.WriteByte(c)
	}
	return b.String(), nil
}

func unhex(c byte) (byte, bool) {
	switch {
	case '0' <= c && c <= '9':
		return c - '0', true
	case 'a' <= c && c <= 'f':
		return c - 'a' + 10, true
	case 'A' <= c && c <= 'F':
		return c - 'A' + 10, true
	}
	return 0, false
}

// EntityKeyName is the last segment of an entity's store key:
// EscapeName(entity) + "." + EscapeName(ext) with every '.' of either part
// also written as %2E. The one '.' left is the separator, never the first
// byte, so no entity key can take a name a store keeps for itself (a
// DirStore temporary file ".dmfstore-tmp-*", a sidecar "*.meta.json") or
// look like another object (an entity "x.csv" with extension "meta.json");
// distinct (entity, ext) pairs give distinct names.
func EntityKeyName(entity, ext string) string {
	return escapeDots(EscapeName(entity)) + "." + escapeDots(EscapeName(ext))
}

func escapeDots(s string) string { return strings.ReplaceAll(s, ".", "%2E") }
