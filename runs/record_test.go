package runs

import (
	"encoding/json"
	"strings"
	"testing"
)

// TestRecordNames: records carry the export's name as "export" and, for
// earlier versions, as "job"; records earlier versions wrote (only "job")
// still read.
func TestRecordNames(t *testing.T) {
	t.Run("written with both names", func(t *testing.T) {
		b, err := Encode(&Record{Job: "daily", RunID: "r1", State: StateSucceeded})
		if err != nil {
			t.Fatal(err)
		}
		var m map[string]any
		if err := json.Unmarshal(b, &m); err != nil {
			t.Fatal(err)
		}
		if m["export"] != "daily" || m["job"] != "daily" {
			t.Errorf("record has export %v, job %v; want both \"daily\":\n%s", m["export"], m["job"], b)
		}
	})
	tests := []struct {
		name string
		json string
		want string
	}{
		{"earlier version: job only", `{"job": "daily", "run_id": "r1", "state": "succeeded"}`, "daily"},
		{"export only", `{"export": "daily", "run_id": "r1", "state": "succeeded"}`, "daily"},
		{"both: export wins", `{"export": "daily", "job": "old", "run_id": "r1", "state": "succeeded"}`, "daily"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			var rec Record
			if err := json.Unmarshal([]byte(tt.json), &rec); err != nil {
				t.Fatal(err)
			}
			if rec.Job != tt.want || rec.RunID != "r1" || rec.State != StateSucceeded {
				t.Errorf("read %+v, want export %q, run r1, succeeded", rec, tt.want)
			}
		})
	}
}

// TestRecordCause: "cause" sits beside "error", is left out when empty, and
// records written before it read with an empty Cause and their error whole.
func TestRecordCause(t *testing.T) {
	tests := []struct {
		name      string
		rec       Record
		wantCause bool // "cause" in the JSON
	}{
		{"failed with a cause", Record{RunID: "r1", State: StateFailed, Error: "export: connect: dial tcp: refused", Cause: "dial tcp: refused"}, true},
		{"failed without one", Record{RunID: "r1", State: StateFailed, Error: "skipped: busy"}, false},
		{"succeeded", Record{RunID: "r1", State: StateSucceeded}, false},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			b, err := Encode(&tt.rec)
			if err != nil {
				t.Fatal(err)
			}
			if got := strings.Contains(string(b), `"cause"`); got != tt.wantCause {
				t.Errorf("\"cause\" in the record: %v, want %v:\n%s", got, tt.wantCause, b)
			}
			var back Record
			if err := json.Unmarshal(b, &back); err != nil {
				t.Fatal(err)
			}
			if back.Error != tt.rec.Error || back.Cause != tt.rec.Cause {
				t.Errorf("read back error %q cause %q, want %q and %q", back.Error, back.Cause, tt.rec.Error, tt.rec.Cause)
			}
		})
	}
	var old Record
	if err := json.Unmarshal([]byte(`{"job": "daily", "run_id": "r1", "state": "failed", "error": "export daily: boom"}`), &old); err != nil {
		t.Fatal(err)
	}
	if old.Cause != "" || old.Error != "export daily: boom" {
		t.Errorf("record of an earlier version read with error %q, cause %q", old.Error, old.Cause)
	}
}

// TestSetExecutionErrors keeps the first errors F&O gave, each cut to a
// bound at a character boundary, and their count.
func TestSetExecutionErrors(t *testing.T) {
	errs := make([]ExecutionError, MaxExecutionErrors+5)
	for i := range errs {
		errs[i] = ExecutionError{RecordID: "r", Message: "m"}
	}
	errs[0].Message = strings.Repeat("é", maxExecutionErrorBytes) // 2 bytes each: cut inside one
	var rec Record
	rec.SetExecutionErrors(errs)
	if rec.ExecutionErrorCount != len(errs) || len(rec.ExecutionErrors) != MaxExecutionErrors {
		t.Errorf("kept %d of %d errors, count %d; want %d, count %d", len(rec.ExecutionErrors), len(errs), rec.ExecutionErrorCount, MaxExecutionErrors, len(errs))
	}
	if m := rec.ExecutionErrors[0].Message; len(m) > maxExecutionErrorBytes+len("…") || !strings.HasSuffix(m, "é…") {
		t.Errorf("a long message kept as %d bytes ending %q, want at most %d ending with a whole character and …", len(m), m[len(m)-8:], maxExecutionErrorBytes)
	}
}
