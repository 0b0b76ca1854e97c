package sink

import (
	"reflect"
	"testing"

	amqp "github.com/rabbitmq/amqp091-go"
)

// TestDecodeAhead: deliveries come out decoded, in order, a body kept only
// where a dead letter may need it, and the decoder stops when told even
// with deliveries still open.
func TestDecodeAhead(t *testing.T) {
	good := body(1, `"columns":["ID"],"rows":[{"ID":"1"}]`)
	deliveries := make(chan amqp.Delivery, 3)
	for i, b := range []string{good, "not json", good} {
		deliveries <- amqp.Delivery{DeliveryTag: uint64(i + 1), Body: []byte(b)}
	}
	c := &Consumer{Entities: map[string]EntityOptions{"E": {Keys: []string{"ID"}, Mode: Upsert}}}
	stop := make(chan struct{})
	out, wg := c.decodeAhead(deliveries, stop)
	var got []string
	for range 3 {
		x := <-out
		switch {
		case x.err == nil && x.b != nil && x.d.Body == nil && x.t.Mode == Upsert:
			got = append(got, "decoded")
		case x.err != nil && x.b == nil && string(x.d.Body) == "not json":
			got = append(got, "refused")
		default:
			got = append(got, "wrong")
		}
	}
	if want := []string{"decoded", "refused", "decoded"}; !reflect.DeepEqual(got, want) {
		t.Errorf("decoded %v, want %v", got, want)
	}
	close(stop)
	wg.Wait() // returns although deliveries is still open
}
