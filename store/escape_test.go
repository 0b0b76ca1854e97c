package store

import (
	"context"
	"strings"
	"testing"
)

func TestEscapeName(t *testing.T) {
	tests := []struct {
		name, in, want string
	}{
		{"plain", "Customers V3", "Customers V3"},
		{"kept punctuation", "a-b_c.d (e)", "a-b_c.d (e)"},
		{"slash colon", "a/b:c d", "a%2Fb%3Ac d"},
		{"percent", "100%", "100%25"},
		{"backslash", `a\b`, "a%5Cb"},
		{"dot", ".", "%2E"},
		{"dot dot", "..", "%2E%2E"},
		{"three dots", "...", "..%2E"},
		{"trailing dot", "Inc.", "Inc%2E"},
		{"inner dots stay", "a.b.c", "a.b.c"},
		{"empty", "", "_"},
		{"underscore alone", "_", "%5F"},
		{"non-ASCII", "Café", "Caf%C3%A9"},
		{"control", "a\nb\x00", "a%0Ab%00"},
		{"execution id", "Export-2024-03-01_10:00:00-9f2", "Export-2024-03-01_10%3A00%3A00-9f2"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got := EscapeName(tt.in)
			if got != tt.want {
				t.Errorf("EscapeName(%q) = %q, want %q", tt.in, got, tt.want)
			}
			if err := ValidKey(got); err != nil {
				t.Errorf("EscapeName(%q) = %q is not a valid key: %v", tt.in, got, err)
			}
			back, err := UnescapeName(got)
			if err != nil || back != tt.in {
				t.Errorf("UnescapeName(%q) = %q, %v; want %q", got, back, err, tt.in)
			}
		})
	}
}

func TestUnescapeNameErrors(t *testing.T) {
	for _, in := range []string{"", "%", "%4", "%G0", "a/b", "a:b", "Caf\xc3\xa9"} {
		t.Run(in, func(t *testing.T) {
			if got, err := UnescapeName(in); err == nil {
				t.Errorf("UnescapeName(%q) = %q, nil; want an error", in, got)
			}
		})
	}
	if got, err := UnescapeName("a%2fb"); err != nil || got != "a/b" {
		t.Errorf("UnescapeName(lower-case hex) = %q, %v; want %q", got, err, "a/b")
	}
}

func FuzzEscapeName(f *testing.F) {
	for _, s := range []string{"", "_", ".", "..", "a/b:c d", "Café", "%"} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, s string) {
		e := EscapeName(s)
		if err := ValidKey(e); err != nil {
			t.Fatalf("EscapeName(%q) = %q: %v", s, e, err)
		}
		back, err := UnescapeName(e)
		if err != nil || back != s {
			t.Fatalf("UnescapeName(EscapeName(%q)) = %q, %v", s, back, err)
		}
	})
}

// TestEntityKeyNameNeverReserved stores entities whose names imitate the
// directory store's own files and the run's objects: each must get a name
// the store accepts, distinct from the others and from those files.
func TestEntityKeyNameNeverReserved(t *testing.T) {
	tests := []struct{ name, entity, ext string }{
		{"record name", "run", "json"},
		{"package name", "package", "zip"},
		{"temporary file", ".dmfstore-tmp-x", "csv"},
		{"temporary file without extension", ".dmfstore-tmp-", "csv"},
		{"metadata sidecar", "x.csv.meta", "json"},
		{"metadata sidecar in the extension", "x", "meta.json"},
		{"dot", ".", "csv"},
		{"dot dot", "..", "csv"},
		{"empty", "", "csv"},
		{"escape look-alike", "x%2Ecsv", "csv"},
		{"clock object", "_clock", "csv"},
	}
	st, err := NewDirStore(t.TempDir())
	if err != nil {
		t.Fatal(err)
	}
	seen := map[string]string{}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got := EntityKeyName(tt.entity, tt.ext)
			if strings.Count(got, ".") != 1 || strings.HasPrefix(got, ".") || strings.HasSuffix(got, metaSuffix) {
				t.Errorf("EntityKeyName(%q, %q) = %q: want one '.', not first, no %s suffix", tt.entity, tt.ext, got, metaSuffix)
			}
			if other, dup := seen[got]; dup {
				t.Errorf("EntityKeyName(%q, %q) = %q, the same as for %s", tt.entity, tt.ext, got, other)
			}
			seen[got] = tt.name
			if _, err := st.Put(context.Background(), "job/run/entities/"+got, strings.NewReader("x"), nil); err != nil {
				t.Errorf("directory store refuses entity key %q: %v", got, err)
			}
		})
	}
}

// FuzzEntityKeyName checks that entity key names never take a reserved
// shape and that the entity and extension can be read back from them.
func FuzzEntityKeyName(f *testing.F) {
	for _, s := range []string{"run", ".dmfstore-tmp-x", "x.csv.meta", "..", "", "Customers V3", "a%2Eb"} {
		f.Add(s, "csv")
		f.Add(s, "meta.json")
	}
	f.Fuzz(func(t *testing.T, entity, ext string) {
		got := EntityKeyName(entity, ext)
		if strings.Count(got, ".") != 1 || strings.HasPrefix(got, ".") || strings.HasSuffix(got, metaSuffix) || strings.HasPrefix(got, tmpPrefix) {
			t.Fatalf("EntityKeyName(%q, %q) = %q takes a reserved shape", entity, ext, got)
		}
		if err := ValidKey("p/" + got); err != nil {
			t.Fatalf("EntityKeyName(%q, %q) = %q is no valid key: %v", entity, ext, got, err)
		}
		a, b, _ := strings.Cut(got, ".")
		e, err1 := UnescapeName(a)
		x, err2 := UnescapeName(b)
		if err1 != nil || err2 != nil || e != entity || x != ext {
			t.Fatalf("EntityKeyName(%q, %q) = %q reads back as (%q, %q), %v %v", entity, ext, got, e, x, err1, err2)
		}
	})
}
