package jobs

import (
	"context"
	"encoding/json"
	"fmt"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/dmfexport/dmfexport/dmf/dmftest"
	"github.com/dmfexport/dmfexport/publish"
	"github.com/dmfexport/dmfexport/runs"
)

// barrierSink holds the first batch of each entity until `want` entities
// have started, so a run passes only if that many publish at once. It keeps
// each entity's batch numbers in the order they arrived, and the entities
// in the order they started.
type barrierSink struct {
	want    int
	mu      sync.Mutex
	started map[string]bool
	all     chan struct{}
	order   map[string][]int
	starts  []string
}

// bodyEntity is the entity a batch's body names.
func bodyEntity(body []byte) (string, error) {
	var b struct {
		Data struct {
			Entity string `json:"entity"`
		} `json:"data"`
	}
	err := json.Unmarshal(body, &b)
	return b.Data.Entity, err
}

func (s *barrierSink) Publish(ctx context.Context, m publish.Message) error {
	entity, err := bodyEntity(m.Body)
	if err != nil {
		return err
	}
	s.mu.Lock()
	first := !s.started[entity]
	s.started[entity] = true
	if first {
		s.starts = append(s.starts, entity)
	}
	if first && len(s.started) == s.want {
		close(s.all)
	}
	batch, _ := strconv.Atoi(m.MessageID[strings.LastIndexByte(m.MessageID, '/')+1:]) // <execution>/<entity>/<batch>
	s.order[entity] = append(s.order[entity], batch)
	s.mu.Unlock()
	if first {
		select {
		case <-s.all:
		case <-time.After(10 * time.Second):
			return fmt.Errorf("entity %s waited 10s for %d entities to publish at once", entity, s.want)
		case <-ctx.Done():
			return ctx.Err()
		}
	}
	if m.OnStored != nil {
		m.OnStored()
	}
	return nil
}

func (s *barrierSink) Flush(ctx context.Context) error { return ctx.Err() }
func (s *barrierSink) Close() error                    { return nil }

func TestParallelEntities(t *testing.T) {
	tests := []struct {
		name     string
		parallel int
		entities int
	}{
		{"three at once", 3, 3},
		{"two at once, five entities", 2, 5},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			bubble(t, func(t *testing.T) {
				var ents []dmftest.Entity
				for i := 0; i < tt.entities; i++ {
					ents = append(ents, csvEntity(fmt.Sprintf("E%d", i), 450))
				}
				sim := newSim(dmftest.Options{Projects: map[string][]dmftest.Entity{"G": ents}, ExecutionTime: 20 * time.Millisecond})
				defer sim.Close()
				exp := fileExport(sim, t.TempDir())
				exp.ParallelEntities = tt.parallel
				sink := &barrierSink{want: tt.parallel, started: map[string]bool{}, all: make(chan struct{}), order: map[string][]int{}}
				r := &Runner{NewSink: func(context.Context, *Export) (publish.Sink, error) { return sink, nil }}
				rec, err := r.Run(context.Background(), exp, RunOptions{Trigger: "manual"})
				if err != nil {
					t.Fatalf("Run with parallel_entities %d: %v", tt.parallel, err)
				}
				for _, e := range rec.Entities {
					if e.State != runs.StateSucceeded || e.Rows != 450 || e.Batches != 5 {
						t.Errorf("entity %s: want succeeded with 450 rows in 5 batches, got %s, %d rows, %d batches (%s)", e.Entity, e.State, e.Rows, e.Batches, e.Error)
					}
					if got := fmt.Sprint(sink.order[e.Entity]); got != "[0 1 2 3 4]" {
						t.Errorf("entity %s: batches arrived as %s, want [0 1 2 3 4]", e.Entity, got)
					}
				}
			})
		})
	}
}

func TestUnconfirmedShare(t *testing.T) {
	tests := []struct {
		name          string
		total, shares int
		want          int
	}{
		{"one sink keeps the setting", 32 << 20, 1, 32 << 20},
		{"four sinks split it", 32 << 20, 4, 8 << 20},
		{"default split", 0, 2, publish.DefaultMaxUnconfirmedBytes / 2},
		{"never below 1 MiB", 2 << 20, 4, 1 << 20},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if got := unconfirmedShare(tt.total, tt.shares); got != tt.want {
				t.Errorf("unconfirmedShare(%d, %d) = %d, want %d", tt.total, tt.shares, got, tt.want)
			}
		})
	}
}

const parallelConfig = `fo:
  url: https://contoso.operations.dynamics.com/
  auth:
    method: token
    token: ${FO_TOKEN}
store:
  type: dir
  path: ./data
broker:
  type: amqp
  url: amqp://u:${MQ_PASSWORD}@127.0.0.1:5672/
exports:
  - name: customers
    schedule: "0 2 * * *"
    definition_group: CustomerExport
    legal_entity: USMF
`

func TestParallelEntitiesConfig(t *testing.T) {
	tests := []struct {
		name, yaml, wantErr string
		want                int
	}{
		{"default", "", "", 0},
		{"set", "    parallel_entities: 3\n", "", 3},
		{"zero refused", "    parallel_entities: 0\n", "parallel_entities", 0},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			env := func(k string) (string, bool) { return "x", true }
			cfg, err := ParseConfig("x.yaml", []byte(parallelConfig+tt.yaml), env)
			if tt.wantErr != "" {
				if err == nil || !strings.Contains(err.Error(), tt.wantErr) {
					t.Fatalf("Parse = %v, want an error about %s", err, tt.wantErr)
				}
				return
			}
			if err != nil {
				t.Fatalf("Parse: %v", err)
			}
			if got := cfg.Exports[0].ParallelEntities; got != tt.want {
				t.Errorf("ParallelEntities = %d, want %d", got, tt.want)
			}
		})
	}
}

// TestSinkMemoryLimit: a sink process's limit counts its sinks, not the
// exports of its configuration.
func TestSinkMemoryLimit(t *testing.T) {
	for _, tt := range []struct {
		sinks int
		want  int64
	}{{1, 40<<20 + 16<<20}, {3, 40<<20 + 3*16<<20}} {
		if got := SinkMemoryLimit(tt.sinks); got != tt.want {
			t.Errorf("%d sinks: want %d MiB, got %d MiB", tt.sinks, tt.want>>20, got>>20)
		}
	}
}

func TestMemoryLimit(t *testing.T) {
	amqpExp := func(unconfirmed int) Export {
		return Export{Broker: BrokerConfig{Type: "amqp", MaxUnconfirmedBytes: unconfirmed}}
	}
	tests := []struct {
		name    string
		exports []Export
		want    int64
	}{
		{"no exports", nil, 40 << 20},
		{"one export, default window", []Export{amqpExp(0)}, 40<<20 + 2*16<<20},
		{"one export, 64 MiB window", []Export{amqpExp(64 << 20)}, 40<<20 + 2*64<<20},
		{"two exports add up", []Export{amqpExp(0), amqpExp(32 << 20)}, 40<<20 + 2*16<<20 + 2*32<<20},
		{"file sinks hold nothing for confirms", []Export{{Broker: BrokerConfig{Type: "file"}}}, 40 << 20},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if got := MemoryLimit(&Config{Exports: tt.exports}); got != tt.want {
				t.Errorf("want %d MiB, got %d MiB", tt.want>>20, got>>20)
			}
		})
	}
}
