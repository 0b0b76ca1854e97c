package publish

import (
	"context"
	"time"
)

// EventType is the CloudEvents type and the AMQP type property of every batch message.
const EventType = "com.dmfexport.batch.v1"

// ContentType is the AMQP content type of every batch message.
const ContentType = "application/cloudevents+json; charset=utf-8"

// AppID is the AMQP app_id property of every batch message.
const AppID = "dmfexport"

// Message is one batch ready for a sink.
type Message struct {
	Exchange, RoutingKey string
	// MessageID is the event id, "<execution id>/<entity>/<batch index>":
	// deterministic, so consumers can drop duplicates after a republish.
	MessageID, CorrelationID, Type, ContentType, ContentEncoding, AppID string
	Timestamp                                                           time.Time
	Headers                                                             map[string]any
	// Body is the encoded event. PublishEntity allocates a fresh body for
	// every batch and never touches it again, so a sink may keep it (for
	// example until the broker confirms it) without copying. Whoever builds a
	// Message by hand must likewise not modify Body after Publish.
	Body []byte
	// OnStored, when set, is called by the sink once the message is safely
	// stored (broker ack without a return, or written and fsynced), at most
	// once and in publish order. It may run on the goroutine of another
	// Publish or Flush call on the same sink and must not call the sink.
	// Once it is called the sink must not read Body again: PublishEntity
	// reuses the memory for a later batch.
	OnStored func()
}

// Sink receives messages. Publish may return before the message is stored;
// Flush returns only when every message published so far is safely stored
// (confirmed by the broker, or written and fsynced) or returns the first
// failure. Close releases resources and does not flush.
type Sink interface {
	Publish(ctx context.Context, m Message) error
	Flush(ctx context.Context) error
	Close() error
}
