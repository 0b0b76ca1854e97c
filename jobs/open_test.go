package jobs

import (
	"context"
	"testing"

	"github.com/dmfexport/dmfexport/azauth"
)

// TestRunnerKeepsWhatItOpens checks a Runner opens a store or a credential
// once per configuration, keeps it for every run, and lets it go at Close;
// two Runners share nothing.
func TestRunnerKeepsWhatItOpens(t *testing.T) {
	ctx := context.Background()
	dir := t.TempDir()
	a := &Export{Name: "a", Store: StoreConfig{Type: "dir", Path: dir + "/s"}}
	b := &Export{Name: "b", Store: StoreConfig{Type: "dir", Path: dir + "/s"}}
	c := &Export{Name: "c", Store: StoreConfig{Type: "dir", Path: dir + "/other"}}
	tok := azauth.Options{Method: azauth.MethodToken, Token: "t1"}
	tok2 := azauth.Options{Method: azauth.MethodToken, Token: "t2"}

	r := &Runner{}
	stA, err := r.store(ctx, a)
	if err != nil {
		t.Fatal(err)
	}
	tests := []struct {
		name     string
		got      func() any
		want     any
		wantSame bool
	}{
		{"same store configuration, same store", func() any { s, _ := r.store(ctx, b); return s }, stA, true},
		{"other store configuration, other store", func() any { s, _ := r.store(ctx, c); return s }, stA, false},
		{"other Runner, other store", func() any { s, _ := (&Runner{}).store(ctx, a); return s }, stA, false},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if same := tt.got() == tt.want; same != tt.wantSame {
				t.Errorf("same instance = %v, want %v", same, tt.wantSame)
			}
		})
	}
	c1, err := r.credential(tok)
	if err != nil {
		t.Fatal(err)
	}
	if again, _ := r.credential(tok); again != c1 {
		t.Errorf("credential for the same options made twice")
	}
	if other, _ := r.credential(tok2); other == c1 {
		t.Errorf("credential for other options (another token) is the first one")
	}
	hc := r.httpClient()
	if r.httpClient() != hc {
		t.Errorf("the Runner's HTTP client changed between calls")
	}
	if err := r.Close(); err != nil {
		t.Fatal(err)
	}
	if len(r.owned.stores) != 0 || len(r.owned.creds) != 0 || r.owned.hc != nil {
		t.Errorf("Close kept %d stores, %d credentials, client %v; want none", len(r.owned.stores), len(r.owned.creds), r.owned.hc)
	}
	if s, _ := r.store(ctx, a); s == stA {
		t.Errorf("store after Close is the one opened before")
	}
}
