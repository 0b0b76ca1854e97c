package dmf

import (
	"context"
	"fmt"
	"strings"
)

// maxReportedErrors bounds the F&O messages ExecutionReport.Error quotes.
const maxReportedErrors = 5

// ExecutionReport is what F&O tells about an execution that did not simply
// succeed: its final status, its error messages and the link to its
// summary page. It is an error, so a run can fail with it; for a
// PartiallySucceeded execution that is published anyway it is what to log
// and keep in the run record.
type ExecutionReport struct {
	ExecutionID string
	Status      Status
	// Errors holds F&O's messages (GetExecutionErrors), possibly empty; nil
	// when they could not be fetched, ErrorsErr then says why.
	Errors    []string
	ErrorsErr error
	// SummaryURL links to the execution summary page in F&O, or "".
	SummaryURL string
}

// Error reads like `F&O execution X ended Failed: <up to 5 messages> (and
// N more); execution summary: <link>`; without a link it points to Job
// history in F&O.
func (r *ExecutionReport) Error() string {
	var b strings.Builder
	fmt.Fprintf(&b, "F&O execution %s ended %s", r.ExecutionID, r.Status)
	switch {
	case len(r.Errors) > 0:
		shown := r.Errors[:min(len(r.Errors), maxReportedErrors)]
		b.WriteString(": ")
		b.WriteString(strings.Join(shown, "; "))
		if more := len(r.Errors) - len(shown); more > 0 {
			fmt.Fprintf(&b, " (and %d more)", more)
		}
	case r.ErrorsErr != nil:
		b.WriteString(" (its error messages could not be fetched)")
	}
	if r.SummaryURL != "" {
		b.WriteString("; execution summary: ")
		b.WriteString(r.SummaryURL)
	} else {
		b.WriteString("; see Data management > Job history in F&O")
	}
	return b.String()
}

// Report gathers the error messages and the summary page link of an
// execution that ended in status. It never fails: what cannot be fetched is
// left empty (ErrorsErr says why for the messages), so the report of a
// failed run is never lost to a second fault.
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
