package dmf

import (
	"context"
	"fmt"
	"strings"
)

// maxReportedErrors bounds the F&O errors ExecutionReport.Error quotes.
const maxReportedErrors = 5

// ExecutionError is one error F&O recorded for an execution
// (GetExecutionErrors): the record and field it concerns, when F&O names
// them, and its message. When F&O's list cannot be parsed, Message holds
// the raw text and the other fields are empty.
type ExecutionError struct {
	RecordID string
	Field    string
	Message  string
}

// String reads like "record 5637144577, field CUSTGROUP: <message>".
func (e ExecutionError) String() string {
	var where []string
	if e.RecordID != "" {
		where = append(where, "record "+e.RecordID)
	}
	if e.Field != "" {
		where = append(where, "field "+e.Field)
	}
	if len(where) == 0 {
		return e.Message
	}
	return strings.Join(where, ", ") + ": " + e.Message
}

// ExecutionReport is what F&O tells about an execution that did not simply
// succeed: its final status, its errors and the link to its summary page.
// It is an error, so a run can fail with it; for a PartiallySucceeded
// execution that is published anyway it is what to log and keep in the run
// record.
type ExecutionReport struct {
	ExecutionID string
	Status      Status
	// Errors holds F&O's errors (GetExecutionErrors), possibly empty (F&O
	// answers "[]" even for some failed executions); nil when they could
	// not be fetched, ErrorsErr then says why.
	Errors    []ExecutionError
	ErrorsErr error
	// SummaryURL links to the execution summary page in F&O, or "".
	SummaryURL string
}

// Error reads like `F&O execution X ended Failed with 12 errors: <up to 5>
// (and 7 more); execution summary: <link>`. With no errors it says F&O gave
// no details; without a link it points to Job history in F&O.
func (r *ExecutionReport) Error() string {
	var b strings.Builder
	fmt.Fprintf(&b, "F&O execution %s ended %s", r.ExecutionID, r.Status)
	r.verdict(&b)
	if r.SummaryURL != "" {
		b.WriteString("; execution summary: ")
		b.WriteString(r.SummaryURL)
	} else {
		b.WriteString("; see Data management > Job history in F&O")
	}
	return b.String()
}

// Cause is F&O's verdict alone, `F&O execution ended Failed with 12
// errors: <up to 5> (and 7 more)`: the run's record and status lines say
// the execution ID apart, and the summary link is in the whole error.
func (r *ExecutionReport) Cause() string {
	var b strings.Builder
	fmt.Fprintf(&b, "F&O execution ended %s", r.Status)
	r.verdict(&b)
	return b.String()
}

// verdict writes F&O's errors, or that it gave none.
func (r *ExecutionReport) verdict(b *strings.Builder) {
	switch {
	case len(r.Errors) > 0:
		shown := r.Errors[:min(len(r.Errors), maxReportedErrors)]
		if len(r.Errors) == 1 {
			b.WriteString(" with 1 error: ")
		} else {
			fmt.Fprintf(b, " with %d errors: ", len(r.Errors))
		}
		for i, e := range shown {
			if i > 0 {
				b.WriteString("; ")
			}
			b.WriteString(e.String())
		}
		if more := len(r.Errors) - len(shown); more > 0 {
			fmt.Fprintf(b, " (and %d more)", more)
		}
	case r.ErrorsErr != nil:
		b.WriteString(" (its error messages could not be fetched)")
	default:
		b.WriteString("; F&O gave no error details (GetExecutionErrors answered none)")
	}
}

// Report gathers the errors and the summary page link of an execution that
// ended in status. It never fails: what cannot be fetched is left empty
// (ErrorsErr says why for the errors), so the report of a failed run is
// never lost to a second fault.
func (c *Client) Report(ctx context.Context, executionID string, status Status) *ExecutionReport {
	r := &ExecutionReport{ExecutionID: executionID, Status: canonicalStatus(status)}
	r.Errors, r.ErrorsErr = c.ExecutionErrors(ctx, executionID)
	if r.ErrorsErr != nil {
		c.log.Warn("cannot fetch the F&O execution errors", "execution_id", executionID, "error", r.ErrorsErr)
	}
	if page, err := c.SummaryPageURL(ctx, executionID); err == nil {
		r.SummaryURL = page
	}
	return r
}
