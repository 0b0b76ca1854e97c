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
	"github.com/dmfexport/dmfexport/runs"
	"github.com/dmfexport/dmfexport/unpack"
)

// Config is a loaded, validated configuration. Every Export carries its
// effective settings: the shared sections with the export's overrides
// applied field by field.
type Config struct {
	Path    string // the file it was loaded from
	Exports []Export
	// Sinks are the queues dmfexport sink lands in databases.
	Sinks []SinkConfig
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
	MaxBatchBytes   int           // encoded rows closing a batch early; 0 → publish.DefaultMaxBatchBytes
	Jitter          time.Duration // random delay before a scheduled run, spreading load
	Partial         string        // on PartiallySucceeded: "fail" or "publish"
	AbsentFiles     string        // an entity file the manifest lists but the package lacks: "empty" or "fail"
	Compression     string        // message bodies: "none", "gzip" or "zstd"
	MaxMessageBytes int           // cap of one message body; 0 → the publisher's default
	// ParallelEntities is how many entities of a run publish at once, each
	// on its own broker connection; 0 → DefaultParallelEntities().
	ParallelEntities int
	// CompressionLevel tunes Compression: 1 (fastest) to 4 for zstd, 1 to 9
	// for gzip; 0 → the fastest level.
	CompressionLevel int
	// Read says how entity files are read where they cannot tell;
	// Entities overrides it per entity name (see readSettings).
	Read     runs.ReadSettings
	Entities map[string]runs.ReadSettings

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

// The values of store.package.
const (
	// PackageKeep stores the package beside its entities: a run cut off
	// before its entities are all stored, or whose record is damaged, is
	// taken up from it.
	PackageKeep = "keep"
	// PackageSkip stores the entities only: such a run downloads the
	// package again from F&O. Half the bytes a store across a network
	// receives, or less.
	PackageSkip = "skip"
)

// StoreConfig says where packages, entity files and run records are kept.
type StoreConfig struct {
	Type   string // "dir" or "azblob"
	Path   string // absolute directory, for dir
	Prefix string // key prefix inside the store, no leading or trailing slash
	// Compress is how entity objects are stored: unpack.CompressNone as
	// the package holds them, or unpack.CompressGzip.
	Compress string
	// Package is whether the downloaded package is stored beside its
	// entities: PackageKeep or PackageSkip.
	Package string

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
	BackpressureTimeout time.Duration // 0 → the sink's default; <0 a nack fails at once
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
	// DownloadStallTimeout is how long a download may bring no bytes
	// before its connection is dropped and the download resumed.
	DownloadStallTimeout time.Duration // 0 → unpack.DefaultStallTimeout
	// MaxPackageBytes bounds a package body sent without a Content-Length.
	MaxPackageBytes int64 // 0 → unpack.DefaultMaxPackageBytes
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
	data, err := readConfig(path)
	if err != nil {
		return nil, err
	}
	return ParseConfig(path, data, os.LookupEnv)
}

// LoadConfigStructure checks the configuration file at path without the
// environment (dmfexport validate --no-env): ${VAR:-default} takes its
// default, and a value holding a ${VAR} without one is neither expanded
// nor checked, nor is what depends on it (an auth method's secrets, a URL's
// host). Everything else is checked as by LoadConfig. The Config it returns
// is for reporting only: its values from the environment are empty.
func LoadConfigStructure(path string) (*Config, error) {
	data, err := readConfig(path)
	if err != nil {
		return nil, err
	}
	return parseConfig(path, data, func(string) (string, bool) { return "", false }, true)
}

// readConfig reads the configuration file at path, at most
// MaxConfigBytes+1 bytes of it.
func readConfig(path string) ([]byte, error) {
	f, err := os.Open(path)
	switch {
	case errors.Is(err, fs.ErrNotExist):
		return nil, fmt.Errorf("read configuration: %w (set --config or DMFEXPORT_CONFIG to the configuration file)", err)
	case err != nil:
		return nil, fmt.Errorf("read configuration: %w", err)
	}
	defer func() { _ = f.Close() }()
	data, err := io.ReadAll(io.LimitReader(f, MaxConfigBytes+1))
	if err != nil {
		return nil, fmt.Errorf("read configuration %s: %w", path, err)
	}
	return data, nil
}

// ParseConfig validates data as the configuration file path (used for
// messages and to resolve relative paths). lookupEnv resolves ${VAR}.
func ParseConfig(path string, data []byte, lookupEnv func(string) (string, bool)) (*Config, error) {
	return parseConfig(path, data, lookupEnv, false)
}

func parseConfig(path string, data []byte, lookupEnv func(string) (string, bool), noEnv bool) (*Config, error) {
	abs, err := filepath.Abs(path)
	if err != nil {
		abs = path
	}
	d := &decoder{file: filepath.Base(path), dir: filepath.Dir(abs), lookupEnv: lookupEnv, noEnv: noEnv}
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
	top := d.mapping(root, "", keysOf(topFields))
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
		topFields[5].decode(d, n, "replicas", cfg)
	}
	if n := top["sinks"]; n != nil {
		sinksField.decode(d, n, "sinks", cfg)
		d.sinkBrokers(cfg, top["broker"])
	}
	expsNode := top["exports"]
	if expsNode == nil && cfg.Sinks != nil {
		if err := d.err(); err != nil { // a file of sinks only
			return nil, err
		}
		return cfg, nil
	}
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
	groups := map[string]groupUse{} // data project → first export naming it
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
			key := dataProject(&e).Key()
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

var (
	nameRE = regexp.MustCompile(`^[A-Za-z0-9][A-Za-z0-9._-]{0,63}$`)
	// containerRE is Azure's rule for container names, but for "--",
	// which is refused separately.
	containerRE = regexp.MustCompile(`^[a-z0-9][a-z0-9-]{1,61}[a-z0-9]$`)
)

// decoder walks the YAML tree, collecting every problem with its position.
type decoder struct {
	file      string
	dir       string
	lookupEnv func(string) (string, bool)
	// noEnv checks the structure only: a ${VAR} without a default is
	// left unexpanded and unchecked (see LoadConfigStructure).
	noEnv    bool
	problems []ConfigProblem
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
	var errs *yaml.LoadErrors
	var e *yaml.LoadError
	switch {
	case errors.As(err, &errs):
		for _, le := range errs.Errors {
			d.yamlError(le)
		}
	case errors.As(err, &e):
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
	if err != nil && d.noEnv && errors.Is(err, errEnvUnset) {
		// Structure only: the value comes from the environment and is
		// not checked; what depends on it is not checked either.
		d.raised++
		return "", false
	}
	if err != nil {
		d.problem(n, path, strings.TrimSuffix(err.Error(), ": "+errEnvUnset.Error()), "set the variable in the environment, give it a default as ${VAR:-default}, or write $$ for a literal $")
		return "", false
	}
	return v, true
}

// errEnvUnset is wrapped by expandEnv's error for a ${VAR} whose variable
// is not set and has no default.
var errEnvUnset = errors.New("unset")

// expandEnv replaces ${VAR} with the variable's value and ${VAR:-default}
// with it or, when it is unset or empty, with default (up to the first
// "}"); $$ is a literal $. An unset variable without a default is an
// error; an empty one expands to "".
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
			name, def, hasDef := strings.Cut(s[i+2:i+2+end], ":-")
			if !envNameRE.MatchString(name) {
				return "", fmt.Errorf("bad environment variable name %q", name)
			}
			v, ok := lookup(name)
			switch {
			case hasDef && v == "":
				v = def // unset or empty, as in a POSIX shell
			case !ok:
				return "", fmt.Errorf("environment variable %s is not set: %w", name, errEnvUnset)
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
	m := d.mapping(n, p, keysOf(exportFields))
	if m == nil {
		return Export{}, false
	}
	before := len(d.problems)
	e := Export{Enabled: true, Compression: "none", Partial: "fail", AbsentFiles: "empty"}
	decodeFields(d, exportFields, m, n, p, &e, nil)
	d.checkRead(n, p, e.Read)
	if e.PackageName == "" {
		e.PackageName = e.DefinitionGroup
	}
	if e.RoutingKey == "" {
		e.RoutingKey = "fo." + e.Name
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
		if m = d.mapping(n, p, keysOf(foFields)); m == nil {
			return c
		}
	}
	decodeFields(d, foFields, m, where(n, exp), p, &c, nil)
	c.Auth = d.auth(m["auth"], where(n, exp), p+".auth")
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
		if m = d.mapping(n, p, keysOf(authFields)); m == nil {
			return c
		}
	}
	decodeFields(d, authFields, m, parent, p, &c, nil)
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
	c := StoreConfig{Type: "dir", Compress: unpack.CompressNone, Package: PackageKeep}
	p = join(p, "store")
	m := map[string]*yaml.Node{}
	if n != nil {
		if m = d.mapping(n, p, keysOf(storeFields)); m == nil {
			return c
		}
	}
	decodeFields(d, storeFields, m, where(n, exp), p, &c, func(c *StoreConfig) string { return c.Type })
	switch c.Type {
	case "dir":
		for _, f := range storeFields {
			if v := m[f.key]; v != nil && f.only == "azblob" {
				d.problem(v, p+"."+f.key, fmt.Sprintf("%s is used only by an azblob store, not by a dir store", f.key), "remove it, or set type: azblob")
			}
		}
	case "azblob":
		d.azblob(&c, m, where(n, exp), p)
	default:
		d.problem(m["type"], p+".type", fmt.Sprintf("unknown store type %q", c.Type), "use dir (a local directory) or azblob (Azure Blob Storage)")
	}
	return c
}

// azblob checks the rules between an Azure Blob Storage store's keys,
// once storeFields has decoded them.
func (d *decoder) azblob(c *StoreConfig, m map[string]*yaml.Node, parent *yaml.Node, p string) {
	if m["account_url"] != nil {
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
	set := 0
	for _, k := range []string{"account_url", "connection_string", "sas_url"} {
		if m[k] != nil {
			set++
		}
	}
	if set != 1 {
		d.problem(parent, p, fmt.Sprintf("azblob store needs exactly one of account_url, connection_string, sas_url (%d given)", set),
			"account_url with auth (Entra ID), connection_string: ${VAR}, or sas_url: ${VAR}")
	}
	// A container given but refused (an invalid name) is reported at its
	// line, not again as missing.
	if c.Container == "" && c.SASURL == "" && m["container"] == nil {
		d.missing(parent, p+".container", "the blob container, created if missing")
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
		if m = d.mapping(n, p, keysOf(brokerFields)); m == nil {
			return c
		}
	}
	decodeFields(d, brokerFields, m, where(n, exp), p, &c, func(c *BrokerConfig) string { return c.Type })
	if v := m["nack_retries"]; v != nil {
		// Checked and ignored: files written for versions that failed a
		// batch after this many nacks still load.
		d.integer(v, p+".nack_retries", 0, 100)
	}
	plaintext := false
	if v := m["allow_plaintext"]; v != nil {
		plaintext, _ = d.boolean(v, p+".allow_plaintext")
	}
	switch c.Type {
	case "amqp":
		if v := m["url"]; v != nil {
			c.URL = d.amqpURL(v, p+".url", plaintext)
		}
	case "file":
	default:
		d.problem(m["type"], p+".type", fmt.Sprintf("unknown broker type %q", c.Type), "use amqp (RabbitMQ) or file (NDJSON files)")
	}
	return c
}

// amqpURL checks broker.url: an amqp(s) URL whose password comes from the
// environment, in clear text only to a loopback host unless plaintext.
func (d *decoder) amqpURL(v *yaml.Node, p string, plaintext bool) Secret {
	raw, _ := d.scalar(v, p)
	s, ok := d.str(v, p)
	if !ok {
		return ""
	}
	u, err := url.Parse(s)
	if err != nil || (u.Scheme != "amqp" && u.Scheme != "amqps") || u.Host == "" {
		d.problem(v, p, "not an amqp:// or amqps:// URL", amqpURLHint)
		return ""
	}
	if pw, has := u.User.Password(); has && pw != "" {
		guest := u.User.Username() == "guest" && pw == "guest" && loopback.Host(u.Hostname())
		if !urlPasswordFromEnv(raw) && !guest {
			d.problem(v, p, "plain-text password in the configuration file", "write the password as ${RABBITMQ_PASSWORD} and set it in the environment")
			return ""
		}
	}
	if u.Scheme == "amqp" && !loopback.Host(u.Hostname()) && !plaintext {
		d.problem(v, p, fmt.Sprintf("amqp URL to non-loopback host %q sends the password and data in clear text", u.Hostname()), "use amqps://, or set broker.allow_plaintext: true on a trusted network")
		return ""
	}
	return Secret(s)
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
		m := d.mapping(qn, qp, keysOf(queueFields))
		if m == nil {
			continue
		}
		var q QueueConfig
		decodeFields(d, queueFields, m, qn, qp, &q, nil)
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
	m := d.mapping(n, p, keysOf(pollFields))
	if m == nil {
		return c
	}
	decodeFields(d, pollFields, m, n, p, &c, nil)
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
	m := d.mapping(n, p, keysOf(retentionFields))
	if m == nil {
		return c
	}
	decodeFields(d, retentionFields, m, n, p, &c, nil)
	return c
}
