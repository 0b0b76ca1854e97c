package jobs

import (
	"errors"
	"testing"
	"time"
)

func TestCronSpec(t *testing.T) {
	tests := []struct {
		name, in, wantExpr string
		wantSeconds        bool
	}{
		{"five fields", "0 2 * * *", "0 2 * * *", false},
		{"six fields", "30 0 2 * * *", "30 0 2 * * *", true},
		{"descriptor", "@daily", "@daily", false},
		{"every", "@every 15m", "@every 15m", false},
		{"zone five", "CRON_TZ=Europe/Paris 0 2 * * *", "CRON_TZ=Europe/Paris 0 2 * * *", false},
		{"zone six", "CRON_TZ=Europe/Paris 0 0 2 * * *", "CRON_TZ=Europe/Paris 0 0 2 * * *", true},
		{"spaces", "  0 2 * * *  ", "0 2 * * *", false},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			expr, sec := CronSpec(tt.in)
			if expr != tt.wantExpr || sec != tt.wantSeconds {
				t.Errorf("CronSpec(%q) = %q, %v; want %q, %v", tt.in, expr, sec, tt.wantExpr, tt.wantSeconds)
			}
		})
	}
}

func TestNextRun(t *testing.T) {
	base := time.Date(2026, 11, 24, 10, 7, 30, 0, time.UTC)
	tests := []struct {
		name, schedule string
		want           time.Time
	}{
		{"every quarter hour", "*/15 * * * *", time.Date(2026, 11, 24, 10, 15, 0, 0, time.UTC)},
		{"seconds", "*/10 * * * * *", time.Date(2026, 11, 24, 10, 7, 40, 0, time.UTC)},
		{"daily", "@daily", time.Date(2026, 11, 25, 0, 0, 0, 0, time.UTC)},
		{"zone", "CRON_TZ=Asia/Tokyo 0 0 * * *", time.Date(2026, 11, 24, 15, 0, 0, 0, time.UTC)},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, err := NextRun(tt.schedule, base)
			if err != nil {
				t.Fatalf("NextRun(%q): %v", tt.schedule, err)
			}
			if !got.Equal(tt.want) {
				t.Errorf("NextRun(%q) = %s, want %s", tt.schedule, got.UTC(), tt.want)
			}
		})
	}
	if _, err := NextRun("61 * * * *", base); err == nil {
		t.Error("NextRun accepted minute 61")
	}
}

// TestRunnerNeverOverlapsOneJob checks that a second run of a job that is
// still running is refused with ErrAlreadyRunning, while another job may run.
func TestRunnerNeverOverlapsOneJob(t *testing.T) {
	r := &Runner{}
	if !r.claim("a") {
		t.Fatal("first claim of job a refused")
	}
	if _, err := r.Run(t.Context(), &Export{Name: "a"}, RunOptions{}); !errors.Is(err, ErrAlreadyRunning) {
		t.Fatalf("second run of job a: err %v, want ErrAlreadyRunning", err)
	}
	if !r.claim("b") {
		t.Fatal("claim of job b refused while only a runs")
	}
	r.release("a")
	if !r.claim("a") {
		t.Fatal("job a could not run again after its run ended")
	}
}
