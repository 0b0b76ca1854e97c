package publish

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/url"
	"strings"
	"sync"
	"time"

	amqp "github.com/rabbitmq/amqp091-go"
)

// DefaultConfirmWindow is the number of unconfirmed messages AMQPSink allows
// in flight when AMQPOptions.ConfirmWindow is 0.
const DefaultConfirmWindow = 128

// AMQPOptions configures DialAMQP.
type AMQPOptions struct {
	// URL is amqp:// or amqps://. It never appears in logs or errors with
	// its password.
	URL string
	// ConfirmWindow is the number of unconfirmed messages in flight; 0 means
	// DefaultConfirmWindow.
	ConfirmWindow int
	// ConnectionName is shown in the RabbitMQ management UI.
	ConnectionName string
	// Logger receives connection events; nil discards them.
	Logger *slog.Logger
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
// it as unroutable. Messages stay in an ordered list, bodies included, until
// confirmed, so memory is bounded by the window times the batch size. A lost
// connection becomes an error on the next Publish or Flush; there is no
// automatic reconnect. Methods are safe for concurrent use but serialize.
type AMQPSink struct {
	o        AMQPOptions
	log      *slog.Logger
	redacted string
	password string

	conn      *amqp.Connection
	ch        *amqp.Channel
	returns   chan amqp.Return
	connClose chan *amqp.Error
	chClose   chan *amqp.Error

	mu       sync.Mutex
	pending  []inflight             // unconfirmed messages, oldest first
	returned map[string]amqp.Return // returns seen, by message id, until the message's confirm resolves
	failed   error                  // first failure since the last Flush
	broken   error                  // the connection or channel is gone: every later call fails
	closed   bool
}

type inflight struct {
	m  Message
	dc *amqp.DeferredConfirmation
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
	s.redacted, s.password = redactURL(o.URL)
	if _, err := amqp.ParseURI(o.URL); err != nil {
		return nil, fmt.Errorf("broker URL %s: %w", s.redacted, s.scrub(err))
	}
	props := amqp.NewConnectionProperties()
	if o.ConnectionName != "" {
		props.SetClientConnectionName(o.ConnectionName)
	}
	deadline := time.Now().Add(30 * time.Second)
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
				c.Close()
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
		conn.Close()
		err = ctx.Err()
	}
	if err != nil {
		// The socket deadline equals ctx's, so it can fire a moment before
		// ctx reports itself done: both mean the context ran out.
		ctxErr := ctx.Err()
		if d, ok := ctx.Deadline(); ctxErr == nil && ok && !time.Now().Before(d) {
			ctxErr = context.DeadlineExceeded
		}
		if ctxErr != nil {
			err = fmt.Errorf("%w (%v)", ctxErr, s.scrub(err))
		}
		return nil, fmt.Errorf("connect to broker %s: %w: check broker.url and that RabbitMQ is running", s.redacted, s.scrub(err))
	}
	s.conn = conn
	s.connClose = conn.NotifyClose(make(chan *amqp.Error, 1))
	ch, err := conn.Channel()
	if err != nil {
		conn.Close()
		return nil, fmt.Errorf("open channel on %s: %w", s.redacted, err)
	}
	if err := ch.Confirm(false); err != nil {
		conn.Close()
		return nil, fmt.Errorf("enable publisher confirms on %s: %w", s.redacted, err)
	}
	s.ch = ch
	s.chClose = ch.NotifyClose(make(chan *amqp.Error, 1))
	s.returns = ch.NotifyReturn(make(chan amqp.Return, 1024))
	s.log.Debug("connected to broker", "broker", s.redacted, "connection_name", o.ConnectionName)
	return s, nil
}

// redactURL returns the URL with its password replaced by "xxxxx", and the
// password itself (for scrubbing library errors).
func redactURL(raw string) (redacted, password string) {
	u, err := url.Parse(raw)
	if err != nil {
		return "(unparseable URL)", ""
	}
	if u.User != nil {
		password, _ = u.User.Password()
	}
	return u.Redacted(), password
}

// scrub removes the password from an error's text, keeping it unwrappable.
func (s *AMQPSink) scrub(err error) error {
	if err == nil || s.password == "" || !strings.Contains(err.Error(), s.password) {
		return err
	}
	return &scrubbedError{msg: strings.ReplaceAll(err.Error(), s.password, "xxxxx"), err: err}
}

type scrubbedError struct {
	msg string
	err error
}

func (e *scrubbedError) Error() string { return e.msg }
func (e *scrubbedError) Unwrap() error { return e.err }

// Declare creates the durable exchange (unless it is the default exchange),
// the durable queues (quorum queues where asked) and their bindings. It uses
// a channel of its own, so a refused declaration does not close the
// publishing channel.
func (s *AMQPSink) Declare(ctx context.Context, t Topology) error {
	ch, err := s.sideChannel(ctx)
	if err != nil {
		return err
	}
	defer ch.Close()
	kind := t.ExchangeType
	if kind == "" {
		kind = amqp.ExchangeTopic
	}
	if t.Exchange != "" {
		if err := ch.ExchangeDeclare(t.Exchange, kind, true, false, false, false, nil); err != nil {
			return fmt.Errorf("declare exchange %q (%s): %w: an existing exchange must have the same type and be durable", t.Exchange, kind, err)
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
			return fmt.Errorf("declare queue %q: %w: an existing queue must be durable and of the same type (quorum: %v)", q.Queue, err, q.Quorum)
		}
		if t.Exchange == "" {
			continue // every queue is bound to the default exchange by its name
		}
		if err := ch.QueueBind(q.Queue, q.BindingKey, t.Exchange, false, nil); err != nil {
			return fmt.Errorf("bind queue %q to exchange %q with key %q: %w", q.Queue, t.Exchange, q.BindingKey, err)
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
	defer ch.Close()
	err = ch.ExchangeDeclarePassive(exchange, amqp.ExchangeTopic, true, false, false, false, nil)
	var ae *amqp.Error
	if errors.As(err, &ae) && ae.Code == amqp.NotFound {
		return fmt.Errorf("exchange %q does not exist on the broker: create it or set broker.declare: true", exchange)
	}
	if err != nil {
		return fmt.Errorf("check exchange %q: %w", exchange, err)
	}
	return nil
}

func (s *AMQPSink) sideChannel(ctx context.Context) (*amqp.Channel, error) {
	if err := ctx.Err(); err != nil {
		return nil, err
	}
	s.mu.Lock()
	broken, closed := s.checkBroken(), s.closed
	s.mu.Unlock()
	if closed {
		return nil, errors.New("amqp sink is closed")
	}
	if broken != nil {
		return nil, broken
	}
	ch, err := s.conn.Channel()
	if err != nil {
		return nil, fmt.Errorf("open channel on %s: %w", s.redacted, err)
	}
	return ch, nil
}

// checkBroken records a closed connection or channel; s.mu must be held.
func (s *AMQPSink) checkBroken() error {
	if s.broken != nil {
		return s.broken
	}
	for _, c := range []chan *amqp.Error{s.connClose, s.chClose} {
		select {
		case e, ok := <-c:
			s.setBroken(e, ok)
		default:
		}
		if s.broken != nil {
			return s.broken
		}
	}
	return nil
}

func (s *AMQPSink) setBroken(e *amqp.Error, ok bool) {
	if s.broken != nil {
		return
	}
	if ok && e != nil {
		s.broken = fmt.Errorf("connection to broker %s lost: %w: unconfirmed messages will be published again on the next run", s.redacted, e)
	} else {
		s.broken = fmt.Errorf("connection to broker %s closed: unconfirmed messages will be published again on the next run", s.redacted)
	}
	s.log.Warn("broker connection lost", "broker", s.redacted, "unconfirmed", len(s.pending), "error", e)
}

// Publish sends m as a persistent, mandatory message. It returns once the
// broker has the message in flight, waiting first for the oldest confirm if
// ConfirmWindow messages are unconfirmed. It returns the first failure seen
// among earlier messages (a nack, a return, a lost connection).
func (s *AMQPSink) Publish(ctx context.Context, m Message) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.closed {
		return errors.New("amqp sink is closed")
	}
	if err := s.settle(ctx, s.o.ConfirmWindow-1); err != nil {
		return err
	}
	dc, err := s.ch.PublishWithDeferredConfirmWithContext(ctx, m.Exchange, m.RoutingKey, true, false, amqp.Publishing{
		Headers:         amqp.Table(m.Headers),
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
		if b := s.checkBroken(); b != nil {
			return b
		}
		return fmt.Errorf("publish message %s: %w", m.MessageID, err)
	}
	s.pending = append(s.pending, inflight{m: m, dc: dc})
	return nil
}

// Flush waits until every message published so far is confirmed and returns
// the first failure since the previous Flush (which it then forgets, unless
// the connection is gone).
func (s *AMQPSink) Flush(ctx context.Context) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.closed {
		return errors.New("amqp sink is closed")
	}
	err := s.settle(ctx, 0)
	if err != nil && errors.Is(err, s.failed) && s.broken == nil {
		s.failed = nil
	}
	return err
}

// settle resolves confirms, oldest first, until at most keep messages are
// unconfirmed. It waits only while more than keep are pending; confirms that
// have already arrived are always collected. s.mu must be held.
func (s *AMQPSink) settle(ctx context.Context, keep int) error {
	for len(s.pending) > 0 {
		head := s.pending[0]
		select {
		case <-head.dc.Done():
		default:
			if len(s.pending) <= keep {
				return s.firstError()
			}
			select {
			case <-head.dc.Done():
			case <-ctx.Done():
				return fmt.Errorf("wait for broker confirm of message %s: %w", head.m.MessageID, ctx.Err())
			case e, ok := <-s.connClose:
				s.setBroken(e, ok)
				return s.broken
			case e, ok := <-s.chClose:
				s.setBroken(e, ok)
				return s.broken
			}
		}
		s.pending[0] = inflight{}
		s.pending = s.pending[1:]
		s.drainReturns()
		s.resolve(head)
	}
	s.pending = nil
	return s.firstError()
}

func (s *AMQPSink) firstError() error {
	if s.broken != nil {
		return s.broken
	}
	return s.failed
}

// drainReturns collects the returns that have arrived. The library delivers
// a message's basic.return to the returns channel before it processes the
// ack that follows it, so once a confirm has resolved its return, if any, is
// already waiting here.
func (s *AMQPSink) drainReturns() {
	for {
		select {
		case r, ok := <-s.returns:
			if !ok { // the channel is gone; checkBroken reports why
				s.returns = nil
				return
			}
			s.returned[r.MessageId] = r
		default:
			return
		}
	}
}

// resolve records the outcome of one confirmed message.
func (s *AMQPSink) resolve(f inflight) {
	id := f.m.MessageID
	r, returned := s.returned[id]
	delete(s.returned, id)
	if !f.dc.Acked() {
		// A channel or connection closing resolves every pending confirm
		// as a nack: report the closure, not a refusal.
		if s.checkBroken() != nil {
			return
		}
		if s.ch.IsClosed() {
			s.setBroken(nil, false)
			return
		}
		if s.failed == nil {
			s.failed = fmt.Errorf("broker refused message %s (nack)", id)
		}
		return
	}
	if returned && s.failed == nil {
		s.failed = fmt.Errorf("message %s was returned by the broker: %d %s: no queue is bound to exchange %q with routing key %q",
			id, r.ReplyCode, r.ReplyText, r.Exchange, r.RoutingKey)
	}
}

// Close closes the channel and the connection without waiting for confirms.
func (s *AMQPSink) Close() error {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.closed {
		return nil
	}
	s.closed = true
	s.pending = nil
	if s.ch != nil {
		_ = s.ch.Close()
	}
	if err := s.conn.Close(); err != nil && !errors.Is(err, amqp.ErrClosed) {
		return fmt.Errorf("close broker connection: %w", err)
	}
	return nil
}
