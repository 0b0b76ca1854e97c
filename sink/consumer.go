package sink

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net/url"
	"os"
	"slices"
	"sync"
	"sync/atomic"
	"time"

	amqp "github.com/rabbitmq/amqp091-go"
	"go.opentelemetry.io/otel/trace"

	"github.com/dmfexport/dmfexport/internal/ctxio"
	"github.com/dmfexport/dmfexport/internal/redact"
	"github.com/dmfexport/dmfexport/internal/spans"
)

// Defaults of a Consumer's knobs.
const (
	DefaultPrefetch = 8
	// GroupBytes bounds the message bodies of the batches a consumer has
	// decoded and not yet landed (a decoded batch takes about as much
	// memory as its body), one group in one transaction at most: batches
	// of 2 MB (the exporter's max_batch_bytes) group by four.
	GroupBytes = 8 << 20
	// ConsumerMemory is what a consumer holds at most with batches of up
	// to GroupBytes/4, for the process's soft memory limit: GroupBytes of
	// batches decoded, and the bodies the broker sent ahead of them (the
	// rest of the prefetch).
	ConsumerMemory       = 2 * GroupBytes
	DefaultMaxDeliveries = 5
	// DefaultQuorum: queues are quorum queues unless configured otherwise.
	DefaultQuorum = true
)

// Headers a dead-lettered batch carries besides its own.
const (
	ReasonHeader = "x-dmfexport-reason" // why the batch could not be applied
	SinkHeader   = "x-dmfexport-sink"   // the sink's name
)

// Consumer reads batches from one queue and lands them through a Backend,
// one at a time, acknowledging each only after its transaction commits.
type Consumer struct {
	Name  string // the sink's name, for logs
	URL   string // amqp:// or amqps:// URL of the broker
	Queue string
	// Quorum declares the queue as a quorum queue (else classic); an
	// existing queue must match.
	Quorum bool
	// Exchange is the exporting exchange the queue is bound to with each
	// of Bindings (routing keys; none → "#"); "" leaves the queue unbound.
	Exchange string
	Bindings []string
	Prefetch int // unacknowledged deliveries at most; 0 → DefaultPrefetch
	// MaxDeliveries is how many deliveries a batch that cannot be applied
	// gets before it goes to the dead-letter exchange <queue>.dead with
	// the reason in ReasonHeader; 0 → DefaultMaxDeliveries.
	MaxDeliveries int
	Entities      map[string]EntityOptions // by entity name
	Backend       Backend
	Logger        *slog.Logger // nil → discard
	Metrics       *Metrics     // nil → none
	// TracerProvider makes the spans of each delivery (see handle); nil →
	// the global one (otel.GetTracerProvider), a no-op unless set.
	TracerProvider trace.TracerProvider

	stats Stats
	// attempts counts rejected deliveries per message ID where the queue
	// does not (classic queues); entries go when the batch leaves.
	attempts map[string]int
	// keepBody holds the message IDs of batches the database refused
	// once their bodies were let go: their next delivery keeps its body,
	// for the dead letter.
	keepBody sync.Map
}

// Stats counts what a Consumer did; read it with Consumer.Stats.
type Stats struct {
	Batches, Rows, Duplicates, Stale, Swaps, DeadLetters atomic.Int64
}

// Stats returns the consumer's counters.
func (c *Consumer) Stats() *Stats { return &c.stats }

// DeadLetterName is the exchange and queue that hold a queue's batches
// that could not be applied.
func DeadLetterName(queue string) string { return queue + ".dead" }

// Run consumes until ctx ends, reconnecting with backoff (200 ms doubling
// to 5 s) after a lost connection. On stop the batch in hand is finished
// (committed and acknowledged) and the others are left to the broker. It
// returns nil on stop, or an error the broker will give again (a queue
// declared with other arguments, access refused).
func (c *Consumer) Run(ctx context.Context) error {
	log := c.log()
	wait := 200 * time.Millisecond
	for {
		connected, err := c.session(ctx, log)
		if ctx.Err() != nil {
			return nil
		}
		var ae *amqp.Error
		if errors.As(err, &ae) && (ae.Code == amqp.PreconditionFailed || ae.Code == amqp.AccessRefused || ae.Code == amqp.NotFound) {
			return fmt.Errorf("sink %s: %w", c.Name, err)
		}
		if connected {
			wait = 200 * time.Millisecond
		}
		log.Warn("broker connection lost, reconnecting", "error", err, "wait", wait)
		if ctxio.Sleep(ctx, wait) != nil {
			return nil
		}
		wait = min(2*wait, 5*time.Second)
	}
}

func (c *Consumer) log() *slog.Logger {
	if c.Logger == nil {
		return slog.New(slog.DiscardHandler)
	}
	return c.Logger
}

func (c *Consumer) password() string {
	u, err := url.Parse(c.URL)
	if err != nil || u.User == nil {
		return ""
	}
	p, _ := u.User.Password()
	return p
}

// Declare connects, creates the queue, its bindings and its dead-letter
// queue as Run does when it starts, and disconnects: the batches
// published from then on wait in the queue for Run.
func (c *Consumer) Declare(ctx context.Context) (err error) {
	defer func() {
		if err != nil {
			err = fmt.Errorf("sink %s: %w", c.Name, redact.Error(err, []string{c.password()}, amqp.ErrClosed))
		}
	}()
	if err := ctx.Err(); err != nil {
		return err
	}
	conn, err := amqp.DialConfig(c.URL, amqp.Config{Properties: amqp.Table{"connection_name": "dmfexport-sink/" + c.Name + "/declare"}})
	if err != nil {
		return fmt.Errorf("connect to %s: %w", redact.URL(c.URL), err)
	}
	defer func() { _ = conn.Close() }()
	ch, err := conn.Channel()
	if err != nil {
		return err
	}
	return c.declare(ch)
}

// session connects, declares the topology and consumes until the
// connection ends or ctx does; connected tells whether it got as far as
// consuming.
func (c *Consumer) session(ctx context.Context, log *slog.Logger) (connected bool, err error) {
	defer func() {
		if err != nil {
			err = redact.Error(err, []string{c.password()}, amqp.ErrClosed)
		}
	}()
	host, _ := os.Hostname()
	conn, err := amqp.DialConfig(c.URL, amqp.Config{
		Heartbeat:  10 * time.Second,
		Properties: amqp.Table{"connection_name": "dmfexport-sink/" + c.Name + "/" + host},
	})
	if err != nil {
		return false, fmt.Errorf("connect to %s: %w", redact.URL(c.URL), err)
	}
	defer func() { _ = conn.Close() }()
	ch, err := conn.Channel()
	if err != nil {
		return false, err
	}
	if err := c.declare(ch); err != nil {
		return false, err
	}
	dl, err := conn.Channel()
	if err != nil {
		return false, err
	}
	if err := dl.Confirm(false); err != nil {
		return false, err
	}
	if err := ch.Qos(c.prefetch(), 0, false); err != nil {
		return false, err
	}
	tag := fmt.Sprintf("dmfexport-sink-%s-%d", c.Name, os.Getpid())
	deliveries, err := ch.ConsumeWithContext(context.WithoutCancel(ctx), c.Queue, tag, false, false, false, false, nil)
	if err != nil {
		return false, fmt.Errorf("consume from queue %q: %w", c.Queue, err)
	}
	closed := conn.NotifyClose(make(chan *amqp.Error, 1))
	log.Info("sink consuming", "queue", c.Queue, "prefetch", c.prefetch())
	c.Metrics.started(c.Name, c.Entities)
	if c.Metrics != nil {
		sampling, stop := context.WithCancel(ctx)
		done := make(chan struct{})
		go func() {
			defer close(done)
			c.sampleQueue(sampling, conn, log)
		}()
		defer func() { stop(); <-done }()
	}
	stop := make(chan struct{})
	room := NewByteBudget(GroupBytes)
	batches, decoding := c.decodeAhead(deliveries, stop, room)
	defer decoding.Wait()
	defer room.Close()
	defer close(stop)
	for {
		select {
		case <-ctx.Done():
			_ = ch.Cancel(tag, false)
			return true, nil
		case e := <-closed:
			if e == nil {
				return true, amqp.ErrClosed
			}
			return true, e
		case x, ok := <-batches:
			if !ok {
				return true, fmt.Errorf("deliveries of queue %q ended", c.Queue)
			}
			if x.b == nil || x.err != nil {
				err := c.handle(ctx, log, dl, x)
				room.Release(x.size)
				if err != nil {
					return true, err
				}
				continue
			}
			// The batches decoded meanwhile land with it, in one
			// transaction: a commit per group, not per batch.
			group, next := c.gather(x, batches)
			err := c.handleGroup(ctx, log, dl, group)
			for _, x := range group {
				room.Release(x.size)
			}
			if err == nil && next != nil {
				err = c.handle(ctx, log, dl, *next)
				room.Release(next.size)
			}
			if err != nil {
				return true, err
			}
		}
	}
}

// gather returns first and the batches decoded after it that are ready
// now, up to the prefetch; next is one that cannot be applied, received
// among them, to handle after the group. A group ends with the last batch
// of a snapshot: its swap is tried before the batches after it land, so
// that a batch of an older run coming next is stale, as it would be
// landed on its own.
func (c *Consumer) gather(first decoded, batches <-chan decoded) (group []decoded, next *decoded) {
	group = []decoded{first}
	for len(group) < c.prefetch() && !EndsGroup(group[len(group)-1].b, group[len(group)-1].t) {
		select {
		case x, ok := <-batches:
			if !ok {
				return group, nil // the loop sees the end next
			}
			if x.b == nil || x.err != nil {
				return group, &x
			}
			group = append(group, x)
		default:
			return group, nil
		}
	}
	return group, nil
}

// ByteBudget bounds the bytes held by batches decoded ahead: Acquire
// waits while what is held and n would exceed the budget, unless nothing
// is held (a batch larger than the budget passes alone).
type ByteBudget struct {
	mu     sync.Mutex
	cond   sync.Cond
	held   int
	max    int
	closed bool
}

// NewByteBudget returns a budget of max bytes.
func NewByteBudget(max int) *ByteBudget {
	b := &ByteBudget{max: max}
	b.cond.L = &b.mu
	return b
}

// Acquire holds n bytes, waiting for room; false once Close was called.
func (b *ByteBudget) Acquire(n int) bool {
	b.mu.Lock()
	defer b.mu.Unlock()
	for !b.closed && b.held > 0 && b.held+n > b.max {
		b.cond.Wait()
	}
	if b.closed {
		return false
	}
	b.held += n
	return true
}

// Release gives back n bytes Acquire held.
func (b *ByteBudget) Release(n int) {
	b.mu.Lock()
	b.held -= n
	b.mu.Unlock()
	b.cond.Broadcast()
}

// Close ends the waits of Acquire, and makes it fail from then on.
func (b *ByteBudget) Close() {
	b.mu.Lock()
	b.closed = true
	b.mu.Unlock()
	b.cond.Broadcast()
}

// EndsGroup tells whether a group of batches in one transaction ends with
// b: the last batch of a snapshot, whose swap is tried after the commit.
func EndsGroup(b *Batch, t Target) bool { return t.Mode == Snapshot && b.BatchCount > 0 }

// FinishesRun tells whether group[i], landed in one transaction with the
// rest of group, is the one to ask whether its run's snapshot can be
// swapped in: no later batch of the group is a snapshot batch of the same
// table and run. The batches before it are acknowledged first; if the
// process stops before it asks, that batch comes again and asks.
func FinishesRun(group []Pending, i int) bool {
	t, b := group[i].Target, group[i].Batch
	return !slices.ContainsFunc(group[i+1:], func(p Pending) bool {
		return p.Target.Mode == Snapshot && p.Target.Table == t.Table && p.Batch.RunID == b.RunID
	})
}

// decoded is a delivery and its batch, decoded ahead, with where it lands;
// err: why it cannot be applied.
type decoded struct {
	d        amqp.Delivery
	size     int       // of the body, held in the decoding budget until the batch is handled
	received time.Time // when the delivery was taken from the channel
	b        *Batch    // nil if the body could not be decoded
	t        Target
	err      error
}

// decodeAhead decodes the deliveries while batches are applied, so that
// decoding takes another core than the database's work, and hands them on
// in order, up to the prefetch ahead: every delivery unacknowledged is
// either a body the broker sent or its decoded batch, never both. It ends
// when deliveries do or stop is closed; wait for it with the WaitGroup.
func (c *Consumer) decodeAhead(deliveries <-chan amqp.Delivery, stop <-chan struct{}, room *ByteBudget) (<-chan decoded, *sync.WaitGroup) {
	out := make(chan decoded, c.prefetch())
	var wg sync.WaitGroup
	wg.Go(func() {
		defer close(out)
		for {
			var x decoded
			select {
			case d, ok := <-deliveries:
				if !ok {
					return
				}
				x = decoded{d: d, size: len(d.Body), received: time.Now()}
			case <-stop:
				return
			}
			if !room.Acquire(x.size) {
				return
			}
			x.b, x.err = DecodeBatch(x.d.Body, x.d.ContentEncoding)
			if x.err == nil {
				opts := c.Entities[x.b.Entity]
				filterColumns(x.b, opts)
				x.t, x.err = TargetFor(x.b, opts)
			}
			if _, keep := c.keepBody.Load(x.d.MessageId); x.err == nil && !keep {
				x.d.Body = nil // decoded: only a dead letter needs it again
			}
			select {
			case out <- x:
			case <-stop:
				return
			}
		}
	})
	return out, &wg
}

// queueSampleInterval is how often a consumer reads its queue's depth
// for dmfexport_sink_queue_messages.
var queueSampleInterval = 15 * time.Second

// sampleQueue sets the queue-depth gauge now and every queueSampleInterval
// until ctx ends, on a channel of its own: the consuming loop may be held
// by a batch whose database is down, which is when the depth matters.
func (c *Consumer) sampleQueue(ctx context.Context, conn *amqp.Connection, log *slog.Logger) {
	tick := time.NewTicker(queueSampleInterval)
	defer tick.Stop()
	var ch *amqp.Channel
	defer func() {
		if ch != nil {
			_ = ch.Close()
		}
	}()
	for {
		if ch == nil || ch.IsClosed() {
			var err error
			if ch, err = conn.Channel(); err != nil {
				ch = nil
				log.Debug("queue depth not read", "error", err)
			}
		}
		if ch != nil {
			if q, err := ch.QueueDeclarePassive(c.Queue, true, false, false, false, nil); err != nil {
				log.Debug("queue depth not read", "error", err)
			} else {
				c.Metrics.queueDepth(c.Name, q.Messages)
			}
		}
		select {
		case <-ctx.Done():
			return
		case <-tick.C:
		}
	}
}

func (c *Consumer) prefetch() int {
	if c.Prefetch > 0 {
		return c.Prefetch
	}
	return DefaultPrefetch
}

// declare creates the durable queue, binds it, and creates the dead-letter
// exchange and queue.
func (c *Consumer) declare(ch *amqp.Channel) error {
	var args amqp.Table
	if c.Quorum {
		args = amqp.Table{amqp.QueueTypeArg: amqp.QueueTypeQuorum}
	}
	if _, err := ch.QueueDeclare(c.Queue, true, false, false, false, args); err != nil {
		return fmt.Errorf("declare queue %q: %w: an existing queue must be durable and of the same type (quorum: %v)", c.Queue, err, c.Quorum)
	}
	if c.Exchange != "" {
		if err := ch.ExchangeDeclare(c.Exchange, amqp.ExchangeTopic, true, false, false, false, nil); err != nil {
			return fmt.Errorf("declare exchange %q: %w: the exporter's exchange must be a durable topic exchange", c.Exchange, err)
		}
		keys := c.Bindings
		if len(keys) == 0 {
			keys = []string{"#"}
		}
		for _, k := range keys {
			if err := ch.QueueBind(c.Queue, k, c.Exchange, false, nil); err != nil {
				return fmt.Errorf("bind queue %q to exchange %q with key %q: %w", c.Queue, c.Exchange, k, err)
			}
		}
	}
	dead := DeadLetterName(c.Queue)
	if err := ch.ExchangeDeclare(dead, amqp.ExchangeFanout, true, false, false, false, nil); err != nil {
		return fmt.Errorf("declare dead-letter exchange %q: %w", dead, err)
	}
	if _, err := ch.QueueDeclare(dead, true, false, false, false, args); err != nil {
		return fmt.Errorf("declare dead-letter queue %q: %w", dead, err)
	}
	return ch.QueueBind(dead, "", dead, false, nil)
}

// handle lands one delivery and acknowledges it. An error it returns ends
// the session (the broker connection is in doubt); a batch that cannot be
// applied is requeued, or dead-lettered after MaxDeliveries. Each delivery
// is a span (SpanApply) in the trace of the run that published it.
func (c *Consumer) handle(ctx context.Context, log *slog.Logger, dl *amqp.Channel, x decoded) error {
	// Once a batch is in hand it is finished, even on stop: the
	// transaction and the ack are the safe point.
	work, span := c.startApply(context.WithoutCancel(ctx), x.d, x.b, x.received)
	defer span.End()
	return c.applyOne(ctx, work, log, dl, x)
}

// handleGroup lands deliveries whose batches all decoded, in one
// transaction when the backend is a GroupApplier, and acknowledges them.
// If one of them cannot be applied, each is applied on its own, so that
// only that one is set aside.
func (c *Consumer) handleGroup(ctx context.Context, log *slog.Logger, dl *amqp.Channel, group []decoded) error {
	ga, ok := c.Backend.(GroupApplier)
	if !ok || len(group) == 1 {
		for _, x := range group {
			if err := c.handle(ctx, log, dl, x); err != nil {
				return err
			}
		}
		return nil
	}
	works := make([]context.Context, len(group))
	pending := make([]Pending, len(group))
	for i, x := range group {
		var span trace.Span
		works[i], span = c.startApply(context.WithoutCancel(ctx), x.d, x.b, x.received)
		defer span.End()
		span.SetAttributes(spans.Table.String(x.t.Table), spans.Mode.String(string(x.t.Mode)), spans.GroupBatches.Int(len(group)))
		pending[i] = Pending{Batch: x.b, Target: x.t}
	}
	start := time.Now()
	var outs []Outcome
	attempts := 0
	err := c.retry(ctx, log, "apply batches", func() (err error) {
		attempts++
		// The transaction is a span in each delivery's trace.
		spans := make([]trace.Span, len(works))
		var tctx context.Context
		for i, w := range works {
			var tc context.Context
			tc, spans[i] = c.tracer().Start(w, SpanTransaction)
			if i == 0 {
				tctx = tc
			}
		}
		outs, err = ga.ApplyGroup(tctx, pending)
		for _, ts := range spans {
			endChild(ts, err)
		}
		return err
	})
	for _, w := range works {
		trace.SpanFromContext(w).SetAttributes(spans.Retries.Int(attempts - 1))
	}
	if errors.Is(err, ErrRejected) {
		log.Info("a batch of a group cannot be applied, applying them one by one", "batches", len(group), "error", err)
		for i, x := range group {
			if err := c.applyOne(ctx, works[i], log, dl, x); err != nil {
				return err
			}
		}
		return nil
	}
	if err != nil {
		for _, w := range works {
			trace.SpanFromContext(w).SetAttributes(spans.Outcome.String(outcomeInterrupted))
		}
		return nil // stopping: the broker delivers the batches again
	}
	for i, x := range group {
		if err := c.landed(ctx, works[i], log.With("export", x.b.Export, "run", x.b.RunID, "entity", x.b.Entity, "batch", x.b.BatchIndex), x, outs[i], start, FinishesRun(pending, i)); err != nil {
			return err
		}
	}
	return nil
}

// applyOne lands one delivery in a transaction of its own and
// acknowledges it; work carries its span.
func (c *Consumer) applyOne(ctx, work context.Context, log *slog.Logger, dl *amqp.Channel, x decoded) error {
	span := trace.SpanFromContext(work)
	d, b, t := x.d, x.b, x.t
	if b == nil {
		return c.reject(work, log, dl, d, x.err)
	}
	log = log.With("export", b.Export, "run", b.RunID, "entity", b.Entity, "batch", b.BatchIndex)
	span.SetAttributes(spans.Table.String(t.Table), spans.Mode.String(string(t.Mode)))
	if x.err != nil {
		return c.reject(work, log, dl, d, x.err)
	}
	start := time.Now()
	var out Outcome
	attempts := 0
	err := c.retry(ctx, log, "apply batch", func() (err error) {
		attempts++
		tctx, ts := c.tracer().Start(work, SpanTransaction)
		out, err = c.Backend.Apply(tctx, b, t)
		endChild(ts, err)
		return err
	})
	span.SetAttributes(spans.Retries.Int(attempts - 1))
	if err != nil {
		if errors.Is(err, ErrRejected) {
			return c.reject(work, log, dl, d, err)
		}
		span.SetAttributes(spans.Outcome.String(outcomeInterrupted))
		return nil // stopping: the broker delivers the batch again
	}
	return c.landed(ctx, work, log, x, out, start, true)
}

// landed counts and logs a delivery whose batch committed with outcome
// out, swaps in its snapshot when the batch completed one (unless finish
// is false: a batch committed with it does), and acknowledges it; start is
// when its transaction began.
func (c *Consumer) landed(ctx, work context.Context, log *slog.Logger, x decoded, out Outcome, start time.Time, finish bool) error {
	span := trace.SpanFromContext(work)
	d, b, t := x.d, x.b, x.t
	span.SetAttributes(spans.Outcome.String(out.String()))
	switch out {
	case Applied:
		c.stats.Batches.Add(1)
		c.stats.Rows.Add(int64(len(b.Rows)))
		log.Debug("batch applied", "table", t.Table, "mode", t.Mode, "rows", len(b.Rows), "took", time.Since(start).Round(time.Microsecond))
	case Duplicate:
		c.stats.Duplicates.Add(1)
		log.Info("batch already applied, skipped", "message_id", b.MessageID)
	case Stale:
		c.stats.Stale.Add(1)
		log.Info("batch of a run older than the snapshot applied to its table, skipped", "table", t.Table)
	}
	if t.Mode == Snapshot && out != Stale && finish {
		var swapped bool
		err := c.retry(ctx, log, "finish snapshot", func() (err error) {
			sctx, ss := c.tracer().Start(work, SpanSwap)
			swapped, err = c.Backend.FinishSnapshot(sctx, t, b.RunID)
			ss.SetAttributes(spans.Swapped.Bool(swapped))
			endChild(ss, err)
			return err
		})
		span.SetAttributes(spans.Swapped.Bool(swapped))
		if err != nil && !errors.Is(err, ErrRejected) {
			span.SetAttributes(spans.Outcome.String(outcomeInterrupted))
			return nil
		}
		if err != nil {
			// The batch is in; the swap is refused (keys repeated in
			// the run's rows). The staged rows stay for an operator.
			log.Error("snapshot cannot replace the table", "table", t.Table, "error", err)
		}
		if swapped {
			c.stats.Swaps.Add(1)
			c.Metrics.swapped(c.Name, b.Entity)
			log.Info("snapshot swapped in", "table", t.Table, "batches", b.BatchCount)
		}
	}
	c.Metrics.batch(c.Name, b, out, time.Since(start))
	c.keepBody.Delete(d.MessageId)
	return d.Ack(false)
}

// retry calls f until it succeeds, fails with ErrRejected, or ctx ends,
// waiting 500 ms doubling to 30 s between attempts: a database that is
// down or restarting holds the batch, it does not lose or reject it.
func (c *Consumer) retry(ctx context.Context, log *slog.Logger, what string, f func() error) error {
	wait := 500 * time.Millisecond
	for {
		err := f()
		if err == nil || errors.Is(err, ErrRejected) {
			return err
		}
		log.Warn(what+" failed, retrying", "error", err, "wait", wait)
		if err := ctxio.Sleep(ctx, wait); err != nil {
			return err
		}
		wait = min(2*wait, 30*time.Second)
	}
}

// reject requeues a batch that cannot be applied, or, once it has been
// delivered MaxDeliveries times, publishes it to the dead-letter exchange
// with the reason and acknowledges it, so the queue keeps flowing. The
// delivery's span in ctx records which, and the reason.
func (c *Consumer) reject(ctx context.Context, log *slog.Logger, dl *amqp.Channel, d amqp.Delivery, reason error) error {
	span := trace.SpanFromContext(ctx)
	failSpan(span, reason)
	limit := c.MaxDeliveries
	if limit <= 0 {
		limit = DefaultMaxDeliveries
	}
	if c.attempts == nil {
		c.attempts = map[string]int{}
	}
	c.attempts[d.MessageId]++
	n := max(deliveries(d), c.attempts[d.MessageId])
	if d.Body == nil {
		// Decoded, its body was let go; the database refused it. The
		// dead letter needs the body: the next delivery keeps it.
		c.keepBody.Store(d.MessageId, true)
		n = min(n, limit-1)
	}
	if n < limit {
		log.Warn("batch cannot be applied, requeued", "message_id", d.MessageId, "delivery", n, "max_deliveries", limit, "error", reason)
		span.SetAttributes(spans.Outcome.String(outcomeRequeued))
		_ = ctxio.Sleep(ctx, time.Second) // not at once: the same batch comes back
		return d.Nack(false, true)
	}
	headers := amqp.Table{}
	for k, v := range d.Headers {
		headers[k] = v
	}
	headers[ReasonHeader] = reason.Error()
	headers[SinkHeader] = c.Name
	dc, err := dl.PublishWithDeferredConfirmWithContext(ctx, DeadLetterName(c.Queue), "", false, false, amqp.Publishing{
		Headers: headers, ContentType: d.ContentType, ContentEncoding: d.ContentEncoding, DeliveryMode: amqp.Persistent,
		CorrelationId: d.CorrelationId, MessageId: d.MessageId, Timestamp: d.Timestamp, Type: d.Type, AppId: d.AppId, Body: d.Body,
	})
	if err != nil {
		return err
	}
	if ok, err := dc.WaitContext(ctx); err != nil || !ok {
		return fmt.Errorf("dead-letter exchange refused batch %s: %w", d.MessageId, err)
	}
	delete(c.attempts, d.MessageId)
	c.keepBody.Delete(d.MessageId)
	span.SetAttributes(spans.Outcome.String(outcomeDeadLettered))
	c.stats.DeadLetters.Add(1)
	c.Metrics.deadLettered(c.Name)
	log.Error("batch dead-lettered", "message_id", d.MessageId, "deliveries", n, "dead_letter_queue", DeadLetterName(c.Queue), "error", reason)
	return d.Ack(false)
}

// deliveries is how many times d has been delivered, this time included:
// a quorum queue counts in x-delivery-count; a classic queue only says
// whether it was delivered before.
func deliveries(d amqp.Delivery) int {
	switch n := d.Headers["x-delivery-count"].(type) {
	case int64:
		return int(n) + 1
	case int32:
		return int(n) + 1
	case int:
		return n + 1
	}
	if d.Redelivered {
		return 2
	}
	return 1
}
