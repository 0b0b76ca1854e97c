// Package redact makes URLs, texts and errors safe to log and show: SAS
// signatures, tokens, client secrets and passwords never leave the process
// through a message. It is the one place dmfexport hides secrets, so every
// step hides them the same way.
package redact

import (
	"context"
	"errors"
	"net/url"
	"regexp"
	"strings"
)

// Mark replaces a hidden secret.
const Mark = "REDACTED"

// secretParams are query parameters whose values URL hides (compared
// case-insensitively).
var secretParams = map[string]bool{
	"sig":           true,
	"signature":     true,
	"token":         true,
	"code":          true,
	"access_token":  true,
	"client_secret": true,
}

// URL returns raw safe for logs and errors: scheme, host, path, the user
// name and the harmless query parameters are kept; a password becomes
// "xxxxx" (as url.URL.Redacted writes it), the values of sig, signature,
// token, code, access_token and client_secret (any case) become REDACTED,
// and the fragment is dropped. A URL that cannot be parsed yields
// "<unparsable URL>".
func URL(raw string) string {
	u, err := url.Parse(strings.TrimSpace(raw))
	if err != nil {
		return "<unparsable URL>"
	}
	u.Fragment, u.RawFragment = "", ""
	if u.RawQuery != "" {
		u.RawQuery = redactQuery(u.RawQuery)
	}
	// The path may quote secrets too (e.g. a URL that is not a URL at all).
	return Text(u.Redacted())
}

// redactQuery rewrites a raw query, keeping its order and encoding, with
// secret values replaced. Parts it cannot decode are dropped whole.
func redactQuery(q string) string {
	parts := strings.FieldsFunc(q, func(r rune) bool { return r == '&' || r == ';' })
	out := make([]string, 0, len(parts))
	for _, p := range parts {
		k, _, hasValue := strings.Cut(p, "=")
		key, err := url.QueryUnescape(k)
		if err != nil {
			out = append(out, Mark)
			continue
		}
		if secretParams[strings.ToLower(strings.TrimSpace(key))] {
			out = append(out, k+"="+Mark)
			continue
		}
		if hasValue {
			out = append(out, p)
		} else {
			out = append(out, k)
		}
	}
	return strings.Join(out, "&")
}

// secretInText finds SAS signatures and token parameters inside free text,
// such as an error body that quotes a URL.
var secretInText = regexp.MustCompile(`(?i)\b(sig|signature|access_token|client_secret|token)=[^&\s"'<>]+`)

// Text returns s with every given secret (empty ones are ignored) and every
// secret query parameter quoted in it (sig=..., token=...) replaced by
// REDACTED.
func Text(s string, secrets ...string) string {
	for _, secret := range secrets {
		if secret != "" && strings.Contains(s, secret) {
			s = strings.ReplaceAll(s, secret, Mark)
		}
	}
	return secretInText.ReplaceAllString(s, "${1}="+Mark)
}

// Error returns err with its text passed through Text. When the text
// changed, the result unwraps only to the sentinels among keep (and to
// context.Canceled and context.DeadlineExceeded) that err matches, never to
// err itself, so the secret-bearing original cannot leak through
// errors.Unwrap or errors.As. When nothing was hidden, err is returned as
// it is. A nil err yields nil.
func Error(err error, secrets []string, keep ...error) error {
	if err == nil {
		return nil
	}
	msg := err.Error()
	clean := Text(msg, secrets...)
	if clean == msg {
		return err
	}
	e := &scrubbed{msg: clean}
	for _, s := range append([]error{context.Canceled, context.DeadlineExceeded}, keep...) {
		if errors.Is(err, s) {
			e.errs = append(e.errs, s)
		}
	}
	return e
}

// scrubbed is an error text with its secrets removed.
type scrubbed struct {
	msg  string
	errs []error
}

func (e *scrubbed) Error() string   { return e.msg }
func (e *scrubbed) Unwrap() []error { return e.errs }
