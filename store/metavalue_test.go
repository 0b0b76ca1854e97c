package store

import (
	"strings"
	"testing"
)

func TestMetaValueEncoding(t *testing.T) {
	tests := []struct{ in, want string }{
		{"plain value", "plain value"},
		{"", "%"},
		{"%", "%25"},
		{"Café", "Caf%C3%A9"},
		{" a b ", "%20a b%20"},
		{"a\nb", "a%0Ab"},
		{"\x7f", "%7F"},
	}
	for _, tt := range tests {
		t.Run(tt.in, func(t *testing.T) {
			got := encodeMetaValue(tt.in)
			if got != tt.want {
				t.Errorf("encodeMetaValue(%q) = %q, want %q", tt.in, got, tt.want)
			}
			if back := decodeMetaValue(got); back != tt.in {
				t.Errorf("decodeMetaValue(%q) = %q, want %q", got, back, tt.in)
			}
		})
	}
	for _, foreign := range []string{"50%", "%zz", "a%4"} {
		if got := decodeMetaValue(foreign); got != foreign {
			t.Errorf("decodeMetaValue(%q) = %q, want it unchanged (not written by BlobStore)", foreign, got)
		}
	}
}

func FuzzMetaValue(f *testing.F) {
	for _, s := range []string{"", "%", " x ", "Café", "a\x00b", "%25"} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, s string) {
		e := encodeMetaValue(s)
		for i := 0; i < len(e); i++ {
			if e[i] < 0x20 || e[i] >= 0x7f {
				t.Fatalf("encodeMetaValue(%q) = %q holds byte %#x", s, e, e[i])
			}
		}
		if e != strings.TrimSpace(e) {
			t.Fatalf("encodeMetaValue(%q) = %q has surrounding space", s, e)
		}
		if back := decodeMetaValue(e); back != s {
			t.Fatalf("decodeMetaValue(encodeMetaValue(%q)) = %q", s, back)
		}
	})
}

// TestBlobStoreReadOnly: a store opened for reading (dmfexport status) never
// creates its container, and a container that does not exist lists as empty.
