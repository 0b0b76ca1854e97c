package jobs

import (
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"reflect"
	"time"

	"github.com/dmfexport/dmfexport/runs"
	"github.com/dmfexport/dmfexport/store"
	"github.com/dmfexport/dmfexport/unpack"
)

// unpacking is a downloaded package being stored as entity objects while
// its entities publish. Entities are stored costliest first and each is
// handed to the publishers (ready) as soon as its object is stored, so
// publishing starts after the first entity is stored instead of after the
// last. With a store across a network (remote) the publishers read each
// entity from the package file itself instead of reading it back from the
// store, and the package is stored after the entities, while they publish.
//
// The record keeps what resuming needs, as before: an entity is published
// only once its object is stored and its record carries the object's
// size and SHA-256, so an attempt after an interruption keeps what the
// broker confirmed for it (see stored); the record says Unpacked only once
// every object is stored.
type unpacking struct {
	pkg    *unpack.Package
	tmp    *os.File
	remote bool
	// losses is the store's recreations when storing started: a store
	// that lost its objects since holds only some of the entity files,
	// though publishing from the package file did not notice.
	losses int64
	// ready receives indexes into the record's entities as each is done
	// storing (stored, failed, or absent from the package), each once; it
	// is closed when storing ends. Its buffer holds every entity, so
	// storing never waits for the publishers.
	ready chan int
	done  chan struct{}
	// After done is closed: how storing ended and how long it took.
	err  error
	took time.Duration
}

// storedOnNetwork reports whether st is across a network, where reading
// an entity back costs a transfer the local package file saves.
func storedOnNetwork(st store.Store) bool {
	_, local := st.(*store.DirStore)
	return !local
}

// startUnpack opens the package file tmp, records its entities as the
// package plans them and stores them: with a store across a network in
// the background (the caller publishes from the unpacking's ready
// entities meanwhile), else before it returns. The caller then calls
// finish, which removes tmp; on an error tmp stays the caller's to remove.
func (u *run) startUnpack(ctx context.Context, tmp *os.File, storePackage bool) (*unpacking, error) {
	if err := u.enter(ctx, runs.StateUnpacking, fmt.Sprintf("%d bytes", u.rec.PackageBytes)); err != nil {
		return nil, err
	}
	pkg, err := unpack.Open(tmp.Name(), unpack.ExplodeOptions{Prefix: u.ledger.Entities(u.rec.RunID), Meta: u.meta(nil), Compress: u.exp.Store.Compress})
	if err != nil {
		return nil, fmt.Errorf("unpack package of execution %s: %w", u.rec.ExecutionID, err)
	}
	un := &unpacking{pkg: pkg, tmp: tmp, remote: storedOnNetwork(u.st), losses: store.Recreations(u.st), done: make(chan struct{})}
	planned := pkg.Entities()
	un.ready = make(chan int, len(planned))

	// Entities published before the package was fetched again (the store
	// lost their files, or the run was cut off while unpacking) keep what
	// the broker confirmed when their file is the same: stored compares.
	before := map[string]runs.EntityRecord{}
	for _, e := range u.rec.Entities {
		before[e.Entity] = e
	}
	entities := make([]runs.EntityRecord, len(planned))
	order := make([]int, len(planned))
	for i, o := range planned {
		e := runs.EntityRecord{
			Entity: o.Entity, File: o.File, SourceFormat: o.SourceFormat, Format: o.Format, Sheet: o.Sheet,
			RefreshType: o.RefreshType, Absent: o.Absent, Fields: o.Fields,
			Key: o.Key, Compression: o.Compression, Bytes: pkg.DeclaredSize(i), State: runs.StatePending, LastBatch: -1,
		}
		if rs := u.exp.readSettings(o.Entity); !reflect.ValueOf(rs).IsZero() {
			e.Read = &rs
		}
		entities[i], order[i] = e, i
	}
	costliestFirst(entities, order) // by the sizes the package declares, until stored
	u.mu.Lock()
	u.rec.Entities = entities
	u.mu.Unlock()

	handed := make([]bool, len(planned)) // Store calls stored on one goroutine
	stored := func(i int, o unpack.EntityObject) {
		// Stored again (into a store created anew): the same bytes, and
		// the entity may be publishing already.
		if handed[i] {
			return
		}
		handed[i] = true
		u.noteStored(i, o, before)
		un.ready <- i
	}
	work := func() {
		defer close(un.done)
		defer close(un.ready)
		sctx, span := u.r.tracer().Start(ctx, "unpack")
		start := u.r.clock().Now()
		err := pkg.Store(sctx, u.st, order, stored)
		if errors.Is(err, store.ErrRecreated) {
			// The store was created again under an entity write that cannot
			// resend its bytes: store every entity again into the new store.
			u.log.Warn("the store was created again while unpacking; unpacking the package again", "err", err)
			err = pkg.Store(sctx, u.st, order, stored)
		}
		un.took = u.r.clock().Since(start)
		endStep(span, 0, err)
		if err != nil {
			un.err = fmt.Errorf("unpack package of execution %s: %w", u.rec.ExecutionID, err)
			return
		}
		u.unpacked(pkg.Result())
		if storePackage {
			u.storePackageFile(ctx, tmp)
		}
	}
	if !un.remote {
		// A directory store writes as fast as the package is read: the
		// entities are all stored before any is published, as one step.
		work()
		if un.err != nil {
			return nil, un.finish(u)
		}
		return un, nil
	}
	go work()
	return un, nil
}

// noteStored records what storing made of the entity at index i, before
// it is handed to the publishers: its object's size and hash, or why it
// cannot be published; and, when the same file was published by an
// earlier attempt of the run (before), what the broker confirmed of it.
func (u *run) noteStored(i int, o unpack.EntityObject, before map[string]runs.EntityRecord) {
	u.mu.Lock()
	defer u.mu.Unlock()
	e := &u.rec.Entities[i]
	e.Key, e.Bytes, e.SHA256 = o.Key, o.Size, o.SHA256
	e.Compression, e.StoredBytes = o.Compression, o.StoredSize
	if p, ok := before[e.Entity]; ok && (p.SHA256 != "" || p.Absent && e.Absent) && p.SHA256 == e.SHA256 && p.Bytes == e.Bytes && o.Err == nil {
		e.State, e.Rows, e.Batches, e.LastBatch = p.State, p.Rows, p.Batches, p.LastBatch
		e.Encoding, e.LooseQuotes, e.Read = p.Encoding, p.LooseQuotes, p.Read
	}
	switch {
	case o.Err != nil:
		e.State, e.Error = runs.StateFailed, o.Err.Error()
		u.log.Error("entity cannot be unpacked", "entity", o.Entity, "err", o.Err)
	case o.Absent && u.exp.AbsentFiles == "fail":
		e.State, e.Error = runs.StateFailed, fmt.Sprintf("entity %s: file %q is listed in Manifest.xml but not in the package (absent_files: fail; set absent_files: empty to publish it as an entity without rows)", o.Entity, o.File)
		u.log.Error("entity file absent from the package", "entity", o.Entity, "file", o.File)
	}
}

// unpacked records that every entity object is stored, and says what the
// package held besides its entities' files.
func (u *run) unpacked(res *unpack.Result) {
	var absent []string
	for _, o := range res.Entities {
		if o.Absent && u.exp.AbsentFiles != "fail" {
			absent = append(absent, fmt.Sprintf("%s (%s)", o.Entity, o.File))
		}
	}
	if len(absent) > 0 {
		// F&O leaves out the files of entities without rows: usual, but
		// worth saying, since a wrong data project looks the same.
		u.log.Warn("entity files listed in Manifest.xml but absent from the package; published as entities without rows",
			"count", len(absent), "entities", absent)
	}
	for _, name := range res.Unlisted {
		u.log.Warn("package file not listed in Manifest.xml, not published", "file", name)
	}
	u.mu.Lock()
	u.rec.Unpacked = true
	u.mu.Unlock()
}

// storePackageFile stores the downloaded package, after its entities, for
// a store across a network: the entities are what the run needs, the
// package only saves a download when a run cut off before it unpacked is
// resumed, so it does not hold them up. A failure is not the run's: it
// is said, and a resume downloads the package again.
func (u *run) storePackageFile(ctx context.Context, tmp *os.File) {
	key := u.ledger.Package(u.rec.RunID)
	u.mu.Lock()
	n, sum := u.rec.PackageBytes, u.rec.PackageSHA256
	u.mu.Unlock()
	if _, err := u.st.Put(ctx, key, io.NewSectionReader(tmp, 0, n), u.meta(map[string]string{"sha256": sum})); err != nil {
		if ctx.Err() == nil {
			u.log.Warn("package not stored; the run goes on with its stored entity files (a resume before they are all stored downloads the package again)", "key", key, "err", err)
		}
		return
	}
	u.mu.Lock()
	u.rec.PackageKey = key
	u.mu.Unlock()
}

// finish waits for storing to end, records how long it took and releases
// the package file; it returns storing's error, or errStoredEntitiesGone
// when the store lost its objects since storing started. A nil unpacking
// (the run was unpacked before) finishes at once.
func (un *unpacking) finish(u *run) error {
	if un == nil {
		return nil
	}
	<-un.done
	if un.err == nil && un.remote && store.Recreations(u.st) != un.losses {
		un.err = fmt.Errorf("%w: the store was created anew while the run unpacked and published", errStoredEntitiesGone)
	}
	_ = un.pkg.Close()
	_ = un.tmp.Close()
	_ = os.Remove(un.tmp.Name())
	u.mu.Lock()
	u.steps["unpack"] = un.took
	u.rec.Durations["unpack"] = un.took.Round(time.Millisecond).String()
	u.mu.Unlock()
	return un.err
}

// source opens the bytes of the entity at index i for publishing: from the
// package file when the store is across a network; nil (the store) otherwise.
func (un *unpacking) source(i int) func() (io.ReadCloser, error) {
	if un == nil || !un.remote {
		return nil
	}
	return func() (io.ReadCloser, error) { return un.pkg.OpenEntity(i) }
}
