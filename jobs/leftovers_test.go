package jobs

import (
	"context"
	"fmt"
	"log/slog"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/dmfexport/dmfexport/store"
)

// deadPID returns the ID of a process that has ended.
func deadPID(t *testing.T) int {
	t.Helper()
	cmd := exec.CommandContext(context.Background(), "true")
	if err := cmd.Run(); err != nil {
		t.Skipf("cannot start a process: %v", err)
	}
	return cmd.Process.Pid
}

// TestRemovePackageTemps leaves package files as crashed and live runs do:
// only those of gone processes, and old ones without a process ID, go.
func TestRemovePackageTemps(t *testing.T) {
	dir := t.TempDir()
	now := time.Now()
	tests := []struct {
		name, file string
		age        time.Duration
		removed    bool
	}{
		{"this process's file", fmt.Sprintf("dmfexport-package-%d-123.zip", os.Getpid()), 3 * time.Hour, false},
		{"a gone process's fresh file", fmt.Sprintf("dmfexport-package-%d-456.zip", deadPID(t)), 0, true},
		{"earlier version's old file", "dmfexport-package-98765.zip", 2 * time.Hour, true},
		{"earlier version's fresh file", "dmfexport-package-43210.zip", time.Minute, false},
		{"someone else's file", "other-98765.zip", 5 * time.Hour, false},
	}
	for _, tt := range tests {
		p := filepath.Join(dir, tt.file)
		if err := os.WriteFile(p, []byte("zip"), 0o600); err != nil {
			t.Fatal(err)
		}
		if err := os.Chtimes(p, now.Add(-tt.age), now.Add(-tt.age)); err != nil {
			t.Fatal(err)
		}
	}
	removePackageTemps(dir, now)
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			_, err := os.Stat(filepath.Join(dir, tt.file))
			if gone := os.IsNotExist(err); gone != tt.removed {
				t.Errorf("%s: removed %v, want %v", tt.file, gone, tt.removed)
			}
		})
	}
}

// TestCleanLeftoversInDirStore leaves temporary files of interrupted writes
// in a directory store: old ones are removed at start, a fresh one (a
// write in progress elsewhere) and every object stay.
func TestCleanLeftoversInDirStore(t *testing.T) {
	root := t.TempDir()
	st, err := store.NewDirStore(root)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := st.Put(context.Background(), "job/run/run.json", strings.NewReader("{}"), nil); err != nil {
		t.Fatal(err)
	}
	old := filepath.Join(root, "job", "run", ".dmfstore-tmp-111")
	fresh := filepath.Join(root, "job", ".dmfstore-tmp-222")
	for _, p := range []string{old, fresh} {
		if err := os.MkdirAll(filepath.Dir(p), 0o755); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(p, []byte("partial"), 0o600); err != nil {
			t.Fatal(err)
		}
	}
	then := time.Now().Add(-2 * LeftoverAge)
	if err := os.Chtimes(old, then, then); err != nil {
		t.Fatal(err)
	}
	cfg := &Config{Exports: []Export{{Name: "job", Store: StoreConfig{Type: "dir", Path: root}}}}
	(&Runner{Logger: slog.New(slog.DiscardHandler)}).CleanLeftovers(context.Background(), cfg)
	if _, err := os.Stat(old); !os.IsNotExist(err) {
		t.Errorf("temporary file of a write cut off 2h ago: want removed, got %v", err)
	}
	if _, err := os.Stat(fresh); err != nil {
		t.Errorf("temporary file of a write in progress: want kept, got %v", err)
	}
	if _, err := st.Stat(context.Background(), "job/run/run.json"); err != nil {
		t.Errorf("stored object: want kept, got %v", err)
	}
}
