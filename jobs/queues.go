package jobs

import (
	"maps"
	"slices"
	"strings"
)

// EnvironmentQueue is the state of one F&O environment's execution slots
// in this process (fo.max_concurrent_exports): how many executions are in
// flight and how many runs wait for a slot.
type EnvironmentQueue struct {
	Environment string // the environment's URL, as the metrics label it
	Limit       int
	InUse       int
	Waiting     int
}

// Queues returns the execution slots of every F&O environment the enabled
// exports of cfg use, sorted by environment; an environment no run of
// this process has used yet shows its configured limit and nothing in use.
func (r *Runner) Queues(cfg *Config) []EnvironmentQueue {
	byKey := map[string]*EnvironmentQueue{}
	for i := range cfg.Exports {
		e := &cfg.Exports[i]
		key := environmentKey(e.FO.URL)
		if !e.Enabled || byKey[key] != nil {
			continue
		}
		limit := e.FO.MaxConcurrentExports
		if limit <= 0 {
			limit = DefaultMaxConcurrentExports
		}
		byKey[key] = &EnvironmentQueue{Environment: key, Limit: limit}
	}
	r.mu.Lock()
	envs := maps.Clone(r.envs)
	r.mu.Unlock()
	out := make([]EnvironmentQueue, 0, len(byKey))
	for key, q := range byKey {
		if env := envs[key]; env != nil {
			q.Limit, q.InUse, q.Waiting = env.slots.state()
		}
		out = append(out, *q)
	}
	slices.SortFunc(out, func(a, b EnvironmentQueue) int { return strings.Compare(a.Environment, b.Environment) })
	return out
}

// state returns the limit, the slots in use and the runs waiting.
func (q *slotQueue) state() (limit, inUse, waiting int) {
	q.mu.Lock()
	defer q.mu.Unlock()
	return q.limit, q.inUse, len(q.waiting)
}
