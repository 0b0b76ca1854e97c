package azauth_test

import (
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/rsa"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/base64"
	"encoding/json"
	"encoding/pem"
	"fmt"
	"math/big"
	"net/http"
	"net/http/httptest"
	"net/url"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/Azure/azure-sdk-for-go/sdk/azcore"
	"github.com/Azure/azure-sdk-for-go/sdk/azcore/policy"
	"github.com/dmfexport/dmfexport/azauth"
	"github.com/dmfexport/dmfexport/dmf"
	"github.com/dmfexport/dmfexport/dmf/dmftest"
	"software.sslmate.com/src/go-pkcs12"
)

const (
	testTenant   = "22222222-2222-2222-2222-222222222222"
	testClientID = "11111111-1111-1111-1111-111111111111"
	testSecret   = "s3cret-value-never-logged"
	testPassword = "pfx-password"
	miHeader     = "identity-header-value"
)

// fakeEntra is a Microsoft Entra ID stand-in over TLS: OpenID discovery and
// the v2.0 token endpoint for client credentials (secret or assertion), and
// an App Service managed identity endpoint. Every token it issues is token.
type fakeEntra struct {
	t     *testing.T
	srv   *httptest.Server
	token string // JWT-shaped, with appid and tid claims

	mu       sync.Mutex
	requests []url.Values // token endpoint forms and MSI queries
}

func newFakeEntra(t *testing.T) *fakeEntra {
	t.Helper()
	f := &fakeEntra{t: t, token: jwtLike(map[string]string{"appid": testClientID, "tid": testTenant})}
	f.srv = httptest.NewTLSServer(http.HandlerFunc(f.serve))
	t.Cleanup(f.srv.Close)
	return f
}

// jwtLike returns an unsigned JWT-shaped token carrying claims.
func jwtLike(claims map[string]string) string {
	b, _ := json.Marshal(claims)
	enc := base64.RawURLEncoding.EncodeToString
	return enc([]byte(`{"alg":"none","typ":"JWT"}`)) + "." + enc(b) + ".c2ln"
}

func (f *fakeEntra) serve(w http.ResponseWriter, r *http.Request) {
	base := f.srv.URL
	switch {
	case r.Method == http.MethodGet && strings.HasSuffix(r.URL.Path, "/v2.0/.well-known/openid-configuration"):
		tenant := strings.Split(strings.Trim(r.URL.Path, "/"), "/")[0]
		writeJSONBody(w, 200, map[string]any{
			"token_endpoint":                        base + "/" + tenant + "/oauth2/v2.0/token",
			"authorization_endpoint":                base + "/" + tenant + "/oauth2/v2.0/authorize",
			"issuer":                                base + "/" + tenant + "/v2.0",
			"jwks_uri":                              base + "/" + tenant + "/discovery/v2.0/keys",
			"response_types_supported":              []string{"code", "id_token", "code id_token", "id_token token"},
			"subject_types_supported":               []string{"pairwise"},
			"id_token_signing_alg_values_supported": []string{"RS256"},
		})
	case r.Method == http.MethodPost && strings.HasSuffix(r.URL.Path, "/oauth2/v2.0/token"):
		if err := r.ParseForm(); err != nil {
			http.Error(w, err.Error(), 400)
			return
		}
		form := r.PostForm
		form.Set("tenant", strings.Split(strings.Trim(r.URL.Path, "/"), "/")[0])
		f.record(form)
		if form.Get("client_secret") == "" && form.Get("client_assertion") == "" {
			writeJSONBody(w, 401, map[string]any{"error": "invalid_client", "error_description": "AADSTS7000216: client_assertion or client_secret is required"})
			return
		}
		if s := form.Get("client_secret"); s != "" && s != testSecret {
			writeJSONBody(w, 401, map[string]any{"error": "invalid_client", "error_description": "AADSTS7000215: Invalid client secret provided."})
			return
		}
		writeJSONBody(w, 200, map[string]any{"token_type": "Bearer", "expires_in": 3599, "ext_expires_in": 3599, "access_token": f.token})
	case r.Method == http.MethodGet && r.URL.Path == "/msi/token":
		q := r.URL.Query()
		if r.Header.Get("X-IDENTITY-HEADER") != miHeader {
			writeJSONBody(w, 401, map[string]any{"error": "missing identity header"})
			return
		}
		f.record(q)
		writeJSONBody(w, 200, map[string]any{"access_token": f.token, "token_type": "Bearer",
			"expires_on": fmt.Sprint(time.Now().Add(time.Hour).Unix()), "resource": q.Get("resource")})
	default:
		http.Error(w, "not found", 404)
	}
}

func (f *fakeEntra) record(v url.Values) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.requests = append(f.requests, v)
}

func (f *fakeEntra) last() url.Values {
	f.mu.Lock()
	defer f.mu.Unlock()
	if len(f.requests) == 0 {
		return nil
	}
	return f.requests[len(f.requests)-1]
}

func writeJSONBody(w http.ResponseWriter, status int, v any) {
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(status)
	_ = json.NewEncoder(w).Encode(v)
}

// certFiles are certificate files made once per test binary.
type certFiles struct {
	pem, pfxLegacy, pfxModern, pfxOpenSSL, ecPEM string
}

var (
	certsOnce sync.Once
	certs     certFiles
	certsErr  error
)

// makeCerts writes a self-signed RSA certificate as PEM, as PFX in the
// legacy and the modern (AES, OpenSSL 3 style) encodings, as PFX written by
// the openssl command when present, and an ECDSA one as PEM.
func makeCerts(t *testing.T) certFiles {
	t.Helper()
	certsOnce.Do(func() {
		dir, err := os.MkdirTemp("", "dmf-auth-certs-")
		if err != nil {
			certsErr = err
			return
		}
		certsErr = func() error {
			key, err := rsa.GenerateKey(rand.Reader, 2048)
			if err != nil {
				return err
			}
			tmpl := &x509.Certificate{SerialNumber: big.NewInt(1), Subject: pkix.Name{CommonName: "dmfexport test"},
				NotBefore: time.Now().Add(-time.Hour), NotAfter: time.Now().Add(24 * time.Hour)}
			der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
			if err != nil {
				return err
			}
			cert, err := x509.ParseCertificate(der)
			if err != nil {
				return err
			}
			pk8, err := x509.MarshalPKCS8PrivateKey(key)
			if err != nil {
				return err
			}
			pemData := append(pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der}),
				pem.EncodeToMemory(&pem.Block{Type: "PRIVATE KEY", Bytes: pk8})...)
			certs.pem = filepath.Join(dir, "app.pem")
			if err := os.WriteFile(certs.pem, pemData, 0o600); err != nil {
				return err
			}
			for _, c := range []struct {
				path *string
				name string
				enc  *pkcs12.Encoder
			}{{&certs.pfxLegacy, "legacy.pfx", pkcs12.LegacyRC2}, {&certs.pfxModern, "modern.pfx", pkcs12.Modern}} {
				data, err := c.enc.Encode(key, cert, nil, testPassword)
				if err != nil {
					return err
				}
				*c.path = filepath.Join(dir, c.name)
				if err := os.WriteFile(*c.path, data, 0o600); err != nil {
					return err
				}
			}
			if _, err := exec.LookPath("openssl"); err == nil {
				out := filepath.Join(dir, "openssl3.pfx")
				cmd := exec.CommandContext(t.Context(), "openssl", "pkcs12", "-export", "-in", certs.pem, "-inkey", certs.pem,
					"-out", out, "-passout", "pass:"+testPassword)
				if b, err := cmd.CombinedOutput(); err != nil {
					return fmt.Errorf("openssl pkcs12 -export: %w: %s", err, b)
				}
				certs.pfxOpenSSL = out
			}
			ec, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
			if err != nil {
				return err
			}
			ecDER, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &ec.PublicKey, ec)
			if err != nil {
				return err
			}
			ecKey, err := x509.MarshalPKCS8PrivateKey(ec)
			if err != nil {
				return err
			}
			certs.ecPEM = filepath.Join(dir, "ec.pem")
			return os.WriteFile(certs.ecPEM, append(pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: ecDER}),
				pem.EncodeToMemory(&pem.Block{Type: "PRIVATE KEY", Bytes: ecKey})...), 0o600)
		}()
	})
	if certsErr != nil {
		t.Fatalf("make test certificates: %v", certsErr)
	}
	return certs
}

// clearAzureEnv unsets the environment variables azidentity reads, for the
// duration of the test.
func clearAzureEnv(t *testing.T) {
	for _, k := range []string{"AZURE_CLIENT_ID", "AZURE_TENANT_ID", "AZURE_CLIENT_SECRET", "AZURE_CLIENT_CERTIFICATE_PATH",
		"AZURE_CLIENT_CERTIFICATE_PASSWORD", "AZURE_FEDERATED_TOKEN_FILE", "AZURE_AUTHORITY_HOST", "AZURE_USERNAME",
		"AZURE_PASSWORD", "IDENTITY_ENDPOINT", "IDENTITY_HEADER", "MSI_ENDPOINT", "MSI_SECRET", "IMDS_ENDPOINT",
		"IDENTITY_SERVER_THUMBPRINT", "AZURE_TOKEN_CREDENTIALS"} {
		t.Setenv(k, "")
		_ = os.Unsetenv(k)
	}
}

// TestCredentialsGetRealTokens builds each credential kind from AuthOptions,
// gets a token from the fake Entra ID and uses it against the simulator,
// which accepts only that token.
func TestCredentialsGetRealTokens(t *testing.T) {
	c := makeCerts(t)
	tests := []struct {
		name      string
		opts      func(entra string, dir string) azauth.Options
		env       func(entra string) map[string]string
		managed   bool   // the token came from the managed identity endpoint
		wantParam string // a form or query value the request carried
	}{
		{name: "client secret", opts: func(entra, _ string) azauth.Options {
			return azauth.Options{Method: "client_secret", TenantID: testTenant, ClientID: testClientID, ClientSecret: testSecret}
		}, wantParam: "client_secret=" + testSecret},
		{name: "client certificate PEM", opts: func(entra, _ string) azauth.Options {
			return azauth.Options{Method: "client_certificate", TenantID: testTenant, ClientID: testClientID, CertificatePath: c.pem}
		}, wantParam: "client_assertion_type=urn:ietf:params:oauth:client-assertion-type:jwt-bearer"},
		{name: "client certificate PFX legacy", opts: func(entra, _ string) azauth.Options {
			return azauth.Options{Method: "client_certificate", TenantID: testTenant, ClientID: testClientID, CertificatePath: c.pfxLegacy, CertificatePassword: testPassword}
		}, wantParam: "client_assertion_type=urn:ietf:params:oauth:client-assertion-type:jwt-bearer"},
		{name: "client certificate PFX modern (AES)", opts: func(entra, _ string) azauth.Options {
			return azauth.Options{Method: "client_certificate", TenantID: testTenant, ClientID: testClientID, CertificatePath: c.pfxModern, CertificatePassword: testPassword}
		}, wantParam: "client_assertion_type=urn:ietf:params:oauth:client-assertion-type:jwt-bearer"},
		{name: "client certificate PFX from openssl", opts: func(entra, _ string) azauth.Options {
			return azauth.Options{Method: "client_certificate", TenantID: testTenant, ClientID: testClientID, CertificatePath: c.pfxOpenSSL, CertificatePassword: testPassword}
		}, wantParam: "client_assertion_type=urn:ietf:params:oauth:client-assertion-type:jwt-bearer"},
		{name: "workload identity", opts: func(entra, dir string) azauth.Options {
			file := filepath.Join(dir, "federated-token")
			if err := os.WriteFile(file, []byte("federated-assertion-from-aks"), 0o600); err != nil {
				panic(err)
			}
			return azauth.Options{Method: "workload_identity", TenantID: testTenant, ClientID: testClientID, TokenFile: file}
		}, wantParam: "client_assertion=federated-assertion-from-aks"},
		{name: "managed identity, system-assigned", managed: true,
			opts: func(string, string) azauth.Options { return azauth.Options{Method: "managed_identity"} },
			env: func(entra string) map[string]string {
				return map[string]string{"IDENTITY_ENDPOINT": entra + "/msi/token", "IDENTITY_HEADER": miHeader}
			}, wantParam: "api-version=2019-08-01"},
		{name: "managed identity, user-assigned by client ID", managed: true,
			opts: func(string, string) azauth.Options {
				return azauth.Options{Method: "managed_identity", ManagedIdentityClientID: "33333333-3333-3333-3333-333333333333"}
			},
			env: func(entra string) map[string]string {
				return map[string]string{"IDENTITY_ENDPOINT": entra + "/msi/token", "IDENTITY_HEADER": miHeader}
			}, wantParam: "client_id=33333333-3333-3333-3333-333333333333"},
		{name: "managed identity, user-assigned by resource ID", managed: true,
			opts: func(string, string) azauth.Options {
				return azauth.Options{Method: "managed_identity", ManagedIdentityResourceID: "/subscriptions/s/resourceGroups/rg/providers/Microsoft.ManagedIdentity/userAssignedIdentities/dmf"}
			},
			env: func(entra string) map[string]string {
				return map[string]string{"IDENTITY_ENDPOINT": entra + "/msi/token", "IDENTITY_HEADER": miHeader}
			}, wantParam: "mi_res_id=/subscriptions/s/resourceGroups/rg/providers/Microsoft.ManagedIdentity/userAssignedIdentities/dmf"},
		{name: "default chain through environment variables",
			opts: func(string, string) azauth.Options { return azauth.Options{Method: "default"} },
			env: func(entra string) map[string]string {
				return map[string]string{"AZURE_TENANT_ID": testTenant, "AZURE_CLIENT_ID": testClientID, "AZURE_CLIENT_SECRET": testSecret}
			}, wantParam: "client_secret=" + testSecret},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if strings.Contains(tt.name, "openssl") && c.pfxOpenSSL == "" {
				t.Skip("openssl command not found: cannot make an OpenSSL 3 PFX")
			}
			clearAzureEnv(t)
			entra := newFakeEntra(t)
			if tt.env != nil {
				for k, v := range tt.env(entra.srv.URL) {
					t.Setenv(k, v)
				}
			}
			o := tt.opts(entra.srv.URL, t.TempDir())
			if !tt.managed {
				o.AuthorityHost = entra.srv.URL + "/"
				o.DisableInstanceDiscovery = true
			}
			cred, err := azauth.NewCredential(o, &azcore.ClientOptions{Transport: entra.srv.Client()})
			if err != nil {
				t.Fatalf("NewCredential(%s): %v", o.Describe(), err)
			}
			sim := dmftest.NewServer(dmftest.Options{Token: entra.token, Projects: map[string][]dmftest.Entity{"G": {{Name: "Customers V3", Data: []byte("CUSTOMERACCOUNT\r\nC1\r\n")}}}})
			defer sim.Close()
			client, err := dmf.NewClient(sim.URL, cred, &dmf.ClientOptions{Identity: o.Describe(), ApplicationID: o.ApplicationID()})
			if err != nil {
				t.Fatalf("NewClient: %v", err)
			}
			st, err := client.ExecutionStatus(context.Background(), "x")
			if err != nil || st != dmf.StatusUnknown {
				t.Fatalf("ExecutionStatus with the issued token: want Unknown, nil; got %q, %v", st, err)
			}
			got := entra.last()
			if got == nil {
				t.Fatal("the fake Entra ID received no token request")
			}
			if tt.managed {
				if r := got.Get("resource"); r != sim.URL {
					t.Errorf("managed identity resource: want %s, got %s", sim.URL, r)
				}
			} else {
				if s := got.Get("scope"); !strings.Contains(s, sim.URL+"/.default") {
					t.Errorf("scope: want %s/.default, got %q", sim.URL, s)
				}
				if id := got.Get("client_id"); id != testClientID {
					t.Errorf("client_id: want %s, got %s", testClientID, id)
				}
				if tn := got.Get("tenant"); tn != testTenant {
					t.Errorf("tenant in the token URL: want %s, got %s", testTenant, tn)
				}
			}
			k, v, _ := strings.Cut(tt.wantParam, "=")
			if got.Get(k) != v {
				t.Errorf("request parameter %s: want %q, got %q", k, v, got.Get(k))
			}
		})
	}
}

// TestCredentialErrors checks that refusals and bad configurations give
// errors that name the identity and what to do, without secrets.
func TestCredentialErrors(t *testing.T) {
	c := makeCerts(t)
	tests := []struct {
		name        string
		opts        azauth.Options
		wantNewErr  string // substring of the NewCredential error
		wantTokErr  string // substring of the GetToken error
		pathWithout bool   // run with an empty PATH (no az)
	}{
		{name: "unknown method", opts: azauth.Options{Method: "kerberos"}, wantNewErr: `unknown auth method "kerberos"`},
		{name: "client secret missing fields", opts: azauth.Options{Method: "client_secret"}, wantNewErr: "needs tenant_id; auth method client_secret needs client_id; auth method client_secret needs client_secret"},
		{name: "both managed identity IDs", opts: azauth.Options{Method: "managed_identity", ManagedIdentityClientID: "a", ManagedIdentityResourceID: "b"}, wantNewErr: "not both"},
		{name: "http authority host", opts: azauth.Options{Method: "client_secret", TenantID: "t", ClientID: "c", ClientSecret: "secret-value-1", AuthorityHost: "http://login.example"}, wantNewErr: "must be an https URL"},
		{name: "ECDSA certificate", opts: azauth.Options{Method: "client_certificate", TenantID: testTenant, ClientID: testClientID, CertificatePath: c.ecPEM}, wantNewErr: "need an RSA key"},
		{name: "PFX wrong password", opts: azauth.Options{Method: "client_certificate", TenantID: testTenant, ClientID: testClientID, CertificatePath: c.pfxModern, CertificatePassword: "wrong-password"}, wantNewErr: "wrong certificate_password"},
		{name: "missing certificate file", opts: azauth.Options{Method: "client_certificate", TenantID: testTenant, ClientID: testClientID, CertificatePath: "/nonexistent/app.pfx"}, wantNewErr: "read certificate"},
		{name: "wrong client secret", opts: azauth.Options{Method: "client_secret", TenantID: testTenant, ClientID: testClientID, ClientSecret: "wrong-secret-value"}, wantTokErr: "client_secret app " + testClientID + " in tenant " + testTenant},
		{name: "azure cli without az", opts: azauth.Options{Method: "azure_cli"}, pathWithout: true, wantTokErr: "the Azure CLI (az) is not on PATH"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			clearAzureEnv(t)
			if tt.pathWithout {
				t.Setenv("PATH", t.TempDir())
			}
			entra := newFakeEntra(t)
			o := tt.opts
			if o.AuthorityHost == "" {
				o.AuthorityHost = entra.srv.URL
				o.DisableInstanceDiscovery = true
			}
			cred, err := azauth.NewCredential(o, &azcore.ClientOptions{Transport: entra.srv.Client(), Retry: policy.RetryOptions{MaxRetries: -1}})
			if tt.wantNewErr != "" {
				if err == nil || !strings.Contains(err.Error(), tt.wantNewErr) {
					t.Fatalf("NewCredential: want an error containing %q, got %v", tt.wantNewErr, err)
				}
				checkNoSecret(t, err, o)
				return
			}
			if err != nil {
				t.Fatalf("NewCredential: %v", err)
			}
			ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
			defer cancel()
			_, err = cred.GetToken(ctx, policy.TokenRequestOptions{Scopes: []string{"https://contoso.operations.dynamics.com/.default"}})
			if err == nil || !strings.Contains(err.Error(), tt.wantTokErr) {
				t.Fatalf("GetToken: want an error containing %q, got %v", tt.wantTokErr, err)
			}
			checkNoSecret(t, err, o)
		})
	}
}

func checkNoSecret(t *testing.T, err error, o azauth.Options) {
	t.Helper()
	for _, s := range []string{o.ClientSecret.Reveal(), o.CertificatePassword.Reveal(), o.Token.Reveal()} {
		if s != "" && strings.Contains(err.Error(), s) {
			t.Errorf("error shows a secret: %v", err)
		}
	}
}

// TestDescribe checks the identity text of each method and that it never
// holds a secret.
func TestDescribe(t *testing.T) {
	clearAzureEnv(t)
	tests := []struct {
		opts azauth.Options
		want string
		app  string
	}{
		{azauth.Options{Method: "token", Token: "tok-secret"}, "static bearer token", ""},
		{azauth.Options{Method: "client_secret", TenantID: "t1", ClientID: "c1", ClientSecret: "s1-secret"}, "client_secret app c1 in tenant t1", "c1"},
		{azauth.Options{Method: "client_certificate", TenantID: "t1", ClientID: "c1", CertificatePath: "/etc/app.pfx", CertificatePassword: "pw-secret"}, "client_certificate app c1 in tenant t1 (certificate /etc/app.pfx)", "c1"},
		{azauth.Options{Method: "managed_identity"}, "system-assigned managed identity", ""},
		{azauth.Options{Method: "managed_identity", ManagedIdentityClientID: "m1"}, "user-assigned managed identity with client ID m1", "m1"},
		{azauth.Options{Method: "managed_identity", ManagedIdentityResourceID: "/sub/r"}, "user-assigned managed identity /sub/r", ""},
		{azauth.Options{Method: "workload_identity", TenantID: "t1", ClientID: "c1"}, "workload_identity app c1 in tenant t1", "c1"},
		{azauth.Options{Method: "azure_cli", TenantID: "t1"}, "Azure CLI login in tenant t1", ""},
		{azauth.Options{Method: "AZURE_CLI"}, "Azure CLI login", ""},
		{azauth.Options{}, "default Azure credential chain", ""},
	}
	for _, tt := range tests {
		t.Run(tt.want, func(t *testing.T) {
			if got := tt.opts.Describe(); got != tt.want {
				t.Errorf("Describe: want %q, got %q", tt.want, got)
			}
			if got := tt.opts.ApplicationID(); got != tt.app {
				t.Errorf("ApplicationID: want %q, got %q", tt.app, got)
			}
			if err := tt.opts.Check(); err != nil {
				t.Errorf("Check: want nil, got %v", err)
			}
		})
	}
}
