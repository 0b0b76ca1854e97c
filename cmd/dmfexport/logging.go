package main

import (
	"context"
	"log/slog"
	"math"
)

// uniqueKeys wraps h so each line carries each top-level key once: an
// attribute repeated by a later With or by the record itself replaces the
// earlier one, in the earlier one's place. (After WithGroup, keys are
// passed on as they come.)
func uniqueKeys(h slog.Handler) slog.Handler { return &uniqueHandler{inner: h} }

type uniqueHandler struct {
	inner slog.Handler // without the attributes below
	attrs []slog.Attr  // from With, each key once
}

func (h *uniqueHandler) Enabled(ctx context.Context, l slog.Level) bool {
	return h.inner.Enabled(ctx, l)
}

func (h *uniqueHandler) WithAttrs(as []slog.Attr) slog.Handler {
	return &uniqueHandler{inner: h.inner, attrs: mergeAttrs(h.attrs, as)}
}

func (h *uniqueHandler) WithGroup(name string) slog.Handler {
	return h.inner.WithAttrs(h.attrs).WithGroup(name)
}

func (h *uniqueHandler) Handle(ctx context.Context, r slog.Record) error {
	own := make([]slog.Attr, 0, r.NumAttrs())
	r.Attrs(func(a slog.Attr) bool {
		own = append(own, a)
		return true
	})
	out := slog.NewRecord(r.Time, r.Level, r.Message, r.PC)
	out.AddAttrs(mergeAttrs(h.attrs, own)...)
	return h.inner.Handle(ctx, out)
}

// mergeAttrs returns base followed by more, where an attribute of more
// whose key is already there replaces it in place.
func mergeAttrs(base, more []slog.Attr) []slog.Attr {
	out := make([]slog.Attr, len(base), len(base)+len(more))
	copy(out, base)
	for _, a := range more {
		replaced := false
		for i := range out {
			if out[i].Key == a.Key {
				out[i], replaced = a, true
				break
			}
		}
		if !replaced {
			out = append(out, a)
		}
	}
	return out
}

// durationSeconds renders a duration as seconds under the key with "_s"
// appended ("duration_s": 14.6), for JSON logs: machines read numbers in
// seconds, not Go's nanosecond integers.
func durationSeconds(_ []string, a slog.Attr) slog.Attr {
	if a.Value.Kind() != slog.KindDuration {
		return a
	}
	s := a.Value.Duration().Seconds()
	return slog.Float64(a.Key+"_s", math.Round(s*1000)/1000)
}
