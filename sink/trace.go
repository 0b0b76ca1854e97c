package sink

import (
	"context"
	"time"

	amqp "github.com/rabbitmq/amqp091-go"
	"go.opentelemetry.io/otel/attribute"
	"go.opentelemetry.io/otel/codes"
	"go.opentelemetry.io/otel/propagation"
	"go.opentelemetry.io/otel/trace"

	"github.com/dmfexport/dmfexport/internal/spans"
)

// TracerName names the instrumentation scope of the sink's spans.
const TracerName = "github.com/dmfexport/dmfexport/sink"

// Span names: one SpanApply per delivery, continuing the trace of the run
// that published the batch, with a SpanTransaction per attempt of its
// database transaction and a SpanSwap per attempt of a snapshot's swap.
const (
	SpanApply       = "sink apply"
	SpanTransaction = "sink transaction"
	SpanSwap        = "snapshot swap"
)

// Outcomes a delivery's span records besides Outcome's: a batch that cannot
// be applied is requeued, then dead-lettered; one in hand when the sink
// stops while its database is down is left to the broker.
const (
	outcomeRequeued     = "requeued"
	outcomeDeadLettered = "dead-lettered"
	outcomeInterrupted  = "interrupted"
)

func (c *Consumer) tracer() trace.Tracer { return spans.Tracer(c.TracerProvider, TracerName) }

// batchParent returns ctx carrying the trace context the batch was
// published in: the AMQP header traceparent, else the event's traceparent
// attribute. One that does not parse is passed over; with neither, ctx
// comes back unchanged and ok is false.
func batchParent(ctx context.Context, d amqp.Delivery, b *Batch) (_ context.Context, ok bool) {
	candidates := []string{headerString(d.Headers, "traceparent"), ""}
	if b != nil {
		candidates[1] = b.TraceParent
	}
	for _, tp := range candidates {
		if tp == "" {
			continue
		}
		pctx := propagation.TraceContext{}.Extract(ctx, propagation.MapCarrier{"traceparent": tp})
		if trace.SpanContextFromContext(pctx).IsValid() {
			return pctx, true
		}
	}
	return ctx, false
}

func headerString(h amqp.Table, key string) string {
	switch v := h[key].(type) {
	case string:
		return v
	case []byte:
		return string(v)
	}
	return ""
}

// startApply opens a delivery's span, begun when the delivery was taken
// (received): a child of the batch's trace context, else a new trace. b is
// nil for a body that does not decode.
func (c *Consumer) startApply(ctx context.Context, d amqp.Delivery, b *Batch, received time.Time) (context.Context, trace.Span) {
	attrs := []attribute.KeyValue{
		spans.Sink.String(c.Name), spans.Delivery.Int(deliveries(d)),
		attribute.String("messaging.system", "rabbitmq"), attribute.String("messaging.operation.type", "process"),
		attribute.String("messaging.destination.name", c.Queue), attribute.String("messaging.message.id", d.MessageId),
	}
	if b != nil {
		attrs = append(attrs, spans.Export.String(b.Export), spans.Run.String(b.RunID), spans.Entity.String(b.Entity),
			spans.BatchIndex.Int(b.BatchIndex), spans.Rows.Int(len(b.Rows)), spans.RefreshType.String(b.RefreshType))
	}
	opts := []trace.SpanStartOption{trace.WithSpanKind(trace.SpanKindConsumer), trace.WithTimestamp(received), trace.WithAttributes(attrs...)}
	ctx, ok := batchParent(ctx, d, b)
	if !ok {
		opts = append(opts, trace.WithNewRoot())
	}
	return c.tracer().Start(ctx, SpanApply, opts...)
}

// failSpan marks span failed with err.
func failSpan(span trace.Span, err error) {
	span.RecordError(err)
	span.SetStatus(codes.Error, err.Error())
}

// endChild closes a transaction or swap attempt's span.
func endChild(span trace.Span, err error) {
	if err != nil {
		failSpan(span, err)
	}
	span.End()
}
