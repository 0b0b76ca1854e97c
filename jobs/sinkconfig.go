package jobs

import (
	"fmt"
	"net/url"
	"path/filepath"
	"slices"
	"strings"

	"go.yaml.in/yaml/v4"

	"github.com/dmfexport/dmfexport/internal/loopback"
	"github.com/dmfexport/dmfexport/sink"
)

// SinkConfig is one sinks[] entry: a queue consumed into a database by
// dmfexport sink. Values are already valid.
type SinkConfig struct {
	Name string
	// BrokerURL is sinks[].broker.url, else the top-level broker.url.
	BrokerURL     Secret
	Queue         string
	Quorum        bool // default sink.DefaultQuorum
	Exchange      string
	Bindings      []string // routing keys binding Queue to Exchange; none → "#"
	Prefetch      int      // 0 → sink.DefaultPrefetch
	MaxDeliveries int      // 0 → sink.DefaultMaxDeliveries
	// DatabaseURL is database_url: a postgres:// URL, or sqlite: and the
	// absolute path of an SQLite file (see SQLitePath).
	DatabaseURL Secret
	Schema      string // "" → public; PostgreSQL only
	Entities    map[string]sink.EntityOptions

	// pos is where the sink's entry starts in the file, entityPos where
	// each of Entities does: warnings found after loading point there.
	pos       position
	entityPos map[string]position
}

// SQLitePath is the SQLite database file the sink lands in, absolute, or
// "" when it lands in PostgreSQL.
func (s *SinkConfig) SQLitePath() string {
	path, _ := strings.CutPrefix(string(s.DatabaseURL), SQLiteScheme)
	if len(path) == len(s.DatabaseURL) {
		return ""
	}
	return path
}

// position is a place in the configuration file, 1-based.
type position struct{ line, column int }

// Consumes reports whether the sink receives the batches of export e: its
// queue bound to e's exchange with a binding matching e's routing key
// (AMQP topic rules), or, unbound, the queue e publishes to through the
// default exchange.
func (s *SinkConfig) Consumes(e *Export) bool {
	if s.Exchange == "" {
		return e.Exchange == "" && e.RoutingKey == s.Queue
	}
	if e.Exchange != s.Exchange {
		return false
	}
	keys := s.Bindings
	if len(keys) == 0 {
		keys = []string{"#"}
	}
	for _, k := range keys {
		if sink.TopicMatches(k, e.RoutingKey) {
			return true
		}
	}
	return false
}

// Sink returns the sink named name.
func (c *Config) Sink(name string) (*SinkConfig, bool) {
	for i := range c.Sinks {
		if c.Sinks[i].Name == name {
			return &c.Sinks[i], true
		}
	}
	return nil, false
}

// sinksField is the top-level sinks list.
var sinksField = field[Config]{key: "sinks", kind: "list", doc: "one entry per queue landed in a database by dmfexport sink",
	decode: func(d *decoder, v *yaml.Node, p string, c *Config) {
		c.Sinks = d.sinks(v, p)
	}}

var sinkFields = []field[SinkConfig]{
	requiredString("name", "give the sink a unique name such as warehouse", "unique name; used in the CLI and logs", func(s *SinkConfig) *string { return &s.Name },
		func(d *decoder, v *yaml.Node, p, s string) {
			if !nameRE.MatchString(s) {
				d.problem(v, p, fmt.Sprintf("%q is not a valid name", s), "use letters, digits, '.', '_' and '-', starting with a letter or digit, at most 64 characters")
			}
		}),
	{key: "broker", kind: "mapping", doc: "the broker to consume from, if not the top-level one: {url: ...}", decode: func(d *decoder, v *yaml.Node, p string, s *SinkConfig) {
		if m := d.mapping(v, p, []string{"url"}); m != nil && m["url"] != nil {
			s.BrokerURL = d.amqpURL(m["url"], p+".url", false)
		}
	}},
	requiredString("queue", "the queue to consume, e.g. dmfexport.warehouse", "durable queue consumed; declared if missing", func(s *SinkConfig) *string { return &s.Queue }, nil),
	boolField("quorum", "declare the queue (and its dead-letter queue) as a quorum queue; default true", func(s *SinkConfig) *bool { return &s.Quorum }),
	stringField("exchange", "the exporting exchange the queue is bound to (exports[].exchange)", func(s *SinkConfig) *string { return &s.Exchange }),
	{key: "bindings", kind: "list", doc: "routing keys binding the queue to the exchange, e.g. fo.customers; default [\"#\"]", decode: func(d *decoder, v *yaml.Node, p string, s *SinkConfig) {
		s.Bindings = d.names(v, p)
	}},
	intField("prefetch", 1, 1000, "deliveries unacknowledged at most", func(s *SinkConfig) *int { return &s.Prefetch }),
	intField("max_deliveries", 1, 100, "deliveries of a batch that cannot be applied before it is dead-lettered", func(s *SinkConfig) *int { return &s.MaxDeliveries }),
	{key: "database_url", kind: "URL secret", doc: "postgres:// URL of the database, the password as ${VAR}; or sqlite:PATH, an SQLite database file (relative to this file)",
		required: "postgres://dmfexport:${PGPASSWORD}@db:5432/warehouse, or sqlite:data/warehouse.db",
		decode: func(d *decoder, v *yaml.Node, p string, s *SinkConfig) {
			s.DatabaseURL = d.databaseURL(v, p)
		}},
	defaultedString("schema", "PostgreSQL schema of the tables (default public); created if missing", func(s *SinkConfig) *string { return &s.Schema }),
	{key: "entities", kind: "mapping", doc: "settings per entity, by its name in the batches (data.entity)", decode: func(d *decoder, v *yaml.Node, p string, s *SinkConfig) {
		s.Entities, s.entityPos = d.sinkEntities(v, p)
	}},
}

var sinkEntityFields = []field[sink.EntityOptions]{
	stringField("table", "table name (default: the entity name in lower case, other characters as _)", func(o *sink.EntityOptions) *string { return &o.Table }),
	{key: "keys", kind: "list", doc: "natural key columns: the table's primary key, what upsert matches on", decode: func(d *decoder, v *yaml.Node, p string, o *sink.EntityOptions) {
		o.Keys = d.names(v, p)
	}},
	{key: "mode", kind: strings.Join(sink.Modes, "|"), doc: "how batches land; default from the batch's refreshtype", decode: func(d *decoder, v *yaml.Node, p string, o *sink.EntityOptions) {
		if s, ok := d.str(v, p); ok {
			if !slices.Contains(sink.Modes, s) {
				d.problem(v, p, fmt.Sprintf("unknown mode %q", s), "use snapshot, upsert or append")
			} else {
				o.Mode = sink.Mode(s)
			}
		}
	}},
	{key: "include", kind: "list", doc: "only these columns land (keys always do)", decode: func(d *decoder, v *yaml.Node, p string, o *sink.EntityOptions) {
		o.Include = d.names(v, p)
	}},
	{key: "exclude", kind: "list", doc: "these columns never land", decode: func(d *decoder, v *yaml.Node, p string, o *sink.EntityOptions) {
		o.Exclude = d.names(v, p)
	}},
}

// sinks decodes the sinks list.
func (d *decoder) sinks(n *yaml.Node, p string) []SinkConfig {
	n = resolve(n)
	if n.Kind != yaml.SequenceNode {
		d.problem(n, p, "must be a list of sinks", "write each sink as a list item starting with \"- name:\"")
		return nil
	}
	out := []SinkConfig{}
	names := map[string]int{}
	for i, sn := range n.Content {
		sp := fmt.Sprintf("%s[%d]", p, i)
		m := d.mapping(sn, sp, keysOf(sinkFields))
		if m == nil {
			continue
		}
		s := SinkConfig{Quorum: sink.DefaultQuorum, pos: position{sn.Line, sn.Column}}
		decodeFields(d, sinkFields, m, sn, sp, &s, nil)
		if first, dup := names[s.Name]; dup && s.Name != "" {
			d.problem(sn, sp+".name", fmt.Sprintf("duplicate sink name %q (first at line %d)", s.Name, first), "sink names must be unique: rename one")
			continue
		}
		names[s.Name] = sn.Line
		if s.SQLitePath() != "" && s.Schema != "" {
			d.problem(m["schema"], sp+".schema", "a schema with an SQLite database", "remove schema: an SQLite file holds one set of tables; use another file instead")
		}
		if len(s.Bindings) > 0 && s.Exchange == "" {
			d.problem(m["bindings"], sp+".bindings", "bindings without an exchange", "set exchange: to the exports' exchange (the default exchange cannot be bound)")
		}
		out = append(out, s)
	}
	return out
}

// sinkEntities decodes sinks[].entities: settings by entity name, and
// where each entity's entry is.
func (d *decoder) sinkEntities(v *yaml.Node, p string) (map[string]sink.EntityOptions, map[string]position) {
	v = resolve(v)
	if v.Kind != yaml.MappingNode {
		if v.Kind != yaml.ScalarNode || v.Tag != "!!null" {
			d.problem(v, p, "must be a mapping of entity names to settings", `"Customers V3": {keys: [DATAAREAID, CUSTOMERACCOUNT]}`)
		}
		return nil, nil
	}
	out := map[string]sink.EntityOptions{}
	pos := map[string]position{}
	tables := map[string]string{}
	for i := 0; i+1 < len(v.Content); i += 2 {
		k, ev := v.Content[i], v.Content[i+1]
		ep := fmt.Sprintf("%s.%q", p, k.Value)
		if _, dup := out[k.Value]; dup {
			d.problem(k, ep, fmt.Sprintf("entity %q given twice", k.Value), "remove one of them")
			continue
		}
		m := d.mapping(ev, ep, keysOf(sinkEntityFields))
		if m == nil {
			continue
		}
		var o sink.EntityOptions
		decodeFields(d, sinkEntityFields, m, ev, ep, &o, nil)
		switch {
		case o.Mode == sink.Upsert && len(o.Keys) == 0:
			d.problem(ev, ep+".mode", "upsert without keys", "give keys: the entity's natural key columns, e.g. [DATAAREAID, CUSTOMERACCOUNT]")
		case len(o.Table) > 63:
			d.problem(m["table"], ep+".table", "is over 63 bytes", "PostgreSQL cuts longer names: choose a shorter one")
		}
		for _, key := range o.Keys {
			if slices.Contains(o.Exclude, key) {
				d.problem(m["exclude"], ep+".exclude", fmt.Sprintf("excludes key column %q", key), "key columns always land; remove it from exclude")
			}
		}
		table := o.Table
		if table == "" {
			table = sink.TableName(k.Value)
		}
		// SQLite takes names differing in case only as one.
		if other, clash := tables[strings.ToLower(table)]; clash {
			d.problem(k, ep, fmt.Sprintf("lands in table %q as entity %q does (names differing in case only are one table in SQLite)", table, other),
				"give one of them another table:")
		}
		tables[strings.ToLower(table)] = k.Value
		out[k.Value] = o
		pos[k.Value] = position{k.Line, k.Column}
	}
	return out, pos
}

// SQLiteScheme starts a database_url naming an SQLite file: sqlite:PATH.
const SQLiteScheme = "sqlite:"

// databaseURL checks a database URL: postgres:// or postgresql://, its
// password from the environment, a host given; or sqlite:PATH, given back
// with the path made absolute.
func (d *decoder) databaseURL(v *yaml.Node, p string) Secret {
	raw, _ := d.scalar(v, p)
	s, ok := d.str(v, p)
	if !ok {
		return ""
	}
	if path, ok := strings.CutPrefix(s, SQLiteScheme); ok {
		if path = d.sqlitePath(v, p, path); path == "" {
			return ""
		}
		return Secret(SQLiteScheme + path)
	}
	u, err := url.Parse(s)
	if err != nil || (u.Scheme != "postgres" && u.Scheme != "postgresql") {
		d.problem(v, p, "not a postgres:// URL nor sqlite:PATH", "postgres://user:${PGPASSWORD}@host:5432/database, or sqlite:data/warehouse.db")
		return ""
	}
	if pw, has := u.User.Password(); has && pw != "" && !urlPasswordFromEnv(raw) {
		d.problem(v, p, "plain-text password in the configuration file", "write the password as ${PGPASSWORD} and set it in the environment")
		return ""
	}
	if q := u.Query().Get("password"); q != "" && !usesEnv(raw) {
		d.problem(v, p, "plain-text password in the configuration file", "write the password as ${PGPASSWORD} and set it in the environment")
		return ""
	}
	if u.Host != "" && !loopback.Host(u.Hostname()) && u.Query().Get("sslmode") == "disable" {
		d.problem(v, p, fmt.Sprintf("sslmode=disable to non-loopback host %q sends the password and rows in clear text", u.Hostname()), "remove sslmode=disable, or use require or verify-full")
		return ""
	}
	return Secret(s)
}

// sqlitePath checks the PATH of sqlite:PATH, a file path (sqlite:///abs
// also works), and makes it absolute against the configuration file's
// directory.
func (d *decoder) sqlitePath(v *yaml.Node, p, path string) string {
	if rest, ok := strings.CutPrefix(path, "//"); ok {
		if !strings.HasPrefix(rest, "/") {
			d.problem(v, p, fmt.Sprintf("sqlite:%s names a host", path), "give a file path: sqlite:data/warehouse.db or sqlite:/var/lib/dmfexport/warehouse.db")
			return ""
		}
		path = rest
	}
	switch {
	case path == "" || strings.HasSuffix(path, "/"):
		d.problem(v, p, "sqlite: without a file name", "give the database file: sqlite:data/warehouse.db (relative to this file) or an absolute path")
		return ""
	case path == ":memory:" || strings.ContainsAny(path, "?#"):
		d.problem(v, p, fmt.Sprintf("sqlite:%s is not a plain file path", path),
			"give the database file only, such as sqlite:data/warehouse.db: the sink keeps it on disk and sets its own options")
		return ""
	case strings.ContainsRune(path, 0):
		d.problem(v, p, "the path holds a NUL byte", "")
		return ""
	}
	if !filepath.IsAbs(path) {
		path = filepath.Join(d.dir, path)
	}
	return filepath.Clean(path)
}

// sinkBrokers gives the sinks without a broker of their own the top-level
// broker's URL; a sink with neither is a problem.
func (d *decoder) sinkBrokers(cfg *Config, broker *yaml.Node) {
	var shared Secret
	if broker != nil {
		if b := d.broker(broker, nil, ""); b.Type == "amqp" {
			shared = b.URL
		}
	}
	for i := range cfg.Sinks {
		if cfg.Sinks[i].BrokerURL == "" {
			if shared == "" {
				d.problem(broker, fmt.Sprintf("sinks[%d](%s).broker.url", i, cfg.Sinks[i].Name), "no broker to consume from",
					"set broker.url, or the sink's own broker: {url: ...}")
			}
			cfg.Sinks[i].BrokerURL = shared
		}
	}
}

// SetDatabaseFromEnv points sink s at the database the environment
// variable name holds (read through lookup), checked as database_url:
// ${name} would be, a relative sqlite: path being relative to dir. An
// SQLite file drops s's schema; a PostgreSQL URL keeps it.
func (s *SinkConfig) SetDatabaseFromEnv(name string, lookup func(string) (string, bool), dir string) error {
	d := &decoder{file: "$" + name, dir: dir, lookupEnv: lookup}
	u := d.databaseURL(&yaml.Node{Kind: yaml.ScalarNode, Tag: "!!str", Value: "${" + name + "}"}, name)
	if len(d.problems) > 0 {
		p := d.problems[0]
		return fmt.Errorf("%s: %s (%s)", name, p.Message, p.Hint)
	}
	s.DatabaseURL = u
	if s.SQLitePath() != "" {
		s.Schema = ""
	}
	return nil
}

// SinkMemoryLimit is the soft memory limit a `dmfexport sink` process
// running n sinks needs: the base of MemoryLimit, plus, per sink, what its
// consumer holds (sink.ConsumerMemory). Its exports are not its to run.
func SinkMemoryLimit(n int) int64 {
	return memoryBase + int64(n)*sink.ConsumerMemory
}
