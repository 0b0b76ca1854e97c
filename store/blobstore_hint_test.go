package store

import (
	"context"
	"strings"
	"testing"
	"time"
)

// TestNewBlobStoreUnreachableHint checks that a store nobody answers at is
// reported with a hint about its endpoint, not about permissions, which
// only an answer (401, 403) can put in doubt.
func TestNewBlobStoreUnreachableHint(t *testing.T) {
	const cs = "DefaultEndpointsProtocol=http;AccountName=acct;AccountKey=S3CRETKEYS3CRETKEY==;BlobEndpoint=http://127.0.0.1:1/acct;"
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
	defer cancel()
	_, err := NewBlobStore(ctx, BlobOptions{ConnectionString: cs, Container: "exports"})
	if err == nil {
		t.Fatal("NewBlobStore of an endpoint nobody answers at: no error")
	}
	if msg := err.Error(); !strings.Contains(msg, "check the store's endpoint") || strings.Contains(msg, "permissions") {
		t.Errorf("error %q: want the endpoint hint and not the permissions one", msg)
	}
}
