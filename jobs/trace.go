package jobs

import (
	"context"
	"net/http"
	"os"
	"strings"

	"go.opentelemetry.io/otel/attribute"
	"go.opentelemetry.io/otel/codes"
	"go.opentelemetry.io/otel/propagation"
	"go.opentelemetry.io/otel/trace"

	"github.com/dmfexport/dmfexport/dmf"
	"github.com/dmfexport/dmfexport/internal/spans"
	"github.com/dmfexport/dmfexport/publish"
	"github.com/dmfexport/dmfexport/runs"
	"github.com/dmfexport/dmfexport/unpack"
)

// TracerName names the instrumentation scope of dmfexport's spans.
const TracerName = "github.com/dmfexport/dmfexport/jobs"

func (r *Runner) tracer() trace.Tracer { return spans.Tracer(r.TracerProvider, TracerName) }

// startRun opens the run's root span: one trace per run attempt.
func (r *Runner) startRun(ctx context.Context, exp *Export, rec *runs.Record, resuming bool) (context.Context, trace.Span) {
	return r.tracer().Start(ctx, "run "+exp.Name, trace.WithNewRoot(), trace.WithAttributes(
		spans.Export.String(exp.Name), spans.Run.String(rec.RunID), spans.Trigger.String(rec.Trigger),
		spans.Resumed.Bool(resuming), attribute.String("dmfexport.definition_group", exp.DefinitionGroup),
	))
}

// endRun closes the run's span with what the record says.
func endRun(span trace.Span, rec *runs.Record) {
	var rows, batches int64
	for _, e := range rec.Entities {
		rows += e.Rows
		batches += e.Batches
	}
	span.SetAttributes(spans.State.String(string(rec.State)), spans.Execution.String(rec.ExecutionID),
		spans.Rows.Int64(rows), spans.Batches.Int64(batches), spans.Bytes.Int64(rec.PackageBytes),
		attribute.Int("dmfexport.entities", len(rec.Entities)))
	switch {
	case rec.State == runs.StateFailed:
		span.SetStatus(codes.Error, rec.Error)
	case !rec.State.Final():
		span.SetAttributes(attribute.Bool("dmfexport.interrupted", true))
	}
	span.End()
}

// endStep closes a step's span.
func endStep(span trace.Span, retries int64, err error) {
	span.SetAttributes(spans.Retries.Int64(retries))
	if err != nil {
		span.RecordError(err)
		span.SetStatus(codes.Error, err.Error())
	}
	span.End()
}

// endEntity closes an entity's publish span: rows and batches the broker
// confirmed, bytes read from its stored file.
func endEntity(span trace.Span, e *runs.EntityRecord, st publish.EntityStats, resumeFrom, retries int64, err error) {
	span.SetAttributes(spans.Entity.String(e.Entity), spans.Rows.Int64(e.Rows), spans.Batches.Int64(e.Batches),
		spans.Bytes.Int64(st.BytesIn), spans.ResumedFromBatch.Int64(resumeFrom), spans.Retries.Int64(retries),
		attribute.String("dmfexport.format", e.Format))
	if err != nil {
		span.RecordError(err)
		span.SetStatus(codes.Error, err.Error())
	}
	span.End()
}

// spanAddPublished sets the publish step's totals on its span.
func spanAddPublished(ctx context.Context, rec *runs.Record) {
	var rows, batches int64
	for _, e := range rec.Entities {
		rows += e.Rows
		batches += e.Batches
	}
	trace.SpanFromContext(ctx).SetAttributes(spans.Rows.Int64(rows), spans.Batches.Int64(batches))
}

// packageURL asks F&O for the package URL, in a span of its own.
func (u *run) packageURL(ctx context.Context, client *dmf.Client) (string, error) {
	ctx, span := u.r.tracer().Start(ctx, "package URL")
	retries := u.retries.Load()
	url, err := client.WaitPackageURL(ctx, u.rec.ExecutionID, u.exp.Poll.PackageURLTimeout)
	endStep(span, u.retries.Load()-retries, err)
	return url, err
}

// fetchPackage downloads the package in a span of its own.
func (u *run) fetchPackage(ctx context.Context, pkgURL string, dst *os.File, o unpack.DownloadOptions) (int64, string, error) {
	ctx, span := u.r.tracer().Start(ctx, "download package")
	n, sum, err := unpack.DownloadWith(ctx, pkgURL, dst, o)
	span.SetAttributes(spans.Bytes.Int64(n))
	endStep(span, 0, err)
	return n, sum, err
}

// traceParent is the W3C traceparent of ctx's span, "" without one.
func traceParent(ctx context.Context) string {
	c := propagation.MapCarrier{}
	propagation.TraceContext{}.Inject(ctx, c)
	return c["traceparent"]
}

// tracingTransport makes a client span of every HTTP request of a run: each
// F&O call (every poll is one), each Entra ID token request, each request
// of the package download. Span names and attributes carry the F&O action
// or the host, never a URL's query (a SAS signature) or a header.
type tracingTransport struct {
	base   http.RoundTripper
	tracer trace.Tracer
}

func (t tracingTransport) RoundTrip(req *http.Request) (*http.Response, error) {
	base := t.base
	if base == nil {
		base = http.DefaultTransport
	}
	if !trace.SpanFromContext(req.Context()).SpanContext().IsValid() {
		return base.RoundTrip(req) // not part of a run
	}
	ctx, span := t.tracer.Start(req.Context(), requestSpanName(req), trace.WithSpanKind(trace.SpanKindClient),
		trace.WithAttributes(attribute.String("http.request.method", req.Method), attribute.String("server.address", req.URL.Hostname())))
	resp, err := base.RoundTrip(req.WithContext(ctx))
	switch {
	case err != nil:
		span.RecordError(err)
		span.SetStatus(codes.Error, err.Error())
	default:
		span.SetAttributes(attribute.Int("http.response.status_code", resp.StatusCode))
		if resp.StatusCode >= 400 {
			span.SetStatus(codes.Error, resp.Status)
		}
	}
	span.End()
	return resp, err
}

// requestSpanName names a request's span by what it does: "poll" for a
// status call, "F&O <action>" for the other F&O actions, "Entra ID token",
// or "GET package" for the download.
func requestSpanName(req *http.Request) string {
	p := req.URL.Path
	if i := strings.LastIndex(p, "Microsoft.Dynamics.DataEntities."); i >= 0 {
		action := p[i+len("Microsoft.Dynamics.DataEntities."):]
		if action == "GetExecutionSummaryStatus" {
			return "poll"
		}
		return "F&O " + action
	}
	if strings.Contains(p, "/oauth2/") {
		return "Entra ID token"
	}
	return req.Method + " package"
}
