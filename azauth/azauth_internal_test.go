package azauth

import (
	"encoding/base64"
	"os"
	"os/exec"
	"path/filepath"
	"testing"

	"context"
	"github.com/Azure/azure-sdk-for-go/sdk/azcore"
	"github.com/Azure/azure-sdk-for-go/sdk/azcore/policy"
	"github.com/Azure/azure-sdk-for-go/sdk/azidentity"
	"sync"
	"time"
)

// TestOpenSSL3PFXNeedsFallback shows why loadCertificate falls back to
// go-pkcs12: azidentity alone cannot read a PFX written by OpenSSL 3.
func TestOpenSSL3PFXNeedsFallback(t *testing.T) {
	if _, err := exec.LookPath("openssl"); err != nil {
		t.Skip("openssl command not found")
	}
	dir := t.TempDir()
	pemPath, pfxPath := filepath.Join(dir, "app.pem"), filepath.Join(dir, "app.pfx")
	gen := exec.CommandContext(t.Context(), "openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-keyout", pemPath, "-out", pemPath+".crt",
		"-days", "1", "-subj", "/CN=dmfexport test")
	if out, err := gen.CombinedOutput(); err != nil {
		t.Fatalf("openssl req: %v: %s", err, out)
	}
	exp := exec.CommandContext(t.Context(), "openssl", "pkcs12", "-export", "-inkey", pemPath, "-in", pemPath+".crt", "-out", pfxPath, "-passout", "pass:pw")
	if out, err := exp.CombinedOutput(); err != nil {
		t.Fatalf("openssl pkcs12: %v: %s", err, out)
	}
	data, err := os.ReadFile(pfxPath)
	if err != nil {
		t.Fatal(err)
	}
	if _, _, err := azidentity.ParseCertificates(data, []byte("pw")); err == nil {
		t.Log("azidentity.ParseCertificates read the OpenSSL 3 PFX itself; the fallback is then unused")
	}
	certs, key, err := loadCertificate(pfxPath, "pw")
	if err != nil || len(certs) != 1 || key == nil {
		t.Fatalf("loadCertificate(OpenSSL 3 PFX): want 1 certificate and a key, got %d, %v", len(certs), err)
	}
}

func TestTokenIdentity(t *testing.T) {
	enc := func(s string) string { return base64.RawURLEncoding.EncodeToString([]byte(s)) }
	tests := []struct {
		name, tok, wantApp, wantTenant string
	}{
		{"appid and tid", "h." + enc(`{"appid":"a1","tid":"t1"}`) + ".s", "a1", "t1"},
		{"azp when no appid", "h." + enc(`{"azp":"a2","tid":"t2"}`) + ".s", "a2", "t2"},
		{"padded payload", "h." + base64.URLEncoding.EncodeToString([]byte(`{"appid":"a3"}`)) + ".s", "a3", ""},
		{"control characters dropped", "h." + enc(`{"appid":"a\n4"}`) + ".s", "a4", ""},
		{"opaque token", "dmftest-token", "", ""},
		{"not JSON", "h." + enc("nope") + ".s", "", ""},
		{"two parts", "h." + enc(`{"appid":"a"}`), "", ""},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			app, tenant := TokenIdentity(tt.tok)
			if app != tt.wantApp || tenant != tt.wantTenant {
				t.Errorf("tokenIdentity: want (%q, %q), got (%q, %q)", tt.wantApp, tt.wantTenant, app, tenant)
			}
		})
	}
}

// FuzzTokenIdentity checks that claims read from any token are short and
// free of control characters.
func FuzzTokenIdentity(f *testing.F) {
	for _, seed := range []string{"a.eyJhcHBpZCI6IngiLCJ0aWQiOiJ5In0.b", "a.eyJhenAiOiJ6In0.b", "opaque", "..", "a.=.b", "a.bnVsbA.b"} {
		f.Add(seed)
	}
	f.Fuzz(func(t *testing.T, tok string) {
		app, tenant := TokenIdentity(tok)
		for _, s := range []string{app, tenant} {
			if len(s) > 100 {
				t.Fatalf("claim %q longer than 100 bytes", s)
			}
			for _, r := range s {
				if r < ' ' || r == 0x7f {
					t.Fatalf("claim %q holds a control character", s)
				}
			}
		}
	})
}

func TestStaticToken(t *testing.T) {
	at, err := StaticToken("abc").GetToken(context.Background(), policy.TokenRequestOptions{Scopes: []string{"s"}})
	if err != nil || at.Token != "abc" || at.ExpiresOn.Before(time.Now().AddDate(100, 0, 0)) {
		t.Errorf("StaticToken GetToken = %q expiring %s, %v; want abc, far future, nil", at.Token, at.ExpiresOn, err)
	}
}

// countingCred is a credential fake counting token requests.
type countingCred struct {
	mu    sync.Mutex
	calls int
	token string
	ttl   time.Duration
}

func (c *countingCred) GetToken(context.Context, policy.TokenRequestOptions) (azcore.AccessToken, error) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.calls++
	return azcore.AccessToken{Token: c.token, ExpiresOn: time.Now().Add(c.ttl)}, nil
}

// TestTokenCache checks the cache azauth keeps for credentials that cache
// nothing themselves (the Azure CLI's): a token is reused while it has more
// than two minutes left, and a refused token is asked anew.
func TestTokenCache(t *testing.T) {
	tests := []struct {
		name      string
		ttl       time.Duration
		calls     int
		forget    bool // Forget the token after each call, as after a 401
		wantToken int  // GetToken calls of the inner credential wanted
	}{
		{name: "cached while valid", ttl: time.Hour, calls: 4, wantToken: 1},
		{name: "refreshed within two minutes of expiry", ttl: 90 * time.Second, calls: 3, wantToken: 3},
		{name: "asked anew after a refusal", ttl: time.Hour, calls: 3, forget: true, wantToken: 3},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			inner := &countingCred{token: "tok-abc", ttl: tt.ttl}
			c := &namedCredential{cred: inner, desc: "test", cache: newTokenCache()}
			for range tt.calls {
				at, err := c.GetToken(context.Background(), policy.TokenRequestOptions{Scopes: []string{"https://h/.default"}})
				if err != nil || at.Token != "tok-abc" {
					t.Fatalf("GetToken = %q, %v; want tok-abc, nil", at.Token, err)
				}
				if tt.forget {
					c.Forget(at.Token)
				}
			}
			if inner.calls != tt.wantToken {
				t.Errorf("inner GetToken called %d times for %d calls, want %d", inner.calls, tt.calls, tt.wantToken)
			}
		})
	}
}
