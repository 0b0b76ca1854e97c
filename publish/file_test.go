package publish

import (
	"bufio"
	"context"
	"encoding/json"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

func TestFileSink(t *testing.T) {
	dir := filepath.Join(t.TempDir(), "out", "nested")
	s, err := NewFileSink(dir)
	if err != nil {
		t.Fatalf("NewFileSink: %v", err)
	}
	in, want := genCSV(7)
	for _, key := range []string{"dmf.customers", ""} {
		if _, err := PublishEntity(context.Background(), strings.NewReader(in), s, EntityOptions{
			ExecutionID: "e", Entity: "E", RoutingKey: key, BatchSize: 3, Format: "csv",
		}); err != nil {
			t.Fatalf("PublishEntity to key %q: %v", key, err)
		}
	}
	if err := s.Close(); err != nil {
		t.Fatalf("Close: %v", err)
	}
	for _, name := range []string{"dmf.customers.ndjson", "default.ndjson"} {
		f, err := os.Open(filepath.Join(dir, name))
		if err != nil {
			t.Fatalf("open %s: %v", name, err)
		}
		var bodies [][]byte
		sc := bufio.NewScanner(f)
		sc.Buffer(nil, 1<<20)
		for sc.Scan() {
			if !json.Valid(sc.Bytes()) {
				t.Errorf("%s: line %d is not valid JSON: %s", name, len(bodies)+1, sc.Bytes())
			}
			bodies = append(bodies, append([]byte(nil), sc.Bytes()...))
		}
		_ = f.Close()
		if len(bodies) != 3 {
			t.Errorf("%s: want 3 lines, got %d", name, len(bodies))
		}
		if _, got := rowsOf(t, bodies); len(got) != len(want) || strings.Join(got[6], "|") != strings.Join(want[6], "|") {
			t.Errorf("%s: want %d rows ending %q, got %q", name, len(want), want[6], got)
		}
	}
	if err := s.Publish(context.Background(), Message{Body: []byte("{}")}); err == nil {
		t.Error("Publish after Close: want an error, got nil")
	}
}

func TestFileSinkRefusesMultilineBody(t *testing.T) {
	s, err := NewFileSink(t.TempDir())
	if err != nil {
		t.Fatal(err)
	}
	defer func() { _ = s.Close() }()
	if err := s.Publish(context.Background(), Message{MessageID: "m", Body: []byte("{\n}")}); err == nil {
		t.Error("want an error for a body with a line break, got nil")
	}
}

func TestFileName(t *testing.T) {
	tests := []struct{ key, want string }{
		{"", "default.ndjson"},
		{"dmf.customers", "dmf.customers.ndjson"},
		{"a/b", "a%2Fb.ndjson"},
		{"..", "%2E..ndjson"},
		{".hidden", "%2Ehidden.ndjson"},
		{"sp ace*", "sp%20ace%2A.ndjson"},
		{"Kunden-ä", "Kunden-%C3%A4.ndjson"},
	}
	for _, tt := range tests {
		if got := FileName(tt.key); got != tt.want {
			t.Errorf("FileName(%q): want %q, got %q", tt.key, tt.want, got)
		}
	}
}

// TestFileSinkCutsTornLastLine: a line left without its newline by a killed
// process is cut off before new lines are appended.
func TestFileSinkCutsTornLastLine(t *testing.T) {
	tests := []struct {
		name, before, want string
	}{
		{"torn line", "{\"a\":1}\n{\"b\":", "{\"a\":1}\n{\"c\":3}\n"},
		{"only a torn line", "{\"b\":", "{\"c\":3}\n"},
		{"complete lines", "{\"a\":1}\n", "{\"a\":1}\n{\"c\":3}\n"},
		{"empty", "", "{\"c\":3}\n"},
		{"long torn line", "{\"a\":1}\n" + strings.Repeat("x", 200_000), "{\"a\":1}\n{\"c\":3}\n"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			dir := t.TempDir()
			path := filepath.Join(dir, FileName("k"))
			if err := os.WriteFile(path, []byte(tt.before), 0o644); err != nil {
				t.Fatal(err)
			}
			s, err := NewFileSink(dir)
			if err != nil {
				t.Fatal(err)
			}
			if err := s.Publish(context.Background(), Message{RoutingKey: "k", Body: []byte(`{"c":3}`)}); err != nil {
				t.Fatal(err)
			}
			if err := s.Flush(context.Background()); err != nil {
				t.Fatal(err)
			}
			_ = s.Close()
			got, _ := os.ReadFile(path)
			if string(got) != tt.want {
				t.Errorf("file holds %q, want %q", got, tt.want)
			}
		})
	}
}
