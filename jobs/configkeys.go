package jobs

import (
	"fmt"
	"net/url"
	"slices"
	"strings"
	"time"

	"go.yaml.in/yaml/v4"

	"github.com/dmfexport/dmfexport/azauth"
	"github.com/dmfexport/dmfexport/internal/loopback"
	"github.com/dmfexport/dmfexport/unpack"
)

// The configuration file's keys are described once, in the tables below:
// one field per key, with its parser, its destination and its one-line
// description. The decoder takes each section's valid keys (unknown-key
// detection, did-you-mean) and its parsing from them, and a test holds them
// against configs/example.yaml. A simple key is one line; a key whose
// meaning depends on others (a store's type, broker.url's allow_plaintext)
// has no parser here and is decoded by its section's own rules.

// field is one key of a section decoded into a C.
type field[C any] struct {
	key  string
	kind string // the form of its value, for docs: "duration", "int 1..64", ...
	doc  string
	// only names the section type (store.type, broker.type) the key is
	// decoded for; "" means every type.
	only string
	// required is the hint given when the key is missing; "" means the key
	// is optional.
	required string
	// decode checks v and stores it in c; nil means the section's own rules
	// decode the key.
	decode func(d *decoder, v *yaml.Node, p string, c *C)
}

// configKey is one key as documented: its path from the top of the file
// ("poll.register_timeout", "exports[].batch_size", "fo.auth.scope").
type configKey struct {
	path, kind, doc string
}

// keysOf lists the keys of a section, in the table's order (the order of
// "valid keys here" hints).
func keysOf[C any](fields []field[C]) []string {
	keys := make([]string, len(fields))
	for i, f := range fields {
		keys[i] = f.key
	}
	return keys
}

// decodeFields decodes the keys of m that fields describe into c, in the
// table's order, and reports missing required keys at parent. typ gives
// the section's type for fields used by one type only; nil means the
// section has no type.
func decodeFields[C any](d *decoder, fields []field[C], m map[string]*yaml.Node, parent *yaml.Node, p string, c *C, typ func(*C) string) {
	for _, f := range fields {
		if f.only != "" && (typ == nil || typ(c) != f.only) {
			continue
		}
		v := m[f.key]
		if v == nil {
			if f.required != "" {
				d.missing(parent, join(p, f.key), f.required)
			}
			continue
		}
		if f.decode != nil {
			f.decode(d, v, join(p, f.key), c)
		}
	}
}

// section is a key holding a mapping or list decoded by its own rules.
func section[C any](key, kind, doc string) field[C] {
	return field[C]{key: key, kind: kind, doc: doc}
}

func stringField[C any](key, doc string, dst func(*C) *string) field[C] {
	return field[C]{key: key, kind: "string", doc: doc, decode: func(d *decoder, v *yaml.Node, p string, c *C) {
		*dst(c), _ = d.str(v, p)
	}}
}

// defaultedString keeps the value only when it is not empty; the section
// fills in the default afterwards.
func defaultedString[C any](key, doc string, dst func(*C) *string) field[C] {
	return field[C]{key: key, kind: "string", doc: doc, decode: func(d *decoder, v *yaml.Node, p string, c *C) {
		if s, ok := d.str(v, p); ok && s != "" {
			*dst(c) = s
		}
	}}
}

// requiredString is a key that must be given and not empty; check, if not
// nil, validates a non-empty value further.
func requiredString[C any](key, hint, doc string, dst func(*C) *string, check func(d *decoder, v *yaml.Node, p, s string)) field[C] {
	return field[C]{key: key, kind: "string", doc: doc, required: hint, decode: func(d *decoder, v *yaml.Node, p string, c *C) {
		s, ok := d.str(v, p)
		if ok && s == "" {
			d.problem(v, p, "must not be empty", hint)
		}
		*dst(c) = s
		if s != "" && check != nil {
			check(d, v, p, s)
		}
	}}
}

func boolField[C any](key, doc string, dst func(*C) *bool) field[C] {
	return field[C]{key: key, kind: "bool", doc: doc, decode: func(d *decoder, v *yaml.Node, p string, c *C) {
		*dst(c), _ = d.boolean(v, p)
	}}
}

func intField[C any](key string, lo, hi int, doc string, dst func(*C) *int) field[C] {
	return field[C]{key: key, kind: fmt.Sprintf("int %d..%d", lo, hi), doc: doc, decode: func(d *decoder, v *yaml.Node, p string, c *C) {
		*dst(c), _ = d.integer(v, p, lo, hi)
	}}
}

func durationField[C any](key, doc string, dst func(*C) *time.Duration) field[C] {
	return field[C]{key: key, kind: "duration", doc: doc, decode: func(d *decoder, v *yaml.Node, p string, c *C) {
		*dst(c), _ = d.duration(v, p)
	}}
}

// enumField keeps the section's default when the value is not one of
// values; bad is the problem's format, with %q for the value.
func enumField[C any](key string, values []string, bad, hint, doc string, dst func(*C) *string) field[C] {
	return field[C]{key: key, kind: strings.Join(values, "|"), doc: doc, decode: func(d *decoder, v *yaml.Node, p string, c *C) {
		if s, ok := d.str(v, p); ok {
			if !slices.Contains(values, s) {
				d.problem(v, p, fmt.Sprintf(bad, s), hint)
			} else {
				*dst(c) = s
			}
		}
	}}
}

// sizeField reads a byte size such as 16MiB from lo to hi; span names the
// range in the problem ("1MiB to 16GiB").
func sizeField[C any](key string, lo, hi int64, span, hint, doc string, dst func(*C, int64)) field[C] {
	return field[C]{key: key, kind: "size " + span, doc: doc, decode: func(d *decoder, v *yaml.Node, p string, c *C) {
		if s, ok := d.str(v, p); ok {
			if n, err := parseSize(s); err != nil || n < lo || n > hi {
				d.problem(v, p, fmt.Sprintf("%q is not a size from %s", s, span), hint)
			} else {
				dst(c, n)
			}
		}
	}}
}

// pathField is a local path, relative to the configuration file.
func pathField[C any](key, doc string, dst func(*C) *string) field[C] {
	return field[C]{key: key, kind: "path", doc: doc, decode: func(d *decoder, v *yaml.Node, p string, c *C) {
		*dst(c), _ = d.localPath(v, p)
	}}
}

// requiredPath is a local path that must be given and not empty when the
// section's type is only.
func requiredPath[C any](key, only, hint, doc string, dst func(*C) *string) field[C] {
	return field[C]{key: key, kind: "path", doc: doc, only: only, required: hint, decode: func(d *decoder, v *yaml.Node, p string, c *C) {
		s, ok := d.localPath(v, p)
		if ok && s == "" {
			d.problem(v, p, "must not be empty", hint)
		}
		*dst(c) = s
	}}
}

// secretField is a credential that must come from the environment: plain
// tells whether a raw (unexpanded) value holds some of it literally, env
// is the variable the hint suggests, and used, if not nil, tells whether
// the section needs the value (an empty one is then a problem).
func secretField[C any](key, env string, plain func(raw string) bool, used func(*C) bool, doc string, dst func(*C) *Secret) field[C] {
	return field[C]{key: key, kind: "secret ${VAR}", doc: doc, decode: func(d *decoder, v *yaml.Node, p string, c *C) {
		raw, _ := d.scalar(v, p)
		if plain(raw) {
			d.problem(v, p, "plain-text secret in the configuration file",
				fmt.Sprintf("write %s: ${%s} and set %s in the environment", key, env, env))
			return
		}
		s, ok := d.str(v, p)
		if ok && s == "" && used != nil && used(c) {
			d.problem(v, p, "is empty", "set the environment variable it names")
		}
		*dst(c) = Secret(s)
	}}
}

// authSecret is a secret of an auth section, used by one method.
func authSecret(key, env, method, doc string, dst func(*AuthConfig) *Secret) field[AuthConfig] {
	return secretField(key, env, func(raw string) bool { return raw != "" && !onlyEnv(raw) },
		func(c *AuthConfig) bool { return c.Method == method }, doc, dst)
}

// storeSecret is a store credential whose secret part (AccountKey, sig)
// must come from the environment.
func storeSecret(key, env, doc string, dst func(*StoreConfig) *Secret) field[StoreConfig] {
	f := secretField(key, env, func(raw string) bool { return !storeSecretFromEnv(key, raw) }, nil, doc, dst)
	f.only = "azblob"
	return f
}

func azblobOnly[C any](f field[C]) field[C] {
	f.only = "azblob"
	return f
}

const (
	nameHint     = "give the export a unique name such as customers"
	scheduleHint = `a cron expression such as "0 2 * * *" (five fields, or six with seconds first), or @daily`
	foURLHint    = "the F&O environment URL, e.g. https://contoso.operations.dynamics.com"
	amqpURLHint  = "amqps://user:${RABBITMQ_PASSWORD}@host:5671/vhost"
)

// topFields are the top-level keys; the shared sections are decoded by
// ParseConfig, once on their own and once per export.
var topFields = []field[Config]{
	section[Config]("fo", "mapping", "the F&O environment and how to sign in to it"),
	section[Config]("store", "mapping", "where packages, entity files and run records are kept"),
	section[Config]("broker", "mapping", "where batches go"),
	section[Config]("poll", "mapping", "how long to wait for an F&O execution"),
	section[Config]("retention", "mapping", "which finished runs are deleted from the store after each run"),
	{key: "replicas", kind: "mapping", doc: "replicas sharing the store", decode: func(d *decoder, v *yaml.Node, p string, c *Config) {
		if m := d.mapping(v, p, keysOf(replicasFields)); m != nil {
			decodeFields(d, replicasFields, m, v, p, c, nil)
		}
	}},
	section[Config]("exports", "list", "one entry per export definition"),
	sinksField,
}

var replicasFields = []field[Config]{
	{key: "lease_ttl", kind: "duration", doc: "how long a run's lease lives without a heartbeat before another replica may take the run over", decode: func(d *decoder, v *yaml.Node, p string, c *Config) {
		if x, ok := d.duration(v, p); ok {
			if x < 3*time.Second {
				d.problem(v, p, fmt.Sprintf("%s is too short", x), "at least 3s; the lease is refreshed every third of it")
			} else {
				c.LeaseTTL = x
			}
		}
	}},
}

// scheduleCheckFrom is where a schedule is looked for a fire to tell one
// that never fires: any time does, as a schedule that fires at all fires
// within every five years (the span its parser searches), and a fixed one
// keeps loading a configuration free of the clock.
var scheduleCheckFrom = time.Date(2000, 1, 1, 0, 0, 0, 0, time.UTC)

// exportFields are the keys of one exports[] entry; the shared sections
// under it are overlaid on the top-level ones by the export's own rules.
var exportFields = slices.Concat([]field[Export]{
	requiredString("name", nameHint, "unique name; used in the CLI, logs and store keys", func(e *Export) *string { return &e.Name },
		func(d *decoder, v *yaml.Node, p, s string) {
			if !nameRE.MatchString(s) {
				d.problem(v, p, fmt.Sprintf("%q is not a valid name", s), "use letters, digits, '.', '_' and '-', starting with a letter or digit, at most 64 characters")
			}
		}),
	requiredString("schedule", scheduleHint, "cron expression, optionally with CRON_TZ=", func(e *Export) *string { return &e.Schedule },
		func(d *decoder, v *yaml.Node, p, s string) {
			if sched, err := cronParser.Parse(strings.TrimSpace(s)); err != nil {
				d.problem(v, p, fmt.Sprintf("bad cron expression %q: %v", s, err),
					`use five fields "min hour day month weekday", six with seconds first, @hourly/@daily/@weekly, or @every 15m; a time zone goes first as CRON_TZ=Europe/Paris`)
			} else if sched.Next(scheduleCheckFrom).IsZero() {
				d.problem(v, p, fmt.Sprintf("cron expression %q never fires", s),
					"no date matches its day and month fields (such as February 30th); check them")
			}
		}),
	requiredString("definition_group", "the name of the export data project in F&O (Data management > Export)", "the export data project in F&O",
		func(e *Export) *string { return &e.DefinitionGroup }, nil),
	defaultedString("package_name", "name F&O gives the package (default: the definition group)", func(e *Export) *string { return &e.PackageName }),
	requiredString("legal_entity", "the company to export from, e.g. USMF", "company to export from", func(e *Export) *string { return &e.LegalEntity }, nil),
	boolField("reexecute", "reExecute of ExportToPackage", func(e *Export) *bool { return &e.ReExecute }),
	boolField("enabled", "false keeps the export out of the schedule", func(e *Export) *bool { return &e.Enabled }),
	stringField("exchange", "RabbitMQ exchange of every batch", func(e *Export) *string { return &e.Exchange }),
	defaultedString("routing_key", "routing key of every batch (default fo.<name>)", func(e *Export) *string { return &e.RoutingKey }),
	intField("batch_size", 1, 1_000_000, "rows per message", func(e *Export) *int { return &e.BatchSize }),
	sizeField("max_batch_bytes", 1<<10, 512<<20, "1KiB to 512MiB", "e.g. 2_000_000; keep it at most an eighth of broker.max_unconfirmed_bytes",
		"bytes of encoded rows that close a batch before batch_size rows (default 2_000_000)", func(e *Export, n int64) { e.MaxBatchBytes = int(n) }),
	durationField("jitter", "random delay before each scheduled run", func(e *Export) *time.Duration { return &e.Jitter }),
	enumField("partial", []string{"fail", "publish"}, "%q is not fail or publish",
		"fail: a PartiallySucceeded export fails the run; publish: what was exported is published and F&O's errors recorded",
		"on PartiallySucceeded: fail the run, or publish what was exported", func(e *Export) *string { return &e.Partial }),
	enumField("absent_files", []string{"empty", "fail"}, "%q is not empty or fail",
		"empty: a listed file missing from the package is an entity without rows (F&O leaves such files out); fail: it fails the entity",
		"an entity file the manifest lists but the package lacks: empty or fail", func(e *Export) *string { return &e.AbsentFiles }),
	enumField("compression", []string{"none", "gzip", "zstd"}, "unknown compression %q", "use none, gzip or zstd",
		"message bodies: none, gzip or zstd", func(e *Export) *string { return &e.Compression }),
	{key: "compression_level", kind: "int 1..9 (1..4 for zstd)", doc: "compression level, 1 the fastest", decode: func(d *decoder, v *yaml.Node, p string, e *Export) {
		hi := 9
		if e.Compression == "zstd" {
			hi = 4
		}
		e.CompressionLevel, _ = d.integer(v, p, 1, hi)
	}},
	intField("parallel_entities", 1, 64, "entities of a run published at once", func(e *Export) *int { return &e.ParallelEntities }),
	sizeField("max_message_bytes", 1<<10, 512<<20, "1KiB to 512MiB", "e.g. 16MiB; the broker's max_message_size must be at least this",
		"cap of one message body after compression", func(e *Export, n int64) { e.MaxMessageBytes = int(n) }),
}, exportReadFields(), []field[Export]{
	entitiesField,
	section[Export]("fo", "mapping", "overrides of the shared fo section, field by field"),
	section[Export]("store", "mapping", "overrides of the shared store section, field by field"),
	section[Export]("broker", "mapping", "overrides of the shared broker section, field by field"),
	section[Export]("poll", "mapping", "overrides of the shared poll section, field by field"),
	section[Export]("retention", "mapping", "overrides of the shared retention section, field by field"),
})

var foFields = []field[FOConfig]{
	{key: "url", kind: "URL", doc: "environment URL, https (http only to a loopback host)", required: foURLHint, decode: func(d *decoder, v *yaml.Node, p string, c *FOConfig) {
		s, ok := d.str(v, p)
		if !ok {
			return
		}
		u, err := url.Parse(strings.TrimRight(s, "/"))
		switch {
		case err != nil || u.Host == "" || (u.Scheme != "https" && u.Scheme != "http"):
			d.problem(v, p, fmt.Sprintf("%q is not an http(s) URL", s), "write the environment URL, e.g. https://contoso.operations.dynamics.com")
		case u.Scheme == "http" && !loopback.Host(u.Hostname()):
			d.problem(v, p, fmt.Sprintf("http URL to non-loopback host %q", u.Hostname()), "use https: tokens and data must not cross the network in clear text (http is allowed only for 127.0.0.1/localhost)")
		case u.User != nil || u.RawQuery != "" || u.Fragment != "":
			d.problem(v, p, "must not hold credentials, a query or a fragment", "give only scheme, host and optional path")
		default:
			u.Path = strings.TrimRight(u.Path, "/")
			c.URL = u
		}
	}},
	section[FOConfig]("auth", "mapping", "how the Entra ID token is obtained"),
	intField("max_retries", -1, 100, "retries of one call after 429/5xx/timeout/reset; -1 none", func(c *FOConfig) *int { return &c.MaxRetries }),
	durationField("retry_base_delay", "first backoff wait after a transient fault", func(c *FOConfig) *time.Duration { return &c.RetryBaseDelay }),
	durationField("retry_max_delay", "cap of the backoff wait", func(c *FOConfig) *time.Duration { return &c.RetryMaxDelay }),
	durationField("max_throttle_wait", "cap of a wait asked by Retry-After", func(c *FOConfig) *time.Duration { return &c.MaxThrottleWait }),
	durationField("request_timeout", "timeout of one HTTP request to F&O", func(c *FOConfig) *time.Duration { return &c.RequestTimeout }),
	intField("max_concurrent_exports", 1, 1000, "executions in flight in the environment at once", func(c *FOConfig) *int { return &c.MaxConcurrentExports }),
	intField("max_requests_per_minute", 1, 100000, "pace of all F&O calls of the environment", func(c *FOConfig) *int { return &c.MaxRequestsPerMinute }),
}

// authFields are the keys of fo.auth and store.auth.
var authFields = []field[AuthConfig]{
	{key: "method", kind: strings.Join(azauth.Methods, "|"), doc: "how the token is obtained", decode: func(d *decoder, v *yaml.Node, p string, c *AuthConfig) {
		s, ok := d.str(v, p)
		if !ok {
			return
		}
		c.Method = s
		if !slices.Contains(azauth.Methods, s) {
			hint := "use one of " + strings.Join(azauth.Methods, ", ")
			if sg := suggest(s, azauth.Methods); sg != "" {
				hint = fmt.Sprintf("did you mean %q?", sg)
			}
			d.problem(v, p, fmt.Sprintf("unknown auth method %q", s), hint)
		}
	}},
	authSecret("token", "FO_TOKEN", azauth.MethodToken, "a bearer token obtained elsewhere", func(c *AuthConfig) *Secret { return &c.Token }),
	stringField("tenant_id", "directory (tenant) ID or domain", func(c *AuthConfig) *string { return &c.TenantID }),
	stringField("client_id", "application (client) ID", func(c *AuthConfig) *string { return &c.ClientID }),
	authSecret("client_secret", "AZURE_CLIENT_SECRET", azauth.MethodClientSecret, "the client secret value", func(c *AuthConfig) *Secret { return &c.ClientSecret }),
	pathField("certificate_path", "PEM or PFX file of the app's certificate", func(c *AuthConfig) *string { return &c.CertificatePath }),
	authSecret("certificate_password", "AZURE_CLIENT_CERTIFICATE_PASSWORD", azauth.MethodClientCertificate, "password of the PFX", func(c *AuthConfig) *Secret { return &c.CertificatePassword }),
	stringField("managed_identity_client_id", "client ID of a user-assigned managed identity", func(c *AuthConfig) *string { return &c.ManagedIdentityClientID }),
	stringField("managed_identity_resource_id", "resource ID of a user-assigned managed identity", func(c *AuthConfig) *string { return &c.ManagedIdentityResourceID }),
	pathField("token_file", "federated token file for workload_identity", func(c *AuthConfig) *string { return &c.TokenFile }),
	stringField("authority_host", "Entra ID endpoint of another cloud", func(c *AuthConfig) *string { return &c.AuthorityHost }),
	boolField("disable_instance_discovery", "skip instance discovery, for private authority hosts", func(c *AuthConfig) *bool { return &c.DisableInstanceDiscovery }),
	stringField("scope", "OAuth scope of F&O tokens (fo.auth only)", func(c *AuthConfig) *string { return &c.Scope }),
}

var storeFields = []field[StoreConfig]{
	stringField("type", "dir or azblob", func(c *StoreConfig) *string { return &c.Type }),
	requiredPath("path", "dir", "the directory that keeps packages, entity files and run records, e.g. ./dmfexport-data",
		"the directory, for dir", func(c *StoreConfig) *string { return &c.Path }),
	{key: "prefix", kind: "string", doc: "key prefix inside the store", decode: func(d *decoder, v *yaml.Node, p string, c *StoreConfig) {
		s, _ := d.str(v, p)
		c.Prefix = strings.Trim(s, "/")
		for _, seg := range strings.Split(c.Prefix, "/") {
			if c.Prefix != "" && (seg == "" || seg == "." || seg == "..") {
				d.problem(v, p, fmt.Sprintf("%q is not a valid key prefix", s), `use names separated by "/", without "." or ".." segments`)
				break
			}
		}
	}},
	enumField("compress", []string{unpack.CompressNone, unpack.CompressGzip}, "unknown compression %q",
		"use none (entity objects as the package holds them) or gzip (compressed, under their key with .gz appended)",
		"entity objects: none, or gzip (key + .gz)", func(c *StoreConfig) *string { return &c.Compress }),
	enumField("package", []string{PackageKeep, PackageSkip}, "unknown package setting %q",
		"use keep (the package stored beside its entities) or skip (the entities only; a run cut off before they are all stored downloads the package again)",
		"the package: keep, or skip (entities only)", func(c *StoreConfig) *string { return &c.Package }),
	{key: "account_url", kind: "URL", doc: "blob endpoint, used with auth", only: "azblob", decode: func(d *decoder, v *yaml.Node, p string, c *StoreConfig) {
		s, ok := d.str(v, p)
		if !ok {
			return
		}
		u, err := url.Parse(s)
		switch {
		case err != nil || u.Host == "" || (u.Scheme != "https" && u.Scheme != "http"):
			d.problem(v, p, fmt.Sprintf("%q is not a blob endpoint URL", s), "https://<account>.blob.core.windows.net/")
		case u.Scheme == "http" && !loopback.Host(u.Hostname()):
			d.problem(v, p, fmt.Sprintf("http URL to non-loopback host %q", u.Hostname()), "use https")
		case u.RawQuery != "":
			d.problem(v, p, "holds a query (a SAS?)", "give a SAS as sas_url: ${VAR} instead")
		default:
			c.AccountURL = s
		}
	}},
	{key: "container", kind: "string", doc: "blob container, created if missing", only: "azblob", decode: func(d *decoder, v *yaml.Node, p string, c *StoreConfig) {
		if s, ok := d.str(v, p); ok {
			if !containerRE.MatchString(s) || strings.Contains(s, "--") {
				d.problem(v, p, fmt.Sprintf("%q is not a valid container name", s),
					"Azure requires 3 to 63 lower-case letters, digits and single hyphens, starting and ending with a letter or digit")
			} else {
				c.Container = s
			}
		}
	}},
	storeSecret("connection_string", "AZURE_STORAGE_CONNECTION_STRING", "storage account connection string", func(c *StoreConfig) *Secret { return &c.ConnectionString }),
	storeSecret("sas_url", "EXPORTS_SAS_URL", "service or container URL with a SAS token", func(c *StoreConfig) *Secret { return &c.SASURL }),
	azblobOnly(section[StoreConfig]("auth", "mapping", "with account_url: an Entra ID method, same keys as fo.auth")),
	azblobOnly(sizeField("block_size", 1<<20, 4000<<20, "1MiB to 4000MiB", "e.g. 8MiB", "upload block size", func(c *StoreConfig, n int64) { c.BlockSize = n })),
	azblobOnly(intField("concurrency", 1, 256, "blocks uploaded at once per file", func(c *StoreConfig) *int { return &c.Concurrency })),
}

var brokerFields = []field[BrokerConfig]{
	stringField("type", "amqp or file", func(c *BrokerConfig) *string { return &c.Type }),
	{key: "url", kind: "URL secret", doc: "amqp:// or amqps:// URL, the password as ${VAR}", only: "amqp", required: amqpURLHint},
	requiredPath("path", "file", "the directory for NDJSON batch files, e.g. ./batches", "directory of NDJSON files, for file",
		func(c *BrokerConfig) *string { return &c.Path }),
	intField("confirm_window", 1, 65535, "messages published and not yet confirmed, at most", func(c *BrokerConfig) *int { return &c.ConfirmWindow }),
	sizeField("max_unconfirmed_bytes", 1<<20, 1<<34, "1MiB to 16GiB", "e.g. 32MiB", "bytes published and not yet confirmed, at most",
		func(c *BrokerConfig, n int64) { c.MaxUnconfirmedBytes = int(n) }),
	durationField("reconnect_timeout", "how long to keep reconnecting after a lost connection", func(c *BrokerConfig) *time.Duration { return &c.ReconnectTimeout }),
	durationField("backpressure_timeout", "how long to republish nacked batches (queue full) while the broker stores none", func(c *BrokerConfig) *time.Duration { return &c.BackpressureTimeout }),
	{key: "nack_retries", kind: "int (ignored)", doc: "ignored: nacked batches are republished for backpressure_timeout"},
	boolField("declare", "declare the exchange and queues at start", func(c *BrokerConfig) *bool { return &c.Declare }),
	{key: "queues", kind: "list", doc: "with declare: queues bound to each export's exchange", decode: func(d *decoder, v *yaml.Node, p string, c *BrokerConfig) {
		c.Queues = d.queues(v, p)
	}},
	{key: "allow_plaintext", kind: "bool", doc: "allow amqp:// to a non-loopback host"},
}

var queueFields = []field[QueueConfig]{
	{key: "name", kind: "string", doc: "queue name", required: "the queue name", decode: func(d *decoder, v *yaml.Node, p string, q *QueueConfig) {
		q.Name, _ = d.str(v, p)
	}},
	stringField("binding_key", "binding key to the export's exchange", func(q *QueueConfig) *string { return &q.BindingKey }),
	boolField("quorum", "a quorum queue rather than a classic one", func(q *QueueConfig) *bool { return &q.Quorum }),
}

var pollFields = []field[PollConfig]{
	durationField("interval", "first wait between status asks", func(c *PollConfig) *time.Duration { return &c.Interval }),
	durationField("max_interval", "cap of that wait", func(c *PollConfig) *time.Duration { return &c.MaxInterval }),
	durationField("deadline", "give up on an execution after this long", func(c *PollConfig) *time.Duration { return &c.Deadline }),
	durationField("package_url_timeout", "keep asking for a package URL this long", func(c *PollConfig) *time.Duration { return &c.PackageURLTimeout }),
	durationField("package_url_interval", "first wait between package URL asks", func(c *PollConfig) *time.Duration { return &c.PackageURLInterval }),
	durationField("package_url_max_interval", "cap of that wait", func(c *PollConfig) *time.Duration { return &c.PackageURLMaxInterval }),
	durationField("register_timeout", "how long a started execution may stay unknown to F&O", func(c *PollConfig) *time.Duration { return &c.RegisterTimeout }),
	durationField("download_timeout", "give up on a package download after this long", func(c *PollConfig) *time.Duration { return &c.DownloadTimeout }),
	durationField("download_stall_timeout", "resume a package download that brought no bytes for this long", func(c *PollConfig) *time.Duration { return &c.DownloadStallTimeout }),
	sizeField("max_package_bytes", 1<<20, 1<<50, "1MiB to 1PiB", "e.g. 8GiB", "bound of a package body sent without a Content-Length",
		func(c *PollConfig, n int64) { c.MaxPackageBytes = n }),
}

var retentionFields = []field[RetentionConfig]{
	intField("keep_runs", 0, 1_000_000, "keep at most this many finished runs per export", func(c *RetentionConfig) *int { return &c.KeepRuns }),
	{key: "max_age", kind: "duration or 0", doc: "delete finished runs older than this; 0 keeps them", decode: func(d *decoder, v *yaml.Node, p string, c *RetentionConfig) {
		if s, ok := d.str(v, p); ok && (s == "0" || s == "0s") {
			c.MaxAge = 0
		} else {
			c.MaxAge, _ = d.duration(v, p)
		}
	}},
}

// configKeys lists every key of the file with its path, as documented.
// store.auth takes fo.auth's keys, and an export's sections the shared
// ones', so those are listed once.
func configKeys() []configKey {
	var out []configKey
	out = appendKeys(out, "", topFields)
	out = appendKeys(out, "fo.", foFields)
	out = appendKeys(out, "fo.auth.", authFields)
	out = appendKeys(out, "store.", storeFields)
	out = appendKeys(out, "broker.", brokerFields)
	out = appendKeys(out, "broker.queues[].", queueFields)
	out = appendKeys(out, "poll.", pollFields)
	out = appendKeys(out, "retention.", retentionFields)
	out = appendKeys(out, "replicas.", replicasFields)
	out = appendKeys(out, "exports[].", exportFields)
	out = append(out, configKey{path: "exports[].entities.*", kind: "mapping", doc: "one entity's reading settings, under its EntityName"})
	out = appendKeys(out, "exports[].entities.*.", readFields)
	out = appendKeys(out, "sinks[].", sinkFields)
	out = append(out, configKey{path: "sinks[].broker.url", kind: "URL secret", doc: "amqp:// or amqps:// URL, the password as ${VAR}; default: broker.url"})
	out = append(out, configKey{path: "sinks[].entities.*", kind: "mapping", doc: "one entity's landing settings, under its entity name"})
	out = appendKeys(out, "sinks[].entities.*.", sinkEntityFields)
	return out
}

func appendKeys[C any](out []configKey, prefix string, fields []field[C]) []configKey {
	for _, f := range fields {
		out = append(out, configKey{path: prefix + f.key, kind: f.kind, doc: f.doc})
	}
	return out
}
