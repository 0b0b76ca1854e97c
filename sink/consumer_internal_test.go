package sink

import (
	"reflect"
	"testing"
	"testing/synctest"

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
	out, wg := c.decodeAhead(deliveries, stop, NewByteBudget(GroupBytes))
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

// TestByteBudget: Acquire waits while the bytes held and asked would
// exceed the budget, passes a request larger than the budget when nothing
// is held, goes on after Release, and fails after Close.
func TestByteBudget(t *testing.T) {
	for _, tc := range []struct {
		name    string
		held    []int // acquired first
		ask     int
		waits   bool
		release int  // given back while it waits
		after   bool // it still waits after that
	}{
		{"room left", []int{10}, 6, false, 0, false},
		{"nothing held, larger than the budget", nil, 40, false, 0, false},
		{"over the budget", []int{10}, 7, true, 10, false},
		{"over the budget until all is back", []int{10, 6}, 12, true, 6, true},
	} {
		t.Run(tc.name, func(t *testing.T) {
			synctest.Test(t, func(t *testing.T) {
				b := NewByteBudget(16)
				for _, n := range tc.held {
					if !b.Acquire(n) {
						t.Fatal("Acquire failed on an open budget")
					}
				}
				done := make(chan bool, 1)
				go func() { done <- b.Acquire(tc.ask) }()
				synctest.Wait()
				select {
				case ok := <-done:
					if tc.waits || !ok {
						t.Fatalf("Acquire(%d) holding %v of 16 returned %v, want it to wait", tc.ask, tc.held, ok)
					}
					return
				default:
					if !tc.waits {
						t.Fatalf("Acquire(%d) holding %v of 16 waits, want it to pass", tc.ask, tc.held)
					}
				}
				b.Release(tc.release)
				synctest.Wait()
				select {
				case ok := <-done:
					if !ok || tc.after {
						t.Fatalf("Acquire(%d) returned %v after Release(%d), want it to wait still: %v", tc.ask, ok, tc.release, tc.after)
					}
				default:
					if !tc.after {
						t.Fatalf("Acquire(%d) still waits after Release(%d)", tc.ask, tc.release)
					}
					b.Close()
					if ok := <-done; ok {
						t.Fatal("Acquire succeeded after Close")
					}
				}
			})
		})
	}
}
