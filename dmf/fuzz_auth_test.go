package dmf

import (
	"net/http"
	"strings"
	"testing"
	"time"
	"unicode/utf8"
)

// FuzzRetryAfter checks that any Retry-After header yields a wait between
// zero and the cap.
func FuzzRetryAfter(f *testing.F) {
	for _, seed := range []string{"1", "0", "-5", "120", "999999999999999999999", " 7 ", "",
		"Wed, 21 Oct 2015 07:28:00 GMT", "Sun, 06 Nov 2094 08:49:37 GMT", "Monday, 01-Jan-30 00:00:00 GMT", "1.5", "soon"} {
		f.Add(seed)
	}
	c := &Client{throttleDefault: 5 * time.Second, throttleMax: 5 * time.Minute}
	now := time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)
	f.Fuzz(func(t *testing.T, h string) {
		d := c.retryAfter(h, now)
		if d < 0 || d > c.throttleMax {
			t.Fatalf("retryAfter(%q) = %s, want within [0, %s]", h, d, c.throttleMax)
		}
	})
}

// FuzzAPIError checks that an error answer never shows the token and that
// its code and message stay bounded, valid text.
func FuzzAPIError(f *testing.F) {
	const tok = "fuzz-token-9f8e7d"
	for _, seed := range []string{
		`{"error":{"code":"Unauthorized","message":"token fuzz-token-9f8e7d refused"}}`,
		`{"error":{"innererror":{"message":"deep"}}}`,
		`{"error":null}`,
		`<html>Bad Gateway sig=abc&se=1</html>`,
		"\xff\xfe not utf8 fuzz-token-9f8e7d",
		``,
	} {
		f.Add(401, []byte(seed))
		f.Add(503, []byte(seed))
	}
	f.Fuzz(func(t *testing.T, status int, body []byte) {
		if status < 100 || status > 999 {
			return
		}
		resp := &http.Response{StatusCode: status, Status: http.StatusText(status)}
		e := newAPIError("GetExecutionSummaryStatus", resp, body, tok)
		msg := e.Error()
		if strings.Contains(msg, tok) {
			t.Fatalf("error %q shows the token", msg)
		}
		if len(e.Code) > maxAPIMessage+len("…") || len(e.Message) > maxAPIMessage+len(http.StatusText(status))+maxRawBodyInError+16 {
			t.Fatalf("error parts too long: code %d, message %d bytes", len(e.Code), len(e.Message))
		}
		if !utf8.ValidString(e.Message) || !utf8.ValidString(e.Code) {
			t.Fatalf("code %q or message %q is not valid UTF-8", e.Code, e.Message)
		}
	})
}
