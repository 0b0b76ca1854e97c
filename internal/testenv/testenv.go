// Package testenv locates the real services the tests run against, the
// RabbitMQ broker and the Azurite blob emulator that make test provides,
// and gives tests a TCP proxy (Proxy) to put between a client and such a
// service, so a fault can be injected into one connection while the
// service itself stays up, and a way to wait for a condition (Await)
// instead of sleeping. Only tests import it.
package testenv

import (
	"os"
	"strings"
	"testing"

	amqp "github.com/rabbitmq/amqp091-go"
)

// AzuriteKey is Azurite's well-known development account key (public).
const AzuriteKey = "Eby8vdM02xNOcqFlqUwJPLlmEtlCDXJ1OUzFT50uSRZ6IFsuFq2UVErCz4I6tq/K1SZFPTOtr/KBHBeksoGMGw=="

// AMQPURL is the broker tests publish to: $DMFEXPORT_TEST_AMQP_URL, or the
// local RabbitMQ with the default guest account.
func AMQPURL() string {
	if u := os.Getenv("DMFEXPORT_TEST_AMQP_URL"); u != "" {
		return u
	}
	return "amqp://guest:guest@127.0.0.1:5672/"
}

// AzuriteEndpoint returns $DMFEXPORT_TEST_AZURITE without a trailing slash,
// e.g. http://127.0.0.1:10000/devstoreaccount1, or skips the test when it
// is unset (make test always sets it).
func AzuriteEndpoint(t testing.TB) string {
	t.Helper()
	v := strings.TrimRight(os.Getenv("DMFEXPORT_TEST_AZURITE"), "/")
	if v == "" {
		t.Skip("DMFEXPORT_TEST_AZURITE is not set: run the tests with make test, which starts Azurite")
	}
	return v
}

// AzuriteConnString is a shared-key connection string for the Azurite at
// AzuriteEndpoint, or skips the test.
func AzuriteConnString(t testing.TB) string {
	t.Helper()
	return "DefaultEndpointsProtocol=http;AccountName=devstoreaccount1;AccountKey=" + AzuriteKey + ";BlobEndpoint=" + AzuriteEndpoint(t) + ";"
}

// AMQPChannel connects to the test broker (AMQPURL) and returns a channel
// for the test's own declarations and consumers; the connection closes
// when the test ends. It fails the test when no broker answers.
func AMQPChannel(t testing.TB) *amqp.Channel {
	t.Helper()
	conn, err := amqp.Dial(AMQPURL())
	if err != nil {
		t.Fatalf("connect to RabbitMQ at %s: %v (make test starts it; or set DMFEXPORT_TEST_AMQP_URL)", AMQPURL(), err)
	}
	t.Cleanup(func() { _ = conn.Close() })
	ch, err := conn.Channel()
	if err != nil {
		t.Fatalf("open a channel on RabbitMQ at %s: %v", AMQPURL(), err)
	}
	return ch
}

// DeleteOnCleanup deletes, when the test ends, the queue and the exchange
// named by each of names (a test's own, declared by it or by the code
// under test), so the shared broker keeps nothing of the test.
func DeleteOnCleanup(t testing.TB, ch *amqp.Channel, names ...string) {
	t.Cleanup(func() {
		for _, n := range names {
			_, _ = ch.QueueDelete(n, false, false, false)
			_ = ch.ExchangeDelete(n, false, false)
		}
	})
}

// Drain takes every message the queue holds now off it (acknowledged) and
// returns them in queue order.
func Drain(t testing.TB, ch *amqp.Channel, queue string) []amqp.Delivery {
	t.Helper()
	var out []amqp.Delivery
	for {
		d, ok, err := ch.Get(queue, true)
		if err != nil {
			t.Fatalf("get from queue %s: %v", queue, err)
		}
		if !ok {
			return out
		}
		out = append(out, d)
	}
}
