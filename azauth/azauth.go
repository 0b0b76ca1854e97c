// Package azauth obtains Microsoft Entra ID tokens for dmfexport: for the
// F&O client and for the Azure Blob Storage store alike. Options name one
// of the ways an identity signs in (client secret, certificate, managed or
// workload identity, Azure CLI, the default chain, or a static token);
// NewCredential turns them into an azcore.TokenCredential whose tokens are
// cached by azidentity and whose errors name the identity, never a secret.
package azauth

import (
	"context"
	"crypto/rsa"
	"crypto/x509"
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"net/url"
	"os"
	"os/exec"
	"strings"
	"time"

	"github.com/Azure/azure-sdk-for-go/sdk/azcore"
	"github.com/Azure/azure-sdk-for-go/sdk/azcore/cloud"
	"github.com/Azure/azure-sdk-for-go/sdk/azcore/policy"
	"github.com/Azure/azure-sdk-for-go/sdk/azidentity"
	"github.com/dmfexport/dmfexport/internal/redact"
	"software.sslmate.com/src/go-pkcs12"
)

// The authentication methods NewCredential accepts (Options.Method).
const (
	MethodToken             = "token"              // a bearer token obtained elsewhere (Options.Token)
	MethodClientSecret      = "client_secret"      // app registration with a client secret
	MethodClientCertificate = "client_certificate" // app registration with a certificate (PEM or PFX)
	MethodManagedIdentity   = "managed_identity"   // system or user-assigned managed identity
	MethodWorkloadIdentity  = "workload_identity"  // federated token file (e.g. AKS workload identity)
	MethodAzureCLI          = "azure_cli"          // the login of the Azure CLI (az login)
	MethodDefault           = "default"            // azidentity's DefaultAzureCredential chain
)

// Methods lists the accepted Options.Method values, for config
// validation messages.
var Methods = []string{MethodToken, MethodClientSecret, MethodClientCertificate, MethodManagedIdentity,
	MethodWorkloadIdentity, MethodAzureCLI, MethodDefault}

// Options choose and configure how a client gets its Microsoft Entra ID
// token (for F&O or for Azure Blob Storage). They are comparable, so a
// caller can tell whether a credential it keeps still matches. Only the fields of the chosen Method are read; Check
// reports missing or contradictory ones.
type Options struct {
	Method string // one of Methods; "" means MethodDefault

	TenantID string // directory (tenant) ID or domain: client_secret, client_certificate, workload_identity; optional for azure_cli and default
	ClientID string // application (client) ID: client_secret, client_certificate, workload_identity (default: $AZURE_CLIENT_ID)

	ClientSecret Secret // client_secret: the secret value (never logged)

	CertificatePath     string // client_certificate: PEM or PFX/PKCS#12 file holding the certificate and its RSA private key
	CertificatePassword Secret // client_certificate: password of the PFX or of an encrypted PEM key; may be empty

	ManagedIdentityClientID   string // managed_identity: client ID of a user-assigned identity
	ManagedIdentityResourceID string // managed_identity: Azure resource ID of a user-assigned identity

	TokenFile string // workload_identity: federated token file (default: $AZURE_FEDERATED_TOKEN_FILE)

	// AuthorityHost is the Entra ID endpoint, e.g.
	// https://login.microsoftonline.us/ for US Government; "" means the
	// public cloud (or $AZURE_AUTHORITY_HOST where azidentity reads it).
	AuthorityHost string
	// DisableInstanceDiscovery skips Entra ID's instance discovery, needed
	// for authority hosts that do not answer it (private or disconnected
	// clouds, test servers).
	DisableInstanceDiscovery bool

	Token Secret // token: the bearer token itself (never logged)
}

// normalizedMethod returns the method in lower case, "" as MethodDefault.
func (o Options) normalizedMethod() string {
	m := strings.ToLower(strings.TrimSpace(o.Method))
	if m == "" {
		return MethodDefault
	}
	return m
}

// Check reports every problem of o at once (nil when there is none): an
// unknown method, fields the method needs but lacks, and fields that
// contradict each other. It reads no files.
func (o Options) Check() error {
	var problems []string
	need := func(v, key string) {
		if strings.TrimSpace(v) == "" {
			problems = append(problems, fmt.Sprintf("auth method %s needs %s", o.normalizedMethod(), key))
		}
	}
	switch o.normalizedMethod() {
	case MethodToken:
		need(o.Token.Reveal(), "a token")
	case MethodClientSecret:
		need(o.TenantID, "tenant_id")
		need(o.ClientID, "client_id")
		need(o.ClientSecret.Reveal(), "client_secret")
	case MethodClientCertificate:
		need(o.TenantID, "tenant_id")
		need(o.ClientID, "client_id")
		need(o.CertificatePath, "certificate_path")
	case MethodManagedIdentity:
		if o.ManagedIdentityClientID != "" && o.ManagedIdentityResourceID != "" {
			problems = append(problems, "auth method managed_identity takes managed_identity_client_id or managed_identity_resource_id, not both")
		}
	case MethodWorkloadIdentity, MethodAzureCLI, MethodDefault:
		// Everything may come from the environment.
	default:
		problems = append(problems, fmt.Sprintf("unknown auth method %q: use one of %s", o.Method, strings.Join(Methods, ", ")))
	}
	if o.AuthorityHost != "" {
		u, err := url.Parse(o.AuthorityHost)
		if err != nil || u.Scheme != "https" || u.Host == "" {
			problems = append(problems, fmt.Sprintf("authority_host %q must be an https URL such as https://login.microsoftonline.com/", o.AuthorityHost))
		}
	}
	if len(problems) > 0 {
		return errors.New(strings.Join(problems, "; "))
	}
	return nil
}

// Describe names the identity o stands for, for logs and error messages,
// e.g. "client_secret app 11111111-... in tenant 22222222-...". It never
// includes a secret, password, token or certificate content.
func (o Options) Describe() string {
	orUnset := func(v, env string) string {
		if v != "" {
			return v
		}
		if e := os.Getenv(env); e != "" {
			return e
		}
		return "(unset)"
	}
	switch m := o.normalizedMethod(); m {
	case MethodToken:
		return StaticTokenIdentity
	case MethodClientSecret:
		return fmt.Sprintf("client_secret app %s in tenant %s", o.ClientID, o.TenantID)
	case MethodClientCertificate:
		return fmt.Sprintf("client_certificate app %s in tenant %s (certificate %s)", o.ClientID, o.TenantID, o.CertificatePath)
	case MethodManagedIdentity:
		switch {
		case o.ManagedIdentityClientID != "":
			return "user-assigned managed identity with client ID " + o.ManagedIdentityClientID
		case o.ManagedIdentityResourceID != "":
			return "user-assigned managed identity " + o.ManagedIdentityResourceID
		}
		return "system-assigned managed identity"
	case MethodWorkloadIdentity:
		return fmt.Sprintf("workload_identity app %s in tenant %s", orUnset(o.ClientID, "AZURE_CLIENT_ID"), orUnset(o.TenantID, "AZURE_TENANT_ID"))
	case MethodAzureCLI:
		if o.TenantID != "" {
			return "Azure CLI login in tenant " + o.TenantID
		}
		return "Azure CLI login"
	case MethodDefault:
		if o.TenantID != "" {
			return "default Azure credential chain in tenant " + o.TenantID
		}
		return "default Azure credential chain"
	default:
		return "auth method " + m
	}
}

// ApplicationID returns the application (client) ID o authenticates as
// when the configuration names it, or "" (system-assigned managed
// identity, Azure CLI, default chain without $AZURE_CLIENT_ID).
func (o Options) ApplicationID() string {
	switch o.normalizedMethod() {
	case MethodClientSecret, MethodClientCertificate:
		return o.ClientID
	case MethodManagedIdentity:
		return o.ManagedIdentityClientID
	case MethodWorkloadIdentity, MethodDefault:
		if o.ClientID != "" {
			return o.ClientID
		}
		return os.Getenv("AZURE_CLIENT_ID")
	}
	return ""
}

// NewCredential builds the token credential o describes. co, which may be
// nil, sets the HTTP transport, retries and logging of the calls to Entra
// ID or the managed identity endpoint; AuthorityHost overrides its Cloud.
// The credential caches tokens and refreshes them before they expire; its
// errors name the identity (Describe) and never hold a secret. Certificate
// files are read here: PEM, or PFX/PKCS#12 including files written by
// OpenSSL 3 with its default AES encryption; the key must be RSA.
func NewCredential(o Options, co *azcore.ClientOptions) (azcore.TokenCredential, error) {
	if err := o.Check(); err != nil {
		return nil, fmt.Errorf("Entra ID credential: %w", err) //nolint:staticcheck // ST1005: Entra ID is a product name
	}
	var opts azcore.ClientOptions
	if co != nil {
		opts = *co
	}
	if o.AuthorityHost != "" {
		cfg := opts.Cloud
		cfg.ActiveDirectoryAuthorityHost = o.AuthorityHost
		opts.Cloud = cfg
	} else if opts.Cloud.ActiveDirectoryAuthorityHost == "" {
		opts.Cloud = cloud.AzurePublic
		if h := os.Getenv("AZURE_AUTHORITY_HOST"); h != "" {
			opts.Cloud.ActiveDirectoryAuthorityHost = h
		}
	}
	desc := o.Describe()
	var (
		cred azcore.TokenCredential
		err  error
	)
	switch o.normalizedMethod() {
	case MethodToken:
		return StaticToken(strings.TrimSpace(o.Token.Reveal())), nil
	case MethodClientSecret:
		cred, err = azidentity.NewClientSecretCredential(o.TenantID, o.ClientID, o.ClientSecret.Reveal(),
			&azidentity.ClientSecretCredentialOptions{ClientOptions: opts, DisableInstanceDiscovery: o.DisableInstanceDiscovery})
	case MethodClientCertificate:
		certs, key, lerr := loadCertificate(o.CertificatePath, o.CertificatePassword.Reveal())
		if lerr != nil {
			return nil, fmt.Errorf("Entra ID credential (%s): %w", desc, lerr) //nolint:staticcheck // ST1005: Entra ID is a product name
		}
		cred, err = azidentity.NewClientCertificateCredential(o.TenantID, o.ClientID, certs, key,
			&azidentity.ClientCertificateCredentialOptions{ClientOptions: opts, DisableInstanceDiscovery: o.DisableInstanceDiscovery})
	case MethodManagedIdentity:
		mo := &azidentity.ManagedIdentityCredentialOptions{ClientOptions: opts}
		switch {
		case o.ManagedIdentityClientID != "":
			mo.ID = azidentity.ClientID(o.ManagedIdentityClientID)
		case o.ManagedIdentityResourceID != "":
			mo.ID = azidentity.ResourceID(o.ManagedIdentityResourceID)
		}
		cred, err = azidentity.NewManagedIdentityCredential(mo)
	case MethodWorkloadIdentity:
		cred, err = azidentity.NewWorkloadIdentityCredential(&azidentity.WorkloadIdentityCredentialOptions{
			ClientOptions: opts, TenantID: o.TenantID, ClientID: o.ClientID, TokenFilePath: o.TokenFile,
			DisableInstanceDiscovery: o.DisableInstanceDiscovery,
		})
	case MethodAzureCLI:
		cred, err = azidentity.NewAzureCLICredential(&azidentity.AzureCLICredentialOptions{TenantID: o.TenantID})
	case MethodDefault:
		cred, err = azidentity.NewDefaultAzureCredential(&azidentity.DefaultAzureCredentialOptions{
			ClientOptions: opts, TenantID: o.TenantID, DisableInstanceDiscovery: o.DisableInstanceDiscovery,
		})
	}
	if err != nil {
		return nil, fmt.Errorf("Entra ID credential (%s): %w", desc, o.hide(err)) //nolint:staticcheck // ST1005: Entra ID is a product name
	}
	nc := &namedCredential{cred: cred, desc: desc, opts: o}
	switch o.normalizedMethod() {
	case MethodAzureCLI, MethodDefault:
		// azidentity's Azure CLI credential (alone or as the default chain's
		// last member) runs az at every call and caches nothing.
		nc.cache = newTokenCache()
	}
	return nc, nil
}

// namedCredential adds the identity and a hint to token errors.
type namedCredential struct {
	cred  azcore.TokenCredential
	desc  string
	opts  Options
	cache *tokenCache // nil where azidentity caches tokens itself
}

func (c *namedCredential) GetToken(ctx context.Context, tro policy.TokenRequestOptions) (azcore.AccessToken, error) {
	var (
		at  azcore.AccessToken
		err error
	)
	if c.cache != nil {
		at, err = c.cache.get(ctx, c.cred, tro)
	} else {
		at, err = c.cred.GetToken(ctx, tro)
	}
	if err == nil {
		return at, nil
	}
	if ctx.Err() != nil {
		return at, fmt.Errorf("%s: %w", c.desc, ctx.Err())
	}
	return at, fmt.Errorf("%s: %w%s", c.desc, c.opts.hide(err), tokenHint(c.opts.normalizedMethod()))
}

// Forget drops tok from the credential's own cache, if it keeps one, so
// the next GetToken asks Entra ID anew: for a token the service refused
// (HTTP 401). Credentials that azidentity caches cannot drop a token; they
// renew it before it expires.
func (c *namedCredential) Forget(tok string) {
	if c.cache != nil {
		c.cache.forget(tok)
	}
}

// tokenRefreshMargin is how long before its expiry a cached token is
// replaced.
const tokenRefreshMargin = 2 * time.Minute

// tokenCache keeps one token per scope list for a credential that does not
// cache its own.
type tokenCache struct {
	lock chan struct{} // 1-slot semaphore guarding toks; honours ctx
	toks map[string]azcore.AccessToken
}

func newTokenCache() *tokenCache {
	return &tokenCache{lock: make(chan struct{}, 1), toks: map[string]azcore.AccessToken{}}
}

// get returns the cached token for tro's scopes while it has more than
// tokenRefreshMargin left, or asks cred. Concurrent callers wait for one
// request instead of each running one.
func (c *tokenCache) get(ctx context.Context, cred azcore.TokenCredential, tro policy.TokenRequestOptions) (azcore.AccessToken, error) {
	select {
	case c.lock <- struct{}{}:
	case <-ctx.Done():
		return azcore.AccessToken{}, ctx.Err()
	}
	defer func() { <-c.lock }()
	key := strings.Join(tro.Scopes, " ")
	if at, ok := c.toks[key]; ok && time.Now().Before(at.ExpiresOn.Add(-tokenRefreshMargin)) {
		return at, nil
	}
	at, err := cred.GetToken(ctx, tro)
	if err != nil {
		return at, err
	}
	c.toks[key] = at
	return at, nil
}

func (c *tokenCache) forget(tok string) {
	c.lock <- struct{}{}
	defer func() { <-c.lock }()
	for k, at := range c.toks {
		if at.Token == tok {
			delete(c.toks, k)
		}
	}
}

// tokenHint says what to check when a method cannot get a token.
func tokenHint(method string) string {
	switch method {
	case MethodClientSecret, MethodClientCertificate:
		return "; check tenant_id, client_id and that the secret or certificate is valid and uploaded to the app registration"
	case MethodManagedIdentity:
		return "; check that the process runs on Azure with this managed identity assigned"
	case MethodWorkloadIdentity:
		return "; check token_file, client_id, tenant_id and the federated credential of the app registration"
	case MethodAzureCLI:
		if _, err := exec.LookPath("az"); err != nil {
			return "; the Azure CLI (az) is not on PATH: install it and run az login, or choose another fo.auth.method"
		}
		return "; run az login (with --tenant if needed) as the user this process runs as"
	case MethodDefault:
		return "; set up one source of the default chain (environment variables, workload identity, managed identity or az login), or choose a specific fo.auth.method"
	}
	return ""
}

// hide removes o's secrets, and any SAS or token parameter quoted, from
// err's text; the result never unwraps to the secret-bearing original.
func (o Options) hide(err error) error {
	return redact.Error(err, []string{o.ClientSecret.Reveal(), o.CertificatePassword.Reveal(), o.Token.Reveal()})
}

// Secret holds a credential (a client secret, a password, a token, a
// connection string). It prints as REDACTED in fmt and slog output; only
// Reveal gives its value.
type Secret string

// String implements fmt.Stringer without revealing the secret.
func (s Secret) String() string {
	if s == "" {
		return ""
	}
	return "REDACTED"
}

// GoString implements fmt.GoStringer, so %#v hides the secret too.
func (s Secret) GoString() string { return `"` + s.String() + `"` }

// LogValue implements slog.LogValuer without revealing the secret.
func (s Secret) LogValue() slog.Value { return slog.StringValue(s.String()) }

// Reveal returns the secret's value, for the one place that needs it.
func (s Secret) Reveal() string { return string(s) }

// StaticToken returns a credential that always yields token, valid until the
// far future: for tests, simulators and tokens obtained elsewhere.
func StaticToken(token string) azcore.TokenCredential {
	return staticToken(token)
}

type staticToken string

func (t staticToken) GetToken(context.Context, policy.TokenRequestOptions) (azcore.AccessToken, error) {
	return azcore.AccessToken{
		Token:     string(t),
		ExpiresOn: time.Date(9999, 12, 31, 0, 0, 0, 0, time.UTC),
	}, nil
}

// loadCertificate reads a PEM or PFX file with a certificate chain and an
// RSA private key.
func loadCertificate(path, password string) ([]*x509.Certificate, *rsa.PrivateKey, error) {
	data, err := os.ReadFile(path)
	if err != nil {
		return nil, nil, fmt.Errorf("read certificate: %w", err)
	}
	certs, key, perr := azidentity.ParseCertificates(data, []byte(password))
	if perr != nil && !isPEM(data) {
		// PFX files from OpenSSL 3 use PBES2/AES, which azidentity's parser
		// cannot read; go-pkcs12 can.
		pk, cert, chain, derr := pkcs12.DecodeChain(data, password)
		if derr != nil {
			if errors.Is(derr, pkcs12.ErrIncorrectPassword) {
				return nil, nil, fmt.Errorf("read PFX certificate %s: wrong certificate_password", path)
			}
			return nil, nil, fmt.Errorf("read certificate %s: not a PEM file (%w) nor a readable PFX file (%w)", path, perr, derr)
		}
		certs, key, perr = append([]*x509.Certificate{cert}, chain...), pk, nil
	}
	if perr != nil {
		return nil, nil, fmt.Errorf("read PEM certificate %s: %w (it must hold a CERTIFICATE block and an unencrypted RSA PRIVATE KEY block)", path, perr)
	}
	if len(certs) == 0 {
		return nil, nil, fmt.Errorf("read certificate %s: no certificate found", path)
	}
	rsaKey, ok := key.(*rsa.PrivateKey)
	if !ok {
		return nil, nil, fmt.Errorf("read certificate %s: the private key is %T but Entra ID client certificates need an RSA key: create the certificate with an RSA key (e.g. openssl req -newkey rsa:2048)", path, key)
	}
	return certs, rsaKey, nil
}

func isPEM(data []byte) bool {
	return strings.Contains(string(data[:min(len(data), 4096)]), "-----BEGIN ")
}

// TokenIdentity reads the application ID (appid or azp) and tenant (tid)
// claims of a JWT access token without verifying it, for error messages.
// It returns empty strings for a token that is not a readable JWT.
func TokenIdentity(tok string) (appID, tenant string) {
	parts := strings.Split(tok, ".")
	if len(parts) != 3 || len(parts[1]) > 64<<10 {
		return "", ""
	}
	raw, err := base64.RawURLEncoding.DecodeString(strings.TrimRight(parts[1], "="))
	if err != nil {
		return "", ""
	}
	var claims struct {
		AppID string `json:"appid"`
		AZP   string `json:"azp"`
		TID   string `json:"tid"`
	}
	if json.Unmarshal(raw, &claims) != nil {
		return "", ""
	}
	appID = claims.AppID
	if appID == "" {
		appID = claims.AZP
	}
	clean := func(s string) string {
		if len(s) > 100 {
			return ""
		}
		return strings.Map(func(r rune) rune {
			if r < ' ' || r == 0x7f {
				return -1
			}
			return r
		}, s)
	}
	return clean(appID), clean(claims.TID)
}

// StaticTokenIdentity is what Describe says of the token method, whose
// refusal has nothing to do with an application's registration: the F&O
// client words its 401 hint by it.
const StaticTokenIdentity = "static bearer token"
