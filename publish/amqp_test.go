package publish

import (
	"github.com/dmfexport/dmfexport/internal/cause"
	"github.com/dmfexport/dmfexport/internal/testenv"

	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"net"
	"strings"
	"testing"
	"time"

	"github.com/jonboulle/clockwork"
	amqp "github.com/rabbitmq/amqp091-go"
)

func uniqueName(t testing.TB, kind string) string {
	var b [4]byte
	_, _ = rand.Read(b[:])
	name := strings.NewReplacer("/", ".", " ", "_").Replace(t.Name())
	return fmt.Sprintf("dmfexport.test.%s.%s.%s", kind, name, hex.EncodeToString(b[:]))
}

// adminChannel opens a connection for test setup and consuming, separate
// from the sink under test; it is closed when the test ends.
func adminChannel(t *testing.T) *amqp.Channel {
	t.Helper()
	return testenv.AMQPChannel(t)
}

// testTopology declares a topic exchange and one queue bound with "#" and
// deletes both when the test ends.
func testTopology(t *testing.T, s *AMQPSink, quorum bool) (exchange, queue string) {
	t.Helper()
	exchange, queue = uniqueName(t, "x"), uniqueName(t, "q")
	err := s.Declare(context.Background(), Topology{Exchange: exchange, Queues: []QueueBinding{{Queue: queue, BindingKey: "#", Quorum: quorum}}})
	if err != nil {
		t.Fatalf("Declare: %v", err)
	}
	t.Cleanup(func() {
		ch := adminChannel(t)
		_, _ = ch.QueueDelete(queue, false, false, false)
		_ = ch.ExchangeDelete(exchange, false, false)
	})
	return exchange, queue
}

func dialTest(t *testing.T) *AMQPSink {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	s, err := DialAMQP(ctx, AMQPOptions{URL: testenv.AMQPURL(), ConnectionName: "dmfexport-test/" + t.Name(), ConfirmWindow: 4})
	if err != nil {
		t.Fatalf("DialAMQP: %v (start the broker with: rabbitmq-server -detached)", err)
	}
	t.Cleanup(func() { _ = s.Close() })
	return s
}

// deliveries consumes queue, acknowledging every message as it comes, on
// a channel of the test's own.
func deliveries(t *testing.T, queue string) <-chan amqp.Delivery {
	t.Helper()
	dels, err := adminChannel(t).Consume(queue, "", true, false, false, false, nil)
	if err != nil {
		t.Fatalf("consume %s: %v", queue, err)
	}
	return dels
}

// consume reads n messages from queue, failing the test after a timeout.
func consume(t *testing.T, queue string, n int) []amqp.Delivery {
	t.Helper()
	dels := deliveries(t, queue)
	var got []amqp.Delivery
	timeout := time.After(10 * time.Second)
	for len(got) < n {
		select {
		case d := <-dels:
			got = append(got, d)
		case <-timeout:
			t.Fatalf("want %d messages from %s, got %d before the timeout", n, queue, len(got))
		}
	}
	select {
	case d := <-dels:
		t.Fatalf("want exactly %d messages, got another: %s", n, d.MessageId)
	case <-time.After(200 * time.Millisecond):
	}
	return got
}

func genCSV(rows int) (string, [][]string) {
	var b strings.Builder
	b.WriteString("ID,NAME,NOTE\r\n")
	var want [][]string
	for i := 1; i <= rows; i++ {
		id, name, note := fmt.Sprintf("%06d", i), fmt.Sprintf("name %d", i), fmt.Sprintf("say \"%d\", twice", i)
		fmt.Fprintf(&b, "%s,%s,\"%s\"\r\n", id, name, strings.ReplaceAll(note, `"`, `""`))
		want = append(want, []string{id, name, note})
	}
	return b.String(), want
}

func TestAMQPBatchBoundaries(t *testing.T) {
	const bs = 3
	s := dialTest(t)
	for _, rows := range []int{0, 1, bs, bs + 1, 2*bs + 1} {
		t.Run(fmt.Sprintf("%d rows", rows), func(t *testing.T) {
			exchange, queue := testTopology(t, s, false)
			in, wantRows := genCSV(rows)
			var progress []EntityStats
			fixed := time.Date(2026, 3, 1, 12, 0, 0, 123456789, time.UTC)
			st, err := PublishEntity(context.Background(), strings.NewReader(in), s, EntityOptions{
				Job: "daily", RunID: "run-1", ExecutionID: "exec 1", Entity: "Customers V3",
				Exchange: exchange, RoutingKey: "dmf.customers", BatchSize: bs, Format: "csv", Clock: clockwork.NewFakeClockAt(fixed),
				Progress: func(st EntityStats) { progress = append(progress, st) },
			})
			if err != nil {
				t.Fatalf("PublishEntity: want no error, got %v", err)
			}
			wantBatches := (rows + bs - 1) / bs
			if wantBatches == 0 {
				wantBatches = 1
			}
			if st.Rows != int64(rows) || st.Batches != int64(wantBatches) || st.BytesIn != int64(len(in)) {
				t.Errorf("stats: want rows %d batches %d bytes in %d, got %+v", rows, wantBatches, len(in), st)
			}
			if len(progress) > 0 { // the character set is known once the whole file is read
				progress[len(progress)-1].Encoding = st.Encoding
			}
			if len(progress) != wantBatches || progress[len(progress)-1] != st {
				t.Errorf("progress: want %d calls ending with %+v, got %+v", wantBatches, st, progress)
			}
			dels := consume(t, queue, wantBatches)
			var bodies [][]byte
			for i, d := range dels {
				e := decodeEvent(t, d.Body)
				bodies = append(bodies, d.Body)
				wantID := fmt.Sprintf("exec 1/Customers V3/%d", i)
				last := i == wantBatches-1
				if e.ID != wantID || d.MessageId != wantID {
					t.Errorf("batch %d: want id %q, got event id %q message id %q", i, wantID, e.ID, d.MessageId)
				}
				if e.Data.BatchIndex != int64(i) || e.Data.LastBatch != last {
					t.Errorf("batch %d: want batch_index %d last_batch %v, got %d %v", i, i, last, e.Data.BatchIndex, e.Data.LastBatch)
				}
				if last && (e.Data.BatchCount == nil || *e.Data.BatchCount != int64(wantBatches)) {
					t.Errorf("batch %d: want batch_count %d, got %v", i, wantBatches, e.Data.BatchCount)
				}
				if !last && e.Data.BatchCount != nil {
					t.Errorf("batch %d: want batch_count null, got %d", i, *e.Data.BatchCount)
				}
				wantCount := min(bs, rows-i*bs)
				if wantCount < 0 {
					wantCount = 0
				}
				if e.Data.FirstRow != int64(i*bs+1) || e.Data.RowCount != wantCount || len(e.Data.Rows) != wantCount {
					t.Errorf("batch %d: want first_row %d row_count %d, got %d %d (%d rows)", i, i*bs+1, wantCount, e.Data.FirstRow, e.Data.RowCount, len(e.Data.Rows))
				}
				if e.SpecVersion != "1.0" || e.Type != EventType || e.Source != "dmfexport/daily" || e.Subject != "Customers V3" ||
					e.DataContentType != "application/json" || e.Time != "2026-03-01T12:00:00.123456789Z" || e.Data.Version != 1 ||
					e.Data.Job != "daily" || e.Data.RunID != "run-1" || e.Data.ExecutionID != "exec 1" || e.Data.Entity != "Customers V3" {
					t.Errorf("batch %d: envelope fields wrong: %s", i, d.Body)
				}
				if d.ContentType != ContentType || d.DeliveryMode != amqp.Persistent || d.CorrelationId != "run-1" ||
					d.Type != EventType || d.AppId != AppID || !d.Timestamp.Equal(fixed.Truncate(time.Second)) ||
					d.RoutingKey != "dmf.customers" || d.Exchange != exchange {
					t.Errorf("batch %d: properties wrong: %+v", i, d)
				}
				wantHeaders := amqp.Table{"export": "daily", "job": "daily", "entity": "Customers V3", "batch_index": int64(i), "last_batch": last}
				if fmt.Sprint(d.Headers) != fmt.Sprint(wantHeaders) {
					t.Errorf("batch %d: headers: want %v, got %v", i, wantHeaders, d.Headers)
				}
			}
			_, got := rowsOf(t, bodies)
			if fmt.Sprint(got) != fmt.Sprint(wantRows) && !(len(got) == 0 && len(wantRows) == 0) {
				t.Errorf("rows: want %q, got %q", wantRows, got)
			}
		})
	}
}

func TestAMQPUnroutable(t *testing.T) {
	s := dialTest(t)
	exchange := uniqueName(t, "x")
	if err := s.Declare(context.Background(), Topology{Exchange: exchange}); err != nil {
		t.Fatalf("Declare: %v", err)
	}
	t.Cleanup(func() { _ = adminChannel(t).ExchangeDelete(exchange, false, false) })
	in, _ := genCSV(10)
	_, err := PublishEntity(context.Background(), strings.NewReader(in), s, EntityOptions{
		ExecutionID: "e", Entity: "E", Exchange: exchange, RoutingKey: "nobody.listens", BatchSize: 3, Format: "csv",
	})
	want := fmt.Sprintf("message e/E/0 was returned by the broker: 312 NO_ROUTE: no queue is bound to exchange %q with routing key %q", exchange, "nobody.listens")
	if err == nil || !strings.Contains(err.Error(), want) {
		t.Fatalf("want error containing %q, got %v", want, err)
	}
	if got, want := cause.Of(err), "312 NO_ROUTE: no queue is bound to exchange"; !strings.HasPrefix(got, want) {
		t.Errorf("cause %q, want the broker's return: %q", got, want)
	}
	// The failure is reported once: the sink stays usable for the next entity.
	exchange2, queue := testTopology(t, s, false)
	if _, err := PublishEntity(context.Background(), strings.NewReader(in), s, EntityOptions{
		ExecutionID: "e", Entity: "F", Exchange: exchange2, RoutingKey: "k", BatchSize: 3, Format: "csv",
	}); err != nil {
		t.Fatalf("next entity on the same sink: want no error, got %v", err)
	}
	consume(t, queue, 4)
}

// TestAMQPNack: with back-pressure disabled (a negative
// BackpressureTimeout) the first nack fails the entity with ErrQueueFull.
func TestAMQPNack(t *testing.T) {
	s, err := DialAMQP(context.Background(), AMQPOptions{URL: testenv.AMQPURL(), BackpressureTimeout: -1})
	if err != nil {
		t.Fatalf("DialAMQP: %v", err)
	}
	t.Cleanup(func() { _ = s.Close() })
	queue := uniqueName(t, "q")
	ch := adminChannel(t)
	if _, err := ch.QueueDeclare(queue, false, false, false, false, amqp.Table{
		amqp.QueueMaxLenArg: 0, amqp.QueueOverflowArg: amqp.QueueOverflowRejectPublish,
	}); err != nil {
		t.Fatalf("declare full queue: %v", err)
	}
	t.Cleanup(func() { _, _ = adminChannel(t).QueueDelete(queue, false, false, false) })
	in, _ := genCSV(2)
	_, err = PublishEntity(context.Background(), strings.NewReader(in), s, EntityOptions{
		ExecutionID: "e", Entity: "E", RoutingKey: queue, Format: "csv",
	})
	if want := "broker refused message e/E/0 (nack)"; !errors.Is(err, ErrQueueFull) || !strings.Contains(err.Error(), want) {
		t.Fatalf("want ErrQueueFull, error containing %q, got %v", want, err)
	}
}

func TestAMQPChannelClosedByBroker(t *testing.T) {
	s := dialTest(t)
	in, _ := genCSV(50)
	done := make(chan error, 1)
	go func() {
		_, err := PublishEntity(context.Background(), strings.NewReader(in), s, EntityOptions{
			ExecutionID: "e", Entity: "E", Exchange: uniqueName(t, "missing"), RoutingKey: "k", BatchSize: 1, Format: "csv",
		})
		done <- err
	}()
	select {
	case err := <-done:
		if err == nil || !strings.Contains(err.Error(), "NOT_FOUND") {
			t.Fatalf("want an error naming the channel closure (NOT_FOUND), got %v", err)
		}
		if got, want := cause.Of(err), `Exception (404) Reason: "NOT_FOUND`; !strings.HasPrefix(got, want) {
			t.Errorf("cause %q, want the broker's exception: %q", got, want)
		}
	case <-time.After(15 * time.Second):
		t.Fatal("PublishEntity hung after the broker closed the channel")
	}
	// The sink opened a new channel: the next entity goes through.
	exchange, queue := testTopology(t, s, false)
	if _, err := PublishEntity(context.Background(), strings.NewReader(in), s, EntityOptions{
		ExecutionID: "e", Entity: "F", Exchange: exchange, RoutingKey: "k", BatchSize: 25, Format: "csv",
	}); err != nil {
		t.Fatalf("next entity after a permanent channel error: want no error, got %v", err)
	}
	consume(t, queue, 2)
}

func TestAMQPCheckExchange(t *testing.T) {
	s := dialTest(t)
	missing := uniqueName(t, "missing")
	err := s.CheckExchange(context.Background(), missing)
	want := fmt.Sprintf("exchange %q does not exist on the broker: create it or set broker.declare: true", missing)
	if err == nil || err.Error() != want || cause.Of(err) != want {
		t.Errorf("missing exchange: want %q, and as its cause, got %v (cause %q)", want, err, cause.Of(err))
	}
	exchange, _ := testTopology(t, s, true)
	if err := s.CheckExchange(context.Background(), exchange); err != nil {
		t.Errorf("existing exchange: want no error, got %v", err)
	}
	if err := s.CheckExchange(context.Background(), "amq.topic"); err != nil {
		t.Errorf("amq.topic: want no error, got %v", err)
	}
	// The failed check must not have broken the publishing channel.
	if err := s.Publish(context.Background(), Message{Exchange: exchange, RoutingKey: "k", MessageID: "m", Body: []byte("{}")}); err != nil {
		t.Fatalf("Publish after a failed check: %v", err)
	}
	if err := s.Flush(context.Background()); err != nil {
		t.Errorf("Flush after a failed check: %v", err)
	}
}

func TestAMQPDeclareConflict(t *testing.T) {
	s := dialTest(t)
	exchange, _ := testTopology(t, s, false)
	err := s.Declare(context.Background(), Topology{Exchange: exchange, ExchangeType: "direct"})
	if err == nil || !strings.Contains(err.Error(), "PRECONDITION_FAILED") {
		t.Errorf("redeclare with another type: want PRECONDITION_FAILED, got %v", err)
	}
	if got, want := cause.Of(err), `Exception (406) Reason: "PRECONDITION_FAILED`; !strings.HasPrefix(got, want) {
		t.Errorf("cause %q, want the broker's exception: %q", got, want)
	}
	if err := s.CheckExchange(context.Background(), exchange); err != nil {
		t.Errorf("sink unusable after a refused declaration: %v", err)
	}
}

func TestDialAMQPErrors(t *testing.T) {
	tests := []struct {
		name, url string
		timeout   time.Duration
		want      string
		wantCause string // the cause starts so: the network's or the broker's answer
	}{
		{"refused port", "amqp://user:s3cretPW@127.0.0.1:1/", 5 * time.Second, "connect to broker amqp://user:xxxxx@127.0.0.1:1/", "dial tcp 127.0.0.1:1: connect: connection refused"},
		{"bad scheme", "http://user:s3cretPW@127.0.0.1/", 5 * time.Second, "broker URL http://user:xxxxx@127.0.0.1/", ""},
		{"wrong password", strings.Replace(testenv.AMQPURL(), "guest:guest", "guest:s3cretPW", 1), 5 * time.Second, "connect to broker", "Exception (403)"},
		{"silent server honours ctx", "amqp://user:s3cretPW@" + silentServer(t) + "/", 300 * time.Millisecond, "context deadline exceeded", ""},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			ctx, cancel := context.WithTimeout(context.Background(), tt.timeout)
			defer cancel()
			start := time.Now()
			s, err := DialAMQP(ctx, AMQPOptions{URL: tt.url})
			if err == nil {
				_ = s.Close()
				t.Fatal("want an error, got a connection")
			}
			if !strings.Contains(err.Error(), tt.want) {
				t.Errorf("want error containing %q, got %v", tt.want, err)
			}
			if strings.Contains(err.Error(), "s3cretPW") {
				t.Errorf("error reveals the password: %v", err)
			}
			if got := cause.Of(err); !strings.HasPrefix(got, tt.wantCause) || strings.Contains(got, "s3cretPW") {
				t.Errorf("cause %q, want it to start with %q and not reveal the password", got, tt.wantCause)
			}
			if got := cause.Of(err); errors.Is(err, ErrBrokerUnavailable) && !strings.HasSuffix(got, "check broker.url and that RabbitMQ is running") {
				t.Errorf("cause %q of a broker not reached: want it to end with what to check", got)
			}
			if time.Since(start) > tt.timeout+2*time.Second {
				t.Errorf("DialAMQP took %v, past the context deadline %v", time.Since(start), tt.timeout)
			}
		})
	}
}

// silentServer accepts TCP connections and never answers, like a broker
// that hangs during the handshake; it returns its address.
func silentServer(t *testing.T) string {
	t.Helper()
	l, err := (&net.ListenConfig{}).Listen(t.Context(), "tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatalf("listen: %v", err)
	}
	var conns []net.Conn
	done := make(chan struct{})
	go func() {
		defer close(done)
		for {
			c, err := l.Accept()
			if err != nil {
				return
			}
			conns = append(conns, c)
		}
	}()
	t.Cleanup(func() {
		_ = l.Close()
		<-done
		for _, c := range conns {
			_ = c.Close()
		}
	})
	return l.Addr().String()
}
