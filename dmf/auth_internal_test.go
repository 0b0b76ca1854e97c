package dmf

import (
	"encoding/base64"
	"os"
	"os/exec"
	"path/filepath"
	"testing"

	"github.com/Azure/azure-sdk-for-go/sdk/azidentity"
)

// TestOpenSSL3PFXNeedsFallback shows why loadCertificate falls back to
// go-pkcs12: azidentity alone cannot read a PFX written by OpenSSL 3.
func TestOpenSSL3PFXNeedsFallback(t *testing.T) {
	if _, err := exec.LookPath("openssl"); err != nil {
		t.Skip("openssl command not found")
	}
	dir := t.TempDir()
	pemPath, pfxPath := filepath.Join(dir, "app.pem"), filepath.Join(dir, "app.pfx")
	gen := exec.Command("openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-keyout", pemPath, "-out", pemPath+".crt",
		"-days", "1", "-subj", "/CN=dmfexport test")
	if out, err := gen.CombinedOutput(); err != nil {
		t.Fatalf("openssl req: %v: %s", err, out)
	}
	exp := exec.Command("openssl", "pkcs12", "-export", "-inkey", pemPath, "-in", pemPath+".crt", "-out", pfxPath, "-passout", "pass:pw")
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
			app, tenant := tokenIdentity(tt.tok)
			if app != tt.wantApp || tenant != tt.wantTenant {
				t.Errorf("tokenIdentity: want (%q, %q), got (%q, %q)", tt.wantApp, tt.wantTenant, app, tenant)
			}
		})
	}
}
