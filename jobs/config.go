package jobs

import (
	"cmp"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"net/url"
	"os"
	"path/filepath"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"time"

	"go.yaml.in/yaml/v4"

	"github.com/dmfexport/dmfexport/azauth"
	"github.com/dmfexport/dmfexport/dmf"
	"github.com/dmfexport/dmfexport/internal/loopback"
)

// Config is a loaded, validated configuration. Every Export carries its
// effective settings: the shared sections with the export's overrides
// applied field by field.
type Config struct {
	Path    string // the file it was loaded from
	Exports []Export
	// LeaseTTL is how long a run's lease lives without a heartbeat before
	// another replica sharing the store may take the run over; 0 means
	// DefaultLeaseTTL.
	LeaseTTL time.Duration
	// Warnings are things that do not make the file invalid but change how
	// it runs, such as two exports of one data project (their runs never
	// overlap: the later one is skipped).
	Warnings []ConfigProblem
}

// Export returns the export named name.
func (c *Config) Export(name string) (*Export, bool) {
	for i := range c.Exports {
		if c.Exports[i].Name == name {
			return &c.Exports[i], true
		}
	}
	return nil, false
}

// Export is one export definition with its effective settings. Values are
// already valid: durations are positive, URLs parsed, paths absolute.
type Export struct {
	Name            string // unique; used in the CLI, logs and store keys
	Schedule        string // cron expression, validated
	DefinitionGroup string // the data project in F&O
	PackageName     string
	LegalEntity     string
	ReExecute       bool
	Enabled         bool
	Exchange        string // "" is the default exchange
	RoutingKey      string
	BatchSize       int           // 0 → publish.DefaultBatchSize
	Jitter          time.Duration // random delay before a scheduled run, spreading load
	Partial         string        // on PartiallySucceeded: "fail" or "publish"
	AbsentFiles     string        // an entity file the manifest lists but the package lacks: "empty" or "fail"
	Compression     string        // message bodies: "none", "gzip" or "zstd"
	Delimiter       rune          // CSV field separator; 0 detects it from the header
	MaxMessageBytes int           // cap of one message body; 0 → the publisher's default
	// ParallelEntities is how many entities of a run publish at once, each
	// on its own broker connection; 0 → DefaultParallelEntities().
	ParallelEntities int
	// CompressionLevel tunes Compression: 1 (fastest) to 4 for zstd, 1 to 9
	// for gzip; 0 → the fastest level.
	CompressionLevel int

	FO        FOConfig
	Store     StoreConfig
	Broker    BrokerConfig
	Poll      PollConfig
	Retention RetentionConfig
}

// FOConfig locates and authenticates against an F&O environment.
type FOConfig struct {
	URL  *url.URL
	Auth AuthConfig

	MaxRetries      int           // retries of one call after 429/5xx/timeout/reset; -1 none; 0 the client's default
	RetryBaseDelay  time.Duration // 0: the client's default
	RetryMaxDelay   time.Duration
	MaxThrottleWait time.Duration
	RequestTimeout  time.Duration // one HTTP request; 0 → dmf.DefaultRequestTimeout

	// MaxConcurrentExports and MaxRequestsPerMinute are limits of the
	// environment (every export with the same URL in this process shares
	// them; the configuration refuses exports of one URL that disagree):
	// executions in flight in F&O at once, and the pace of all calls.
	MaxConcurrentExports int // 0 → DefaultMaxConcurrentExports
	MaxRequestsPerMinute int // 0 → dmf.DefaultRequestsPerMinute
}

// AuthConfig says how to obtain a Microsoft Entra ID token (for F&O, or a
// blob store): azauth's options as the file gives them (paths absolute,
// secrets from the environment), plus F&O's token scope. Only the fields
// of the chosen method are used.
type AuthConfig struct {
	azauth.Options
	// Scope overrides the OAuth scope of F&O tokens (fo.auth only); empty
	// means the client's default, "<scheme>://<host>/.default".
	Scope string
}

// StoreConfig says where packages, entity files and run records are kept.
type StoreConfig struct {
	Type   string // "dir" or "azblob"
	Path   string // absolute directory, for dir
	Prefix string // key prefix inside the store, no leading or trailing slash

	// azblob: exactly one of AccountURL (with Auth), ConnectionString, SASURL.
	AccountURL       string
	Container        string
	ConnectionString Secret
	SASURL           Secret
	Auth             AuthConfig
	BlockSize        int64 // bytes; 0 → the store's default
	Concurrency      int   // 0 → the store's default
}

// BrokerConfig says where batches go.
type BrokerConfig struct {
	Type                string        // "amqp" or "file"
	URL                 Secret        // amqp:// or amqps:// URL, for amqp
	Path                string        // absolute directory of NDJSON files, for file
	ConfirmWindow       int           // 0 → publish.DefaultConfirmWindow
	MaxUnconfirmedBytes int           // 0 → the sink's default
	ReconnectTimeout    time.Duration // 0 → the sink's default; <0 never reconnect
	NackRetries         int           // 0 → the sink's default
	Declare             bool
	Queues              []QueueConfig
}

// QueueConfig is a queue declared and bound to the export's exchange when
// the broker section asks to declare the topology.
type QueueConfig struct {
	Name       string
	BindingKey string
	Quorum     bool
}

// PollConfig bounds the wait for an F&O execution and its package URL.
// A zero field means the default of the package that uses it.
type PollConfig struct {
	Interval              time.Duration // 0 → dmf.DefaultPollInterval
	MaxInterval           time.Duration // 0 → dmf.DefaultPollMaxInterval
	Deadline              time.Duration // 0 → DefaultPollDeadline
	PackageURLTimeout     time.Duration // 0 → dmf.DefaultPackageURLTimeout
	PackageURLInterval    time.Duration // first wait between package URL asks
	PackageURLMaxInterval time.Duration
	// RegisterTimeout is how long an execution this run started (or may
	// have started) may stay unknown to F&O before that is an error.
	RegisterTimeout time.Duration // 0 → dmf.DefaultRegisterTimeout
	// DownloadTimeout bounds the package download, reconnects included.
	DownloadTimeout time.Duration // 0 → unpack.DefaultDownloadTimeout
}

// RetentionConfig says which finished runs are deleted from the store after
// each run: those beyond the newest KeepRuns, and those older than MaxAge.
// Zero disables either rule. Runs that are not finished are never deleted.
type RetentionConfig struct {
	KeepRuns int
	MaxAge   time.Duration
}

// DefaultRetentionMaxAge keeps 30 days of runs unless configured.
const DefaultRetentionMaxAge = 30 * 24 * time.Hour

// Secret holds a credential. It prints as REDACTED in fmt and slog output;
// it is azauth's Secret, so auth sections need no conversion.
// only Reveal gives the value.
type Secret = azauth.Secret

// ConfigProblem is one thing wrong with a configuration file.
type ConfigProblem struct {
	File         string
	Line, Column int    // 1-based; 0 when unknown
	Path         string // key path, e.g. exports[1].schedule
	Message      string
	Hint         string
}

func (p ConfigProblem) String() string {
	var b strings.Builder
	b.WriteString(p.File)
	if p.Line > 0 {
		fmt.Fprintf(&b, ":%d:%d", p.Line, p.Column)
	}
	b.WriteString(": ")
	if p.Path != "" {
		b.WriteString(p.Path + ": ")
	}
	b.WriteString(p.Message)
	if p.Hint != "" {
		b.WriteString(" (hint: " + p.Hint + ")")
	}
	return b.String()
}

// ConfigError lists every problem found in a configuration file.
type ConfigError struct {
	Problems []ConfigProblem
}

func (e *ConfigError) Error() string {
	lines := make([]string, len(e.Problems))
	for i, p := range e.Problems {
		lines[i] = p.String()
	}
	head := "invalid configuration"
	if len(lines) > 1 {
		head = fmt.Sprintf("invalid configuration, %d problems", len(lines))
	}
	return head + ":\n  " + strings.Join(lines, "\n  ")
}

// A key that neither the shared section nor the export sets is left zero
// in the Config: the package that uses the setting applies its own
// default (publish.DefaultBatchSize, publish.DefaultConfirmWindow,
// dmf.DefaultPollInterval, dmf.DefaultPackageURLTimeout,
// unpack.DefaultDownloadTimeout, DefaultPollDeadline, DefaultLeaseTTL, ...),
// so each default is written once. Only keys where the user may write a
// zero of their own (retention.max_age) are filled in here.

// MaxConfigBytes bounds the size of a configuration file: a real one is a
// few KiB, and a file many MiB large would only cost memory to parse.
const MaxConfigBytes = 1 << 20

// maxExpandedNodes bounds the YAML nodes a configuration holds once every
// alias and merge key is expanded, so a few lines of nested aliases (a
// "billion laughs") cannot keep validation busy for hours.
const maxExpandedNodes = 100_000

// LoadConfig reads, expands and validates the configuration file at path.
// A *ConfigError lists every problem at once. A file over MaxConfigBytes is
// refused without being read whole.
func LoadConfig(path string) (*Config, error) {
	f, err := os.Open(path)
	switch {
	case errors.Is(err, fs.ErrNotExist):
		return nil, fmt.Errorf("read configuration: %w (set --config or DMFEXPORT_CONFIG to the configuration file)", err)
	case err != nil:
		return nil, fmt.Errorf("read configuration: %w", err)
	}
	defer f.Close()
	data, err := io.ReadAll(io.LimitReader(f, MaxConfigBytes+1))
	if err != nil {
		return nil, fmt.Errorf("read configuration %s: %w", path, err)
	}
	return ParseConfig(path, data, os.LookupEnv)
}

// ParseConfig validates data as the configuration file path (used for
// messages and to resolve relative paths). lookupEnv resolves ${VAR}.
func ParseConfig(path string, data []byte, lookupEnv func(string) (string, bool)) (*Config, error) {
	abs, err := filepath.Abs(path)
	if err != nil {
		abs = path
	}
	d := &decoder{file: filepath.Base(path), dir: filepath.Dir(abs), lookupEnv: lookupEnv}
	cfg := &Config{Path: path}
	if len(data) > MaxConfigBytes {
		d.problem(nil, "", fmt.Sprintf("the file is over the 1 MiB limit (%d bytes or more)", len(data)),
			"a configuration is a few KiB: check that --config names the configuration file")
		return nil, d.err()
	}
	var doc yaml.Node
	if err := yaml.Unmarshal(data, &doc); err != nil {
		d.yamlError(err)
		return nil, d.err()
	}
	if n := expandedNodes(&doc, map[*yaml.Node]int{}); n > maxExpandedNodes {
		d.problem(nil, "", fmt.Sprintf("aliases expand the file to over %d YAML nodes", maxExpandedNodes),
			"use fewer nested aliases (*name) and merge keys (<<)")
		return nil, d.err()
	}
	root := &doc
	if root.Kind == yaml.DocumentNode && len(root.Content) > 0 {
		root = root.Content[0]
	}
	if root.Kind == 0 || (root.Kind == yaml.ScalarNode && root.Tag == "!!null") {
		d.problem(nil, "", "the file is empty", "see configs/example.yaml for every key")
		return nil, d.err()
	}
	top := d.mapping(root, "", topKeys)
	if top == nil {
		return nil, d.err()
	}
	// Shared sections are checked once on their own so that a mistake in
	// them is reported once, not once per export.
	d.sharedPass = true
	d.fo(top["fo"], root, "")
	d.store(top["store"], root, "")
	d.broker(top["broker"], root, "")
	d.poll(top["poll"], "")
	d.retention(top["retention"], "")
	d.sharedPass = false
	if n := top["replicas"]; n != nil {
		if m := d.mapping(n, "replicas", []string{"lease_ttl"}); m != nil && m["lease_ttl"] != nil {
			if v, ok := d.duration(m["lease_ttl"], "replicas.lease_ttl"); ok {
				if v < 3*time.Second {
					d.problem(m["lease_ttl"], "replicas.lease_ttl", fmt.Sprintf("%s is too short", v), "at least 3s; the lease is refreshed every third of it")
				} else {
					cfg.LeaseTTL = v
				}
			}
		}
	}
	expsNode := top["exports"]
	if expsNode == nil {
		d.missing(root, "exports", "add an exports: list with one entry per export definition")
		return nil, d.err()
	}
	expsNode = resolve(expsNode)
	if expsNode.Kind != yaml.SequenceNode {
		d.problem(expsNode, "exports", "must be a list of export definitions", "write each export as a list item starting with \"- name:\"")
		return nil, d.err()
	}
	if len(expsNode.Content) == 0 {
		d.problem(expsNode, "exports", "the list is empty", "add at least one export definition")
	}
	names := map[string]*yaml.Node{}
	type groupUse struct {
		name string
		line int
	}
	groups := map[string]groupUse{} // groupKey → first export naming it
	envs := map[string]Export{}     // environmentKey → first export naming it
	for i, n := range expsNode.Content {
		p := fmt.Sprintf("exports[%d]", i)
		e, ok := d.export(n, p, top)
		if e.Name != "" {
			if first, dup := names[e.Name]; dup {
				d.problem(n, p+".name", fmt.Sprintf("duplicate export name %q (first at line %d)", e.Name, first.Line), "export names must be unique: rename one")
				continue
			}
			names[e.Name] = n
		}
		if ok {
			env := environmentKey(e.FO.URL)
			if first, seen := envs[env]; !seen {
				envs[env] = e
			} else if cmp.Or(first.FO.MaxConcurrentExports, DefaultMaxConcurrentExports) != cmp.Or(e.FO.MaxConcurrentExports, DefaultMaxConcurrentExports) ||
				cmp.Or(first.FO.MaxRequestsPerMinute, dmf.DefaultRequestsPerMinute) != cmp.Or(e.FO.MaxRequestsPerMinute, dmf.DefaultRequestsPerMinute) {
				d.problem(n, fmt.Sprintf("exports[%d](%s).fo", i, e.Name), fmt.Sprintf("limits of environment %s (max_concurrent_exports %d, max_requests_per_minute %d) differ from those export %q gives it (%d, %d)",
					e.FO.URL.Redacted(), cmp.Or(e.FO.MaxConcurrentExports, DefaultMaxConcurrentExports), cmp.Or(e.FO.MaxRequestsPerMinute, dmf.DefaultRequestsPerMinute),
					first.Name, cmp.Or(first.FO.MaxConcurrentExports, DefaultMaxConcurrentExports), cmp.Or(first.FO.MaxRequestsPerMinute, dmf.DefaultRequestsPerMinute)),
					"every export of one environment shares its limits: set them once, in the shared fo: section")
				ok = false
			}
		}
		if ok {
			cfg.Exports = append(cfg.Exports, e)
			key := groupKey(&e)
			if first, shared := groups[key]; shared {
				cfg.Warnings = append(cfg.Warnings, ConfigProblem{File: d.file, Line: n.Line, Column: n.Column,
					Path: fmt.Sprintf("exports[%d](%s).definition_group", i, e.Name),
					Message: fmt.Sprintf("data project %q is also exported by %q (line %d); F&O cannot export one data project twice at once, "+
						"so their runs never overlap: a run that finds the other one going is skipped", e.DefinitionGroup, first.name, first.line),
					Hint: "give each export its own data project in F&O, or schedule them apart"})
			} else {
				groups[key] = groupUse{e.Name, n.Line}
			}
		}
	}
	if err := d.err(); err != nil {
		return nil, err
	}
	return cfg, nil
}

// section describes one of the shared sections an export may override.
type section struct {
	key  string
	keys []string
}

var (
	topKeys    = []string{"fo", "store", "broker", "poll", "retention", "replicas", "exports"}
	exportKeys = []string{"name", "schedule", "definition_group", "package_name", "legal_entity", "reexecute",
		"enabled", "exchange", "routing_key", "batch_size", "jitter", "partial", "absent_files", "compression", "compression_level", "parallel_entities", "delimiter", "max_message_bytes", "fo", "store", "broker", "poll", "retention"}
	sections = []section{
		{"fo", []string{"url", "auth", "max_retries", "retry_base_delay", "retry_max_delay", "max_throttle_wait", "request_timeout", "max_concurrent_exports", "max_requests_per_minute"}},
		{"store", []string{"type", "path", "prefix", "account_url", "container", "connection_string", "sas_url", "auth", "block_size", "concurrency"}},
		{"broker", []string{"type", "url", "path", "confirm_window", "max_unconfirmed_bytes", "reconnect_timeout", "nack_retries", "declare", "queues", "allow_plaintext"}},
		{"poll", []string{"interval", "max_interval", "deadline", "package_url_timeout", "package_url_interval", "package_url_max_interval", "register_timeout", "download_timeout"}},
		{"retention", []string{"keep_runs", "max_age"}},
	}
	authKeys = []string{"method", "token", "tenant_id", "client_id", "client_secret", "certificate_path", "certificate_password",
		"managed_identity_client_id", "managed_identity_resource_id", "token_file", "authority_host", "disable_instance_discovery", "scope"}
	queueKeys = []string{"name", "binding_key", "quorum"}
	nameRE    = regexp.MustCompile(`^[A-Za-z0-9][A-Za-z0-9._-]{0,63}$`)
	// containerRE is Azure's rule for container names, but for "--",
	// which is refused separately.
	containerRE = regexp.MustCompile(`^[a-z0-9][a-z0-9-]{1,61}[a-z0-9]$`)
)

// decoder walks the YAML tree, collecting every problem with its position.
type decoder struct {
	file      string
	dir       string
	lookupEnv func(string) (string, bool)
	problems  []ConfigProblem
	// sharedPass is set while the shared sections are checked on their own.
	sharedPass bool
	// raised counts problems found, including those not listed again
	// because a shared section's problem was already reported.
	raised int
}

func (d *decoder) problem(n *yaml.Node, path, msg, hint string) {
	d.raised++
	p := ConfigProblem{File: d.file, Path: path, Message: msg, Hint: hint}
	if n != nil {
		p.Line, p.Column = n.Line, n.Column
	}
	if d.sharedPass && strings.HasPrefix(msg, "missing required key") {
		return // an export may still supply it; reported per export
	}
	for _, q := range d.problems {
		if q.Line == p.Line && q.Column == p.Column && q.Message == p.Message && (p.Line > 0 || q.Path == p.Path) {
			return // a shared setting's problem, already reported once
		}
	}
	d.problems = append(d.problems, p)
}

// missing reports a required key that is absent; n is the mapping that
// should hold it.
func (d *decoder) missing(n *yaml.Node, path, hint string) {
	key := path[strings.LastIndexByte(path, '.')+1:]
	d.problem(n, path, fmt.Sprintf("missing required key %q", key), hint)
}

func (d *decoder) err() error {
	if len(d.problems) == 0 {
		return nil
	}
	slices.SortStableFunc(d.problems, func(a, b ConfigProblem) int {
		if a.Line != b.Line {
			return a.Line - b.Line
		}
		return a.Column - b.Column
	})
	return &ConfigError{Problems: d.problems}
}

// yamlError turns a YAML syntax error into problems with positions.
func (d *decoder) yamlError(err error) {
	switch e := err.(type) {
	case *yaml.LoadErrors:
		for _, le := range e.Errors {
			d.yamlError(le)
		}
	case *yaml.LoadError:
		d.problems = append(d.problems, ConfigProblem{File: d.file, Line: e.Mark.Line, Column: e.Mark.Column,
			Message: "YAML: " + e.Message, Hint: "check indentation (spaces, not tabs) and quoting"})
	default:
		d.problems = append(d.problems, ConfigProblem{File: d.file, Message: "YAML: " + err.Error(),
			Hint: "check indentation (spaces, not tabs) and quoting"})
	}
}

// expandedNodes counts the nodes under n with every alias expanded, capped
// just over maxExpandedNodes. Each node is counted once (memo), so the
// count costs time in the size of the file, not of the expansion.
func expandedNodes(n *yaml.Node, memo map[*yaml.Node]int) int {
	if n == nil {
		return 0
	}
	if c, ok := memo[n]; ok {
		return c
	}
	memo[n] = maxExpandedNodes + 1 // an alias to an enclosing node never ends
	c := 1
	if n.Kind == yaml.AliasNode {
		c += expandedNodes(n.Alias, memo)
	}
	for _, ch := range n.Content {
		if c > maxExpandedNodes {
			break
		}
		c += expandedNodes(ch, memo)
	}
	c = min(c, maxExpandedNodes+1)
	memo[n] = c
	return c
}

// resolve follows aliases.
func resolve(n *yaml.Node) *yaml.Node {
	for n != nil && n.Kind == yaml.AliasNode {
		n = n.Alias
	}
	return n
}

// mapping checks that n is a mapping with only allowed keys, none twice, and
// returns its values by key. YAML merge keys (<<) supply defaults.
func (d *decoder) mapping(n *yaml.Node, path string, allowed []string) map[string]*yaml.Node {
	n = resolve(n)
	if n.Kind != yaml.MappingNode {
		if n.Kind == yaml.ScalarNode && n.Tag == "!!null" {
			return map[string]*yaml.Node{}
		}
		d.problem(n, path, "must be a mapping of keys to values", "indent the keys under "+orTop(path))
		return nil
	}
	out := map[string]*yaml.Node{}
	seen := map[string]*yaml.Node{}
	var merged []*yaml.Node
	for i := 0; i+1 < len(n.Content); i += 2 {
		k, v := n.Content[i], n.Content[i+1]
		if k.Value == "<<" && k.Tag == "!!merge" {
			merged = append(merged, v)
			continue
		}
		kp := join(path, k.Value)
		if first, dup := seen[k.Value]; dup {
			d.problem(k, kp, fmt.Sprintf("key %q given twice (first at line %d)", k.Value, first.Line), "remove one of them")
			continue
		}
		seen[k.Value] = k
		if !slices.Contains(allowed, k.Value) {
			hint := "valid keys here: " + strings.Join(allowed, ", ")
			if s := suggest(k.Value, allowed); s != "" {
				hint = fmt.Sprintf("did you mean %q?", s)
			}
			d.problem(k, kp, fmt.Sprintf("unknown key %q", k.Value), hint)
			continue
		}
		out[k.Value] = v
	}
	for _, m := range merged {
		m = resolve(m)
		srcs := []*yaml.Node{m}
		if m.Kind == yaml.SequenceNode {
			srcs = m.Content
		}
		for _, src := range srcs {
			for k, v := range d.mapping(src, path, allowed) {
				if _, set := out[k]; !set {
					out[k] = v
				}
			}
		}
	}
	return out
}

func orTop(path string) string {
	if path == "" {
		return "the top level"
	}
	return path
}

func join(path, key string) string {
	if path == "" {
		return key
	}
	return path + "." + key
}

// suggest returns the allowed key closest to k, if it is close enough to be
// a likely typo.
func suggest(k string, allowed []string) string {
	best, bestDist := "", 1<<30
	for _, a := range allowed {
		if dist := editDistance(strings.ToLower(k), a); dist < bestDist {
			best, bestDist = a, dist
		}
	}
	if bestDist <= max(2, len(k)/3) {
		return best
	}
	return ""
}

func editDistance(a, b string) int {
	prev := make([]int, len(b)+1)
	cur := make([]int, len(b)+1)
	for j := range prev {
		prev[j] = j
	}
	for i := 1; i <= len(a); i++ {
		cur[0] = i
		for j := 1; j <= len(b); j++ {
			cost := 1
			if a[i-1] == b[j-1] {
				cost = 0
			}
			cur[j] = min(prev[j]+1, cur[j-1]+1, prev[j-1]+cost)
		}
		prev, cur = cur, prev
	}
	return prev[len(b)]
}

// scalar returns the raw text of a scalar node (before ${VAR} expansion).
func (d *decoder) scalar(n *yaml.Node, path string) (string, bool) {
	n = resolve(n)
	if n.Kind != yaml.ScalarNode {
		d.problem(n, path, "must be a single value, not a list or mapping", "")
		return "", false
	}
	if n.Tag == "!!null" {
		return "", true
	}
	return n.Value, true
}

// str returns a scalar's value with ${VAR} references expanded.
func (d *decoder) str(n *yaml.Node, path string) (string, bool) {
	raw, ok := d.scalar(n, path)
	if !ok {
		return "", false
	}
	v, err := expandEnv(raw, d.lookupEnv)
	if err != nil {
		d.problem(n, path, err.Error(), "set the variable in the environment, or write $$ for a literal $")
		return "", false
	}
	return v, true
}

// expandEnv replaces ${VAR} with the variable's value; $$ is a literal $.
// An unset variable is an error; an empty one expands to "".
func expandEnv(s string, lookup func(string) (string, bool)) (string, error) {
	if !strings.Contains(s, "$") {
		return s, nil
	}
	var b strings.Builder
	for i := 0; i < len(s); i++ {
		c := s[i]
		if c != '$' || i+1 >= len(s) {
			b.WriteByte(c)
			continue
		}
		switch s[i+1] {
		case '$':
			b.WriteByte('$')
			i++
		case '{':
			end := strings.IndexByte(s[i+2:], '}')
			if end < 0 {
				return "", fmt.Errorf("unterminated ${ in %q", s)
			}
			name := s[i+2 : i+2+end]
			if !envNameRE.MatchString(name) {
				return "", fmt.Errorf("bad environment variable name %q", name)
			}
			v, ok := lookup(name)
			if !ok {
				return "", fmt.Errorf("environment variable %s is not set", name)
			}
			b.WriteString(v)
			i += 2 + end
		default:
			b.WriteByte(c)
		}
	}
	return b.String(), nil
}

var envNameRE = regexp.MustCompile(`^[A-Za-z_][A-Za-z0-9_]*$`)

// usesEnv reports whether a raw value takes some of its content from the
// environment.
func usesEnv(raw string) bool { return strings.Contains(raw, "${") }

// onlyEnv reports whether raw is made only of ${VAR} references: a secret
// written so comes whole from the environment. "Literal${EMPTY}" does not.
func onlyEnv(raw string) bool {
	if raw == "" {
		return false
	}
	for raw != "" {
		end := strings.IndexByte(raw, '}')
		if !strings.HasPrefix(raw, "${") || end < 0 || !envNameRE.MatchString(raw[2:end]) {
			return false
		}
		raw = raw[end+1:]
	}
	return true
}

// urlPasswordFromEnv reports whether the password in a raw (unexpanded) URL
// comes from the environment: the URL as a whole is ${VAR}, it has no
// password, or its password is ${VAR}. A ${VAR} in the host does not count.
func urlPasswordFromEnv(raw string) bool {
	_, rest, ok := strings.Cut(raw, "://")
	if !ok {
		return onlyEnv(raw) || !strings.Contains(raw, "@")
	}
	authority := rest
	if i := strings.IndexAny(rest, "/?#"); i >= 0 {
		authority = rest[:i]
	}
	at := strings.LastIndexByte(authority, '@')
	if at < 0 {
		return true
	}
	_, pw, hasPW := strings.Cut(authority[:at], ":")
	return !hasPW || pw == "" || onlyEnv(pw)
}

// sasFromEnv reports whether the signature (sig) of a raw SAS query comes
// from the environment. A query with no sig of its own must take one from
// a ${VAR}.
func sasFromEnv(query string) bool {
	for _, kv := range strings.Split(query, "&") {
		k, v, _ := strings.Cut(kv, "=")
		if strings.EqualFold(k, "sig") && !onlyEnv(v) {
			return false
		}
	}
	return usesEnv(query)
}

// storeSecretFromEnv reports whether the secret part of a raw connection
// string (AccountKey, SharedAccessSignature's sig) or SAS URL (sig) comes
// from the environment.
func storeSecretFromEnv(key, raw string) bool {
	if onlyEnv(raw) {
		return true
	}
	if !usesEnv(raw) {
		return false
	}
	if key == "sas_url" {
		_, q, _ := strings.Cut(raw, "?")
		return sasFromEnv(q)
	}
	for _, part := range strings.Split(raw, ";") {
		k, v, _ := strings.Cut(part, "=")
		switch strings.ToLower(strings.TrimSpace(k)) {
		case "accountkey":
			if !onlyEnv(v) {
				return false
			}
		case "sharedaccesssignature":
			if !onlyEnv(v) && !sasFromEnv(v) {
				return false
			}
		}
	}
	return true
}

func (d *decoder) boolean(n *yaml.Node, path string) (bool, bool) {
	s, ok := d.str(n, path)
	if !ok {
		return false, false
	}
	switch strings.ToLower(s) {
	case "true", "yes", "on":
		return true, true
	case "false", "no", "off":
		return false, true
	}
	d.problem(n, path, fmt.Sprintf("%q is not true or false", s), "write true or false")
	return false, false
}

func (d *decoder) integer(n *yaml.Node, path string, lo, hi int) (int, bool) {
	s, ok := d.str(n, path)
	if !ok {
		return 0, false
	}
	v, err := strconv.Atoi(strings.ReplaceAll(s, "_", ""))
	if err != nil {
		d.problem(n, path, fmt.Sprintf("%q is not a whole number", s), "")
		return 0, false
	}
	if v < lo || v > hi {
		d.problem(n, path, fmt.Sprintf("%d is out of range", v), fmt.Sprintf("use a value from %d to %d", lo, hi))
		return 0, false
	}
	return v, true
}

func (d *decoder) duration(n *yaml.Node, path string) (time.Duration, bool) {
	s, ok := d.str(n, path)
	if !ok {
		return 0, false
	}
	v, err := time.ParseDuration(s)
	if err != nil {
		d.problem(n, path, fmt.Sprintf("%q is not a duration", s), "write it like 30s, 5m or 1h30m")
		return 0, false
	}
	if v <= 0 {
		d.problem(n, path, fmt.Sprintf("%s must be positive", s), "")
		return 0, false
	}
	return v, true
}

// localPath resolves a path relative to the configuration file's directory.
func (d *decoder) localPath(n *yaml.Node, path string) (string, bool) {
	s, ok := d.str(n, path)
	if !ok || s == "" {
		return s, ok
	}
	if !filepath.IsAbs(s) {
		s = filepath.Join(d.dir, s)
	}
	return filepath.Clean(s), true
}

// requiredPath decodes a required, non-empty local path; parent is the
// mapping that should hold it.
func (d *decoder) requiredPath(v, parent *yaml.Node, path, hint string) string {
	if v == nil {
		d.missing(parent, path, hint)
		return ""
	}
	s, ok := d.localPath(v, path)
	if ok && s == "" {
		d.problem(v, path, "must not be empty", hint)
	}
	return s
}

// overlay returns the section node an export sees: the shared section with
// the export's keys replacing it field by field (nested mappings merge).
func overlay(shared, own *yaml.Node) *yaml.Node {
	shared, own = resolve(shared), resolve(own)
	switch {
	case own == nil:
		return shared
	case shared == nil || shared.Kind != yaml.MappingNode || own.Kind != yaml.MappingNode:
		return own
	}
	out := &yaml.Node{Kind: yaml.MappingNode, Tag: own.Tag, Line: own.Line, Column: own.Column}
	ownKeys := map[string]*yaml.Node{}
	for i := 0; i+1 < len(own.Content); i += 2 {
		ownKeys[own.Content[i].Value] = own.Content[i+1]
	}
	for i := 0; i+1 < len(shared.Content); i += 2 {
		k, v := shared.Content[i], shared.Content[i+1]
		if o, ok := ownKeys[k.Value]; ok {
			if resolve(o).Kind == yaml.MappingNode && resolve(v).Kind == yaml.MappingNode {
				ownKeys[k.Value] = overlay(v, o)
			}
			continue
		}
		out.Content = append(out.Content, k, v)
	}
	for i := 0; i+1 < len(own.Content); i += 2 {
		k := own.Content[i]
		out.Content = append(out.Content, k, ownKeys[k.Value])
	}
	return out
}

// export decodes one export entry with the shared sections applied.
func (d *decoder) export(n *yaml.Node, p string, top map[string]*yaml.Node) (Export, bool) {
	if name := peekName(n); name != "" && nameRE.MatchString(name) {
		p = fmt.Sprintf("%s(%s)", p, name)
	}
	m := d.mapping(n, p, exportKeys)
	if m == nil {
		return Export{}, false
	}
	before := len(d.problems)
	e := Export{Enabled: true}
	req := func(key, hint string) (string, *yaml.Node) {
		v := m[key]
		if v == nil {
			d.missing(n, join(p, key), hint)
			return "", nil
		}
		s, ok := d.str(v, join(p, key))
		if ok && s == "" {
			d.problem(v, join(p, key), "must not be empty", hint)
		}
		return s, v
	}
	var nameNode *yaml.Node
	e.Name, nameNode = req("name", "give the export a unique name such as customers")
	if e.Name != "" && !nameRE.MatchString(e.Name) {
		d.problem(nameNode, p+".name", fmt.Sprintf("%q is not a valid name", e.Name), "use letters, digits, '.', '_' and '-', starting with a letter or digit, at most 64 characters")
	}
	var schedNode *yaml.Node
	e.Schedule, schedNode = req("schedule", `a cron expression such as "0 2 * * *" (five fields, or six with seconds first), or @daily`)
	if e.Schedule != "" {
		if sched, err := cronParser.Parse(strings.TrimSpace(e.Schedule)); err != nil {
			d.problem(schedNode, p+".schedule", fmt.Sprintf("bad cron expression %q: %v", e.Schedule, err),
				`use five fields "min hour day month weekday", six with seconds first, @hourly/@daily/@weekly, or @every 15m; a time zone goes first as CRON_TZ=Europe/Paris`)
		} else if sched.Next(time.Now()).IsZero() {
			d.problem(schedNode, p+".schedule", fmt.Sprintf("cron expression %q never fires", e.Schedule),
				"no date matches its day and month fields (such as February 30th); check them")
		}
	}
	e.DefinitionGroup, _ = req("definition_group", "the name of the export data project in F&O (Data management > Export)")
	e.LegalEntity, _ = req("legal_entity", "the company to export from, e.g. USMF")
	e.PackageName = e.DefinitionGroup
	if v := m["package_name"]; v != nil {
		if s, ok := d.str(v, p+".package_name"); ok && s != "" {
			e.PackageName = s
		}
	}
	if v := m["reexecute"]; v != nil {
		e.ReExecute, _ = d.boolean(v, p+".reexecute")
	}
	if v := m["enabled"]; v != nil {
		e.Enabled, _ = d.boolean(v, p+".enabled")
	}
	if v := m["exchange"]; v != nil {
		e.Exchange, _ = d.str(v, p+".exchange")
	}
	e.RoutingKey = "fo." + e.Name
	if v := m["routing_key"]; v != nil {
		if s, ok := d.str(v, p+".routing_key"); ok && s != "" {
			e.RoutingKey = s
		}
	}
	if v := m["batch_size"]; v != nil {
		e.BatchSize, _ = d.integer(v, p+".batch_size", 1, 1_000_000)
	}
	e.Compression = "none"
	if v := m["compression"]; v != nil {
		if s, ok := d.str(v, p+".compression"); ok {
			if !slices.Contains([]string{"none", "gzip", "zstd"}, s) {
				d.problem(v, p+".compression", fmt.Sprintf("unknown compression %q", s), "use none, gzip or zstd")
			} else {
				e.Compression = s
			}
		}
	}
	if v := m["delimiter"]; v != nil {
		if s, ok := d.str(v, p+".delimiter"); ok {
			switch {
			case s == "tab" || s == "\t":
				e.Delimiter = '\t'
			case len(s) == 1 && s[0] > ' ' && s[0] < 0x7f && s[0] != '"':
				e.Delimiter = rune(s[0])
			default:
				d.problem(v, p+".delimiter", fmt.Sprintf("%q is not one ASCII character", s), `e.g. ";", "|" or tab; leave it out to detect it from the header line`)
			}
		}
	}
	if v := m["parallel_entities"]; v != nil {
		e.ParallelEntities, _ = d.integer(v, p+".parallel_entities", 1, 64)
	}
	if v := m["compression_level"]; v != nil {
		hi := 9
		if e.Compression == "zstd" {
			hi = 4
		}
		e.CompressionLevel, _ = d.integer(v, p+".compression_level", 1, hi)
	}
	if v := m["max_message_bytes"]; v != nil {
		if s, ok := d.str(v, p+".max_message_bytes"); ok {
			if n, err := parseSize(s); err != nil || n < 1<<10 || n > 512<<20 {
				d.problem(v, p+".max_message_bytes", fmt.Sprintf("%q is not a size from 1KiB to 512MiB", s), "e.g. 16MiB; the broker's max_message_size must be at least this")
			} else {
				e.MaxMessageBytes = int(n)
			}
		}
	}
	e.Partial = "fail"
	if v := m["partial"]; v != nil {
		if s, ok := d.str(v, p+".partial"); ok {
			if s != "fail" && s != "publish" {
				d.problem(v, p+".partial", fmt.Sprintf("%q is not fail or publish", s), "fail: a PartiallySucceeded export fails the run; publish: what was exported is published and F&O's errors recorded")
			} else {
				e.Partial = s
			}
		}
	}
	e.AbsentFiles = "empty"
	if v := m["absent_files"]; v != nil {
		if s, ok := d.str(v, p+".absent_files"); ok {
			if s != "empty" && s != "fail" {
				d.problem(v, p+".absent_files", fmt.Sprintf("%q is not empty or fail", s), "empty: a listed file missing from the package is an entity without rows (F&O leaves such files out); fail: it fails the entity")
			} else {
				e.AbsentFiles = s
			}
		}
	}
	if v := m["jitter"]; v != nil {
		e.Jitter, _ = d.duration(v, p+".jitter")
	}
	e.FO = d.fo(overlay(top["fo"], m["fo"]), n, p)
	e.Store = d.store(overlay(top["store"], m["store"]), n, p)
	e.Broker = d.broker(overlay(top["broker"], m["broker"]), n, p)
	e.Poll = d.poll(overlay(top["poll"], m["poll"]), p)
	e.Retention = d.retention(overlay(top["retention"], m["retention"]), p)
	return e, len(d.problems) == before
}

// peekName returns an export entry's name, for problem paths, before the
// entry is checked.
func peekName(n *yaml.Node) string {
	n = resolve(n)
	if n.Kind != yaml.MappingNode {
		return ""
	}
	for i := 0; i+1 < len(n.Content); i += 2 {
		if n.Content[i].Value == "name" && resolve(n.Content[i+1]).Kind == yaml.ScalarNode {
			return resolve(n.Content[i+1]).Value
		}
	}
	return ""
}

// where returns n, or the export's node when a section is absent, for
// positions of "missing" problems.
func where(n, exp *yaml.Node) *yaml.Node {
	if n != nil {
		return n
	}
	return exp
}

func (d *decoder) fo(n, exp *yaml.Node, p string) FOConfig {
	var c FOConfig
	p = join(p, "fo")
	m := map[string]*yaml.Node{}
	if n != nil {
		if m = d.mapping(n, p, sections[0].keys); m == nil {
			return c
		}
	}
	if v := m["url"]; v == nil {
		d.missing(where(n, exp), p+".url", "the F&O environment URL, e.g. https://contoso.operations.dynamics.com")
	} else if s, ok := d.str(v, p+".url"); ok {
		u, err := url.Parse(strings.TrimRight(s, "/"))
		switch {
		case err != nil || u.Host == "" || (u.Scheme != "https" && u.Scheme != "http"):
			d.problem(v, p+".url", fmt.Sprintf("%q is not an http(s) URL", s), "write the environment URL, e.g. https://contoso.operations.dynamics.com")
		case u.Scheme == "http" && !loopback.Host(u.Hostname()):
			d.problem(v, p+".url", fmt.Sprintf("http URL to non-loopback host %q", u.Hostname()), "use https: tokens and data must not cross the network in clear text (http is allowed only for 127.0.0.1/localhost)")
		case u.User != nil || u.RawQuery != "" || u.Fragment != "":
			d.problem(v, p+".url", "must not hold credentials, a query or a fragment", "give only scheme, host and optional path")
		default:
			u.Path = strings.TrimRight(u.Path, "/")
			c.URL = u
		}
	}
	c.Auth = d.auth(m["auth"], where(n, exp), p+".auth")
	if v := m["max_retries"]; v != nil {
		c.MaxRetries, _ = d.integer(v, p+".max_retries", -1, 100)
	}
	if v := m["max_concurrent_exports"]; v != nil {
		if x, ok := d.integer(v, p+".max_concurrent_exports", 1, 1000); ok {
			c.MaxConcurrentExports = x
		}
	}
	if v := m["max_requests_per_minute"]; v != nil {
		if x, ok := d.integer(v, p+".max_requests_per_minute", 1, 100000); ok {
			c.MaxRequestsPerMinute = x
		}
	}
	durations := []struct {
		key string
		dst *time.Duration
	}{
		{"retry_base_delay", &c.RetryBaseDelay},
		{"retry_max_delay", &c.RetryMaxDelay},
		{"max_throttle_wait", &c.MaxThrottleWait},
		{"request_timeout", &c.RequestTimeout},
	}
	for _, dd := range durations {
		if v := m[dd.key]; v != nil {
			if x, ok := d.duration(v, p+"."+dd.key); ok {
				*dd.dst = x
			}
		}
	}
	if c.RetryMaxDelay < c.RetryBaseDelay {
		d.problem(where(m["retry_max_delay"], n), p+".retry_max_delay", fmt.Sprintf("%s is shorter than retry_base_delay %s", c.RetryMaxDelay, c.RetryBaseDelay), "retry_max_delay caps the growing wait")
	}
	return c
}

// auth decodes an auth section (F&O's, or a store's); parent is where a
// missing key is reported. Secrets must come from the environment.
func (d *decoder) auth(n, parent *yaml.Node, p string) AuthConfig {
	c := AuthConfig{Options: azauth.Options{Method: azauth.MethodDefault}}
	before := d.raised
	m := map[string]*yaml.Node{}
	if n != nil {
		if m = d.mapping(n, p, authKeys); m == nil {
			return c
		}
	}
	strs := []struct {
		key string
		dst *string
	}{
		{"tenant_id", &c.TenantID},
		{"client_id", &c.ClientID},
		{"managed_identity_client_id", &c.ManagedIdentityClientID},
		{"managed_identity_resource_id", &c.ManagedIdentityResourceID},
		{"authority_host", &c.AuthorityHost},
		{"scope", &c.Scope},
	}
	for _, sd := range strs {
		if v := m[sd.key]; v != nil {
			*sd.dst, _ = d.str(v, p+"."+sd.key)
		}
	}
	if v := m["method"]; v != nil {
		if s, ok := d.str(v, p+".method"); ok {
			c.Method = s
			if !slices.Contains(azauth.Methods, s) {
				hint := "use one of " + strings.Join(azauth.Methods, ", ")
				if sg := suggest(s, azauth.Methods); sg != "" {
					hint = fmt.Sprintf("did you mean %q?", sg)
				}
				d.problem(v, p+".method", fmt.Sprintf("unknown auth method %q", s), hint)
				return c
			}
		}
	}
	if v := m["certificate_path"]; v != nil {
		c.CertificatePath, _ = d.localPath(v, p+".certificate_path")
	}
	if v := m["token_file"]; v != nil {
		c.TokenFile, _ = d.localPath(v, p+".token_file")
	}
	if v := m["disable_instance_discovery"]; v != nil {
		c.DisableInstanceDiscovery, _ = d.boolean(v, p+".disable_instance_discovery")
	}
	secrets := []struct {
		key  string
		dst  *Secret
		env  string
		used bool
	}{
		{"token", &c.Token, "FO_TOKEN", c.Method == azauth.MethodToken},
		{"client_secret", &c.ClientSecret, "AZURE_CLIENT_SECRET", c.Method == azauth.MethodClientSecret},
		{"certificate_password", &c.CertificatePassword, "AZURE_CLIENT_CERTIFICATE_PASSWORD", c.Method == azauth.MethodClientCertificate},
	}
	for _, sd := range secrets {
		v := m[sd.key]
		if v == nil {
			continue
		}
		raw, _ := d.scalar(v, p+"."+sd.key)
		if raw != "" && !onlyEnv(raw) {
			d.problem(v, p+"."+sd.key, "plain-text secret in the configuration file",
				fmt.Sprintf("write %s: ${%s} and set %s in the environment", sd.key, sd.env, sd.env))
			continue
		}
		s, ok := d.str(v, p+"."+sd.key)
		if ok && s == "" && sd.used {
			d.problem(v, p+"."+sd.key, "is empty", "set the environment variable it names")
		}
		*sd.dst = Secret(s)
	}
	if err := c.Check(); err != nil && d.raised == before {
		at := n
		if at == nil {
			at = parent
		}
		for _, msg := range strings.Split(err.Error(), "; ") {
			d.problem(at, p, msg, "see the auth methods in configs/example.yaml")
		}
	}
	return c
}

func (d *decoder) store(n, exp *yaml.Node, p string) StoreConfig {
	c := StoreConfig{Type: "dir"}
	p = join(p, "store")
	m := map[string]*yaml.Node{}
	if n != nil {
		if m = d.mapping(n, p, sections[1].keys); m == nil {
			return c
		}
	}
	if v := m["type"]; v != nil {
		c.Type, _ = d.str(v, p+".type")
	}
	if v := m["prefix"]; v != nil {
		s, _ := d.str(v, p+".prefix")
		c.Prefix = strings.Trim(s, "/")
		for _, seg := range strings.Split(c.Prefix, "/") {
			if c.Prefix != "" && (seg == "" || seg == "." || seg == "..") {
				d.problem(v, p+".prefix", fmt.Sprintf("%q is not a valid key prefix", s), `use names separated by "/", without "." or ".." segments`)
				break
			}
		}
	}
	switch c.Type {
	case "dir":
		c.Path = d.requiredPath(m["path"], where(n, exp), p+".path", "the directory that keeps packages, entity files and run records, e.g. ./dmfexport-data")
		for _, k := range []string{"account_url", "container", "connection_string", "sas_url", "auth", "block_size", "concurrency"} {
			if v := m[k]; v != nil {
				d.problem(v, p+"."+k, fmt.Sprintf("%s is used only by an azblob store, not by a dir store", k), "remove it, or set type: azblob")
			}
		}
	case "azblob":
		d.azblob(&c, m, where(n, exp), p)
	default:
		d.problem(m["type"], p+".type", fmt.Sprintf("unknown store type %q", c.Type), "use dir (a local directory) or azblob (Azure Blob Storage)")
	}
	return c
}

// azblob decodes the Azure Blob Storage keys of a store section.
func (d *decoder) azblob(c *StoreConfig, m map[string]*yaml.Node, parent *yaml.Node, p string) {
	if v := m["container"]; v != nil {
		if s, ok := d.str(v, p+".container"); ok {
			if !containerRE.MatchString(s) || strings.Contains(s, "--") {
				d.problem(v, p+".container", fmt.Sprintf("%q is not a valid container name", s),
					"Azure requires 3 to 63 lower-case letters, digits and single hyphens, starting and ending with a letter or digit")
			} else {
				c.Container = s
			}
		}
	}
	set := 0
	if v := m["account_url"]; v != nil {
		set++
		if s, ok := d.str(v, p+".account_url"); ok {
			u, err := url.Parse(s)
			switch {
			case err != nil || u.Host == "" || (u.Scheme != "https" && u.Scheme != "http"):
				d.problem(v, p+".account_url", fmt.Sprintf("%q is not a blob endpoint URL", s), "https://<account>.blob.core.windows.net/")
			case u.Scheme == "http" && !loopback.Host(u.Hostname()):
				d.problem(v, p+".account_url", fmt.Sprintf("http URL to non-loopback host %q", u.Hostname()), "use https")
			case u.RawQuery != "":
				d.problem(v, p+".account_url", "holds a query (a SAS?)", "give a SAS as sas_url: ${VAR} instead")
			default:
				c.AccountURL = s
			}
		}
		if m["auth"] == nil {
			d.missing(parent, p+".auth", "account_url signs in with Entra ID: add auth (method: managed_identity, client_secret, ...), or use connection_string or sas_url instead")
		}
		c.Auth = d.auth(m["auth"], parent, p+".auth")
		if c.Auth.Scope != "" {
			d.problem(m["auth"], p+".auth.scope", "scope is used only in fo.auth", "remove it: the blob store always asks for a storage token")
		}
	} else if m["auth"] != nil {
		d.problem(m["auth"], p+".auth", "auth is used only with account_url", "add account_url, or remove auth")
	}
	for _, sk := range []struct {
		key, env string
		dst      *Secret
	}{
		{"connection_string", "AZURE_STORAGE_CONNECTION_STRING", &c.ConnectionString},
		{"sas_url", "EXPORTS_SAS_URL", &c.SASURL},
	} {
		v := m[sk.key]
		if v == nil {
			continue
		}
		set++
		raw, _ := d.scalar(v, p+"."+sk.key)
		if !storeSecretFromEnv(sk.key, raw) {
			d.problem(v, p+"."+sk.key, "plain-text secret in the configuration file", fmt.Sprintf("write %s: ${%s} and set %s in the environment", sk.key, sk.env, sk.env))
			continue
		}
		s, _ := d.str(v, p+"."+sk.key)
		*sk.dst = Secret(s)
	}
	if set != 1 {
		d.problem(parent, p, fmt.Sprintf("azblob store needs exactly one of account_url, connection_string, sas_url (%d given)", set),
			"account_url with auth (Entra ID), connection_string: ${VAR}, or sas_url: ${VAR}")
	}
	if c.Container == "" && c.SASURL == "" {
		d.missing(parent, p+".container", "the blob container, created if missing")
	}
	if v := m["block_size"]; v != nil {
		if s, ok := d.str(v, p+".block_size"); ok {
			n, err := parseSize(s)
			if err != nil || n < 1<<20 || n > 4000<<20 {
				d.problem(v, p+".block_size", fmt.Sprintf("%q is not a size from 1MiB to 4000MiB", s), "e.g. 8MiB")
			} else {
				c.BlockSize = n
			}
		}
	}
	if v := m["concurrency"]; v != nil {
		c.Concurrency, _ = d.integer(v, p+".concurrency", 1, 256)
	}
}

// parseSize reads a byte size: a number with an optional unit B, KiB, MiB,
// GiB (or KB, MB, GB as their binary equivalents).
func parseSize(s string) (int64, error) {
	s = strings.TrimSpace(s)
	i := strings.IndexFunc(s, func(r rune) bool { return (r < '0' || r > '9') && r != '_' })
	num, unit := s, ""
	if i >= 0 {
		num, unit = s[:i], strings.ToLower(strings.TrimSpace(s[i:]))
	}
	n, err := strconv.ParseInt(strings.ReplaceAll(num, "_", ""), 10, 64)
	if err != nil {
		return 0, fmt.Errorf("bad size %q", s)
	}
	mult := map[string]int64{"": 1, "b": 1, "kib": 1 << 10, "kb": 1 << 10, "k": 1 << 10, "mib": 1 << 20, "mb": 1 << 20, "m": 1 << 20, "gib": 1 << 30, "gb": 1 << 30, "g": 1 << 30}[unit]
	if mult == 0 {
		return 0, fmt.Errorf("bad size unit %q", unit)
	}
	return n * mult, nil
}

func (d *decoder) broker(n, exp *yaml.Node, p string) BrokerConfig {
	c := BrokerConfig{Type: "amqp"}
	p = join(p, "broker")
	m := map[string]*yaml.Node{}
	if n != nil {
		if m = d.mapping(n, p, sections[2].keys); m == nil {
			return c
		}
	}
	if v := m["type"]; v != nil {
		c.Type, _ = d.str(v, p+".type")
	}
	if v := m["confirm_window"]; v != nil {
		c.ConfirmWindow, _ = d.integer(v, p+".confirm_window", 1, 65535)
	}
	if v := m["declare"]; v != nil {
		c.Declare, _ = d.boolean(v, p+".declare")
	}
	if v := m["nack_retries"]; v != nil {
		c.NackRetries, _ = d.integer(v, p+".nack_retries", 0, 100)
	}
	if v := m["reconnect_timeout"]; v != nil {
		c.ReconnectTimeout, _ = d.duration(v, p+".reconnect_timeout")
	}
	if v := m["max_unconfirmed_bytes"]; v != nil {
		if s, ok := d.str(v, p+".max_unconfirmed_bytes"); ok {
			if n, err := parseSize(s); err != nil || n < 1<<20 || n > 1<<34 {
				d.problem(v, p+".max_unconfirmed_bytes", fmt.Sprintf("%q is not a size from 1MiB to 16GiB", s), "e.g. 32MiB")
			} else {
				c.MaxUnconfirmedBytes = int(n)
			}
		}
	}
	plaintext := false
	if v := m["allow_plaintext"]; v != nil {
		plaintext, _ = d.boolean(v, p+".allow_plaintext")
	}
	if v := m["queues"]; v != nil {
		c.Queues = d.queues(v, p+".queues")
	}
	switch c.Type {
	case "amqp":
		v := m["url"]
		if v == nil {
			d.missing(where(n, exp), p+".url", "amqps://user:${RABBITMQ_PASSWORD}@host:5671/vhost")
			break
		}
		raw, _ := d.scalar(v, p+".url")
		s, ok := d.str(v, p+".url")
		if !ok {
			break
		}
		u, err := url.Parse(s)
		if err != nil || (u.Scheme != "amqp" && u.Scheme != "amqps") || u.Host == "" {
			d.problem(v, p+".url", "not an amqp:// or amqps:// URL", "amqps://user:${RABBITMQ_PASSWORD}@host:5671/vhost")
			break
		}
		if pw, has := u.User.Password(); has && pw != "" {
			guest := u.User.Username() == "guest" && pw == "guest" && loopback.Host(u.Hostname())
			if !urlPasswordFromEnv(raw) && !guest {
				d.problem(v, p+".url", "plain-text password in the configuration file", "write the password as ${RABBITMQ_PASSWORD} and set it in the environment")
				break
			}
		}
		if u.Scheme == "amqp" && !loopback.Host(u.Hostname()) && !plaintext {
			d.problem(v, p+".url", fmt.Sprintf("amqp URL to non-loopback host %q sends the password and data in clear text", u.Hostname()), "use amqps://, or set broker.allow_plaintext: true on a trusted network")
			break
		}
		c.URL = Secret(s)
	case "file":
		c.Path = d.requiredPath(m["path"], where(n, exp), p+".path", "the directory for NDJSON batch files, e.g. ./batches")
	default:
		d.problem(m["type"], p+".type", fmt.Sprintf("unknown broker type %q", c.Type), "use amqp (RabbitMQ) or file (NDJSON files)")
	}
	return c
}

func (d *decoder) queues(n *yaml.Node, p string) []QueueConfig {
	n = resolve(n)
	if n.Kind != yaml.SequenceNode {
		d.problem(n, p, "must be a list", "- name: my-queue\n  binding_key: fo.#")
		return nil
	}
	var out []QueueConfig
	for i, qn := range n.Content {
		qp := fmt.Sprintf("%s[%d]", p, i)
		m := d.mapping(qn, qp, queueKeys)
		if m == nil {
			continue
		}
		var q QueueConfig
		if v := m["name"]; v == nil {
			d.missing(qn, qp+".name", "the queue name")
		} else {
			q.Name, _ = d.str(v, qp+".name")
		}
		if v := m["binding_key"]; v != nil {
			q.BindingKey, _ = d.str(v, qp+".binding_key")
		}
		if v := m["quorum"]; v != nil {
			q.Quorum, _ = d.boolean(v, qp+".quorum")
		}
		out = append(out, q)
	}
	return out
}

func (d *decoder) poll(n *yaml.Node, p string) PollConfig {
	var c PollConfig
	p = join(p, "poll")
	if n == nil {
		return c
	}
	m := d.mapping(n, p, sections[3].keys)
	if m == nil {
		return c
	}
	set := func(key string, dst *time.Duration) {
		if v := m[key]; v != nil {
			if x, ok := d.duration(v, p+"."+key); ok {
				*dst = x
			}
		}
	}
	set("interval", &c.Interval)
	set("max_interval", &c.MaxInterval)
	set("deadline", &c.Deadline)
	set("package_url_timeout", &c.PackageURLTimeout)
	set("package_url_interval", &c.PackageURLInterval)
	set("package_url_max_interval", &c.PackageURLMaxInterval)
	set("register_timeout", &c.RegisterTimeout)
	set("download_timeout", &c.DownloadTimeout)
	interval := cmp.Or(c.Interval, dmf.DefaultPollInterval)
	if maxInterval := cmp.Or(c.MaxInterval, dmf.DefaultPollMaxInterval); maxInterval < interval {
		d.problem(where(m["max_interval"], n), p+".max_interval", fmt.Sprintf("%s is shorter than interval %s", maxInterval, interval), "max_interval caps the growing wait, so it must be at least interval")
	}
	if deadline := cmp.Or(c.Deadline, DefaultPollDeadline); deadline < interval {
		d.problem(where(m["deadline"], n), p+".deadline", fmt.Sprintf("%s is shorter than interval %s", deadline, interval), "the deadline must leave time for several status checks")
	}
	return c
}

func (d *decoder) retention(n *yaml.Node, p string) RetentionConfig {
	c := RetentionConfig{MaxAge: DefaultRetentionMaxAge}
	p = join(p, "retention")
	if n == nil {
		return c
	}
	m := d.mapping(n, p, sections[4].keys)
	if m == nil {
		return c
	}
	if v := m["keep_runs"]; v != nil {
		c.KeepRuns, _ = d.integer(v, p+".keep_runs", 0, 1_000_000)
	}
	if v := m["max_age"]; v != nil {
		if s, ok := d.str(v, p+".max_age"); ok && (s == "0" || s == "0s") {
			c.MaxAge = 0
		} else {
			c.MaxAge, _ = d.duration(v, p+".max_age")
		}
	}
	return c
}
