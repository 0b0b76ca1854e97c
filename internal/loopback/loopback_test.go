package loopback

import "testing"

func TestHost(t *testing.T) {
	tests := []struct {
		host string
		want bool
	}{
		{"localhost", true}, {"LOCALHOST.", true}, {"127.0.0.1", true}, {"127.8.9.10", true},
		{"::1", true}, {"[::1]", true}, {"10.0.0.1", false}, {"example.com", false},
		{"localhost.example.com", false}, {"", false},
	}
	for _, tt := range tests {
		t.Run(tt.host, func(t *testing.T) {
			if got := Host(tt.host); got != tt.want {
				t.Errorf("Host(%q) = %v, want %v", tt.host, got, tt.want)
			}
		})
	}
}
