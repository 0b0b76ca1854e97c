// Package loopback says whether a host names this machine: plain http and
// the broker's default guest account are allowed only there.
package loopback

import (
	"net"
	"strings"
)

// Host reports whether host (a name or an IP, with or without brackets or a
// final dot) is "localhost" or a loopback address.
func Host(host string) bool {
	host = strings.TrimSuffix(strings.ToLower(host), ".")
	if host == "localhost" {
		return true
	}
	ip := net.ParseIP(strings.Trim(host, "[]"))
	return ip != nil && ip.IsLoopback()
}
