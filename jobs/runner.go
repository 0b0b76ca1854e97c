// Package jobs wires the steps of an export — the F&O call (dmf), the
// package unpacking (unpack) and the row publishing (publish) — keeps a run
// record of each run, and owns the schedule.
package jobs

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"os"
	"path"
	"strings"
	"sync"
	"time"

	"github.com/dmfexport/dmfexport/dmf"
	"github.com/dmfexport/dmfexport/publish"
	"github.com/dmfexport/dmfexport/unpack"
)

// ErrAlreadyRunning is returned when a run of the same job is still going in
// this process: two runs of one job never overlap.
var ErrAlreadyRunning = errors.New("a run of this job is already in progress")

// Event is a progress report from a run, for live output.
type Event struct {
	Job    string
	RunID  string
	State  State
	Entity string // set while publishing an entity
	Rows   int64  // rows published so far for Entity
	Detail string // human-readable detail, e.g. the F&O status
}

// Runner executes export runs. It is safe for concurrent use; runs of
// different jobs proceed in parallel, runs of one job never do.
type Runner struct {
	Logger     *slog.Logger
	HTTPClient *http.Client                                                 // for F&O calls and the package download; nil → a default client
	OnEvent    func(Event)                                                  // optional live progress
	NewSink    func(ctx context.Context, exp *Export) (publish.Sink, error) // nil → sink from exp.Broker
	Metrics    *Metrics                                                     // nil → none

	mu      sync.Mutex
	running map[string]bool
}

// RunOptions describe why and when a run starts.
type RunOptions struct {
	Trigger     string    // "schedule", "manual", ...
	ScheduledAt time.Time // zero for manual runs
}

// Run performs one export end to end and returns its record. The record is
// returned even when the run fails; the error then says which step failed
// and what to do.
func (r *Runner) Run(ctx context.Context, exp *Export, opts RunOptions) (*RunRecord, error) {
	if !r.claim(exp.Name) {
		return nil, fmt.Errorf("export %s: %w; wait for it to finish", exp.Name, ErrAlreadyRunning)
	}
	defer r.release(exp.Name)

	st, err := openStore(exp.Store)
	if err != nil {
		return nil, fmt.Errorf("export %s: %w", exp.Name, err)
	}
	now := time.Now().UTC()
	rec := &RunRecord{
		Job:             exp.Name,
		RunID:           newRunID(now),
		Trigger:         opts.Trigger,
		ScheduledAt:     opts.ScheduledAt,
		StartedAt:       now,
		State:           StatePending,
		DefinitionGroup: exp.DefinitionGroup,
		LegalEntity:     exp.LegalEntity,
		Durations:       map[string]string{},
	}
	run := &run{r: r, exp: exp, st: st, rec: rec, log: r.logger().With("job", exp.Name, "run", rec.RunID), steps: map[string]time.Duration{}}
	r.Metrics.runStarted(exp.Name)
	defer func() { r.Metrics.runFinished(rec, run.steps) }()
	if err := run.save(ctx); err != nil {
		return rec, fmt.Errorf("export %s: %w", exp.Name, err)
	}
	runErr := run.execute(ctx)
	rec.FinishedAt = time.Now().UTC()
	switch {
	case runErr != nil:
		rec.State = StateFailed
		rec.Error = runErr.Error()
	case rec.State != StatePartiallySucceeded:
		rec.State = StateSucceeded
	}
	// The final record must land even if ctx was cancelled mid-run.
	saveCtx, cancel := context.WithTimeout(context.WithoutCancel(ctx), 30*time.Second)
	defer cancel()
	if err := run.save(saveCtx); err != nil && runErr == nil {
		runErr = err
	}
	if deleted, err := prune(saveCtx, st, exp, time.Now()); err != nil {
		run.log.Warn("retention: some old runs could not be deleted", "err", err)
	} else if len(deleted) > 0 {
		run.log.Info("retention: old runs deleted", "runs", deleted)
	}
	run.emit(Event{State: rec.State, Detail: rec.Error})
	run.log.Info("run finished", "state", rec.State, "duration", rec.FinishedAt.Sub(rec.StartedAt).Round(time.Millisecond))
	if runErr != nil {
		return rec, fmt.Errorf("export %s run %s: %w", exp.Name, rec.RunID, runErr)
	}
	return rec, nil
}

func (r *Runner) logger() *slog.Logger {
	if r.Logger != nil {
		return r.Logger
	}
	return slog.Default()
}

func (r *Runner) httpClient() *http.Client {
	if r.HTTPClient != nil {
		return r.HTTPClient
	}
	return &http.Client{Timeout: 0, Transport: http.DefaultTransport}
}

func (r *Runner) claim(job string) bool {
	r.mu.Lock()
	defer r.mu.Unlock()
	if r.running == nil {
		r.running = map[string]bool{}
	}
	if r.running[job] {
		return false
	}
	r.running[job] = true
	return true
}

func (r *Runner) release(job string) {
	r.mu.Lock()
	defer r.mu.Unlock()
	delete(r.running, job)
}

// run is the state of one run in progress.
type run struct {
	r     *Runner
	exp   *Export
	st    unpack.Store
	rec   *RunRecord
	log   *slog.Logger
	steps map[string]time.Duration
}

func (u *run) emit(e Event) {
	if u.r.OnEvent == nil {
		return
	}
	e.Job, e.RunID = u.exp.Name, u.rec.RunID
	if e.State == "" {
		e.State = u.rec.State
	}
	u.r.OnEvent(e)
}

func (u *run) save(ctx context.Context) error {
	return saveRecord(ctx, u.st, u.exp.Store.Prefix, u.rec)
}

// enter moves the run to state s and records it durably.
func (u *run) enter(ctx context.Context, s State, detail string) error {
	u.rec.State = s
	u.log.Info("run "+string(s), "detail", detail)
	u.emit(Event{Detail: detail})
	return u.save(ctx)
}

// step runs fn and records how long it took under name.
func (u *run) step(name string, fn func() error) error {
	start := time.Now()
	err := fn()
	d := time.Since(start)
	u.steps[name] = d
	u.rec.Durations[name] = d.Round(time.Millisecond).String()
	return err
}

func (u *run) execute(ctx context.Context) error {
	client, err := dmf.NewClient(u.exp.FO.URL.String(), dmf.StaticToken(u.exp.FO.Auth.Token.Reveal()),
		&dmf.ClientOptions{HTTPClient: u.r.httpClient(), Logger: u.log})
	if err != nil {
		return fmt.Errorf("f&o client: %w", err)
	}

	// 1. Export. The execution ID is chosen here, so a lost answer can be
	// recovered by asking for its status rather than starting a second export.
	u.rec.ExecutionID = newExecutionID(u.exp.DefinitionGroup, u.rec.StartedAt)
	if err := u.enter(ctx, StateExporting, "execution "+u.rec.ExecutionID); err != nil {
		return err
	}
	var status dmf.Status
	err = u.step("export", func() error {
		id, err := client.ExportToPackage(ctx, dmf.ExportRequest{
			DefinitionGroupID: u.exp.DefinitionGroup,
			PackageName:       u.exp.PackageName,
			ExecutionID:       u.rec.ExecutionID,
			ReExecute:         u.exp.ReExecute,
			LegalEntityID:     u.exp.LegalEntity,
		})
		if err != nil {
			return fmt.Errorf("start export of definition group %q: %w", u.exp.DefinitionGroup, err)
		}
		u.rec.ExecutionID = id
		u.log = u.log.With("execution", id)
		status, err = client.PollStatus(ctx, id, dmf.PollOptions{
			Interval:    u.exp.Poll.Interval,
			MaxInterval: u.exp.Poll.MaxInterval,
			Deadline:    u.exp.Poll.Deadline,
			OnStatus: func(s dmf.Status, waited time.Duration) {
				u.emit(Event{Detail: fmt.Sprintf("F&O status %s after %s", s, waited.Round(time.Second))})
			},
		})
		u.rec.ExecutionStatus = string(status)
		if err != nil {
			return fmt.Errorf("wait for execution %s: %w", id, err)
		}
		return nil
	})
	if err != nil {
		return err
	}
	if status != dmf.StatusSucceeded {
		return u.executionFailed(ctx, client, status)
	}

	// 2. Download the package to a temporary file and keep it in the store.
	if err := u.enter(ctx, StateDownloading, ""); err != nil {
		return err
	}
	tmp, err := os.CreateTemp("", "dmfexport-package-*.zip")
	if err != nil {
		return fmt.Errorf("create temporary file for the package: %w", err)
	}
	defer os.Remove(tmp.Name())
	defer tmp.Close()
	err = u.step("download", func() error {
		pkgURL, err := client.WaitPackageURL(ctx, u.rec.ExecutionID, u.exp.Poll.PackageURLTimeout)
		if err != nil {
			return fmt.Errorf("get package URL of execution %s: %w", u.rec.ExecutionID, err)
		}
		u.rec.PackageURL = dmf.RedactURL(pkgURL)
		n, sum, err := unpack.Download(ctx, u.r.httpClient(), pkgURL, tmp)
		if err != nil {
			return fmt.Errorf("download package of execution %s: %w", u.rec.ExecutionID, err)
		}
		u.rec.PackageBytes, u.rec.PackageSHA256 = n, sum
		if _, err := tmp.Seek(0, io.SeekStart); err != nil {
			return fmt.Errorf("rewind package file: %w", err)
		}
		u.rec.PackageKey = path.Join(u.prefix(), "package.zip")
		if _, err := u.st.Put(ctx, u.rec.PackageKey, tmp, u.meta(map[string]string{"sha256": sum})); err != nil {
			return fmt.Errorf("store package: %w", err)
		}
		return nil
	})
	if err != nil {
		return err
	}

	// 3. Explode the package into one object per entity.
	if err := u.enter(ctx, StateUnpacking, fmt.Sprintf("%d bytes", u.rec.PackageBytes)); err != nil {
		return err
	}
	var res *unpack.Result
	err = u.step("unpack", func() error {
		var err error
		res, err = unpack.Explode(ctx, tmp.Name(), u.st, unpack.ExplodeOptions{
			Prefix: path.Join(u.prefix(), "entities"),
			Meta:   u.meta(nil),
		})
		if err != nil {
			return fmt.Errorf("unpack package of execution %s: %w", u.rec.ExecutionID, err)
		}
		return nil
	})
	if err != nil {
		return err
	}
	for _, o := range res.Entities {
		e := EntityRecord{
			Entity: o.Entity, File: o.File, SourceFormat: o.SourceFormat, Format: o.Format, Sheet: o.Sheet,
			Key: o.Key, Bytes: o.Size, SHA256: o.SHA256, State: StatePending,
		}
		if o.Err != nil {
			e.State, e.Error = StateFailed, o.Err.Error()
			u.log.Error("entity cannot be unpacked", "entity", o.Entity, "err", o.Err)
		}
		u.rec.Entities = append(u.rec.Entities, e)
	}
	for _, name := range res.Unlisted {
		u.log.Warn("package file not listed in Manifest.xml, not published", "file", name)
	}
	u.rec.Unpacked = true
	objs := res.Entities

	// 4. Publish every entity; one entity's failure does not stop the others.
	if err := u.enter(ctx, StatePublishing, fmt.Sprintf("%d entities", len(objs))); err != nil {
		return err
	}
	return u.step("publish", func() error { return u.publishAll(ctx) })
}

func (u *run) publishAll(ctx context.Context) error {
	sink, err := u.newSink(ctx)
	if err != nil {
		return err
	}
	defer sink.Close()
	var failed []string
	for i := range u.rec.Entities {
		if ctx.Err() != nil {
			return ctx.Err()
		}
		e := &u.rec.Entities[i]
		if e.State == StateFailed { // could not be unpacked
			failed = append(failed, e.Entity)
			continue
		}
		if err := u.publishEntity(ctx, sink, e); err != nil {
			e.State, e.Error = StateFailed, err.Error()
			u.log.Error("entity failed", "entity", e.Entity, "err", err)
			failed = append(failed, e.Entity)
		} else {
			e.State = StateSucceeded
		}
		if err := u.save(ctx); err != nil {
			return err
		}
	}
	switch {
	case len(failed) == 0:
		return nil
	case len(failed) < len(u.rec.Entities):
		u.rec.State = StatePartiallySucceeded
		u.rec.Error = fmt.Sprintf("%d of %d entities failed: %s", len(failed), len(u.rec.Entities), strings.Join(failed, ", "))
		return nil
	default:
		return fmt.Errorf("every entity failed to publish (%s); see the entity errors in the run record", strings.Join(failed, ", "))
	}
}

// executionFailed builds the error of an execution that did not succeed,
// with F&O's own error messages and a link to its summary page when F&O
// gives them.
func (u *run) executionFailed(ctx context.Context, client *dmf.Client, status dmf.Status) error {
	id := u.rec.ExecutionID
	msg := fmt.Sprintf("F&O execution %s of definition group %q ended %s", id, u.exp.DefinitionGroup, status)
	if errs, err := client.ExecutionErrors(ctx, id); err != nil {
		u.log.Warn("cannot fetch the execution errors", "err", err)
	} else if len(errs) > 0 {
		const maxShown = 5
		shown := errs[:min(len(errs), maxShown)]
		msg += ": " + strings.Join(shown, "; ")
		if len(errs) > maxShown {
			msg += fmt.Sprintf(" (and %d more)", len(errs)-maxShown)
		}
	}
	if page, err := client.SummaryPageURL(ctx, id); err == nil && page != "" {
		msg += "; execution summary: " + page
	} else {
		msg += "; see Data management > Job history in F&O"
	}
	return errors.New(msg)
}

func (u *run) publishEntity(ctx context.Context, sink publish.Sink, e *EntityRecord) error {
	rc, err := u.st.Open(ctx, e.Key)
	if err != nil {
		return fmt.Errorf("entity %s: open stored file: %w", e.Entity, err)
	}
	defer rc.Close()
	log := u.log.With("entity", e.Entity)
	log.Info("publishing entity", "format", e.Format, "bytes", e.Bytes)
	stats, err := publish.PublishEntity(ctx, rc, sink, publish.EntityOptions{
		Job: u.exp.Name, RunID: u.rec.RunID, ExecutionID: u.rec.ExecutionID, Entity: e.Entity,
		Exchange: u.exp.Exchange, RoutingKey: u.exp.RoutingKey, BatchSize: u.exp.BatchSize,
		Format: e.Format, Sheet: e.Sheet,
		Progress: func(s publish.EntityStats) {
			u.r.Metrics.published(u.exp.Name, e.Entity, s.Rows-e.Rows, s.Batches-e.Batches)
			e.Rows, e.Batches = s.Rows, s.Batches
			u.emit(Event{Entity: e.Entity, Rows: s.Rows})
		},
	})
	u.r.Metrics.published(u.exp.Name, e.Entity, stats.Rows-e.Rows, stats.Batches-e.Batches)
	e.Rows, e.Batches = stats.Rows, stats.Batches
	if err != nil {
		return fmt.Errorf("entity %s (%s): %w", e.Entity, e.File, err)
	}
	log.Info("entity published", "rows", stats.Rows, "batches", stats.Batches)
	return nil
}

func (u *run) newSink(ctx context.Context) (publish.Sink, error) {
	if u.r.NewSink != nil {
		return u.r.NewSink(ctx, u.exp)
	}
	return OpenSink(ctx, u.exp, u.log)
}

// OpenSink connects the sink an export's broker section describes and makes
// sure its exchange exists (declaring the topology when asked to).
func OpenSink(ctx context.Context, exp *Export, log *slog.Logger) (publish.Sink, error) {
	b := exp.Broker
	switch b.Type {
	case "file":
		s, err := publish.NewFileSink(b.Path)
		if err != nil {
			return nil, fmt.Errorf("open file sink %s: %w", b.Path, err)
		}
		return s, nil
	case "amqp":
		s, err := publish.DialAMQP(ctx, publish.AMQPOptions{
			URL: b.URL.Reveal(), ConfirmWindow: b.ConfirmWindow, ConnectionName: connectionName(exp.Name), Logger: log,
		})
		if err != nil {
			return nil, err
		}
		if b.Declare {
			t := publish.Topology{Exchange: exp.Exchange}
			for _, q := range b.Queues {
				t.Queues = append(t.Queues, publish.QueueBinding{Queue: q.Name, BindingKey: q.BindingKey, Quorum: q.Quorum})
			}
			err = s.Declare(ctx, t)
		} else if exp.Exchange != "" {
			err = s.CheckExchange(ctx, exp.Exchange)
		}
		if err != nil {
			s.Close()
			return nil, err
		}
		return s, nil
	default:
		return nil, fmt.Errorf("unknown broker type %q", b.Type)
	}
}

func connectionName(job string) string {
	host, _ := os.Hostname()
	return "dmfexport/" + host + "/" + job
}

func (u *run) prefix() string { return runPrefix(u.exp.Store.Prefix, u.exp.Name, u.rec.RunID) }

func (u *run) meta(extra map[string]string) map[string]string {
	m := map[string]string{"job": u.exp.Name, "run": u.rec.RunID, "executionid": u.rec.ExecutionID}
	for k, v := range extra {
		m[k] = v
	}
	return m
}

// openStore opens the store a job's store section describes.
func openStore(c StoreConfig) (unpack.Store, error) {
	switch c.Type {
	case "dir":
		s, err := unpack.NewDirStore(c.Path)
		if err != nil {
			return nil, fmt.Errorf("open store directory %s: %w", c.Path, err)
		}
		return s, nil
	default:
		return nil, fmt.Errorf("unknown store type %q", c.Type)
	}
}

// newRunID makes a run ID that sorts by start time and is unique without
// coordination: "20261124T201500Z-1a2b3c4d".
func newRunID(t time.Time) string {
	return t.UTC().Format("20060102T150405Z") + "-" + randomHex(4)
}

// newExecutionID follows the shape Microsoft's own scheduler uses,
// "<project>-<yyyy-MM-dd_HH-mm-ss>-<random>", so operators recognise it in
// F&O's job history.
func newExecutionID(group string, t time.Time) string {
	return fmt.Sprintf("%s-%s-%s", group, t.UTC().Format("2006-01-02_15-04-05"), randomHex(8))
}

func randomHex(n int) string {
	b := make([]byte, n)
	_, _ = rand.Read(b) // crypto/rand.Read never fails
	return hex.EncodeToString(b)
}
