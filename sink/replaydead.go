package sink

import (
	"context"
	"fmt"
	"strings"
	"time"

	amqp "github.com/rabbitmq/amqp091-go"

	"github.com/dmfexport/dmfexport/internal/redact"
)

// ReplayedHeader marks a batch put back from the dead-letter queue: its
// value is when. The batch keeps its message ID, so the ledger still
// applies it at most once.
const ReplayedHeader = "x-dmfexport-replayed"

// deadHeaders are the headers a dead letter gained on its way there: the
// sink's reason and name, the broker's delivery count and death records.
func deadHeader(k string) bool {
	return k == ReasonHeader || k == SinkHeader || k == "x-delivery-count" || k == "x-death" ||
		strings.HasPrefix(k, "x-first-death-") || strings.HasPrefix(k, "x-last-death-")
}

// ReplayDead moves the batches in queue's dead-letter queue back to queue
// (through the default exchange, so only this queue gets them): the same
// body and properties, the headers kept but those the dead-lettering
// added, and ReplayedHeader set. Each is taken off the dead-letter queue
// only once the broker confirmed its copy in queue, so a cut connection
// loses none (it may leave one in both: the ledger applies it once). It
// moves at most the batches there when it starts, so batches dead-lettered
// again meanwhile stay, and returns how many it moved.
func ReplayDead(ctx context.Context, url, queue string) (int, error) {
	conn, ch, err := openChannel(url, amqp.Config{})
	if err != nil {
		return 0, err
	}
	defer func() { _ = conn.Close() }()
	if _, err := ch.QueueDeclarePassive(queue, true, false, false, false, nil); err != nil {
		return 0, fmt.Errorf("queue %q: %w", queue, err)
	}
	dead := DeadLetterName(queue)
	q, err := ch.QueueDeclarePassive(dead, true, false, false, false, nil)
	if err != nil {
		return 0, fmt.Errorf("dead-letter queue %q: %w (the sink declares it when it first runs)", dead, err)
	}
	if q.Messages == 0 {
		return 0, nil
	}
	if err := ch.Confirm(false); err != nil {
		return 0, err
	}
	moved := 0
	for moved < q.Messages {
		if err := ctx.Err(); err != nil {
			return moved, err
		}
		d, ok, err := ch.Get(dead, false)
		if err != nil {
			return moved, fmt.Errorf("get from %q: %w", dead, err)
		}
		if !ok {
			break
		}
		headers := amqp.Table{}
		for k, v := range d.Headers {
			if !deadHeader(k) {
				headers[k] = v
			}
		}
		headers[ReplayedHeader] = time.Now().UTC().Format(time.RFC3339)
		dc, err := ch.PublishWithDeferredConfirmWithContext(ctx, "", queue, true, false, amqp.Publishing{
			Headers: headers, ContentType: d.ContentType, ContentEncoding: d.ContentEncoding, DeliveryMode: amqp.Persistent,
			CorrelationId: d.CorrelationId, MessageId: d.MessageId, Timestamp: d.Timestamp, Type: d.Type, AppId: d.AppId, Body: d.Body,
		})
		if err != nil {
			return moved, fmt.Errorf("put batch %s back in %q: %w", d.MessageId, queue, err)
		}
		if ok, err := dc.WaitContext(ctx); err != nil || !ok {
			return moved, fmt.Errorf("put batch %s back in %q: the broker refused it (%w); it stays in %q", d.MessageId, queue, err, dead)
		}
		if err := d.Ack(false); err != nil {
			return moved, err
		}
		moved++
	}
	return moved, nil
}

// DeadLetters is how many batches queue's dead-letter queue holds; an
// error when the broker cannot be reached or the queue does not exist.
func DeadLetters(ctx context.Context, url, queue string) (int, error) {
	conn, ch, err := openChannel(url, amqp.Config{Dial: amqp.DefaultDial(5 * time.Second)})
	if err != nil {
		return 0, err
	}
	defer func() { _ = conn.Close() }()
	q, err := ch.QueueDeclarePassive(DeadLetterName(queue), true, false, false, false, nil)
	if err != nil {
		return 0, fmt.Errorf("dead-letter queue %q: %w", DeadLetterName(queue), err)
	}
	return q.Messages, nil
}

// openChannel connects to the broker at url and opens a channel on the
// connection, which the caller closes.
func openChannel(url string, cfg amqp.Config) (*amqp.Connection, *amqp.Channel, error) {
	conn, err := amqp.DialConfig(url, cfg)
	if err != nil {
		return nil, nil, fmt.Errorf("connect to %s: %w", redact.URL(url), err)
	}
	ch, err := conn.Channel()
	if err != nil {
		_ = conn.Close()
		return nil, nil, err
	}
	return conn, ch, nil
}
