// Package spans holds what the exporter's and the sink's OpenTelemetry
// spans share: every attribute key, spelled once so that a run's trace
// reads the same in both processes, and the choice of tracer provider.
package spans

import (
	"go.opentelemetry.io/otel"
	"go.opentelemetry.io/otel/attribute"
	"go.opentelemetry.io/otel/trace"
)

// Span attribute keys, every one dmfexport sets. Values are counts, names
// and IDs: never a URL's query, a token, a row's value or a secret.
const (
	// Set by both the exporter and the sink, so that a run's trace reads
	// the same in both processes.
	Export  = attribute.Key("dmfexport.export")
	Run     = attribute.Key("dmfexport.run_id")
	Entity  = attribute.Key("dmfexport.entity")
	Rows    = attribute.Key("dmfexport.rows")
	Retries = attribute.Key("dmfexport.retries")

	// The exporter's (jobs).
	Execution        = attribute.Key("dmfexport.execution_id")
	Trigger          = attribute.Key("dmfexport.trigger")
	Resumed          = attribute.Key("dmfexport.resumed")
	State            = attribute.Key("dmfexport.state")
	Batches          = attribute.Key("dmfexport.batches")
	Bytes            = attribute.Key("dmfexport.bytes")
	ResumedFromBatch = attribute.Key("dmfexport.resumed_from_batch")

	// The sink's.
	Sink        = attribute.Key("dmfexport.sink")
	BatchIndex  = attribute.Key("dmfexport.batch_index")
	RefreshType = attribute.Key("dmfexport.refresh_type")
	Table       = attribute.Key("dmfexport.table")
	Mode        = attribute.Key("dmfexport.mode")
	Outcome     = attribute.Key("dmfexport.outcome")
	Delivery    = attribute.Key("dmfexport.delivery")
	Swapped     = attribute.Key("dmfexport.swapped")
	// GroupBatches: the batches landed in the delivery's transaction.
	GroupBatches = attribute.Key("dmfexport.group_batches")
)

// Tracer is the tracer of the instrumentation scope name from tp, or from
// the global provider (which tracing set-up replaces) when tp is nil.
func Tracer(tp trace.TracerProvider, name string) trace.Tracer {
	if tp == nil {
		tp = otel.GetTracerProvider()
	}
	return tp.Tracer(name)
}
