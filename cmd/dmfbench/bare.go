package main

import (
	"context"
	"fmt"
	"os"
	"strings"
	"time"

	"github.com/dmfexport/dmfexport/publish"
	amqp "github.com/rabbitmq/amqp091-go"
)

// The bare case is the broker's own ceiling for an entity: the messages the
// uncompressed publish sends, encoded beforehand, published by amqp091-go
// alone with publisher confirms and bareInFlight messages in flight. The
// uncompressed publish is shown as a percentage of it: what dmfexport's
// reading, encoding and confirm window cost against a publisher that only
// publishes.

// bareInFlight is how many messages the bare publisher keeps unconfirmed.
var bareInFlight = 16

// collectSink keeps the messages of a publish in memory.
type collectSink struct{ msgs []publish.Message }

func (c *collectSink) Publish(_ context.Context, m publish.Message) error {
	m.Body = append([]byte(nil), m.Body...) // the publisher reuses its buffers once stored
	c.msgs = append(c.msgs, m)
	if m.OnStored != nil {
		m.OnStored()
	}
	return nil
}
func (c *collectSink) Flush(context.Context) error { return nil }
func (c *collectSink) Close() error                { return nil }

// runBare encodes the entity file at path into messages, then times their
// publishing by a bare confirming publisher.
func runBare(ctx context.Context, format, path string) (result, error) {
	f, err := os.Open(path)
	if err != nil {
		return result{}, err
	}
	defer func() { _ = f.Close() }()
	var c collectSink
	st, err := publish.PublishEntity(ctx, f, &c, publish.EntityOptions{
		Job: "bench", RunID: "run", ExecutionID: "exec", Entity: path[strings.LastIndexByte(path, '/')+1:],
		BatchSize: *batch, MaxBatchBytes: *batchBytes, Format: format,
	})
	if err != nil {
		return result{}, fmt.Errorf("encode the messages: %w", err)
	}
	rate, err := parseRate(*link)
	if err != nil {
		return result{}, err
	}
	pubURL, _, err := linkedURL(*url, rate)
	if err != nil {
		return result{}, err
	}
	q, drop, err := declareBenchQueue()
	if err != nil {
		return result{}, err
	}
	defer drop()
	conn, ch, err := confirmChannel(pubURL)
	if err != nil {
		return result{}, err
	}
	defer func() { _ = conn.Close() }()
	window := make([]*amqp.DeferredConfirmation, 0, bareInFlight)
	start := time.Now()
	for _, m := range c.msgs {
		if len(window) == bareInFlight {
			if err := waitAck(ctx, window[0]); err != nil {
				return result{}, err
			}
			window = window[1:]
		}
		dc, err := ch.PublishWithDeferredConfirmWithContext(ctx, "", q, true, false, amqp.Publishing{
			Headers: amqp.Table(m.Headers), ContentType: m.ContentType, DeliveryMode: amqp.Persistent,
			CorrelationId: m.CorrelationID, MessageId: m.MessageID, Timestamp: m.Timestamp, Type: m.Type, AppId: m.AppID, Body: m.Body,
		})
		if err != nil {
			return result{}, err
		}
		window = append(window, dc)
	}
	for _, dc := range window {
		if err := waitAck(ctx, dc); err != nil {
			return result{}, err
		}
	}
	return result{Rows: st.Rows, BytesOut: st.BytesOut, Messages: st.Batches, Seconds: time.Since(start).Seconds()}, nil
}

// waitAck waits for the broker's confirm of one message.
func waitAck(ctx context.Context, dc *amqp.DeferredConfirmation) error {
	ok, err := dc.WaitContext(ctx)
	if err != nil {
		return fmt.Errorf("wait for a confirm: %w", err)
	}
	if !ok {
		return fmt.Errorf("the broker refused message %d (nack)", dc.DeliveryTag)
	}
	return nil
}

// confirmChannel dials u and opens a channel in confirm mode.
func confirmChannel(u string) (*amqp.Connection, *amqp.Channel, error) {
	conn, err := amqp.Dial(u)
	if err != nil {
		return nil, nil, err
	}
	ch, err := conn.Channel()
	if err == nil {
		err = ch.Confirm(false)
	}
	if err != nil {
		_ = conn.Close()
		return nil, nil, err
	}
	return conn, ch, nil
}
