// Package spans holds what the exporter's and the sink's OpenTelemetry
// spans share: the attribute keys both set, spelled once so that a run's
// trace reads the same in both processes, and the choice of tracer
// provider.
package spans

import (
	"go.opentelemetry.io/otel"
	"go.opentelemetry.io/otel/attribute"
	"go.opentelemetry.io/otel/trace"
)

// Attribute keys set by both the exporter and the sink. Values are counts,
// names and IDs: never a URL's query, a token, a row's value or a secret.
const (
	Export  = attribute.Key("dmfexport.export")
	Run     = attribute.Key("dmfexport.run_id")
	Entity  = attribute.Key("dmfexport.entity")
	Rows    = attribute.Key("dmfexport.rows")
	Retries = attribute.Key("dmfexport.retries")
)

// Tracer is the tracer of the instrumentation scope name from tp, or from
// the global provider (which tracing set-up replaces) when tp is nil.
func Tracer(tp trace.TracerProvider, name string) trace.Tracer {
	if tp == nil {
		tp = otel.GetTracerProvider()
	}
	return tp.Tracer(name)
}
