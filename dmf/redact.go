package dmf

import (
	"errors"
	"fmt"
	"net"
	"net/url"
	"regexp"
	"strings"
)

// secretParams are query parameters whose values RedactURL hides
// (compared case-insensitively).
var secretParams = map[string]bool{
	"sig":           true,
	"signature":     true,
	"token":         true,
	"code":          true,
	"access_token":  true,
	"client_secret": true,
}

// RedactURL returns raw safe for logs and errors: scheme, host, path and the
// harmless query parameters are kept; the values of sig, signature, token,
// code, access_token and client_secret (any case) become REDACTED, and user
// info is dropped. A URL that cannot be parsed yields "<unparsable URL>".
func RedactURL(raw string) string {
	u, err := url.Parse(strings.TrimSpace(raw))
	if err != nil {
		return "<unparsable URL>"
	}
	u.User = nil
	u.Fragment, u.RawFragment = "", ""
	if u.RawQuery != "" {
		u.RawQuery = redactQuery(u.RawQuery)
	}
	// The path may quote secrets too (e.g. a URL that is not a URL at all).
	return redactText(u.String())
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
			out = append(out, "REDACTED")
			continue
		}
		if secretParams[strings.ToLower(strings.TrimSpace(key))] {
			out = append(out, k+"=REDACTED")
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

// redactText hides secret parameter values inside free text.
func redactText(s string) string {
	return secretInText.ReplaceAllString(s, "${1}=REDACTED")
}

// isLoopbackHost reports whether host is localhost or a loopback IP.
func isLoopbackHost(host string) bool {
	host = strings.TrimSuffix(strings.ToLower(host), ".")
	if host == "localhost" {
		return true
	}
	ip := net.ParseIP(strings.Trim(host, "[]"))
	return ip != nil && ip.IsLoopback()
}

// checkPackageURL accepts https URLs with a host, and http only to loopback.
// Its errors show the URL redacted.
func checkPackageURL(raw string) error {
	u, err := url.Parse(raw)
	if err != nil {
		return fmt.Errorf("F&O answered an unparsable package URL %s", RedactURL(raw))
	}
	if u.Hostname() == "" {
		return fmt.Errorf("F&O answered a package URL without host: %s", RedactURL(raw))
	}
	switch strings.ToLower(u.Scheme) {
	case "https":
		return nil
	case "http":
		if isLoopbackHost(u.Hostname()) {
			return nil
		}
		return fmt.Errorf("F&O answered a plain http package URL to a non-loopback host, refused: %s", RedactURL(raw))
	default:
		return errors.New("F&O answered a package URL that is not https, refused: " + RedactURL(raw))
	}
}
