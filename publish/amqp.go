package publish

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"maps"
	"net"
	"net/url"
	"os"
	"sync"
	"time"

	"github.com/jonboulle/clockwork"
	amqp "github.com/rabbitmq/amqp091-go"

	"github.com/dmfexport/dmfexport/internal/cause"
	"github.com/dmfexport/dmfexport/internal/ctxio"
	"github.com/dmfexport/dmfexport/internal/redact"
)

// Defaults applied by DialAMQP to zero-valued AMQPOptions.
const (
	// DefaultConfirmWindow is the number of unconfirmed messages in flight.
	DefaultConfirmWindow = 128
	// DefaultReconnectTimeout is how long a lost connection is retried.
	DefaultReconnectTimeout = 2 * time.Minute
	// DefaultBackpressureTimeout is how long refused (nacked) messages are
	// published again while the broker stores none.
	DefaultBackpressureTimeout = 2 * time.Minute
	// DefaultMaxUnconfirmedBytes bounds the bodies held until confirmed.
	DefaultMaxUnconfirmedBytes = 16 << 20
)

// maxRepublish bounds how often one message is sent again after lost
// connections, so a broker that keeps dropping the channel ends the run.
const maxRepublish = 20

// closeTimeout bounds how long Close waits for the broker to confirm the
// close: a broker that blocked the connection (memory or disk alarm) never
// answers, and a stop must not wait for it.
const closeTimeout = 5 * time.Second

// closeGrace is how long past closeTimeout Close waits for the library to
// give up on the connection before it cuts the socket, and again after.
const closeGrace = 500 * time.Millisecond

// ErrBrokerUnavailable is wrapped by the errors of a sink that cannot reach
// the broker: the first connection failed, or a lost one was not restored
// within ReconnectTimeout. Nothing it was given is lost: the messages it
// did not confirm can be published again once the broker is back, so
// callers keep their work resumable rather than failing it.
var ErrBrokerUnavailable = errors.New("broker unavailable")

// ErrUnroutable is wrapped by the error of a sink whose broker returned a
// mandatory message because no queue is bound to the exchange with its
// routing key. The message is not stored anywhere: publishing it again once
// a queue is bound loses nothing.
var ErrUnroutable = errors.New("unroutable")

// ErrQueueFull is wrapped by the error of a sink whose broker kept refusing
// (nacking) its messages for BackpressureTimeout without storing one: a
// queue at its x-max-length with x-overflow reject-publish whose consumers
// take too little, or a broker that cannot store messages. The refused
// messages are not stored: publishing them again once the queue has room
// loses nothing.
var ErrQueueFull = errors.New("queue full")

// Back-off between publishing refused messages again: from
// minBackpressureDelay, doubled while the broker stores nothing, at most
// maxBackpressureDelay.
const (
	minBackpressureDelay = 200 * time.Millisecond
	maxBackpressureDelay = 5 * time.Second
)

// RepublishedHeader is the AMQP header set to true on a message sent again
// after a lost connection or a nack; it carries the same message ID as the
// first copy, which the broker may have stored too.
const RepublishedHeader = "x-republished"

// AMQPOptions configures DialAMQP.
type AMQPOptions struct {
	// URL is amqp:// or amqps://. It never appears in logs or errors with
	// its password.
	URL string
	// ConfirmWindow is the number of unconfirmed messages in flight; 0 means
	// DefaultConfirmWindow.
	ConfirmWindow int
	// MaxUnconfirmedBytes bounds the body bytes in flight (the sink keeps
	// them until confirmed); 0 means DefaultMaxUnconfirmedBytes. One
	// message is always allowed, whatever its size.
	MaxUnconfirmedBytes int
	// ConnectionName is shown in the RabbitMQ management UI.
	ConnectionName string
	// ReconnectTimeout is how long the sink keeps reconnecting (with
	// backoff from 200 ms to 5 s, the last attempt at the timeout itself)
	// after the connection or channel is lost; 0 means
	// DefaultReconnectTimeout, negative disables reconnecting.
	ReconnectTimeout time.Duration
	// BackpressureTimeout is how long the sink keeps publishing refused
	// (nacked) messages again, with backoff, while the broker stores none of
	// its messages; past it the refused messages fail with ErrQueueFull. 0
	// means DefaultBackpressureTimeout, negative fails them at the first
	// nack.
	BackpressureTimeout time.Duration
	// Logger receives connection events; nil discards them.
	Logger *slog.Logger
	// Clock times the sink's own waits and bounds: the reconnect and
	// back-pressure backoff and timeouts. nil means the real clock. The
	// deadlines handed to the socket and the AMQP library (the handshake,
	// a close) are the wall clock's, which the operating system keeps.
	Clock clockwork.Clock
}

// Topology is what Declare creates on the broker.
type Topology struct {
	Exchange     string // "" is the default exchange: nothing to declare or bind
	ExchangeType string // "" means "topic"
	Queues       []QueueBinding
}

// QueueBinding is one durable queue and the key binding it to the exchange.
type QueueBinding struct {
	Queue, BindingKey string
	Quorum            bool // declare with x-queue-type quorum
}

// AMQPSink publishes to RabbitMQ over one channel in confirm mode, every
// message persistent and mandatory. Up to ConfirmWindow messages are in
// flight; Publish waits for the oldest confirm when the window is full. A
// message counts as stored only when the broker acked it and did not return
// it as unroutable; its OnStored hook then runs, in publish order. Messages
// stay in an ordered list, bodies included, until confirmed, so memory is
// bounded by the window times the batch size.
//
// Delivery survives a lost connection or channel, whenever it is noticed (a
// failed write, a closed channel, a missing confirm): the sink reconnects with
// backoff (for up to ReconnectTimeout) and publishes every unconfirmed
// message again with the same message ID and header x-republished: true, so
// nothing is lost and consumers can drop duplicates. A nack (a queue full
// at its x-max-length with x-overflow reject-publish) is back-pressure: the
// sink publishes one message at a time, sends the refused ones again in
// publish order, the same way, with backoff (200 ms doubling to 5 s) while
// nothing is stored, and widens its window again as messages are stored;
// only when the broker has stored none for BackpressureTimeout do the
// refused messages fail, with ErrQueueFull. Messages already in flight when
// the queue filled can be stored after ones sent later (each carries its
// batch sequence); confirms, and so checkpoints, stay in publish order.
// The start of back-pressure is logged at WARN, its end at INFO, with
// counts. A channel closed by the
// broker for a permanent reason (403, 404, 405, 406: missing exchange,
// message over max_message_size, ...) fails the messages in flight and
// reopens the channel for later ones. While the broker has blocked the
// connection (memory or disk alarm), Publish waits; the block is logged when
// it starts, also while confirms are awaited. A stop (ctx done) ends every
// wait, even a write the broker no longer reads, and Close waits at most
// closeTimeout for the broker. Methods are safe for
// concurrent use but serialize.
type AMQPSink struct {
	o        AMQPOptions
	log      *slog.Logger
	redacted string
	password string

	conn      *amqp.Connection
	ch        *amqp.Channel
	sock      net.Conn // conn's socket, to cut a write a stop must not wait for
	returns   chan amqp.Return
	connClose chan *amqp.Error
	chClose   chan *amqp.Error
	blocked   chan amqp.Blocking

	mu         sync.Mutex
	pending    []inflight             // unconfirmed messages, oldest first
	pendingLen int                    // body bytes in pending
	returned   map[string]amqp.Return // returns seen, by message id, until the message's confirm resolves
	failed     error                  // first failure since the last Flush
	broken     error                  // reconnecting gave up: every later call fails
	closed     bool
	isBlocked  bool
	reconnects int
	pressure   *backpressure // nil unless the broker refuses messages
}

// backpressure is the state of a sink whose broker refuses messages, from
// the first nack until a full window of messages in a row is stored.
type backpressure struct {
	since       time.Time     // the first nack
	progress    time.Time     // the last message stored, or since
	delay       time.Duration // the next backoff
	stored      bool          // a message was stored since the last republish
	inARow      int           // messages stored since the last nack
	nacks       int
	republished int
	storedTotal int
}

type inflight struct {
	m        Message
	dc       *amqp.DeferredConfirmation
	attempts int // publishes after the first
}

// DialAMQP connects to the broker, honouring ctx for the TCP connect and the
// handshake, opens a channel and puts it in confirm mode.
func DialAMQP(ctx context.Context, o AMQPOptions) (*AMQPSink, error) {
	s := &AMQPSink{o: o, log: o.Logger, returned: map[string]amqp.Return{}}
	if s.log == nil {
		s.log = slog.New(slog.DiscardHandler)
	}
	if s.o.ConfirmWindow <= 0 {
		s.o.ConfirmWindow = DefaultConfirmWindow
	}
	if s.o.MaxUnconfirmedBytes <= 0 {
		s.o.MaxUnconfirmedBytes = DefaultMaxUnconfirmedBytes
	}
	if s.o.ReconnectTimeout == 0 {
		s.o.ReconnectTimeout = DefaultReconnectTimeout
	}
	if s.o.BackpressureTimeout == 0 {
		s.o.BackpressureTimeout = DefaultBackpressureTimeout
	}
	if s.o.Clock == nil {
		s.o.Clock = clockwork.NewRealClock()
	}
	s.redacted, s.password = redact.URL(o.URL), password(o.URL)
	if _, err := amqp.ParseURI(o.URL); err != nil {
		return nil, fmt.Errorf("broker URL %s: %w", s.redacted, s.scrub(err))
	}
	if err := s.connect(ctx); err != nil {
		return nil, err
	}
	s.log.Debug("connected to broker", "broker", s.redacted, "connection_name", o.ConnectionName)
	return s, nil
}

// connect dials and opens the confirm-mode channel, replacing the
// connection, channel and notification channels.
func (s *AMQPSink) connect(ctx context.Context) error {
	o := s.o
	props := amqp.NewConnectionProperties()
	if o.ConnectionName != "" {
		props.SetClientConnectionName(o.ConnectionName)
	}
	deadline := time.Now().Add(30 * time.Second) // the socket's: wall clock
	if d, ok := ctx.Deadline(); ok && d.Before(deadline) {
		deadline = d
	}
	var (
		dialMu sync.Mutex
		nc     net.Conn
	)
	cfg := amqp.Config{
		Properties: props,
		Heartbeat:  10 * time.Second,
		Dial: func(network, addr string) (net.Conn, error) {
			var d net.Dialer
			c, err := d.DialContext(ctx, network, addr)
			if err != nil {
				return nil, err
			}
			// The library clears this deadline once the handshake is done.
			if err := c.SetDeadline(deadline); err != nil {
				_ = c.Close()
				return nil, err
			}
			dialMu.Lock()
			nc = c
			dialMu.Unlock()
			return c, nil
		},
	}
	// Cancelling ctx during the handshake unblocks it by expiring the deadline.
	stop := context.AfterFunc(ctx, func() {
		dialMu.Lock()
		defer dialMu.Unlock()
		if nc != nil {
			_ = nc.SetDeadline(time.Unix(1, 0))
		}
	})
	conn, err := amqp.DialConfig(o.URL, cfg)
	if !stop() && err == nil {
		_ = conn.Close()
		err = ctx.Err()
	}
	if err != nil {
		// The socket deadline equals ctx's, so it can fire a moment before
		// ctx reports itself done: both mean the context ran out.
		ctxErr := ctx.Err()
		if d, ok := ctx.Deadline(); ctxErr == nil && ok && !time.Now().Before(d) { // ctx's deadline: wall clock
			ctxErr = context.DeadlineExceeded
		}
		if ctxErr != nil {
			err = fmt.Errorf("%w (%w)", ctxErr, cause.Mark(s.scrub(err)))
		}
		// The advice belongs to the cause: a closing line that prints only
		// the cause still says what to check.
		return fmt.Errorf("connect to broker %s: %w", s.redacted,
			cause.Errorf("%w (%w): check broker.url and that RabbitMQ is running", cause.Mark(s.scrub(err)), ErrBrokerUnavailable))
	}
	s.conn = conn
	dialMu.Lock()
	s.sock = nc
	dialMu.Unlock()
	s.connClose = conn.NotifyClose(make(chan *amqp.Error, 1))
	s.blocked = conn.NotifyBlocked(make(chan amqp.Blocking, 4))
	s.isBlocked = false
	if err := s.openChannel(); err != nil {
		_ = conn.Close()
		return err
	}
	return nil
}

// openChannel opens the publishing channel in confirm mode on s.conn.
func (s *AMQPSink) openChannel() error {
	ch, err := s.conn.Channel()
	if err != nil {
		return fmt.Errorf("open channel on %s: %w", s.redacted, cause.Mark(err))
	}
	if err := ch.Confirm(false); err != nil {
		_ = ch.Close()
		return fmt.Errorf("enable publisher confirms on %s: %w", s.redacted, cause.Mark(err))
	}
	s.ch = ch
	s.chClose = ch.NotifyClose(make(chan *amqp.Error, 1))
	s.returns = ch.NotifyReturn(make(chan amqp.Return, 1024))
	clear(s.returned)
	return nil
}

// password returns the password of a broker URL, for hiding it in library
// errors, or "".
func password(raw string) string {
	u, err := url.Parse(raw)
	if err != nil || u.User == nil {
		return ""
	}
	p, _ := u.User.Password()
	return p
}

// scrub removes the password from an error's text. The result unwraps to
// amqp.ErrClosed and the context's errors where err does, never to the
// original error, whose text holds the password.
func (s *AMQPSink) scrub(err error) error {
	return redact.Error(err, []string{s.password}, amqp.ErrClosed)
}

// Declare creates the durable exchange (unless it is the default exchange),
// the durable queues (quorum queues where asked) and their bindings. It uses
// a channel of its own, so a refused declaration does not close the
// publishing channel.
func (s *AMQPSink) Declare(ctx context.Context, t Topology) error {
	ch, err := s.sideChannel(ctx)
	if err != nil {
		return err
	}
	defer func() { _ = ch.Close() }()
	kind := t.ExchangeType
	if kind == "" {
		kind = amqp.ExchangeTopic
	}
	if t.Exchange != "" {
		if err := ch.ExchangeDeclare(t.Exchange, kind, true, false, false, false, nil); err != nil {
			return fmt.Errorf("declare exchange %q (%s): %w: an existing exchange must have the same type and be durable", t.Exchange, kind, cause.Mark(err))
		}
	}
	for _, q := range t.Queues {
		if err := ctx.Err(); err != nil {
			return err
		}
		var args amqp.Table
		if q.Quorum {
			args = amqp.Table{amqp.QueueTypeArg: amqp.QueueTypeQuorum}
		}
		if _, err := ch.QueueDeclare(q.Queue, true, false, false, false, args); err != nil {
			return fmt.Errorf("declare queue %q: %w: an existing queue must be durable and of the same type (quorum: %v)", q.Queue, cause.Mark(err), q.Quorum)
		}
		if t.Exchange == "" {
			continue // every queue is bound to the default exchange by its name
		}
		if err := ch.QueueBind(q.Queue, q.BindingKey, t.Exchange, false, nil); err != nil {
			return fmt.Errorf("bind queue %q to exchange %q with key %q: %w", q.Queue, t.Exchange, q.BindingKey, cause.Mark(err))
		}
	}
	return nil
}

// CheckExchange verifies that exchange exists, without creating it, using a
// throwaway channel (the broker closes a channel on a failed check).
func (s *AMQPSink) CheckExchange(ctx context.Context, exchange string) error {
	if exchange == "" {
		return nil
	}
	ch, err := s.sideChannel(ctx)
	if err != nil {
		return err
	}
	defer func() { _ = ch.Close() }()
	err = ch.ExchangeDeclarePassive(exchange, amqp.ExchangeTopic, true, false, false, false, nil)
	var ae *amqp.Error
	if errors.As(err, &ae) && ae.Code == amqp.NotFound {
		return cause.Mark(fmt.Errorf("exchange %q does not exist on the broker: create it or set broker.declare: true", exchange))
	}
	if err != nil {
		return fmt.Errorf("check exchange %q: %w", exchange, cause.Mark(err))
	}
	return nil
}

func (s *AMQPSink) sideChannel(ctx context.Context) (*amqp.Channel, error) {
	if err := ctx.Err(); err != nil {
		return nil, err
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.closed {
		return nil, errors.New("amqp sink is closed")
	}
	if s.broken != nil {
		return nil, s.broken
	}
	ch, err := s.conn.Channel()
	if err != nil && ctx.Err() == nil {
		// The connection is gone, though the library may not say so yet.
		if err := s.reconnect(ctx, s.closeReason()); err != nil {
			return nil, err
		}
		ch, err = s.conn.Channel()
	}
	if err != nil {
		return nil, fmt.Errorf("open channel on %s: %w", s.redacted, cause.Mark(err))
	}
	return ch, nil
}

// Publish sends m as a persistent, mandatory message. It returns once the
// broker has the message in flight, waiting first for the oldest confirm if
// ConfirmWindow messages are unconfirmed, and while the broker blocks the
// connection. It returns the first failure seen among earlier messages (a
// nack after the retries, a return, a permanent channel error, reconnecting
// given up).
func (s *AMQPSink) Publish(ctx context.Context, m Message) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.closed {
		return errors.New("amqp sink is closed")
	}
	if err := s.settle(ctx, s.window()-1, s.o.MaxUnconfirmedBytes-len(m.Body)); err != nil {
		return err
	}
	if err := s.waitUnblocked(ctx); err != nil {
		return err
	}
	f := inflight{m: m}
	if err := s.send(ctx, &f); err != nil {
		return err
	}
	s.pending = append(s.pending, f)
	s.pendingLen += len(m.Body)
	return nil
}

// send publishes f on the current channel. Any publish error on a
// connection that is not being stopped (a write that failed, a channel or
// connection found closed) is a lost connection: the sink reconnects,
// publishes what is pending again, then f. The library marks a connection
// closed only after the fact, on another goroutine, so the error itself is
// the signal, not IsClosed.
func (s *AMQPSink) send(ctx context.Context, f *inflight) error {
	for {
		if s.broken != nil {
			return s.broken
		}
		err := s.publishOnce(ctx, f)
		if err == nil {
			return nil
		}
		if ctx.Err() != nil {
			return fmt.Errorf("publish message %s: %w", f.m.MessageID, ctx.Err())
		}
		s.log.Warn("publish failed; reconnecting", "broker", s.redacted, "message_id", f.m.MessageID, "error", s.scrub(err))
		if err := s.recover(ctx, s.closeReason()); err != nil {
			return err
		}
		f.attempts++
		if f.attempts > maxRepublish {
			return s.giveUp(nil, fmt.Errorf("message %s could not be published in %d attempts: %w", f.m.MessageID, f.attempts, cause.Mark(s.scrub(err))))
		}
	}
}

// publishOnce hands f to the library on the current channel. A stop (ctx
// done) while the write is stuck, the broker no longer reading the socket,
// expires the socket so the write returns; the connection is lost then.
func (s *AMQPSink) publishOnce(ctx context.Context, f *inflight) error {
	m := f.m
	headers := amqp.Table(m.Headers)
	if f.attempts > 0 {
		headers = make(amqp.Table, len(m.Headers)+1)
		maps.Copy(headers, m.Headers)
		headers[RepublishedHeader] = true
	}
	sock := s.sock
	stop := context.AfterFunc(ctx, func() {
		if sock != nil {
			_ = sock.SetDeadline(time.Unix(1, 0))
		}
	})
	defer stop()
	dc, err := s.ch.PublishWithDeferredConfirmWithContext(ctx, m.Exchange, m.RoutingKey, true, false, amqp.Publishing{
		Headers:         headers,
		ContentType:     m.ContentType,
		ContentEncoding: m.ContentEncoding,
		DeliveryMode:    amqp.Persistent,
		CorrelationId:   m.CorrelationID,
		MessageId:       m.MessageID,
		Timestamp:       m.Timestamp,
		Type:            m.Type,
		AppId:           m.AppID,
		Body:            m.Body,
	})
	if err != nil {
		return err
	}
	f.dc = dc
	return nil
}

// waitUnblocked waits while the broker has blocked the connection
// (connection.blocked, sent on a memory or disk alarm).
func (s *AMQPSink) waitUnblocked(ctx context.Context) error {
	for {
		select {
		case b, ok := <-s.blocked:
			if ok {
				s.setBlocked(b)
				continue
			}
			s.blocked = nil
		default:
		}
		if !s.isBlocked {
			return nil
		}
		select {
		case b, ok := <-s.blocked:
			if !ok {
				s.blocked = nil
				s.isBlocked = false
				continue
			}
			s.setBlocked(b)
		case <-ctx.Done():
			return fmt.Errorf("wait for the broker to unblock the connection: %w: the broker has a memory or disk alarm", ctx.Err())
		case e, ok := <-s.connClose:
			if !ok {
				s.connClose = nil
			}
			if err := s.recover(ctx, e); err != nil {
				return err
			}
		}
	}
}

func (s *AMQPSink) setBlocked(b amqp.Blocking) {
	if b.Active != s.isBlocked {
		if b.Active {
			s.log.Warn("broker blocked publishing; waiting", "broker", s.redacted, "reason", b.Reason)
		} else {
			s.log.Info("broker unblocked publishing", "broker", s.redacted)
		}
	}
	s.isBlocked = b.Active
}

// Flush waits until every message published so far is confirmed and returns
// the first failure since the previous Flush (which it then forgets, unless
// reconnecting has given up).
func (s *AMQPSink) Flush(ctx context.Context) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.closed {
		return errors.New("amqp sink is closed")
	}
	err := s.settle(ctx, 0, 0)
	if s.broken == nil {
		s.failed = nil
	}
	if p := s.pressure; err == nil && p != nil && p.inARow > 0 {
		s.pressureOver() // everything published is stored
	}
	return err
}

// window is the number of messages Publish lets be unconfirmed: one while
// the broker refuses messages, so what follows keeps its order, growing by
// one with each message stored, back to ConfirmWindow.
func (s *AMQPSink) window() int {
	if s.pressure == nil {
		return s.o.ConfirmWindow
	}
	return min(s.o.ConfirmWindow, 1+s.pressure.inARow)
}

// refused handles the nack of head, the oldest unconfirmed message: it
// starts back-pressure (logged once), waits the backoff unless the broker
// stored a message since the last republish, and publishes head again. Once
// the broker has stored nothing for BackpressureTimeout it gives up: every
// unconfirmed message fails with ErrQueueFull, none counted as stored.
func (s *AMQPSink) refused(ctx context.Context, head *inflight) error {
	now := s.o.Clock.Now()
	p := s.pressure
	if p == nil {
		p = &backpressure{since: now, progress: now, delay: minBackpressureDelay}
		s.pressure = p
		s.log.Warn("broker refuses messages (nack): queue full; backing off and publishing them again in order",
			"broker", s.redacted, "message_id", head.m.MessageID, "unconfirmed", len(s.pending), "backpressure_timeout", s.o.BackpressureTimeout)
	}
	p.nacks++
	p.inARow = 0
	left := s.o.BackpressureTimeout - now.Sub(p.progress)
	if s.o.BackpressureTimeout < 0 || left <= 0 {
		return s.queueFull(head)
	}
	if p.stored {
		p.delay = minBackpressureDelay // the queue had room a moment ago
	} else {
		// The last wait is cut to the timeout, so the last attempt is made
		// at the timeout itself.
		if err := s.sleep(ctx, min(p.delay, left)); err != nil {
			return fmt.Errorf("wait for room in the queue of message %s: %w", head.m.MessageID, err)
		}
		p.delay = min(2*p.delay, maxBackpressureDelay)
	}
	p.stored = false
	p.republished++
	head.attempts++
	return s.send(ctx, head)
}

// noteStored counts a stored message against back-pressure, ending it once
// a full window of messages in a row was stored.
func (s *AMQPSink) noteStored() {
	p := s.pressure
	if p == nil {
		return
	}
	p.progress, p.stored = s.o.Clock.Now(), true
	p.inARow++
	p.storedTotal++
	if p.inARow >= s.o.ConfirmWindow {
		s.pressureOver()
	}
}

func (s *AMQPSink) pressureOver() {
	p := s.pressure
	s.log.Info("broker stores messages again: back-pressure over", "broker", s.redacted,
		"nacks", p.nacks, "republished", p.republished, "stored", p.storedTotal, "lasted", s.o.Clock.Since(p.since).Round(time.Millisecond))
	s.pressure = nil
}

// queueFull ends back-pressure that lasted BackpressureTimeout: every
// unconfirmed message fails (a later confirm of one is ignored; publishing
// it again stores a duplicate under the same message ID).
func (s *AMQPSink) queueFull(head *inflight) error {
	p := s.pressure
	s.pressure = nil
	unconfirmed := len(s.pending)
	err := fmt.Errorf("broker refused message %s (nack) and stored none of its messages for broker.backpressure_timeout (%s): %d nacks, %d messages published again; the queue is full (x-max-length with x-overflow reject-publish) and its consumers take too little, or the broker cannot store messages (%w): the %d unconfirmed messages are not counted as published",
		head.m.MessageID, s.o.BackpressureTimeout, p.nacks, p.republished, ErrQueueFull, unconfirmed)
	s.log.Warn("broker still refuses messages; giving up on them for now", "broker", s.redacted, "message_id", head.m.MessageID,
		"nacks", p.nacks, "republished", p.republished, "unconfirmed", unconfirmed, "lasted", s.o.Clock.Since(p.since).Round(time.Millisecond))
	s.fail(err)
	clear(s.pending)
	s.pending = s.pending[:0]
	s.pendingLen = 0
	return err
}

// settle resolves confirms, oldest first, until at most keep messages and
// keepBytes body bytes are unconfirmed. It waits only while more are
// pending; confirms that have already arrived are always collected. s.mu
// must be held.
func (s *AMQPSink) settle(ctx context.Context, keep, keepBytes int) error {
	for len(s.pending) > 0 {
		if s.broken != nil {
			return s.broken
		}
		head := &s.pending[0]
		select {
		case <-head.dc.Done():
		default:
			if len(s.pending) <= keep && s.pendingLen <= keepBytes {
				return s.failed
			}
			select {
			case <-head.dc.Done():
			case b, ok := <-s.blocked:
				if !ok {
					s.blocked = nil
				} else {
					s.setBlocked(b)
				}
				continue
			case <-ctx.Done():
				if s.isBlocked {
					return fmt.Errorf("wait for broker confirm of message %s: %w: the broker has blocked the connection (memory or disk alarm)", head.m.MessageID, ctx.Err())
				}
				return fmt.Errorf("wait for broker confirm of message %s: %w", head.m.MessageID, ctx.Err())
			case e, ok := <-s.connClose:
				if !ok {
					s.connClose = nil
				}
				if err := s.recover(ctx, e); err != nil {
					return err
				}
				continue
			case e, ok := <-s.chClose:
				if !ok {
					s.chClose = nil
				}
				if err := s.recover(ctx, e); err != nil {
					return err
				}
				continue
			}
		}
		s.drainReturns()
		if !head.dc.Acked() {
			// A closing channel resolves every pending confirm as a nack:
			// that is a lost channel, not a refusal.
			if s.ch.IsClosed() || s.conn.IsClosed() {
				if err := s.recover(ctx, s.closeReason()); err != nil {
					return err
				}
				continue
			}
			if err := s.refused(ctx, head); err != nil {
				return err
			}
			continue
		}
		id := head.m.MessageID
		if r, returned := s.returned[id]; returned {
			delete(s.returned, id)
			s.fail(fmt.Errorf("message %s was returned by the broker: %w", id, cause.Mark(fmt.Errorf("%d %s: no queue is bound to exchange %q with routing key %q (%w)",
				r.ReplyCode, r.ReplyText, r.Exchange, r.RoutingKey, ErrUnroutable))))
			s.pop()
			continue
		}
		stored := head.m.OnStored
		s.pop()
		s.noteStored()
		if stored != nil {
			stored()
		}
	}
	s.pending = nil
	s.pendingLen = 0
	return s.failed
}

func (s *AMQPSink) pop() {
	s.pendingLen -= len(s.pending[0].m.Body)
	s.pending[0] = inflight{}
	s.pending = s.pending[1:]
}

func (s *AMQPSink) fail(err error) {
	if s.failed == nil {
		s.failed = err
	}
}

// closeReason returns why the channel or connection closed, waiting briefly
// for the notification (the library sends it before it fails the confirms).
func (s *AMQPSink) closeReason() *amqp.Error {
	timeout := time.After(time.Second) // the library's goroutine sends it: wall clock
	for {
		select {
		case e, ok := <-s.chClose:
			if ok && e != nil {
				return e
			}
			s.chClose = nil
		case e, ok := <-s.connClose:
			if ok && e != nil {
				return e
			}
			s.connClose = nil
		case <-timeout:
			return nil
		}
		if s.chClose == nil && s.connClose == nil {
			return nil
		}
	}
}

// permanent reports whether a channel closure would repeat on retry: access
// refused, not found, resource locked, precondition failed (e.g. a message
// over max_message_size).
func permanent(e *amqp.Error) bool {
	if e == nil {
		return false
	}
	switch e.Code {
	case amqp.AccessRefused, amqp.NotFound, amqp.ResourceLocked, amqp.PreconditionFailed:
		return true
	}
	return false
}

// recover handles a lost channel or connection (reason may be nil when
// unknown). A permanent channel error fails the messages in flight and opens
// a new channel; anything else reconnects and publishes every unconfirmed
// message again. It returns an error only when the sink cannot go on.
func (s *AMQPSink) recover(ctx context.Context, reason *amqp.Error) error {
	if permanent(reason) && !s.conn.IsClosed() {
		ids := len(s.pending)
		first := ""
		if ids > 0 {
			first = s.pending[0].m.MessageID
		}
		s.fail(fmt.Errorf("broker closed the channel: %w: %d unconfirmed messages from %s on failed", cause.Mark(reason), ids, first))
		s.log.Warn("broker closed the channel", "broker", s.redacted, "error", reason, "unconfirmed", ids)
		clear(s.pending)
		s.pending = s.pending[:0]
		s.pendingLen = 0
		if s.ch != nil {
			_ = s.ch.Close()
		}
		if err := s.openChannel(); err != nil {
			s.broken = fmt.Errorf("reopen channel after %w: %w", reason, err)
			return s.broken
		}
		return s.failed
	}
	return s.reconnect(ctx, reason)
}

// reconnect dials again with backoff and republishes every pending message
// that is not yet acked. A connection lost again while republishing is
// dialled again, within the same ReconnectTimeout.
func (s *AMQPSink) reconnect(ctx context.Context, reason *amqp.Error) error {
	if s.o.ReconnectTimeout < 0 {
		return s.giveUp(reason, errors.New("reconnecting is disabled"))
	}
	deadline := s.o.Clock.Now().Add(s.o.ReconnectTimeout)
	delay := 200 * time.Millisecond
	// The wait between attempts doubles up to a tenth of the timeout (5 s
	// at most): a broker that comes and goes (a flapping link) is up
	// between two attempts for less than the longest wait, and attempts
	// that far apart can all meet it down.
	longest := min(5*time.Second, max(s.o.ReconnectTimeout/10, delay))
	for {
		s.log.Warn("broker connection lost; reconnecting", "broker", s.redacted, "error", reason, "unconfirmed", len(s.pending))
		s.dropConnection()
		var lastErr error
		for {
			// An attempt at the deadline still gets time to connect.
			dctx, cancel := context.WithTimeout(ctx, max(s.o.Clock.Until(deadline), minConnectTime))
			err := s.connect(dctx)
			cancel()
			if err == nil {
				break
			}
			lastErr = err
			if ctx.Err() != nil {
				return fmt.Errorf("reconnect to broker %s: %w", s.redacted, ctx.Err())
			}
			left := s.o.Clock.Until(deadline)
			if left <= 0 {
				return s.giveUp(reason, lastErr)
			}
			// The last wait is cut to the deadline, so the last attempt is
			// made at the timeout itself, not one backoff step before it.
			if err := s.sleep(ctx, min(delay, left)); err != nil {
				return fmt.Errorf("reconnect to broker %s: %w", s.redacted, err)
			}
			delay = min(2*delay, longest)
		}
		s.reconnects++
		republished, err := s.republish(ctx)
		if err == nil {
			s.log.Info("reconnected to broker", "broker", s.redacted, "republished", republished)
			return nil
		}
		if s.broken != nil {
			return s.broken
		}
		if ctx.Err() != nil {
			return fmt.Errorf("republish to broker %s: %w", s.redacted, ctx.Err())
		}
		s.log.Warn("republish failed", "broker", s.redacted, "error", s.scrub(err))
		reason = s.closeReason()
	}
}

// republish publishes again, on the new channel, every pending message
// whose confirm is not a positive ack.
func (s *AMQPSink) republish(ctx context.Context) (int, error) {
	republished := 0
	for i := range s.pending {
		f := &s.pending[i]
		if f.dc != nil {
			select {
			case <-f.dc.Done():
				if f.dc.Acked() {
					continue // stored before the connection went
				}
			default:
			}
		}
		f.attempts++
		if f.attempts > maxRepublish {
			return republished, s.giveUp(nil, fmt.Errorf("message %s was published %d times without a confirm", f.m.MessageID, f.attempts))
		}
		if err := s.publishOnce(ctx, f); err != nil {
			return republished, err
		}
		republished++
	}
	return republished, nil
}

// dropConnection closes the current connection, if any, waiting at most
// closeTimeout for the broker (none when it blocked the connection: it
// would not answer).
func (s *AMQPSink) dropConnection() {
	if s.conn == nil {
		return
	}
	deadline := time.Now().Add(closeTimeout) // the socket's: wall clock
	if s.isBlocked {
		deadline = time.Now()
	}
	_ = s.conn.CloseDeadline(deadline)
}

func (s *AMQPSink) giveUp(reason *amqp.Error, err error) error {
	var c any = "closed"
	if reason != nil {
		c = reason
	}
	s.broken = fmt.Errorf("connection to broker %s lost (%v) and not restored within broker.reconnect_timeout (%s): %w (%w): the %d unconfirmed messages are not counted as published",
		s.redacted, c, s.o.ReconnectTimeout, err, ErrBrokerUnavailable, len(s.pending))
	s.log.Error("broker connection lost for good", "broker", s.redacted, "error", err)
	return s.broken
}

// Reconnects reports how often the sink has reconnected to the broker.
func (s *AMQPSink) Reconnects() int {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.reconnects
}

// minConnectTime is the least time one reconnect attempt gets to connect.
const minConnectTime = 2 * time.Second

// sleep waits d on the sink's clock, or until ctx is done.
func (s *AMQPSink) sleep(ctx context.Context, d time.Duration) error {
	return ctxio.SleepOn(ctx, s.o.Clock, d)
}

// drainReturns collects the returns that have arrived. The library delivers
// a message's basic.return to the returns channel before it processes the
// ack that follows it, so once a confirm has resolved its return, if any, is
// already waiting here.
func (s *AMQPSink) drainReturns() {
	for {
		select {
		case r, ok := <-s.returns:
			if !ok { // the channel is gone
				s.returns = nil
				return
			}
			s.returned[r.MessageId] = r
		default:
			return
		}
	}
}

// Close closes the connection without waiting for confirms. It waits at
// most closeTimeout for the broker's close-ok, and not at all while the
// broker blocks the connection, so a stop is never held up by a broker
// with a memory or disk alarm.
func (s *AMQPSink) Close() error {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.closed {
		return nil
	}
	s.closed = true
	s.pending = nil
	s.pendingLen = 0
	s.drainBlocked()
	deadline := time.Now().Add(closeTimeout) // the socket's: wall clock
	if s.isBlocked {
		deadline = time.Now()
	}
	// The library's close waits for its reader to end, which a socket that
	// gets no answer may delay past the deadline: past it (and a grace
	// period, both on the socket's wall clock) the socket is cut so Close
	// always returns.
	conn, sock := s.conn, s.sock
	done := make(chan error, 1)
	go func() { done <- conn.CloseDeadline(deadline) }()
	var err error
	select {
	case err = <-done:
	case <-time.After(time.Until(deadline) + closeGrace):
		if sock != nil {
			_ = sock.SetDeadline(time.Unix(1, 0))
			_ = sock.Close()
		}
		select {
		case err = <-done:
		case <-time.After(closeGrace):
			err = os.ErrDeadlineExceeded
		}
	}
	var ne net.Error
	switch {
	case err == nil, errors.Is(err, amqp.ErrClosed):
		return nil
	case errors.As(err, &ne) && ne.Timeout():
		s.log.Warn("broker did not answer the close in time; connection dropped", "broker", s.redacted)
		return nil
	}
	return fmt.Errorf("close broker connection: %w", s.scrub(err))
}

// drainBlocked applies the blocked/unblocked notifications that arrived.
func (s *AMQPSink) drainBlocked() {
	for {
		select {
		case b, ok := <-s.blocked:
			if !ok {
				s.blocked = nil
				return
			}
			s.setBlocked(b)
		default:
			return
		}
	}
}
