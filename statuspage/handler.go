package statuspage

import (
	"bytes"
	"context"
	_ "embed"
	"fmt"
	"html/template"
	"io"
	"log/slog"
	"net/http"
	"strconv"
	"time"

	"github.com/dmfexport/dmfexport/internal/human"
)

//go:embed page.html
var pageHTML string

// page is parsed once; html/template escapes every value for where it
// lands (text, attribute), so a run's error text cannot inject markup.
var page = template.Must(template.New("page").Funcs(template.FuncMap{
	"when":    when,
	"rel":     rel,
	"seconds": func(d time.Duration) int64 { return int64(d / time.Second) },
	"count":   human.Count,
	"bytes":   human.Bytes,
}).Parse(pageHTML))

// Handler serves the page at GET /: build reads a View for each request.
// The page is read-only: it has no forms and no other methods.
func Handler(build func(ctx context.Context) *View, log *slog.Logger) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.Method != http.MethodGet && r.Method != http.MethodHead {
			w.Header().Set("Allow", "GET, HEAD")
			http.Error(w, "the status page is read-only", http.StatusMethodNotAllowed)
			return
		}
		var buf bytes.Buffer
		if err := Render(&buf, build(r.Context())); err != nil {
			log.Error("status page not rendered", "err", err)
			http.Error(w, "status page not rendered: "+err.Error(), http.StatusInternalServerError)
			return
		}
		h := w.Header()
		h.Set("Content-Type", "text/html; charset=utf-8")
		h.Set("Cache-Control", "no-store")
		h.Set("X-Content-Type-Options", "nosniff")
		// No scripts, no frames, nothing fetched: the inline style only.
		h.Set("Content-Security-Policy", "default-src 'none'; style-src 'unsafe-inline'; frame-ancestors 'none'")
		h.Set("Content-Length", strconv.Itoa(buf.Len()))
		if r.Method == http.MethodGet {
			_, _ = buf.WriteTo(w)
		}
	})
}

// Render writes the page of v.
func Render(w io.Writer, v *View) error {
	return page.Execute(w, v)
}

// when renders a time for people, in the server's zone.
func when(t time.Time) string {
	if t.IsZero() {
		return "-"
	}
	return t.Local().Format("2006-01-02 15:04:05 MST")
}

// rel renders t relative to now: "in 4m", "12s ago".
func rel(t, now time.Time) string {
	d := t.Sub(now)
	switch {
	case d >= time.Second:
		return "in " + roughly(d)
	case d <= -time.Second:
		return roughly(-d) + " ago"
	}
	return "now"
}

// roughly rounds d to its largest unit or two: "3h12m", "45s".
func roughly(d time.Duration) string {
	switch {
	case d >= 48*time.Hour:
		return fmt.Sprintf("%dd", d/(24*time.Hour))
	case d >= time.Hour:
		return fmt.Sprintf("%dh%02dm", d/time.Hour, d%time.Hour/time.Minute)
	case d >= time.Minute:
		return fmt.Sprintf("%dm%02ds", d/time.Minute, d%time.Minute/time.Second)
	}
	return fmt.Sprintf("%ds", d/time.Second)
}
