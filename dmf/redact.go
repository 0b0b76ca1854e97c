package dmf

import (
	"errors"
	"fmt"
	"net/url"
	"strings"

	"github.com/dmfexport/dmfexport/internal/loopback"
	"github.com/dmfexport/dmfexport/internal/redact"
)

// RedactURL returns raw safe for logs and errors (the package URL F&O
// answers embeds a SAS token): the values of sig, signature, token, code,
// access_token and client_secret become REDACTED, a password "xxxxx", and
// the fragment is dropped. It is dmfexport's one redaction, offered here for
// users of this package.
func RedactURL(raw string) string { return redact.URL(raw) }

// checkPackageURL accepts https URLs with a host, and http only to loopback.
// Its errors show the URL redacted.
func checkPackageURL(raw string) error {
	u, err := url.Parse(raw)
	if err != nil {
		return fmt.Errorf("F&O answered an unparsable package URL %s", redact.URL(raw))
	}
	if u.Hostname() == "" {
		return fmt.Errorf("F&O answered a package URL without host: %s", redact.URL(raw))
	}
	switch strings.ToLower(u.Scheme) {
	case "https":
		return nil
	case "http":
		if loopback.Host(u.Hostname()) {
			return nil
		}
		return fmt.Errorf("F&O answered a plain http package URL to a non-loopback host, refused: %s", redact.URL(raw))
	default:
		return errors.New("F&O answered a package URL that is not https, refused: " + redact.URL(raw))
	}
}
