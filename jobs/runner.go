// Package jobs wires the steps of an export — the F&O call (dmf), the
// package unpacking (unpack) and the row publishing (publish) — into runs,
// tells the run ledger (runs) what each run did, and owns the schedule.
package jobs

import (
	"cmp"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"os"
	"runtime"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/jonboulle/clockwork"
	"go.opentelemetry.io/otel/trace"

	"github.com/dmfexport/dmfexport/dmf"
	"github.com/dmfexport/dmfexport/internal/cause"
	"github.com/dmfexport/dmfexport/internal/ctxio"
	"github.com/dmfexport/dmfexport/internal/redact"
	"github.com/dmfexport/dmfexport/publish"
	"github.com/dmfexport/dmfexport/runs"
	"github.com/dmfexport/dmfexport/store"
	"github.com/dmfexport/dmfexport/unpack"
)

// ErrAlreadyRunning is returned when a run of the same export is still going in
// this process: two runs of one export never overlap.
var ErrAlreadyRunning = errors.New("a run of this export is already in progress")

// Event is a progress report from a run, for live output.
type Event struct {
	Job    string
	RunID  string
	State  runs.State
	Entity string // set while publishing an entity
	// Rows counts the rows of Entity the broker confirmed so far: what
	// "published" means. Sent counts those handed to it, confirmed or not.
	Rows, Sent int64
	// Confirmed is set when the event reports a batch the broker confirmed.
	Confirmed bool
	// Done and Total measure the work of the state in bytes: the package
	// downloaded of its Content-Length, or the entity's stored file read of
	// its size. Total is 0 when unknown.
	Done, Total int64
	Detail      string // human-readable detail, e.g. the F&O status
}

// Progress reports whether e only measures progress within its state
// (bytes, rows handed to the broker): plain output skips such events.
func (e Event) Progress() bool {
	return !e.Confirmed && e.Detail == "" && (e.Done > 0 || e.Total > 0 || e.Sent > 0)
}

// Runner executes export runs. It is safe for concurrent use; runs of
// different exports proceed in parallel, runs of one export never do.
type Runner struct {
	Logger     *slog.Logger
	HTTPClient *http.Client                                                 // for F&O calls and the package download; nil → a default client
	OnEvent    func(Event)                                                  // optional live progress
	NewSink    func(ctx context.Context, exp *Export) (publish.Sink, error) // nil → sink from exp.Broker
	Metrics    *Metrics                                                     // nil → none
	// TracerProvider makes the spans of each run (one trace per run); nil
	// means OpenTelemetry's global provider, a no-op unless the command set
	// one up.
	TracerProvider trace.TracerProvider
	// LeaseTTL is how long a run's lease in the store lives without a
	// heartbeat before another replica may take the run over; 0 means
	// runs.DefaultLeaseTTL.
	LeaseTTL time.Duration
	// Clock is where every time the Runner and its runs read comes from:
	// run IDs and record times, leases and claims, waits and backoff, and
	// the schedule of a Scheduler using the Runner. nil means the real
	// clock; tests set a fake one, the fault suite's builds a skewed one.
	Clock clockwork.Clock
	// heartbeatGate, when set, is called before every lease heartbeat:
	// tests hold it to stand for a paused process.
	heartbeatGate func()

	mu      sync.Mutex
	running map[string]bool
	// groups maps each data project held by a run of this process (by
	// runs.DataProject.Key) to that run.
	groups map[string]string
	// What the Runner opened and keeps until Close (see open.go).
	owned owned
	// envs holds the limits shared by the exports of each F&O environment
	// (see environment.go), by environmentKey.
	envs map[string]*environment
	// claimsPruned is when each job's old schedule claims were last pruned.
	claimsPruned map[string]time.Time
	// waits holds, per run waiting for something outside dmfexport (by
	// job and run ID), how often ResumeAll took it up in vain and when it
	// may again.
	waits map[string]runWait
	// leftUnfinished holds the runs (by job and run ID) this Runner
	// last left interrupted or waiting, until one of its runs ends them.
	leftUnfinished map[string]bool
}

// LeftToResume is how many runs this Runner left unfinished for the next
// start to resume: runs interrupted (by a stop) and runs left waiting for
// something outside dmfexport that it has not taken up to their end since.
// dmfexport run exits 75 when it is above 0.
func (r *Runner) LeftToResume() int {
	r.mu.Lock()
	defer r.mu.Unlock()
	return len(r.leftUnfinished)
}

// noteLeft records whether the run runID of job was left unfinished.
func (r *Runner) noteLeft(job, runID string, left bool) {
	r.mu.Lock()
	defer r.mu.Unlock()
	if r.leftUnfinished == nil {
		r.leftUnfinished = map[string]bool{}
	}
	if left {
		r.leftUnfinished[job+"/"+runID] = true
	} else {
		delete(r.leftUnfinished, job+"/"+runID)
	}
}

// ReplayCommand is the command line that publishes the stored entities of
// run runID of export job again: all of them, or those named.
func ReplayCommand(job, runID string, entities []string) string {
	var b strings.Builder
	b.WriteString("dmfexport replay")
	for _, e := range entities {
		b.WriteString(" --entity " + ShellQuote(e))
	}
	b.WriteString(" " + job + "/" + runID)
	return b.String()
}

// ShellQuote quotes s for a POSIX shell when it holds more than letters,
// digits and -_./=:@, for the commands dmfexport suggests.
func ShellQuote(s string) string {
	if s != "" && strings.IndexFunc(s, func(r rune) bool {
		return !(r >= 'a' && r <= 'z' || r >= 'A' && r <= 'Z' || r >= '0' && r <= '9' || strings.ContainsRune("-_./=:@", r))
	}) < 0 {
		return s
	}
	return "'" + strings.ReplaceAll(s, "'", `'\''`) + "'"
}

// DefaultPollDeadline is how long a run waits for F&O to finish an export
// when poll.deadline is not set.
const DefaultPollDeadline = 2 * time.Hour

// RunOptions describe why and when a run starts.
type RunOptions struct {
	Trigger     string    // "schedule", "manual", ...
	ScheduledAt time.Time // zero for manual runs
}

// Run performs one export end to end and returns its record. The record is
// returned even when the run fails; the error then says which step failed
// and what to do. A run cut off by ctx (a stop signal) is left unfinished
// in its record, for Resume.
func (r *Runner) Run(ctx context.Context, exp *Export, opts RunOptions) (*runs.Record, error) {
	l, st, err := r.own(ctx, exp)
	if err != nil {
		return nil, err
	}
	defer r.release(exp.Name)
	if held, err := l.Running(ctx); err != nil {
		return nil, fmt.Errorf("export %s: %w", exp.Name, err)
	} else if held != "" {
		return nil, fmt.Errorf("export %s: %w", exp.Name, cause.Mark(fmt.Errorf("%w (%s); wait for it to finish", ErrAlreadyRunning, held)))
	}
	now := r.clock().Now().UTC()
	rec := newRecord(exp)
	rec.RunID, rec.Trigger, rec.ScheduledAt, rec.StartedAt, rec.State, rec.OwnerGen = runs.NewRunID(now), opts.Trigger, opts.ScheduledAt, now, runs.StatePending, 1
	// One data project is exported by one run at a time, whichever export
	// names it: a run that finds it held is skipped and recorded so.
	hold, holder, err := r.holdGroup(ctx, exp, l, rec.RunID, r.logger().With("export", exp.Name, "run", rec.RunID))
	if err != nil {
		return nil, fmt.Errorf("export %s: %w", exp.Name, err)
	} else if hold == nil {
		return r.skipped(ctx, exp, l, rec, holder)
	}
	lease, err := l.Begin(ctx, rec)
	if err != nil {
		hold.release(context.WithoutCancel(ctx))
		return nil, fmt.Errorf("export %s: %w", exp.Name, err)
	}
	return r.drive(ctx, exp, st, l, rec, false, lease, hold)
}

// claimsDue reports whether job's old schedule claims should be pruned now:
// at most every ten minutes, so a job firing every few seconds does not list
// its claims on every run.
func (r *Runner) claimsDue(job string) bool {
	r.mu.Lock()
	defer r.mu.Unlock()
	if r.claimsPruned == nil {
		r.claimsPruned = map[string]time.Time{}
	}
	if r.clock().Since(r.claimsPruned[job]) < 10*time.Minute {
		return false
	}
	r.claimsPruned[job] = r.clock().Now()
	return true
}

func (r *Runner) leaseTTL() time.Duration {
	if r.LeaseTTL > 0 {
		return r.LeaseTTL
	}
	return runs.DefaultLeaseTTL
}

// Unfinished returns the runs of exp whose records are not in a final state:
// runs cut off by a stop or a crash, for Resume. Oldest first. A damaged
// record is quarantined on the way (see runs.Ledger.Unfinished).
func (r *Runner) Unfinished(ctx context.Context, exp *Export) ([]*runs.Record, error) {
	l, _, err := r.openLedger(ctx, exp)
	if err != nil {
		return nil, err
	}
	recs, err := l.Unfinished(ctx, newRecord(exp))
	if err != nil {
		return nil, fmt.Errorf("export %s: %w", exp.Name, err)
	}
	return recs, nil
}

// Resume takes up a run that was cut off, from where its record shows it
// got: an export already started in F&O is polled, never started again; a
// stored package is not downloaded again; published batches are not
// published again.
func (r *Runner) Resume(ctx context.Context, exp *Export, rec *runs.Record) (*runs.Record, error) {
	if rec.State.Final() {
		return rec, nil
	}
	l, st, err := r.own(ctx, exp)
	if err != nil {
		return nil, err
	}
	defer r.release(exp.Name)
	lease, fresh, err := l.TakeOver(ctx, rec)
	if err != nil {
		return nil, fmt.Errorf("export %s run %s: %w", exp.Name, rec.RunID, err)
	} else if lease == nil {
		return fresh, nil // it ended meanwhile
	}
	rec = fresh
	hold, holder, err := r.holdGroup(ctx, exp, l, rec.RunID, r.logger().With("export", exp.Name, "run", rec.RunID))
	if err != nil || hold == nil {
		lease.Release(context.WithoutCancel(ctx))
		if err == nil {
			err = cause.Mark(fmt.Errorf("%w (data project %q, held by %s); it is resumed once that run ends", ErrGroupBusy, exp.DefinitionGroup, holder))
		}
		return nil, fmt.Errorf("export %s run %s: %w", exp.Name, rec.RunID, err)
	}
	rec.Resumes++
	rec.Error, rec.Cause, rec.Waiting = "", "", ""
	rec.OwnerGen = lease.Gen()
	return r.drive(ctx, exp, st, l, rec, true, lease, hold)
}

// ResumeAll resumes the unfinished runs of every export in exps, one export
// after another, each export's runs oldest first. Errors are logged.
func (r *Runner) ResumeAll(ctx context.Context, exps []*Export) {
	for _, exp := range exps {
		recs, err := r.Unfinished(ctx, exp)
		if err != nil && ctx.Err() != nil {
			return // stopped
		} else if err != nil {
			r.logger().Error("cannot look for unfinished runs", "export", exp.Name, "err", err)
			continue
		}
		r.Metrics.unfinishedRuns(exp.Name, len(recs))
		for _, rec := range recs {
			if ctx.Err() != nil {
				return
			}
			if rec.Waiting != "" && !r.retryDue(exp.Name, rec.RunID, r.clock().Now()) {
				continue // backing off
			}
			_, _ = r.resumeWaiting(ctx, exp, rec) // logged there
		}
	}
}

// resumeWaiting resumes rec, an unfinished run, and notes the outcome: a
// run still waiting is retried later with backoff. Errors are logged; the
// run's record and error are returned for the fire that took it up.
func (r *Runner) resumeWaiting(ctx context.Context, exp *Export, rec *runs.Record) (*runs.Record, error) {
	ended, err := r.Resume(ctx, exp, rec)
	if errors.Is(err, runs.ErrLeaseHeld) || errors.Is(err, ErrAlreadyRunning) || errors.Is(err, ErrGroupBusy) {
		r.logger().Debug("unfinished run owned by a live process", "export", exp.Name, "run", rec.RunID, "err", err)
		return ended, err
	}
	if what := waitingOf(err); what != "" {
		wait := r.noteWait(exp.Name, rec.RunID, true, r.clock().Now())
		r.logger().Warn("run still "+WaitingText(what)+"; retrying later", "export", exp.Name, "run", rec.RunID, "retry_in", wait, "err", err)
		return ended, err
	}
	r.noteWait(exp.Name, rec.RunID, false, r.clock().Now())
	if err != nil && ctx.Err() != nil {
		// Stopped: the run logged that it will resume.
		r.logger().Debug("resumed run interrupted", "export", exp.Name, "run", rec.RunID, "err", err)
	} else if err != nil && (ended == nil || ended.State != runs.StateFailed) {
		// A run that ended failed logged its ERROR line itself.
		r.logger().Error("resumed run failed", append(runKeys(exp.Name, rec), "err", err)...)
	}
	return ended, err
}

// drive executes a run and writes its final record.
func (r *Runner) drive(parent context.Context, exp *Export, st store.Store, l *runs.Ledger, rec *runs.Record, resuming bool, lease *runs.Lease, hold *groupHold) (*runs.Record, error) {
	if rec.Durations == nil {
		rec.Durations = map[string]string{}
	}
	parent, span := r.startRun(parent, exp, rec, resuming)
	defer endRun(span, rec)
	run := &run{r: r, exp: exp, st: st, ledger: l, rec: rec, resuming: resuming, lease: lease, steps: map[string]time.Duration{},
		base: r.logger().With("export", exp.Name, "run", rec.RunID), hold: hold, losses: store.Recreations(st)}
	run.setExecution(rec.ExecutionID)
	if resuming {
		run.log.Info("resuming unfinished run", "state", rec.State, "resumes", rec.Resumes)
		if b := rec.Batching; b != nil && *b != *batchSettingsOf(exp) {
			run.log.Info("batch settings changed since the run started; the run keeps those it started with, so message IDs keep naming the same rows",
				"batch_size", b.BatchSize, "max_batch_bytes", b.MaxBatchBytes, "delimiter", b.Delimiter, "compression", b.Compression)
		}
	}
	ctx, cancelRun := context.WithCancel(parent)
	defer cancelRun()
	hold.bindRun(lease)
	lease.Keep(runs.KeepOptions{Beat: run.heartbeat, Gate: r.heartbeatGate, Lost: func() {
		run.log.Warn("lease lost: run taken over by another replica (this process stalled past replicas.lease_ttl); stopping before its next batch or record write",
			"generation", lease.Gen())
		cancelRun()
	}})
	defer func() {
		relCtx, cancel := context.WithTimeout(context.WithoutCancel(parent), 30*time.Second)
		defer cancel()
		lease.Release(relCtx)
		hold.release(relCtx)
	}()
	r.Metrics.runStarted(exp.Name)
	dropped := false
	defer func() {
		if dropped {
			r.Metrics.runDropped(exp.Name)
		} else {
			r.Metrics.runFinished(rec, run.steps)
		}
	}()
	// A stop while the first record is being written (it may have landed
	// without a word of why the run is unfinished) ends the run as
	// interrupted, its record written again with the reason.
	runErr := run.save(ctx)
	if runErr != nil && ctx.Err() == nil {
		return rec, fmt.Errorf("export %s: %w", exp.Name, runErr)
	} else if runErr == nil {
		runErr = run.execute(ctx)
	}
	run.ended.Store(true) // what the store lost is written again only by save now
	if errors.Is(runErr, ErrNotStarted) && !lease.Lost() {
		// Stopped while queued: F&O was never asked, so no record is kept
		// to resume; the export runs at its next trigger.
		dropped = true
		return nil, r.drop(parent, exp, l, rec)
	}
	if lease.Lost() {
		return rec, fmt.Errorf("export %s run %s: %w", exp.Name, rec.RunID, runs.ErrLeaseLost)
	}
	interrupted := runErr != nil && ctx.Err() != nil
	waiting := ""
	if !interrupted {
		waiting = waitingOf(runErr)
	}
	switch {
	case interrupted:
		// Not ctx.Err(): "context canceled" says nothing to an operator.
		rec.Error, rec.Cause = "interrupted by a stop; the run resumes from here at the next start", ""
	case waiting != "":
		// Nothing is lost: the entities are stored (or the export is known
		// to F&O, or not started) and the record counts only confirmed
		// batches.
		rec.Waiting = waiting
		runErr = fmt.Errorf("%w; %s", runErr, waitingAdvice(waiting))
		rec.Error, rec.Cause = runErr.Error(), cause.Of(runErr)
	case runErr != nil:
		if rec.State == runs.StatePublishing {
			// The entity files are stored: no need to export again.
			runErr = fmt.Errorf("%w; once fixed, %s publishes the stored entities again", runErr, ReplayCommand(exp.Name, rec.RunID, nil))
		}
		rec.State = runs.StateFailed
		rec.Error, rec.Cause = runErr.Error(), cause.Of(runErr)
	case rec.State != runs.StatePartiallySucceeded:
		rec.State = runs.StateSucceeded
	}
	if rec.State.Final() {
		rec.FinishedAt = r.clock().Now().UTC()
	}
	// The record must land even if ctx was cancelled mid-run.
	saveCtx, cancel := context.WithTimeout(context.WithoutCancel(ctx), 30*time.Second)
	defer cancel()
	saveErr := run.save(saveCtx)
	if errors.Is(saveErr, store.ErrStoreLost) {
		// Not a word of a resume: no record, marker or lease exists.
		runErr = run.lostRunError(saveErr)
		run.log.Error("run lost: its store is gone and cannot be created again", "state", rec.State, "err", runErr)
		run.emit(Event{State: rec.State, Detail: runErr.Error()})
		return rec, fmt.Errorf("export %s run %s: %w", exp.Name, rec.RunID, runErr)
	}
	if saveErr != nil {
		// The store holds the previous, unfinished record: keep the run
		// marked active so the next start resumes it, rather than leaving a
		// record no one will ever finish.
		run.log.Error("run record not written; the run stays unfinished and resumes at the next start", "state", rec.State, "err", saveErr)
		const unsaved = "the run record could not be written, so the run stays unfinished and resumes at the next start once the store accepts writes"
		switch {
		case runErr == nil:
			runErr = fmt.Errorf("%w: %s", saveErr, unsaved)
		case strings.Contains(runErr.Error(), saveErr.Error()):
			runErr = fmt.Errorf("%w: %s", runErr, unsaved)
		default:
			runErr = fmt.Errorf("%w; %w: %s", runErr, saveErr, unsaved)
		}
	}
	if rec.State.Final() && saveErr == nil {
		if err := l.Finish(saveCtx, rec.RunID); err != nil {
			run.log.Warn("could not clear the run's active marker; it is cleared at the next scan", "err", err)
		}
		if r.claimsDue(exp.Name) {
			if err := l.PruneClaims(saveCtx); err != nil {
				run.log.Warn("retention: old schedule claims not deleted", "err", err)
			}
		}
		if deleted, err := l.Prune(saveCtx, runs.Retention(exp.Retention)); err != nil {
			run.log.Warn("retention: some old runs could not be deleted", "err", err)
		} else if len(deleted) > 0 {
			run.log.Info("retention: old runs deleted", "runs", deleted)
		}
	}
	run.emit(Event{State: rec.State, Detail: rec.Error})
	r.noteLeft(exp.Name, rec.RunID, !rec.State.Final() || saveErr != nil)
	if waiting != "" {
		run.log.Warn("run left "+WaitingText(waiting)+"; it is taken up again with backoff", "state", rec.State, "error", rec.Error)
		return rec, fmt.Errorf("export %s run %s: %w", exp.Name, rec.RunID, runErr)
	}
	if interrupted {
		run.log.Warn("run interrupted; it will resume from here at the next start", "state", rec.State)
		return rec, fmt.Errorf("export %s run %s interrupted in state %s: %w", exp.Name, rec.RunID, rec.State, ctx.Err())
	}
	switch {
	case rec.State == runs.StateFailed:
		// The one ERROR line of a failed run, whatever started it: it
		// carries the run and execution keys of run.log.
		run.log.Error("run finished", "state", rec.State, "duration", rec.FinishedAt.Sub(rec.StartedAt).Round(time.Millisecond), "error", rec.Error)
	case rec.Error != "":
		run.log.Warn("run finished", "state", rec.State, "duration", rec.FinishedAt.Sub(rec.StartedAt).Round(time.Millisecond), "error", rec.Error)
	default:
		run.log.Info("run finished", "state", rec.State, "duration", rec.FinishedAt.Sub(rec.StartedAt).Round(time.Millisecond))
	}
	if runErr != nil {
		return rec, fmt.Errorf("export %s run %s: %w", exp.Name, rec.RunID, runErr)
	}
	return rec, nil
}

// drop removes the record and active marker of a run stopped while it
// waited for an execution slot, and returns an error wrapping
// ErrNotStarted.
func (r *Runner) drop(parent context.Context, exp *Export, l *runs.Ledger, rec *runs.Record) error {
	ctx, cancel := context.WithTimeout(context.WithoutCancel(parent), 30*time.Second)
	defer cancel()
	log := r.logger().With("export", exp.Name, "run", rec.RunID)
	if err := l.Drop(ctx, rec.RunID); err != nil {
		log.Warn("could not remove the record of a run stopped while queued; it resumes at the next start", "err", err)
	}
	log.Info("queued run not started: stopping", "queued_since", rec.QueuedAt)
	return fmt.Errorf("export %s: %w", exp.Name, ErrNotStarted)
}

func (r *Runner) logger() *slog.Logger {
	if r.Logger != nil {
		return r.Logger
	}
	return slog.Default()
}

// foClient builds the F&O client of an export. Its credential is the
// Runner's (see credential), so tokens are cached across runs.
func (r *Runner) foClient(exp *Export, log *slog.Logger, onRetry func(action, reason string)) (*dmf.Client, error) {
	cred, err := r.credential(exp.FO.Auth.Options)
	if err != nil {
		return nil, fmt.Errorf("F&O credential: %w", err)
	}
	hc := r.httpClient()
	if t := cmp.Or(exp.FO.RequestTimeout, dmf.DefaultRequestTimeout); hc.Timeout != t {
		c := *hc
		c.Timeout = t
		hc = &c
	}
	client, err := dmf.NewClient(exp.FO.URL.String(), cred, &dmf.ClientOptions{
		HTTPClient: hc, Logger: log,
		MaxRetries: exp.FO.MaxRetries, RetryBaseDelay: exp.FO.RetryBaseDelay, RetryMaxDelay: exp.FO.RetryMaxDelay,
		MaxThrottleWait: exp.FO.MaxThrottleWait,
		PackageURLDelay: exp.Poll.PackageURLInterval, PackageURLMaxDelay: exp.Poll.PackageURLMaxInterval,
		RegisterTimeout: exp.Poll.RegisterTimeout, RegisterInterval: cmp.Or(exp.Poll.Interval, dmf.DefaultPollInterval), Scope: exp.FO.Auth.Scope,
		Identity: exp.FO.Auth.Describe(), ApplicationID: exp.FO.Auth.ApplicationID(),
		OnRetry: func(action, reason string) {
			r.Metrics.Retried(exp.Name, action, reason)
			if onRetry != nil {
				onRetry(action, reason)
			}
		},
		Pacer: r.environment(exp).pacer,
	})
	if err != nil {
		return nil, fmt.Errorf("F&O client: %w", err)
	}
	return client, nil
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

// busy reports whether a run of job is going on in this process.
func (r *Runner) busy(job string) bool {
	r.mu.Lock()
	defer r.mu.Unlock()
	return r.running[job]
}

// own claims exp for a run in this process (see claim) and opens its
// ledger. Unless it fails, the caller releases exp when the run ends.
func (r *Runner) own(ctx context.Context, exp *Export) (*runs.Ledger, store.Store, error) {
	if !r.claim(exp.Name) {
		return nil, nil, fmt.Errorf("export %s: %w", exp.Name, cause.Mark(fmt.Errorf("%w; wait for it to finish", ErrAlreadyRunning)))
	}
	l, st, err := r.openLedger(ctx, exp)
	if err != nil {
		r.release(exp.Name)
		return nil, nil, err
	}
	return l, st, nil
}

func (r *Runner) release(job string) {
	r.mu.Lock()
	defer r.mu.Unlock()
	delete(r.running, job)
}

// run is the state of one run in progress.
type run struct {
	r      *Runner
	exp    *Export
	st     store.Store
	ledger *runs.Ledger // of exp's runs in st
	rec    *runs.Record
	log    *slog.Logger // base with the execution, once known
	base   *slog.Logger // the run's logger: export and run
	steps  map[string]time.Duration
	// retries counts the F&O calls retried in this run, for the spans.
	retries atomic.Int64
	// resuming is set when the run is taken up again from its record.
	resuming bool
	// lease is this process's ownership of the run (nil without a store
	// that can coordinate replicas).
	lease *runs.Lease
	// mu guards rec while an entity is published (confirmations arrive on
	// the sink's goroutine); saveMu orders record writes.
	mu, saveMu sync.Mutex
	// defaultCharset warns, once per run, that a file of a non-Unicode
	// source format was read as windows-1252 for want of an encoding.
	defaultCharset sync.Once

	// What a store that lost its objects needs written again (see
	// storeloss.go), guarded by saveMu: the run's data project hold, the
	// store's recreations seen so far, and the last record written.
	hold          *groupHold
	losses        int64
	lastRecord    []byte
	lastState     runs.State
	lastExecution string
	ended         atomic.Bool // execute returned: heartbeats restore nothing
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

// save writes the record. Saves are serialized and each writes a snapshot
// taken under u.mu, so a later snapshot never lands before an earlier one
// even when batch confirmations save from another goroutine.
func (u *run) save(ctx context.Context) error {
	u.saveMu.Lock()
	defer u.saveMu.Unlock()
	if err := u.lease.Check(ctx); err != nil {
		return err // another replica owns the record now
	}
	u.mu.Lock()
	b, err := runs.Encode(u.rec)
	state, execution := u.rec.State, u.rec.ExecutionID
	u.mu.Unlock()
	if err != nil {
		return err
	}
	if err := u.ledger.SaveOwned(ctx, u.rec, b); err != nil {
		if errors.Is(err, runs.ErrLeaseLost) {
			u.lease.Lose() // taken over between the check and the write
		}
		return err
	}
	u.lastRecord, u.lastState, u.lastExecution = b, state, execution
	// The write may have found the store gone and created it again. The
	// record is safe; what else fails to be written again is tried again.
	if err := u.restoreAfterLoss(ctx, false, false); err != nil {
		u.base.Warn("the run's marker or lease could not be written again after the store lost them; trying again at the next record write", "err", err)
	}
	return nil
}

// enter moves the run to state s and records it durably.
func (u *run) enter(ctx context.Context, s runs.State, detail string) error {
	u.rec.State = s
	u.log.Info("run "+string(s), "detail", detail)
	u.emit(Event{Detail: detail})
	return u.save(ctx)
}

// setExecution sets the run's logger to carry the execution ID, once.
func (u *run) setExecution(id string) {
	u.log = u.base
	if id != "" {
		u.log = u.base.With("execution", id)
	}
}

// retried counts an F&O call retried, for the step's span.
func (u *run) retried(action, reason string) { u.retries.Add(1) }

// step runs fn in a span named name and records how long it took.
func (u *run) step(ctx context.Context, name string, fn func(ctx context.Context) error) error {
	ctx, span := u.r.tracer().Start(ctx, name)
	retries := u.retries.Load()
	start := u.r.clock().Now()
	err := fn(ctx)
	d := u.r.clock().Since(start)
	u.steps[name] = d
	u.rec.Durations[name] = d.Round(time.Millisecond).String()
	endStep(span, u.retries.Load()-retries, err)
	return err
}

// execute carries the run from the state its record is in to the end. A
// fresh run starts at the beginning; a resumed one (u.resuming) skips what
// its record shows done: an execution that exists is polled, never started
// again; a stored package is not downloaded again; an unpacked package is
// not unpacked again; published entities are not published again.
func (u *run) execute(ctx context.Context) error {
	client, err := u.r.foClient(u.exp, u.log, u.retried)
	if err != nil {
		return err
	}
	// refetches: the stored entity files were lost with the store; the
	// export is done, so the package of the same execution is fetched
	// again, never exported again.
	for refetches := 0; ; refetches++ {
		un, err := u.fetchAndUnpack(ctx, client, refetches > 0)
		if err != nil {
			return err
		}
		if err = u.enter(ctx, runs.StatePublishing, fmt.Sprintf("%d entities", len(u.rec.Entities))); err == nil {
			err = u.step(ctx, "publish", func(ctx context.Context) error { return u.publishAll(ctx, un) })
		}
		// The record, Unpacked or not, is saved as the run ends (drive) or
		// as it goes on to fetch the package again.
		if uerr := un.finish(u); uerr != nil && ctx.Err() == nil {
			if !errors.Is(uerr, errStoredEntitiesGone) {
				// Entities published before storing failed keep what the
				// broker confirmed: the next attempt stores the same files
				// and goes on from there.
				return u.packageFault(ctx, uerr)
			}
			if err == nil || errors.Is(err, errStoredEntitiesGone) {
				err = uerr
			}
		}
		if !errors.Is(err, errStoredEntitiesGone) {
			return err
		} else if refetches == maxRefetches {
			return u.packageFault(ctx, err) // lost again and again: wait, fetch it later
		}
		u.log.Warn("stored entity files of the run are gone (the store lost its objects); fetching the package of the same execution again, "+
			"and publishing each entity after its last confirmed batch", "err", err)
		u.rec.Unpacked, u.resuming = false, true
	}
}

// fetchAndUnpack brings the run to a package being unpacked (nil when its
// record says it is unpacked already): from the package stored by an
// earlier attempt, or by exporting (unless refetch: the export is done)
// and downloading it.
func (u *run) fetchAndUnpack(ctx context.Context, client *dmf.Client, refetch bool) (*unpacking, error) {
	if u.rec.Unpacked {
		return nil, nil
	}
	tmp, err := createPackageTemp()
	if err != nil {
		return nil, u.packageFault(ctx, fmt.Errorf("create temporary file for the package: %w", err))
	}
	keep := false
	defer func() {
		if !keep {
			_ = tmp.Close()
			_ = os.Remove(tmp.Name())
		}
	}()
	// A store across a network gets the package after the entities (see
	// unpacking), a directory store right after the download; none with
	// store.package: skip.
	keepPackage := u.exp.Store.Package != PackageSkip
	storePackage := keepPackage && storedOnNetwork(u.st)
	if !u.restorePackage(ctx, tmp) {
		if !refetch {
			if err := u.checkBroker(ctx); err != nil {
				return nil, err
			}
			if err := u.export(ctx, client); err != nil {
				return nil, err
			}
		}
		if err := u.download(ctx, client, tmp, keepPackage && !storePackage); err != nil {
			return nil, u.packageFault(ctx, err)
		}
	} else {
		storePackage = false
	}
	un, err := u.startUnpack(ctx, tmp, storePackage)
	if err != nil {
		return nil, u.packageFault(ctx, err)
	}
	keep = true
	return un, nil
}

// packageRetention is how long F&O keeps an execution's package (and its
// history): about 7 days.
const packageRetention = 7 * 24 * time.Hour

// exported reports whether F&O's verdict on the run's execution lets its
// package be published: the run then never exports again.
func (u *run) exported() bool {
	switch dmf.Status(u.rec.ExecutionStatus) {
	case dmf.StatusSucceeded:
		return true
	case dmf.StatusPartiallySucceeded:
		return u.exp.Partial == "publish"
	}
	return false
}

// packageFault decides what a failure to fetch, store or unpack the
// package means once F&O exported it: not F&O's verdict, so the run is left
// waiting to fetch the same execution's package again rather than failed
// (a failed run's next attempt would export again, and F&O's change
// tracking would have moved on: an IncrementalPush delta lost). Only a
// package F&O no longer has (packageGoneError) fails the run.
func (u *run) packageFault(ctx context.Context, err error) error {
	var gone *packageGoneError
	if ctx.Err() != nil || waitingOf(err) != "" || errors.As(err, &gone) || !u.exported() {
		return err
	}
	if age := u.r.clock().Since(u.rec.StartedAt); age > packageRetention {
		return u.packageGone(ctx, fmt.Sprintf("the run started %s ago, longer than F&O keeps packages", age.Round(time.Hour)), err)
	}
	return newWaiting(WaitingForPackage, err)
}

// packageGoneError is a run's end when F&O no longer has the package of
// its execution: the export must be repeated.
type packageGoneError struct{ msg string }

func (e *packageGoneError) Error() string { return e.msg }

// packageGone returns the error that ends a run whose package F&O deleted,
// and says so at ERROR, naming the IncrementalPush entities whose delta is
// lost (as far as this or an earlier run of the export knows them).
func (u *run) packageGone(ctx context.Context, why string, cause error) error {
	msg := fmt.Sprintf("the package of execution %s is gone from F&O (%s): the export must be repeated, and the next run exports again", u.rec.ExecutionID, why)
	if cause != nil {
		msg += " (last error: " + cause.Error() + ")"
	}
	if inc := u.incrementalEntities(ctx); len(inc) > 0 {
		msg += fmt.Sprintf("; the changes F&O's change tracking exported in it for the IncrementalPush entities %s are lost downstream: export the data project once in full (FullPush) to recover them", strings.Join(inc, ", "))
	} else {
		msg += "; if its data project has IncrementalPush entities, the changes exported in it are lost downstream: export it once in full (FullPush) to recover them"
	}
	u.r.Metrics.packageLost(u.exp.Name)
	u.log.Error("exported package lost", "execution", u.rec.ExecutionID, "err", msg)
	return &packageGoneError{msg: msg}
}

// knownEntities returns the run's entities, or, before it unpacked, those
// of the latest run of its export whose record lists entities: what the
// data project held last time.
func (u *run) knownEntities(ctx context.Context) []runs.EntityRecord {
	if len(u.rec.Entities) > 0 {
		return u.rec.Entities
	}
	listed, err := u.ledger.List(ctx)
	if err != nil {
		return nil
	}
	for _, ref := range listed[:min(len(listed), 10)] { // newest first; an unreadable one is skipped
		if r, err := u.ledger.Find(ctx, ref.RunID); err == nil && len(r.Entities) > 0 {
			return r.Entities
		}
	}
	return nil
}

// incrementalEntities names the IncrementalPush entities of the run, as
// far as knownEntities knows them.
func (u *run) incrementalEntities(ctx context.Context) []string {
	var out []string
	for _, e := range u.knownEntities(ctx) {
		if strings.EqualFold(e.RefreshType, "IncrementalPush") {
			out = append(out, e.Entity)
		}
	}
	return out
}

// checkBroker connects to the broker and checks (or declares) its exchange
// and queues before F&O is asked to export anything, so no export is made
// whose package then has nowhere to go: an unreachable broker leaves the
// run waiting for it (unexported, or with its export known to F&O), a
// misconfigured one fails a new run at once. A sink supplied through
// Runner.NewSink is checked when the run publishes.
func (u *run) checkBroker(ctx context.Context) error {
	if u.r.NewSink != nil {
		return nil
	}
	sink, err := openSink(ctx, u.exp, u.log, 1, u.r.clock())
	if err == nil {
		_ = sink.Close()
		return nil
	}
	if ctx.Err() != nil {
		return ctx.Err()
	}
	if u.resuming && u.rec.ExecutionID != "" {
		return newWaiting(WaitingForBroker, err)
	}
	if errors.Is(err, publish.ErrBrokerUnavailable) {
		// Unreachable, not misconfigured: the run waits, unexported, and
		// exports once the broker is back.
		return newWaiting(WaitingForBroker, fmt.Errorf("broker check before exporting: %w; nothing was exported in F&O yet", err))
	}
	return fmt.Errorf("broker check before exporting: %w; nothing was exported in F&O; once fixed, the next scheduled run or dmfexport trigger exports", err)
}

// export starts the F&O export (or, resuming, finds the one started before)
// and waits for it to end.
func (u *run) export(ctx context.Context, client *dmf.Client) error {
	release, err := u.waitSlot(ctx, u.r.environment(u.exp))
	if err != nil {
		return err
	}
	defer release()
	start := true
	if u.resuming && u.rec.ExecutionID != "" {
		// The execution ID was chosen and recorded before ExportToPackage
		// was sent, so F&O knows it unless the call never arrived, or
		// arrived so shortly before the stop that F&O has not registered
		// it yet: wait the register window before starting it.
		st, err := client.AwaitExecution(ctx, u.rec.ExecutionID)
		switch {
		case errors.Is(err, dmf.ErrNotRegistered) && u.exported():
			// It exported before: F&O has purged its history since.
			return u.packageGone(ctx, "F&O no longer knows the execution it reported "+u.rec.ExecutionStatus+"; it purges executions after about 7 days", nil)
		case errors.Is(err, dmf.ErrNotRegistered):
			u.log.Info("resume: F&O does not know the execution, starting the export", "window", cmp.Or(u.exp.Poll.RegisterTimeout, dmf.DefaultRegisterTimeout))
		case err != nil:
			return fmt.Errorf("resume: ask F&O for execution %s: %w", u.rec.ExecutionID, err)
		default:
			start = false
		}
		u.log.Info("resuming run", "execution_status", st, "export_started_before", !start)
	} else {
		// Chosen here, so a lost answer is recovered by asking for its
		// status rather than by starting a second export.
		u.rec.ExecutionID = runs.NewExecutionID(u.exp.DefinitionGroup, u.rec.StartedAt)
	}
	u.setExecution(u.rec.ExecutionID)
	if start {
		releaseExcel, err := u.waitExcelSlot(ctx, u.r.environment(u.exp))
		if err != nil {
			return err
		}
		defer releaseExcel()
	}
	if err := u.enter(ctx, runs.StateExporting, "execution "+u.rec.ExecutionID); err != nil {
		return err
	}
	var status dmf.Status
	err = u.step(ctx, "export", func(ctx context.Context) error {
		if start {
			id, err := client.ExportToPackage(ctx, dmf.ExportRequest{
				DefinitionGroupID: u.exp.DefinitionGroup,
				PackageName:       u.exp.PackageName,
				ExecutionID:       u.rec.ExecutionID,
				ReExecute:         u.exp.ReExecute,
				LegalEntityID:     u.exp.LegalEntity,
			})
			if err != nil && u.resuming {
				// F&O may have registered the first attempt meanwhile and
				// refused the ID as a duplicate: then poll that execution.
				if st, serr := client.ExecutionStatus(ctx, u.rec.ExecutionID); serr == nil && st != dmf.StatusUnknown {
					u.log.Info("resume: the export started before is known to F&O now", "status", st)
					id, err = u.rec.ExecutionID, nil
				}
			}
			if err != nil {
				return fmt.Errorf("start export of definition group %q: %w", u.exp.DefinitionGroup, err)
			}
			if id != u.rec.ExecutionID {
				if err := runs.CheckExecutionID(id); err != nil {
					return fmt.Errorf("start export of definition group %q: F&O answered with execution ID %q instead of %s: %w", u.exp.DefinitionGroup, id, u.rec.ExecutionID, err)
				}
				u.rec.ExecutionID = id
				u.setExecution(id)
				if err := u.save(ctx); err != nil {
					return err
				}
			}
		}
		var err error
		status, err = client.PollStatus(ctx, u.rec.ExecutionID, dmf.PollOptions{
			Interval:    u.exp.Poll.Interval,
			MaxInterval: u.exp.Poll.MaxInterval,
			Deadline:    cmp.Or(u.exp.Poll.Deadline, DefaultPollDeadline),
			OnStatus: func(s dmf.Status, waited time.Duration) {
				u.emit(Event{Detail: fmt.Sprintf("F&O status %s after %s", s, waited.Round(time.Second))})
			},
		})
		u.rec.ExecutionStatus = string(status)
		switch {
		case errors.Is(err, dmf.ErrDeadline):
			// F&O may still end it: the run waits rather than fail, since
			// a new export of the data project is refused while it runs.
			return newWaiting(WaitingForExecution, cause.Errorf("%w (raise poll.deadline if this export needs longer in F&O)", err))
		case errors.Is(err, dmf.ErrNotRegistered):
			return err // F&O never knew it: nothing was exported
		case err != nil && ctx.Err() == nil:
			// The execution exists, and F&O gave no verdict (answers
			// refused, throttled or unreadable past the retries): failing
			// would make the next run export again, so the run waits to
			// poll the same execution.
			return newWaiting(WaitingForExecution, err) // it names the execution
		case err != nil:
			return err
		}
		return nil
	})
	if err != nil {
		return err
	}
	switch {
	case status == dmf.StatusSucceeded:
		return nil
	case status == dmf.StatusPartiallySucceeded && u.exp.Partial == "publish":
		rep := client.Report(ctx, u.rec.ExecutionID, status)
		u.rec.SetExecutionErrors(executionErrors(rep.Errors))
		u.rec.Warnings = append(u.rec.Warnings, rep.Error())
		u.log.Warn("F&O export partially succeeded; publishing what was exported (partial: publish)", "report", rep.Error())
		return nil
	case status == dmf.StatusPartiallySucceeded:
		rep := client.Report(ctx, u.rec.ExecutionID, status)
		u.rec.SetExecutionErrors(executionErrors(rep.Errors))
		// The setting first: a table column or a closing line cut
		// after F&O's errors would lose it.
		return cause.Errorf("partial is fail (set partial: publish to publish what F&O did export): %w", rep)
	default:
		rep := client.Report(ctx, u.rec.ExecutionID, status)
		u.rec.SetExecutionErrors(executionErrors(rep.Errors))
		return rep
	}
}

// download fetches the package into tmp and keeps it in the store.
func (u *run) download(ctx context.Context, client *dmf.Client, tmp *os.File, storePackage bool) error {
	if err := u.enter(ctx, runs.StateDownloading, ""); err != nil {
		return err
	}
	return u.step(ctx, "download", func(ctx context.Context) error {
		dl := unpack.DownloadOptions{HTTPClient: u.r.httpClient(), Timeout: u.exp.Poll.DownloadTimeout,
			StallTimeout: u.exp.Poll.DownloadStallTimeout, MaxBytes: u.exp.Poll.MaxPackageBytes, Logger: u.log, Clock: u.r.clock(),
			Progress: func(done, total int64) { u.emit(Event{Done: done, Total: max(total, 0)}) }}
		var n int64
		var sum string
		freshAsked := false
		badPackages := 0
		var notFoundSince time.Time
		wait := max(u.exp.Poll.PackageURLInterval, 500*time.Millisecond)
		for {
			pkgURL, err := u.packageURL(ctx, client)
			if err != nil {
				return fmt.Errorf("get package URL of execution %s: %w", u.rec.ExecutionID, err)
			}
			u.rec.PackageURL = redact.URL(pkgURL)
			if err := resetFile(tmp); err != nil {
				return err
			}
			n, sum, err = u.fetchPackage(ctx, pkgURL, tmp, dl)
			if err == nil {
				err = unpack.CheckPackage(tmp, n)
			}
			if err == nil {
				break
			}
			switch {
			case errors.Is(err, unpack.ErrPackageTooLarge) && badPackages < maxBadPackages:
				// A body past its bound (an endless body, more than its
				// Content-Length) was cut where it crossed it: the package
				// itself may be fine, so download it again.
				badPackages++
				u.log.Warn("package body larger than its bound; downloading it again", "bytes", n, "attempt", badPackages+1, "err", err)
				continue
			case errors.Is(err, unpack.ErrNotZip) && badPackages < maxBadPackages:
				// A body shorter than it should be (a wrong
				// Content-Length, a proxy cutting it) reads as a zip
				// without its central directory: download it again.
				badPackages++
				u.log.Warn("downloaded package is not a readable zip; downloading it again", "bytes", n, "attempt", badPackages+1, "err", err)
				continue
			case errors.Is(err, unpack.ErrURLExpired) && !freshAsked:
				// The SAS may have lapsed (e.g. a resumed run): ask once for a fresh one.
				freshAsked = true
				u.log.Warn("package URL refused, asking F&O for a fresh one", "url", u.rec.PackageURL, "err", err)
				continue
			case errors.Is(err, unpack.ErrPackageNotFound):
				// Right after success F&O's URL can point at a package not
				// yet downloadable; after about 7 days F&O deletes it.
				if notFoundSince.IsZero() {
					notFoundSince = u.r.clock().Now()
				}
				if waited := u.r.clock().Since(notFoundSince); waited >= cmp.Or(u.exp.Poll.PackageURLTimeout, dmf.DefaultPackageURLTimeout) {
					return fmt.Errorf("download package of execution %s: %w: still not there after %s (poll.package_url_timeout)",
						u.rec.ExecutionID, err, waited.Round(time.Second))
				}
				u.log.Info("package not downloadable yet, asking again", "delay", wait)
				if err := u.r.sleep(ctx, wait); err != nil {
					return err
				}
				wait = min(wait*2, max(u.exp.Poll.PackageURLMaxInterval, wait))
				continue
			}
			return fmt.Errorf("download package of execution %s: %w", u.rec.ExecutionID, err)
		}
		u.rec.PackageBytes, u.rec.PackageSHA256, u.rec.PackageKey = n, sum, ""
		if storePackage {
			// The file itself, not a reader over it: a directory store
			// has the kernel copy it.
			if _, err := tmp.Seek(0, io.SeekStart); err != nil {
				return fmt.Errorf("rewind package file: %w", err)
			}
			key := u.ledger.Package(u.rec.RunID)
			if _, err := u.st.Put(ctx, key, tmp, u.meta(map[string]string{"sha256": sum})); err != nil {
				return fmt.Errorf("store package: %w", err)
			}
			u.rec.PackageKey = key
		}
		return u.save(ctx)
	})
}

// maxBadPackages is how many times a run downloads a package again that
// did not read as a zip archive, or whose body ran past its bound, before
// it fails.
const maxBadPackages = 2

// restorePackage copies a package stored by an earlier attempt of this run
// into tmp, if there is one and its checksum still matches.
func (u *run) restorePackage(ctx context.Context, tmp *os.File) bool {
	if !u.resuming || u.rec.PackageKey == "" || u.rec.PackageSHA256 == "" {
		return false
	}
	rc, err := u.st.Open(ctx, u.rec.PackageKey)
	if err != nil {
		u.log.Warn("resume: stored package unreadable, downloading it again", "key", u.rec.PackageKey, "err", err)
		return false
	}
	defer func() { _ = rc.Close() }()
	h := sha256.New()
	if err := resetFile(tmp); err == nil {
		_, err = io.Copy(io.MultiWriter(tmp, h), rc)
		if err == nil && hex.EncodeToString(h.Sum(nil)) == u.rec.PackageSHA256 {
			u.log.Info("resume: using the package stored before", "key", u.rec.PackageKey)
			return true
		}
	}
	u.log.Warn("resume: stored package does not match its checksum, downloading it again", "key", u.rec.PackageKey)
	return false
}

// resetFile empties f and rewinds it.
func resetFile(f *os.File) error {
	if err := f.Truncate(0); err != nil {
		return fmt.Errorf("reset temporary package file: %w", err)
	}
	if _, err := f.Seek(0, io.SeekStart); err != nil {
		return fmt.Errorf("reset temporary package file: %w", err)
	}
	return nil
}

// publishAll publishes the run's entities that are not done yet, up to
// parallelEntities of them at a time, each on a sink (for AMQP its own
// connection and channel) of its own, the costliest first (costliestFirst).
// Each entity's batches keep their order; entities interleave on the
// broker.
func (u *run) publishAll(ctx context.Context, un *unpacking) error {
	defer func() { spanAddPublished(ctx, u.rec) }()
	failed := map[int]bool{}
	losses := store.Recreations(u.st)
	// feed hands out the entities in the order they are to be published:
	// as they are stored when the package is being unpacked, else
	// costliest first.
	feed := (<-chan int)(nil)
	if un != nil {
		feed = un.ready
	} else {
		order := make([]int, len(u.rec.Entities))
		for i := range order {
			order[i] = i
		}
		costliestFirst(u.rec.Entities, order)
		ch := make(chan int, len(order))
		for _, i := range order {
			ch <- i
		}
		close(ch)
		feed = ch
	}
	todo := 0
	u.mu.Lock()
	for _, e := range u.rec.Entities {
		if e.State != runs.StateSucceeded && (e.State != runs.StateFailed || e.Key != "") {
			todo++
		}
	}
	u.mu.Unlock()
	workers := max(1, min(u.exp.parallelEntities(), todo))
	sinks, err := u.newSinks(ctx, workers)
	if err != nil {
		if ctx.Err() != nil {
			return ctx.Err()
		}
		// The entities are stored: nothing needs exporting again, the
		// run waits for the broker instead of failing.
		return newWaiting(WaitingForBroker, err)
	}
	defer func() {
		for _, s := range sinks {
			_ = s.Close()
		}
	}()

	next := make(chan int)
	var mu sync.Mutex // guards failed, firstErr, brokerErr, fullErr, routeErr and goneErr
	var firstErr, brokerErr, fullErr, routeErr, goneErr error
	var wg sync.WaitGroup
	for w := 0; w < workers; w++ {
		wg.Add(1)
		go func(sink publish.Sink) {
			defer wg.Done()
			for i := range next {
				e := &u.rec.Entities[i]
				err := u.publishEntity(ctx, sink, e, un.source(i))
				if err != nil && ctx.Err() != nil {
					continue // interrupted: the entity stays pending, to resume
				}
				// The broker away, or no queue bound yet: the entity stays
				// pending with what the broker confirmed (never past a
				// returned batch), and the run waits and resumes after its
				// last confirmed batch. Without a queue the other entities
				// go on; without a broker, or with its queue full past
				// broker.backpressure_timeout, the feed stops.
				var waitErr *error
				switch {
				case errors.Is(err, publish.ErrBrokerUnavailable):
					waitErr = &brokerErr
				case errors.Is(err, publish.ErrQueueFull):
					waitErr = &fullErr
					u.log.Warn("entity waits for room in the queue", "entity", e.Entity, "exchange", u.exp.Exchange, "routing_key", u.exp.RoutingKey, "err", err)
				case errors.Is(err, publish.ErrUnroutable):
					waitErr = &routeErr
					u.log.Warn("entity waits for a queue bound to the exchange", "entity", e.Entity, "exchange", u.exp.Exchange, "routing_key", u.exp.RoutingKey, "err", err)
				case err != nil && (errors.Is(err, store.ErrNotExist) || store.Recreations(u.st) != losses):
					// The store lost the entity's file: it stays pending
					// with what the broker confirmed, and the run fetches
					// the package again (see execute).
					waitErr = &goneErr
				}
				if waitErr != nil {
					mu.Lock()
					if *waitErr == nil {
						*waitErr = err
					}
					mu.Unlock()
					if serr := u.save(ctx); serr != nil {
						u.log.Warn("checkpoint not saved", "err", serr)
					}
					continue
				}
				u.mu.Lock()
				if err != nil {
					e.State, e.Error = runs.StateFailed, err.Error()
				} else {
					e.State = runs.StateSucceeded
				}
				u.mu.Unlock()
				if err != nil {
					u.log.Error("entity failed", "entity", e.Entity, "err", err)
					mu.Lock()
					failed[i] = true
					mu.Unlock()
				}
				if err := u.save(ctx); err != nil {
					mu.Lock()
					if firstErr == nil {
						firstErr = err
					}
					mu.Unlock()
				}
			}
		}(sinks[w%len(sinks)])
	}
hand:
	for i := range feed {
		u.mu.Lock()
		state, key := u.rec.Entities[i].State, u.rec.Entities[i].Key
		u.mu.Unlock()
		mu.Lock()
		switch {
		case state == runs.StateSucceeded: // published before an interruption
			mu.Unlock()
			continue
		case state == runs.StateFailed && key == "": // could not be unpacked, or absent under absent_files: fail
			failed[i] = true
			mu.Unlock()
			continue
		}
		stop := firstErr != nil || brokerErr != nil || fullErr != nil
		mu.Unlock()
		if stop {
			break
		}
		select {
		case next <- i:
		case <-ctx.Done():
			break hand
		}
	}
	close(next)
	wg.Wait()
	if err := ctx.Err(); err != nil {
		return err
	}
	if firstErr != nil {
		return firstErr
	}
	if goneErr != nil {
		return fmt.Errorf("%w: %w", errStoredEntitiesGone, goneErr)
	}
	if brokerErr != nil {
		return newWaiting(WaitingForBroker, brokerErr)
	}
	if fullErr != nil {
		return newWaiting(WaitingForQueueSpace, fullErr)
	}
	if routeErr != nil {
		return newWaiting(WaitingForQueue, routeErr)
	}
	var names []string
	for i := range u.rec.Entities {
		if failed[i] {
			names = append(names, u.rec.Entities[i].Entity)
		}
	}
	switch {
	case len(names) == 0:
		return nil
	case len(names) < len(u.rec.Entities):
		u.rec.State = runs.StatePartiallySucceeded
		u.rec.Error = fmt.Sprintf("%d of %d entities failed: %s; once fixed, %s publishes their stored files again",
			len(names), len(u.rec.Entities), strings.Join(names, ", "), ReplayCommand(u.exp.Name, u.rec.RunID, names))
		return nil
	default:
		return fmt.Errorf("every entity failed to publish (%s); see the entity errors in the run record", strings.Join(names, ", "))
	}
}

// checkpointEvery is how often, at most, the record is saved while an
// entity publishes (or after checkpointBatches batches, whichever comes
// first), so a resumed run republishes at most what was confirmed since.
const checkpointEvery = 250 * time.Millisecond

// checkpointBatches bounds the batches confirmed between two checkpoints.
const checkpointBatches = 50

// publishEntity publishes entity e's rows, after its last confirmed batch
// when the run resumes. Its bytes come from source when not nil (the
// package file), else from the store.
func (u *run) publishEntity(ctx context.Context, sink publish.Sink, e *runs.EntityRecord, source func() (io.ReadCloser, error)) error {
	// An Absent entity has nothing stored: it is published like a 0-byte
	// file, one batch without rows, so consumers see it complete.
	rc := io.NopCloser(strings.NewReader(""))
	if !e.Absent {
		var err error
		if source != nil {
			if rc, err = source(); err != nil {
				return fmt.Errorf("entity %s: open its file in the package: %w", e.Entity, err)
			}
		} else if rc, err = unpack.OpenStored(ctx, u.st, e.Key, e.Compression); err != nil {
			return fmt.Errorf("entity %s: open stored file: %w", e.Entity, err)
		}
	}
	defer func() { _ = rc.Close() }()
	log := u.log.With("entity", e.Entity)
	ctx, span := u.r.tracer().Start(ctx, "publish "+e.Entity)
	retries := u.retries.Load()
	b := u.batching()
	resumeFrom := int64(0)
	// Records written before max_batch_bytes existed close batches by rows
	// only; a run keeps the setting it started with.
	maxBatchBytes := b.MaxBatchBytes
	if maxBatchBytes == 0 {
		maxBatchBytes = publish.NoBatchByteLimit
	}
	if u.resuming && e.LastBatch >= 0 {
		resumeFrom = e.LastBatch + 1
		// Records of earlier versions counted batches handed to the broker
		// but never confirmed: only the batches through LastBatch count.
		// Records with max_batch_bytes count only confirmed rows: Rows is
		// where the batch after LastBatch starts.
		u.mu.Lock()
		e.Batches = resumeFrom
		if b.BatchSize > 0 && b.MaxBatchBytes == 0 {
			e.Rows = min(e.Rows, resumeFrom*int64(b.BatchSize))
		}
		u.mu.Unlock()
		log.Info("resuming entity after its last confirmed batch", "last_batch", e.LastBatch)
	} else {
		u.mu.Lock() // other entities' checkpoints snapshot the record
		e.LastBatch, e.Rows, e.Batches = -1, 0, 0
		u.mu.Unlock()
	}
	log.Info("publishing entity", "format", e.Format, "bytes", e.Bytes)
	baseRows := e.Rows
	var lastSave time.Time
	savedBatch := e.LastBatch
	o := publish.EntityOptions{
		Job: u.exp.Name, RunID: u.rec.RunID, ExecutionID: u.rec.ExecutionID, Entity: e.Entity,
		Exchange: u.exp.Exchange, RoutingKey: u.exp.RoutingKey, BatchSize: b.BatchSize,
		Format: e.Format, Sheet: e.Sheet, RefreshType: e.RefreshType, Compression: b.Compression, CompressionLevel: u.exp.CompressionLevel, ResumeFrom: resumeFrom,
		ResumeRows: baseRows, MaxBatchBytes: maxBatchBytes, MaxMessageBytes: u.exp.MaxMessageBytes, TraceParent: traceParent(ctx), Clock: u.r.clock(),
		Progress: func(s publish.EntityStats) {
			u.mu.Lock()
			confirmed := e.Rows
			u.mu.Unlock()
			u.emit(Event{Entity: e.Entity, Rows: confirmed, Sent: baseRows + s.Rows, Done: s.BytesIn, Total: e.Bytes})
		},
		Confirmed: func(batch, rowsThrough int64) {
			u.mu.Lock()
			u.r.Metrics.published(u.exp.Name, e.Entity, rowsThrough-e.Rows, batch+1-e.Batches)
			e.LastBatch, e.Rows, e.Batches = batch, rowsThrough, batch+1
			due := u.r.clock().Since(lastSave) >= checkpointEvery || batch-savedBatch >= checkpointBatches
			if due {
				lastSave, savedBatch = u.r.clock().Now(), batch
			}
			u.mu.Unlock()
			u.emit(Event{Entity: e.Entity, Rows: rowsThrough, Confirmed: true})
			if due { // a checkpoint a resumed run can start from
				if err := u.save(ctx); err != nil {
					log.Warn("checkpoint not saved", "err", err)
				}
			}
		},
	}
	rs := e.Read
	if rs == nil { // a record of an earlier version, or settings all default
		rs = &runs.ReadSettings{Delimiter: b.Delimiter}
	}
	readOptions(rs, &o, e)
	stats, err := publish.PublishEntity(ctx, rc, sink, o)
	u.noteReading(log, e, stats)
	// e.Rows and e.Batches now count what the broker confirmed: the
	// batches handed to it but unconfirmed are published again on resume.
	endEntity(span, e, stats, resumeFrom, u.retries.Load()-retries, err)
	if err != nil {
		return fmt.Errorf("entity %s (file %s, source format %s): %w", e.Entity, e.File, e.SourceFormat, err)
	}
	log.Info("entity published", "rows", e.Rows, "batches", e.Batches, "resumed_from_batch", resumeFrom)
	return nil
}

// noteReading records how e's file was read and warns about what was
// read on a guess: the default code page (once per run) and qualifiers
// kept as data.
func (u *run) noteReading(log *slog.Logger, e *runs.EntityRecord, st publish.EntityStats) {
	u.mu.Lock()
	e.Encoding, e.LooseQuotes = st.Encoding, st.LooseQuotes
	u.mu.Unlock()
	if st.DefaultEncoding {
		u.defaultCharset.Do(func() {
			log.Warn("entity file is not UTF-8 and read as windows-1252, F&O's default code page for non-Unicode source formats; set encoding for the export or entity if its source format uses another code page",
				"source_format", e.SourceFormat, "setting", "encoding: windows-1252")
		})
	}
	if st.LooseQuotes > 0 {
		log.Warn("text qualifiers inside values were not doubled and are kept as data; check the values, or set strict_quotes: true to fail such files",
			"count", st.LooseQuotes, "first_line", st.LooseQuoteLine)
	}
}

// batching returns the settings the run's batches are shaped by: those
// recorded when the run started or, for a record of an earlier version, the
// export's current ones.
func (u *run) batching() runs.BatchSettings {
	if u.rec.Batching != nil {
		return *u.rec.Batching
	}
	return *batchSettingsOf(u.exp)
}

// DefaultParallelEntities is how many entities publish at once when
// exports[].parallel_entities is not set: the number of CPUs, at most 4.
// Parsing and encoding a batch is CPU work and the broker confirms each
// connection's messages in turn, so a few entities at once fill both; more
// would only divide broker.max_unconfirmed_bytes into smaller shares.
func DefaultParallelEntities() int { return min(runtime.NumCPU(), 4) }

// memoryBase is what a process needs besides what its exports or sinks
// hold: the runtime, the scheduler, connections, one batch in hand.
const memoryBase = 40 << 20

// MemoryLimit is the soft memory limit (runtime/debug.SetMemoryLimit) a
// process running cfg's exports needs: a base for the runtime, the
// scheduler and one batch being encoded per entity, plus, per export,
// twice its broker.max_unconfirmed_bytes (the bodies held until confirmed,
// across its parallel entities, and the batches around them). Without a
// limit the garbage collector lets the heap grow to twice what is live
// before collecting, which is what made the peak resident set; with it,
// it collects sooner once near the limit. It is soft: a heap that needs
// more still gets it.
func MemoryLimit(cfg *Config) int64 {
	limit := int64(memoryBase)
	for i := range cfg.Exports {
		b := cfg.Exports[i].Broker
		if b.Type != "amqp" {
			continue
		}
		limit += 2 * int64(unconfirmedShare(b.MaxUnconfirmedBytes, 1))
	}
	return limit
}

func (e *Export) parallelEntities() int {
	if e.ParallelEntities > 0 {
		return e.ParallelEntities
	}
	return DefaultParallelEntities()
}

// newSink returns one sink for entities published one after another.
func (u *run) newSink(ctx context.Context) (publish.Sink, error) {
	s, err := u.newSinks(ctx, 1)
	if err != nil {
		return nil, err
	}
	return s[0], nil
}

// newSinks returns the sinks n entities publish through at once. An AMQP
// broker gets n connections, each with its share of
// broker.max_unconfirmed_bytes, so the bodies held for confirms stay within
// that setting across all of them. A file sink, and a sink from
// Runner.NewSink, is one sink shared (both are safe for concurrent use).
func (u *run) newSinks(ctx context.Context, n int) ([]publish.Sink, error) {
	if u.r.NewSink != nil {
		s, err := u.r.NewSink(ctx, u.exp)
		if err != nil {
			return nil, err
		}
		return []publish.Sink{fencedSink{s, u.lease}}, nil
	}
	if u.exp.Broker.Type != "amqp" {
		n = 1
	}
	var sinks []publish.Sink
	for i := 0; i < n; i++ {
		s, err := openSink(ctx, u.exp, u.log, n, u.r.clock())
		if err != nil {
			for _, s := range sinks {
				_ = s.Close()
			}
			return nil, err
		}
		sinks = append(sinks, fencedSink{s, u.lease})
	}
	return sinks, nil
}

// fencedSink publishes a batch only while the run's lease is still this
// process's (runs.Lease.Fence): a replica paused past its lease publishes
// nothing after the takeover, whatever batch it was about to send.
type fencedSink struct {
	publish.Sink
	lease *runs.Lease
}

func (s fencedSink) Publish(ctx context.Context, m publish.Message) error {
	if err := s.lease.Fence(ctx); err != nil {
		return err
	}
	return s.Sink.Publish(ctx, m)
}

// openSink connects the sink an export's broker section describes and
// makes sure its exchange exists (declaring the topology when asked to),
// for one of shares sinks publishing at once: an AMQP sink gets 1/shares
// of broker.max_unconfirmed_bytes (at least 1 MiB), and clock for its
// backoff.
func openSink(ctx context.Context, exp *Export, log *slog.Logger, shares int, clock clockwork.Clock) (publish.Sink, error) {
	b := exp.Broker
	switch b.Type {
	case "file":
		s, err := publish.NewFileSink(b.Path)
		if err != nil {
			return nil, fmt.Errorf("%w (check broker.path)", err) // it names the sink and the path
		}
		return s, nil
	case "amqp":
		s, err := publish.DialAMQP(ctx, publish.AMQPOptions{
			URL: b.URL.Reveal(), ConfirmWindow: b.ConfirmWindow, MaxUnconfirmedBytes: unconfirmedShare(b.MaxUnconfirmedBytes, shares),
			ReconnectTimeout: b.ReconnectTimeout, BackpressureTimeout: b.BackpressureTimeout,
			ConnectionName: connectionName(exp.Name), Logger: log, Clock: clock,
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
			_ = s.Close()
			return nil, err
		}
		return s, nil
	default:
		return nil, fmt.Errorf("unknown broker type %q", b.Type)
	}
}

// unconfirmedShare is one of shares parts of the max_unconfirmed_bytes
// setting (0: the publisher's default), at least 1 MiB.
func unconfirmedShare(total, shares int) int {
	if total <= 0 {
		total = publish.DefaultMaxUnconfirmedBytes
	}
	return max(total/max(shares, 1), 1<<20)
}

func connectionName(job string) string {
	host, _ := os.Hostname()
	return "dmfexport/" + host + "/" + job
}

func (u *run) meta(extra map[string]string) map[string]string {
	m := map[string]string{"export": u.exp.Name, "job": u.exp.Name, "run": u.rec.RunID, "executionid": u.rec.ExecutionID}
	for k, v := range extra {
		m[k] = v
	}
	return m
}

// executionErrors are F&O's errors as a run record keeps them.
func executionErrors(errs []dmf.ExecutionError) []runs.ExecutionError {
	out := make([]runs.ExecutionError, len(errs))
	for i, e := range errs {
		out[i] = runs.ExecutionError{RecordID: e.RecordID, Field: e.Field, Message: e.Message}
	}
	return out
}

// sleep waits d on the Runner's clock, or until ctx is done.
func (r *Runner) sleep(ctx context.Context, d time.Duration) error {
	return ctxio.SleepOn(ctx, r.clock(), d)
}
