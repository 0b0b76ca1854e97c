package jobs

import (
	"github.com/Azure/azure-sdk-for-go/sdk/storage/azblob/container"
	"github.com/dmfexport/dmfexport/internal/testenv"

	"context"
	"fmt"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/dmfexport/dmfexport/dmf/dmftest"
	"github.com/dmfexport/dmfexport/publish"
	"github.com/dmfexport/dmfexport/runs"
)

// azuriteStore returns a store section for a fresh container in the
// Azurite that make test starts (DMFEXPORT_TEST_AZURITE), or skips.
func azuriteStore(t *testing.T) StoreConfig {
	t.Helper()
	return StoreConfig{
		Type:             "azblob",
		Container:        fmt.Sprintf("jobs-%d", time.Now().UnixNano()),
		ConnectionString: Secret(testenv.AzuriteConnString(t)),
		Prefix:           "exports",
	}
}

// TestRunAzureBlobStore runs an export whose store is an Azure Blob
// container: the package, the entity blobs and the record land there, with
// metadata, and a replay reads the entities back from it.
func TestRunAzureBlobStore(t *testing.T) {
	store := azuriteStore(t)
	sim := newSim(quick(dmftest.Options{ // Azurite is on the real network: real time
		Projects:      map[string][]dmftest.Entity{"G": {csvEntity("Customers V3", 1234), csvEntity("Odd: name/with slash", 7)}},
		ExecutionTime: 50 * time.Millisecond,
	}))
	defer sim.Close()
	dir := t.TempDir()
	exp := fileExport(sim, dir)
	exp.Store = store
	ctx := context.Background()
	rec, err := (&Runner{}).Run(ctx, exp, RunOptions{Trigger: "manual"})
	if err != nil {
		t.Fatalf("Run: %v", err)
	}
	st, err := openStore(context.Background(), exp.Store, nil)
	if err != nil {
		t.Fatal(err)
	}
	objs, err := st.List(ctx, "exports/files/"+rec.RunID+"/")
	if err != nil {
		t.Fatal(err)
	}
	var keys []string
	for _, o := range objs {
		keys = append(keys, strings.TrimPrefix(o.Key, "exports/files/"+rec.RunID+"/"))
	}
	want := []string{"entities/Customers V3.csv", "entities/Odd%3A name%2Fwith slash.csv", "package.zip", "run.json"}
	if strings.Join(keys, "|") != strings.Join(want, "|") {
		t.Errorf("blobs %q, want %q", keys, want)
	}
	o, err := st.Stat(ctx, rec.Entities[0].Key)
	if err != nil {
		t.Fatal(err)
	}
	for k, v := range map[string]string{"export": "files", "job": "files", "run": rec.RunID, "executionid": rec.ExecutionID, "entity": "Customers V3", "format": "csv", "sha256": rec.Entities[0].SHA256} {
		if o.Meta[k] != v {
			t.Errorf("entity blob metadata %s = %q, want %q", k, o.Meta[k], v)
		}
	}
	recs, err := Records(ctx, exp, 0)
	if err != nil || len(recs) != 1 || recs[0].State != runs.StateSucceeded || !recs[0].Unpacked {
		t.Fatalf("records in the blob store: %v, %+v", err, recs)
	}
	if _, err := (&Runner{}).Replay(ctx, exp, recs[0], ReplayOptions{RoutingKey: "replay"}); err != nil {
		t.Fatalf("Replay from blobs: %v", err)
	}
	rows, _ := ndjsonRows(t, filepath.Join(dir, "batches", publish.FileName("replay")))
	if rows["Customers V3"] != 1234 || rows["Odd: name/with slash"] != 7 {
		t.Errorf("replayed rows %v, want 1234 and 7", rows)
	}
}

// TestRecordsReadOnlyOnAzureBlob: reading run records (dmfexport status)
// of an export whose container does not exist yet shows no runs and does
// not create the container.
func TestRecordsReadOnlyOnAzureBlob(t *testing.T) {
	ctx := context.Background()
	exp := &Export{Name: "fresh", Store: azuriteStore(t)}
	recs, err := Records(ctx, exp, 10)
	if err != nil || len(recs) != 0 {
		t.Fatalf("Records of a store never written: want none, got %v, %v", recs, err)
	}
	if owned, err := RunOwned(ctx, exp, "20261129T000000Z-00000000", time.Minute, nil); err != nil || owned {
		t.Fatalf("RunOwned in a store never written: want false, got %v, %v", owned, err)
	}
	cc, err := container.NewClientFromConnectionString(testenv.AzuriteConnString(t), exp.Store.Container, nil)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := cc.GetProperties(ctx, nil); err == nil {
		t.Errorf("container %s exists after reading records: status must not create it", exp.Store.Container)
		_, _ = cc.Delete(ctx, nil)
	}
}
