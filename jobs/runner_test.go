package jobs

import (
	"github.com/dmfexport/dmfexport/internal/testenv"

	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"net/url"
	"strings"
	"testing"
	"time"

	amqp "github.com/rabbitmq/amqp091-go"

	"github.com/dmfexport/dmfexport/azauth"
	"github.com/dmfexport/dmfexport/dmf/dmftest"
	"github.com/dmfexport/dmfexport/runs"
)

// csvEntity builds an entity file with n data rows whose ID column numbers
// them 1..n, with fields that need quoting.
func csvEntity(name string, n int) dmftest.Entity {
	var b bytes.Buffer
	b.WriteString("\ufeffID,NAME,NOTE\r\n")
	for i := 1; i <= n; i++ {
		fmt.Fprintf(&b, "%06d,\"Name, %d\",\"said \"\"hi\"\"\r\nline two\"\r\n", i, i)
	}
	return dmftest.Entity{Name: name, File: name + ".csv", SourceFormat: "CSV-Unicode", Data: b.Bytes()}
}

type batchBody struct {
	SpecVersion string `json:"specversion"`
	ID          string `json:"id"`
	Data        struct {
		Job         string              `json:"job"`
		RunID       string              `json:"run_id"`
		ExecutionID string              `json:"execution_id"`
		Entity      string              `json:"entity"`
		BatchIndex  int                 `json:"batch_index"`
		BatchCount  *int                `json:"batch_count"`
		LastBatch   bool                `json:"last_batch"`
		FirstRow    int64               `json:"first_row"`
		RowCount    int                 `json:"row_count"`
		Rows        []map[string]string `json:"rows"`
	} `json:"data"`
}

// TestRunEndToEnd exports a package from the simulator through the local
// store into RabbitMQ and checks, from a real consumer, that every row
// arrived exactly once in batches of batch_size with the last one partial.
func TestRunEndToEnd(t *testing.T) {
	t.Parallel() // waits on the real broker: alongside the others
	const batchSize = 1000
	entities := map[string]int{"Customers V3": 2345, "Vendors V2": 1000, "Empty entity": 0}
	var ents []dmftest.Entity
	for name, n := range entities {
		ents = append(ents, csvEntity(name, n))
	}
	sim := newSim(quick(dmftest.Options{Projects: map[string][]dmftest.Entity{"E2E": ents}, ExecutionTime: 200 * time.Millisecond}))
	defer sim.Close()

	suffix := fmt.Sprintf("%d", time.Now().UnixNano())
	exchange, queue := "dmfexport.test.e2e."+suffix, "dmfexport.test.e2e."+suffix
	ch := testenv.AMQPChannel(t)
	testenv.DeleteOnCleanup(t, ch, queue, exchange)

	u, _ := url.Parse(sim.URL)
	store := t.TempDir()
	exp := &Export{
		Name: "e2e", Schedule: "@daily", DefinitionGroup: "E2E", PackageName: "E2E", LegalEntity: "USMF",
		Enabled: true, Exchange: exchange, RoutingKey: "fo.e2e", BatchSize: batchSize,
		FO:     FOConfig{URL: u, Auth: AuthConfig{Options: azauth.Options{Method: "token", Token: Secret(dmftest.DefaultToken)}}},
		Store:  StoreConfig{Type: "dir", Path: store},
		Broker: BrokerConfig{Type: "amqp", URL: Secret(testenv.AMQPURL()), ConfirmWindow: 16, Declare: true, Queues: []QueueConfig{{Name: queue, BindingKey: "fo.e2e"}}},
		Poll:   PollConfig{Interval: 20 * time.Millisecond, MaxInterval: 100 * time.Millisecond, Deadline: 30 * time.Second, PackageURLTimeout: 10 * time.Second, RegisterTimeout: 10 * time.Second},
	}
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	rec, err := (&Runner{}).Run(ctx, exp, RunOptions{Trigger: "manual"})
	if err != nil {
		t.Fatalf("Run: %v", err)
	}
	if rec.State != runs.StateSucceeded || !rec.Unpacked || len(rec.Entities) != len(entities) {
		t.Fatalf("record: state %s unpacked %v entities %d, want succeeded/true/%d", rec.State, rec.Unpacked, len(rec.Entities), len(entities))
	}
	if got := sim.Exports(); got != 1 {
		t.Errorf("simulator saw %d exports started, want exactly 1", got)
	}
	if strings.Contains(rec.PackageURL, "sig=") && !strings.Contains(rec.PackageURL, "REDACTED") {
		t.Errorf("run record holds an unredacted package URL: %s", rec.PackageURL)
	}

	// Consume everything and account for every row.
	seen := map[string]map[string]int{} // entity → ID → count
	batches := map[string][]batchBody{} // entity → batches in arrival order
	msgIDs := map[string]bool{}
	deliveries, err := ch.Consume(queue, "", true, true, false, false, nil)
	if err != nil {
		t.Fatal(err)
	}
	wantMessages := 0
	for _, n := range entities {
		wantMessages += max(1, (n+batchSize-1)/batchSize)
	}
	for i := 0; i < wantMessages; i++ {
		select {
		case d := <-deliveries:
			var b batchBody
			if err := json.Unmarshal(d.Body, &b); err != nil {
				t.Fatalf("message %d: body is not JSON: %v", i, err)
			}
			if d.DeliveryMode != amqp.Persistent || d.MessageId == "" || d.MessageId != b.ID || d.CorrelationId != rec.RunID {
				t.Errorf("message %d properties: mode %d id %q (body id %q) correlation %q (run %s)", i, d.DeliveryMode, d.MessageId, b.ID, d.CorrelationId, rec.RunID)
			}
			if msgIDs[d.MessageId] {
				t.Errorf("message ID %s delivered twice", d.MessageId)
			}
			msgIDs[d.MessageId] = true
			if b.Data.ExecutionID != rec.ExecutionID || b.Data.Job != "e2e" {
				t.Errorf("message %d: execution %q job %q, want %q e2e", i, b.Data.ExecutionID, b.Data.Job, rec.ExecutionID)
			}
			batches[b.Data.Entity] = append(batches[b.Data.Entity], b)
			if seen[b.Data.Entity] == nil {
				seen[b.Data.Entity] = map[string]int{}
			}
			for _, r := range b.Data.Rows {
				seen[b.Data.Entity][r["ID"]]++
				if !strings.HasPrefix(r["NAME"], "Name, ") || r["NOTE"] != "said \"hi\"\r\nline two" {
					t.Fatalf("entity %s row %s arrived altered: %q", b.Data.Entity, r["ID"], r)
				}
			}
		case <-time.After(10 * time.Second):
			t.Fatalf("got %d messages, want %d", i, wantMessages)
		}
	}
	select {
	case d := <-deliveries:
		t.Fatalf("unexpected extra message %s", d.MessageId)
	case <-time.After(300 * time.Millisecond):
	}

	for name, n := range entities {
		for i := 1; i <= n; i++ {
			if c := seen[name][fmt.Sprintf("%06d", i)]; c != 1 {
				t.Fatalf("entity %s row %d arrived %d times, want exactly once", name, i, c)
			}
		}
		if len(seen[name]) != n {
			t.Errorf("entity %s: %d distinct rows, want %d", name, len(seen[name]), n)
		}
		bs := batches[name]
		want := max(1, (n+batchSize-1)/batchSize)
		if len(bs) != want {
			t.Fatalf("entity %s: %d batches, want %d", name, len(bs), want)
		}
		for i, b := range bs {
			last := i == len(bs)-1
			wantRows := batchSize
			if last {
				wantRows = n - batchSize*(len(bs)-1)
			}
			if b.Data.BatchIndex != i || b.Data.LastBatch != last || b.Data.RowCount != wantRows || len(b.Data.Rows) != wantRows ||
				b.Data.FirstRow != int64(i*batchSize+1) {
				t.Errorf("entity %s batch %d: index %d last %v rows %d/%d first_row %d; want index %d last %v rows %d first_row %d",
					name, i, b.Data.BatchIndex, b.Data.LastBatch, b.Data.RowCount, len(b.Data.Rows), b.Data.FirstRow, i, last, wantRows, i*batchSize+1)
			}
			if last && (b.Data.BatchCount == nil || *b.Data.BatchCount != len(bs)) {
				t.Errorf("entity %s: last batch has batch_count %v, want %d", name, b.Data.BatchCount, len(bs))
			}
		}
		var entRec *runs.EntityRecord
		for i := range rec.Entities {
			if rec.Entities[i].Entity == name {
				entRec = &rec.Entities[i]
			}
		}
		if entRec == nil || entRec.Rows != int64(n) || entRec.Batches != int64(want) || entRec.State != runs.StateSucceeded {
			t.Errorf("entity %s record %+v, want %d rows %d batches succeeded", name, entRec, n, want)
		}
	}

	// The run record in the store matches what Run returned.
	recs, err := Records(ctx, exp, 0)
	if err != nil || len(recs) != 1 || recs[0].RunID != rec.RunID || recs[0].State != runs.StateSucceeded {
		t.Fatalf("stored records %v (err %v), want one succeeded record for run %s", recs, err, rec.RunID)
	}
}
