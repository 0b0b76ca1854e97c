package main

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"strings"
	"time"

	"go.opentelemetry.io/otel"
	"go.opentelemetry.io/otel/attribute"
	"go.opentelemetry.io/otel/exporters/otlp/otlptrace/otlptracehttp"
	"go.opentelemetry.io/otel/propagation"
	"go.opentelemetry.io/otel/sdk/resource"
	sdktrace "go.opentelemetry.io/otel/sdk/trace"
)

// tracingWanted reports whether the standard OpenTelemetry variables ask for
// traces: OTEL_TRACES_EXPORTER=otlp, or an OTLP endpoint with no exporter
// named. OTEL_SDK_DISABLED=true and OTEL_TRACES_EXPORTER=none turn it off.
func tracingWanted(getenv func(string) string) (bool, error) {
	if strings.EqualFold(getenv("OTEL_SDK_DISABLED"), "true") {
		return false, nil
	}
	switch exp := strings.ToLower(strings.TrimSpace(getenv("OTEL_TRACES_EXPORTER"))); exp {
	case "none":
		return false, nil
	case "otlp":
		return true, nil
	case "":
		return getenv("OTEL_EXPORTER_OTLP_ENDPOINT") != "" || getenv("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT") != "", nil
	default:
		return false, fmt.Errorf("OTEL_TRACES_EXPORTER=%s is not supported: set otlp (OTLP over HTTP) or none", exp)
	}
}

// startTracing installs OpenTelemetry tracing when the OTEL_* environment
// asks for it: an OTLP/HTTP exporter configured by the standard variables
// (OTEL_EXPORTER_OTLP_[TRACES_]ENDPOINT, _HEADERS, _TIMEOUT, ...; sampling
// by OTEL_TRACES_SAMPLER), W3C trace context propagation, and the service
// name dmfexport unless OTEL_SERVICE_NAME says otherwise. Otherwise tracing
// stays the no-op default. The returned func flushes the spans; call it
// before exiting.
func startTracing(ctx context.Context, log *slog.Logger) (func(), error) {
	on, err := tracingWanted(os.Getenv)
	if err != nil || !on {
		return func() {}, err
	}
	for _, k := range []string{"OTEL_EXPORTER_OTLP_TRACES_PROTOCOL", "OTEL_EXPORTER_OTLP_PROTOCOL"} {
		if p := os.Getenv(k); p != "" && p != "http/protobuf" {
			return nil, fmt.Errorf("%s=%s is not supported: dmfexport exports traces over OTLP/HTTP (http/protobuf)", k, p)
		}
	}
	exp, err := otlptracehttp.New(ctx)
	if err != nil {
		return nil, fmt.Errorf("OpenTelemetry OTLP exporter (check the OTEL_EXPORTER_OTLP_* variables): %w", err)
	}
	res, err := resource.New(ctx,
		resource.WithAttributes(attribute.String("service.name", "dmfexport"), attribute.String("service.version", Version)),
		resource.WithFromEnv(), resource.WithTelemetrySDK(), resource.WithHost())
	if err != nil && !errors.Is(err, resource.ErrPartialResource) {
		return nil, fmt.Errorf("OpenTelemetry resource (check OTEL_RESOURCE_ATTRIBUTES): %w", err)
	}
	tp := sdktrace.NewTracerProvider(sdktrace.WithBatcher(exp), sdktrace.WithResource(res))
	otel.SetTracerProvider(tp)
	otel.SetTextMapPropagator(propagation.TraceContext{})
	otel.SetErrorHandler(otel.ErrorHandlerFunc(func(err error) {
		log.Warn("OpenTelemetry: traces not exported", "err", err)
	}))
	log.Info("tracing on: spans go to the OTLP endpoint of the OTEL_* environment")
	return func() {
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		if err := tp.Shutdown(ctx); err != nil {
			log.Warn("OpenTelemetry: spans not flushed at exit", "err", err)
		}
	}, nil
}
