package main

import "testing"

func TestPrintable(t *testing.T) {
	tests := []struct{ name, in, want string }{
		{"plain", "DemoExport-2026-11-25_10-00-00-ab12", "DemoExport-2026-11-25_10-00-00-ab12"},
		{"non-ASCII kept", "Kundenkonten Ü", "Kundenkonten Ü"},
		{"CR LF", "id\r\nINFO forged line", `id\r\nINFO forged line`},
		{"tab", "a\tb", `a\tb`},
		{"escape sequence", "x\x1b[2Jy", `x\x1b[2Jy`},
		{"invalid UTF-8", "a\xffb", `a\xffb`},
		{"line separator", "a\u2028b", `a\u2028b`},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if got := printable(tt.in); got != tt.want {
				t.Errorf("printable(%q) = %q, want %q", tt.in, got, tt.want)
			}
		})
	}
}

func FuzzPrintable(f *testing.F) {
	for _, s := range []string{"plain", "a\r\nb", "\x1b[31m", "\xff", "\u2028"} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, s string) {
		got := printable(s)
		for _, c := range []byte(got) {
			if c < 0x20 || c == 0x7f {
				t.Fatalf("printable(%q) = %q holds control byte %#x", s, got, c)
			}
		}
		if printable(got) != got {
			t.Fatalf("printable is not idempotent on %q", got)
		}
	})
}
