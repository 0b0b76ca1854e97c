package jobs

import (
	"fmt"
	"net/url"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

// TestLiteralSecretsRefused checks that the secret part of a value itself
// comes from ${VAR}: a ${VAR} elsewhere in the value (the host, an empty
// variable appended) does not make a literal password, key or signature
// acceptable.
func TestLiteralSecretsRefused(t *testing.T) {
	const tmpl = "fo:\n  url: https://contoso.operations.dynamics.com\n  auth: {method: token, token: %q}\n%sbroker: {url: %q}\nexports:\n  - {name: a, schedule: '@daily', definition_group: G, legal_entity: USMF}\n"
	const dirStore = "store: {path: ./d}\n"
	tests := []struct {
		name               string
		token, store, amqp string
		want               string // problem substring; "" means valid
	}{
		{"broker password literal, host from env", "${FO_TOKEN}", dirStore, "amqp://admin:Sup3rSecret@${RABBITMQ_HOST}/", "broker.url: plain-text password"},
		{"broker password literal, user from env", "${FO_TOKEN}", dirStore, "amqp://${EMPTY}admin:Sup3rSecret@127.0.0.1/", "broker.url: plain-text password"},
		{"broker password partly literal", "${FO_TOKEN}", dirStore, "amqp://admin:x${MQ_PASSWORD}@127.0.0.1/", "broker.url: plain-text password"},
		{"broker password from env", "${FO_TOKEN}", dirStore, "amqp://admin:${MQ_PASSWORD}@${RABBITMQ_HOST}/", ""},
		{"broker URL from env", "${FO_TOKEN}", dirStore, "${BROKER_URL}", ""},
		{"broker guest on loopback", "${FO_TOKEN}", dirStore, "amqp://guest:guest@127.0.0.1:5672/", ""},
		{"token literal before an empty variable", "Literal${EMPTY}", dirStore, "amqp://guest:guest@127.0.0.1/", "fo.auth.token: plain-text secret"},
		{"token literal after a variable", "${EMPTY}Literal", dirStore, "amqp://guest:guest@127.0.0.1/", "fo.auth.token: plain-text secret"},
		{"connection string with a literal key", "${FO_TOKEN}",
			"store:\n  type: azblob\n  connection_string: \"DefaultEndpointsProtocol=https;AccountName=${ACCOUNT};AccountKey=abc123==;EndpointSuffix=core.windows.net\"\n  container: c\n",
			"amqp://guest:guest@127.0.0.1/", "store.connection_string: plain-text secret"},
		{"connection string with a literal SAS", "${FO_TOKEN}",
			"store:\n  type: azblob\n  connection_string: \"BlobEndpoint=https://${ACCOUNT}.blob.core.windows.net;SharedAccessSignature=sv=2022-11-02&sig=abc%3D\"\n  container: c\n",
			"amqp://guest:guest@127.0.0.1/", "store.connection_string: plain-text secret"},
		{"connection string with the key from env", "${FO_TOKEN}",
			"store:\n  type: azblob\n  connection_string: \"DefaultEndpointsProtocol=https;AccountName=acct;AccountKey=${ACCOUNT_KEY}\"\n  container: exports\n",
			"amqp://guest:guest@127.0.0.1/", ""},
		{"SAS URL with a literal sig", "${FO_TOKEN}",
			"store:\n  type: azblob\n  sas_url: \"https://${ACCOUNT}.blob.core.windows.net/c?sv=2022-11-02&sp=rcwl&sig=abc%3D\"\n",
			"amqp://guest:guest@127.0.0.1/", "store.sas_url: plain-text secret"},
		{"SAS URL with sig from env", "${FO_TOKEN}",
			"store:\n  type: azblob\n  sas_url: \"https://acct.blob.core.windows.net/c?sv=2022-11-02&sp=rcwl&sig=${SAS_SIG}\"\n",
			"amqp://guest:guest@127.0.0.1/", ""},
		{"SAS URL with the token from env", "${FO_TOKEN}",
			"store:\n  type: azblob\n  sas_url: \"https://acct.blob.core.windows.net/c?${SAS_TOKEN}\"\n",
			"amqp://guest:guest@127.0.0.1/", ""},
	}
	lookup := func(name string) (string, bool) {
		switch name {
		case "ACCOUNT":
			return "acct", true
		case "ACCOUNT_KEY":
			return "a2V5", true
		case "SAS_SIG":
			return "c2ln", true
		case "SAS_TOKEN":
			return "sv=2022-11-02&sig=c2ln", true
		case "BROKER_URL":
			return "amqp://app:pw@127.0.0.1/", true
		}
		return env(name)
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			_, err := ParseConfig("conf/x.yaml", []byte(fmt.Sprintf(tmpl, tt.token, tt.store, tt.amqp)), lookup)
			if tt.want == "" {
				if err != nil {
					t.Fatalf("ParseConfig: want valid, got %v", err)
				}
				return
			}
			if err == nil || !strings.Contains(err.Error(), tt.want) {
				t.Errorf("ParseConfig error:\n%v\nwant one containing %q", err, tt.want)
			}
			for _, secret := range []string{"Sup3rSecret", "abc123", "abc%3D", "Literal"} {
				if err != nil && strings.Contains(err.Error(), secret) {
					t.Errorf("the problem report repeats the secret %q: %v", secret, err)
				}
			}
		})
	}
}

// aliasBomb builds a configuration whose merge keys and aliases expand to
// 10^levels mappings: a few hundred bytes that would take hours to walk.
func aliasBomb(levels int) string {
	var b strings.Builder
	b.WriteString("x0: &a0 {batch_size: 1}\n")
	for i := 1; i <= levels; i++ {
		fmt.Fprintf(&b, "x%d: &a%d\n  <<: [", i, i)
		for j := range 10 {
			if j > 0 {
				b.WriteString(", ")
			}
			fmt.Fprintf(&b, "*a%d", i-1)
		}
		b.WriteString("]\n")
	}
	return b.String()
}

// TestConfigBombsRefused checks that a configuration that would take
// unbounded time or memory to load is refused quickly with a clear problem.
func TestConfigBombsRefused(t *testing.T) {
	tests := []struct {
		name   string
		config string
		want   string
	}{
		{"merge-key alias chain", aliasBomb(10) + "fo:\n  url: https://x.example\n  auth: {method: default}\nstore: {path: ./d}\nbroker: {type: file, path: ./b}\nexports:\n" +
			"  - {name: a, schedule: '@daily', definition_group: G, legal_entity: USMF, <<: *a10}\n", "aliases expand"},
		{"alias fan-out in a list", "big: &b [1, 2, 3, 4, 5, 6, 7, 8, 9, 10]\nbig2: &b2 [*b, *b, *b, *b, *b, *b, *b, *b, *b, *b]\nbig3: &b3 [*b2, *b2, *b2, *b2, *b2, *b2, *b2, *b2, *b2, *b2]\n" +
			"big4: &b4 [*b3, *b3, *b3, *b3, *b3, *b3, *b3, *b3, *b3, *b3]\nbig5: &b5 [*b4, *b4, *b4, *b4, *b4, *b4, *b4, *b4, *b4, *b4]\nbig6: [*b5, *b5, *b5, *b5, *b5, *b5, *b5, *b5, *b5, *b5]\nexports: []\n", "aliases expand"},
		{"oversized file", "exports: []\n" + "# " + strings.Repeat("x", MaxConfigBytes) + "\n", "over the"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			start := time.Now()
			_, err := ParseConfig("conf/x.yaml", []byte(tt.config), env)
			if err == nil || !strings.Contains(err.Error(), tt.want) {
				t.Errorf("ParseConfig error:\n%v\nwant one containing %q", err, tt.want)
			}
			if d := time.Since(start); d > 5*time.Second {
				t.Errorf("ParseConfig took %s, want it refused at once", d)
			}
		})
	}
}

// TestLoadConfigRefusesOversizedFile checks that LoadConfig does not read
// more than the limit of a huge file.
func TestLoadConfigRefusesOversizedFile(t *testing.T) {
	path := filepath.Join(t.TempDir(), "big.yaml")
	if err := os.WriteFile(path, []byte("exports: []\n# "+strings.Repeat("x", 17<<20)+"\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	_, err := LoadConfig(path)
	if err == nil || !strings.Contains(err.Error(), "over the 1 MiB limit") {
		t.Errorf("LoadConfig of a 17 MB file: want a size problem, got %v", err)
	}
}

// FuzzSecretParts checks the secret-part checks on any raw value: a value
// with no ${VAR} never passes as taken from the environment, a value made
// only of ${VAR} always does, and a URL with a literal password never does.
func FuzzSecretParts(f *testing.F) {
	for _, s := range []string{
		"amqp://admin:Sup3rSecret@${H}/", "amqp://admin:${PW}@h/", "${URL}", "Literal${EMPTY}", "${A}${B}",
		"AccountName=a;AccountKey=${K}", "AccountKey=abc;BlobEndpoint=${E}", "SharedAccessSignature=sv=1&sig=${S}",
		"https://a.blob.core.windows.net/c?sv=1&sig=abc", "https://${A}/c?${SAS}", "amqp://a:b@c@d/", "${", "${}x",
	} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, raw string) {
		for _, key := range []string{"sas_url", "connection_string"} {
			ok := storeSecretFromEnv(key, raw)
			if ok && !usesEnv(raw) {
				t.Fatalf("%s %q: no ${VAR} at all, yet its secret passes as taken from the environment", key, raw)
			}
			if !ok && onlyEnv(raw) {
				t.Fatalf("%s %q: only ${VAR}, yet refused", key, raw)
			}
		}
		if onlyEnv(raw) && !urlPasswordFromEnv(raw) {
			t.Fatalf("URL %q: only ${VAR}, yet refused", raw)
		}
		if u, err := url.Parse(raw); err == nil && !usesEnv(raw) && u.User != nil {
			if pw, has := u.User.Password(); has && pw != "" && urlPasswordFromEnv(raw) {
				t.Fatalf("URL %q: literal password %q passes as taken from the environment", raw, pw)
			}
		}
	})
}

// TestDownloadTimeoutKey checks poll.download_timeout: its default, a
// shared value, an export's override, and a zero refused.
func TestDownloadTimeoutKey(t *testing.T) {
	const tmpl = "fo:\n  url: https://contoso.operations.dynamics.com\n  auth: {method: default}\nstore: {path: ./d}\nbroker: {type: file, path: ./b}\n%sexports:\n  - {name: a, schedule: '@daily', definition_group: G, legal_entity: USMF%s}\n"
	tests := []struct {
		name, shared, export string
		want                 time.Duration
		wantErr              string
	}{
		{"unset: zero, the downloader's default", "", "", 0, ""},
		{"shared", "poll: {download_timeout: 90m}\n", "", 90 * time.Minute, ""},
		{"export override", "poll: {download_timeout: 90m}\n", ", poll: {download_timeout: 10m}", 10 * time.Minute, ""},
		{"zero refused", "poll: {download_timeout: 0s}\n", "", 0, "poll.download_timeout: 0s must be positive"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			cfg, err := ParseConfig("conf/x.yaml", []byte(fmt.Sprintf(tmpl, tt.shared, tt.export)), env)
			if tt.wantErr != "" {
				if err == nil || !strings.Contains(err.Error(), tt.wantErr) {
					t.Errorf("ParseConfig error: want one containing %q, got %v", tt.wantErr, err)
				}
				return
			}
			if err != nil {
				t.Fatalf("ParseConfig: %v", err)
			}
			if got := cfg.Exports[0].Poll.DownloadTimeout; got != tt.want {
				t.Errorf("download timeout: want %s, got %s", tt.want, got)
			}
		})
	}
}
