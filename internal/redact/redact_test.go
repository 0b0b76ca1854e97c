package redact

import (
	"context"
	"errors"
	"fmt"
	"io"
	"strings"
	"testing"
)

func TestURL(t *testing.T) {
	tests := []struct {
		name string
		in   string
		want string
	}{
		{name: "SAS", in: "https://acct.blob.core.windows.net/dmf/p.zip?sv=2020-08-04&se=2026-01-01&sr=b&sp=r&sig=abc%2Bdef%3D",
			want: "https://acct.blob.core.windows.net/dmf/p.zip?sv=2020-08-04&se=2026-01-01&sr=b&sp=r&sig=REDACTED"},
		{name: "upper case SIG", in: "https://h/p?SIG=x&a=1", want: "https://h/p?SIG=REDACTED&a=1"},
		{name: "all secret names", in: "https://h/p?signature=1&token=2&code=3&access_token=4&client_secret=5&keep=6",
			want: "https://h/p?signature=REDACTED&token=REDACTED&code=REDACTED&access_token=REDACTED&client_secret=REDACTED&keep=6"},
		{name: "mixed case names", in: "https://h/p?Access_Token=1&Client_Secret=2", want: "https://h/p?Access_Token=REDACTED&Client_Secret=REDACTED"},
		{name: "repeated sig", in: "https://h/p?sig=1&sig=2", want: "https://h/p?sig=REDACTED&sig=REDACTED"},
		{name: "escaped key", in: "https://h/p?%73ig=secret", want: "https://h/p?%73ig=REDACTED"},
		{name: "no query", in: "https://h/dmf/a%20b.zip", want: "https://h/dmf/a%20b.zip"},
		{name: "password hidden, user kept", in: "https://user:pass@h/p", want: "https://user:xxxxx@h/p"},
		{name: "broker URL", in: "amqp://u:p@h:5672/v", want: "amqp://u:xxxxx@h:5672/v"},
		{name: "broker URL without password", in: "amqps://u@h/", want: "amqps://u@h/"},
		{name: "broker URL without user", in: "amqp://h", want: "amqp://h"},
		{name: "escaped password", in: "amqp://u:p%40ss@h/", want: "amqp://u:xxxxx@h/"},
		{name: "fragment dropped", in: "https://h/p#access_token=x", want: "https://h/p"},
		{name: "semicolon separator", in: "https://h/p?a=1;sig=2", want: "https://h/p?a=1&sig=REDACTED"},
		{name: "unparsable", in: "https://h/p?sig=SECRET\x7f%zz", want: "<unparsable URL>"},
		{name: "bad host escape", in: "http://%zz/?sig=SECRET", want: "<unparsable URL>"},
		{name: "empty", in: "", want: ""},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if got := URL(tt.in); got != tt.want {
				t.Errorf("URL(%q) = %q, want %q", tt.in, got, tt.want)
			}
		})
	}
}

func TestText(t *testing.T) {
	in := `failed GET https://a.blob.core.windows.net/x?sv=1&sig=ABC%2F== "token=xyz" access_token=q`
	got := Text(in)
	for _, secret := range []string{"ABC", "xyz", "=q"} {
		if strings.Contains(got, secret) {
			t.Errorf("Text(%q) = %q, still contains %q", in, got, secret)
		}
	}
	if !strings.Contains(got, "sv=1") {
		t.Errorf("Text(%q) = %q, lost harmless parameter sv", in, got)
	}
}

func TestTextSecrets(t *testing.T) {
	tests := []struct {
		name    string
		in      string
		secrets []string
		want    string
	}{
		{name: "secret replaced everywhere", in: "pw hunter2 and hunter2", secrets: []string{"hunter2"}, want: "pw REDACTED and REDACTED"},
		{name: "empty secret ignored", in: "nothing here", secrets: []string{""}, want: "nothing here"},
		{name: "secret and sig", in: "tok abc sig=xyz", secrets: []string{"abc"}, want: "tok REDACTED sig=REDACTED"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if got := Text(tt.in, tt.secrets...); got != tt.want {
				t.Errorf("Text(%q, %q) = %q, want %q", tt.in, tt.secrets, got, tt.want)
			}
		})
	}
}

// secretErr is an error type a caller might look for with errors.As.
type secretErr struct{ s string }

func (e *secretErr) Error() string { return "refused with " + e.s }

// TestError checks a scrubbed error keeps the sentinels callers branch on
// and never unwraps to the error whose text held the secret.
func TestError(t *testing.T) {
	sentinel := errors.New("sentinel")
	tests := []struct {
		name     string
		err      error
		keep     []error
		wantIs   []error
		wantNot  []error
		wantSame bool
	}{
		{name: "nothing to hide", err: fmt.Errorf("plain: %w", sentinel), wantSame: true},
		{name: "sentinel kept", err: fmt.Errorf("pw s3cret: %w", sentinel), keep: []error{sentinel}, wantIs: []error{sentinel}},
		{name: "sentinel not asked for", err: fmt.Errorf("pw s3cret: %w", sentinel), wantNot: []error{sentinel}},
		{name: "context errors always kept", err: fmt.Errorf("pw s3cret: %w", context.DeadlineExceeded), wantIs: []error{context.DeadlineExceeded}},
		{name: "unexpected EOF when asked", err: fmt.Errorf("pw s3cret: %w", io.ErrUnexpectedEOF), keep: []error{io.ErrUnexpectedEOF}, wantIs: []error{io.ErrUnexpectedEOF}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got := Error(tt.err, []string{"s3cret"}, tt.keep...)
			if tt.wantSame {
				if got != tt.err { //nolint:errorlint // the same error value, not one wrapping it
					t.Fatalf("Error = %v, want the error itself", got)
				}
				return
			}
			if strings.Contains(got.Error(), "s3cret") {
				t.Errorf("Error text %q holds the secret", got)
			}
			for _, e := range tt.wantIs {
				if !errors.Is(got, e) {
					t.Errorf("errors.Is(%v, %v) = false, want true", got, e)
				}
			}
			for _, e := range tt.wantNot {
				if errors.Is(got, e) {
					t.Errorf("errors.Is(%v, %v) = true, want false", got, e)
				}
			}
			for e := errors.Unwrap(got); e != nil; e = errors.Unwrap(e) {
				if strings.Contains(e.Error(), "s3cret") {
					t.Errorf("unwraps to %q, which holds the secret", e)
				}
			}
		})
	}
	wrapped := fmt.Errorf("call: %w", &secretErr{"s3cret"})
	var se *secretErr
	if errors.As(Error(wrapped, []string{"s3cret"}), &se) {
		t.Errorf("errors.As found the secret-bearing error %q behind the scrubbed one", se.s)
	}
	if Error(nil, []string{"x"}) != nil {
		t.Errorf("Error(nil) != nil")
	}
}
