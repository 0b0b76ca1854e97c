// Package publish turns the rows of an entity file into JSON batch messages
// and hands them to a Sink: RabbitMQ with publisher confirms (AMQPSink) or
// NDJSON files for dry runs and demos without a broker (FileSink).
//
// Each batch is one CloudEvents 1.0 event in structured JSON mode (see
// docs/message.schema.json). Encoding is hand-written into reused buffers, so
// memory stays bounded by one batch per entity plus the messages a sink keeps
// until they are confirmed.
package publish
