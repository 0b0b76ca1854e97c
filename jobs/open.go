package jobs

import (
	"context"
	"fmt"
	"log/slog"
	"net/http"
	"time"

	"github.com/Azure/azure-sdk-for-go/sdk/azcore"
	"github.com/dmfexport/dmfexport/azauth"
	"github.com/dmfexport/dmfexport/store"
)

// owned is what a Runner opened and keeps across runs: its HTTP client,
// the stores of its exports (a blob store holds a connection pool and a
// credential with its token cache, and opening it checks the container)
// and the Entra ID credentials of F&O. Entries are found by comparing
// configurations, so no key is ever built from a configuration that holds
// secrets. Broker connections are not kept: each run opens its sink and
// closes it when it ends.
type owned struct {
	hc        *http.Client    // made on first use
	transport *http.Transport // made with hc when Runner.HTTPClient is nil
	stores    []ownedStore
	creds     []ownedCred
}

type ownedStore struct {
	cfg StoreConfig
	st  store.Store
}

type ownedCred struct {
	opts azauth.Options
	cred azcore.TokenCredential
}

// openStoreTimeout bounds opening a store (for a blob store: reaching the
// account and checking the container).
const openStoreTimeout = 2 * time.Minute

// httpClient returns the client for F&O, Entra ID, the blob store and the
// package download: Runner.HTTPClient, or one the Runner made with a
// transport of its own, whose idle connections Close closes. Each request
// it makes within a run is a span of the run's trace.
func (r *Runner) httpClient() *http.Client {
	r.mu.Lock()
	defer r.mu.Unlock()
	if r.owned.hc == nil {
		var c http.Client
		if r.HTTPClient != nil {
			c = *r.HTTPClient
		} else {
			r.owned.transport = http.DefaultTransport.(*http.Transport).Clone()
			c.Transport = r.owned.transport
		}
		c.Transport = tracingTransport{base: c.Transport, tracer: r.tracer()}
		r.owned.hc = &c
	}
	return r.owned.hc
}

// store returns the store of exp, opened with the Runner's HTTP client and
// ctx the first time a configuration like exp.Store is asked for, and kept
// until Close.
func (r *Runner) store(ctx context.Context, exp *Export) (store.Store, error) {
	r.mu.Lock()
	for _, o := range r.owned.stores {
		if o.cfg == exp.Store {
			r.mu.Unlock()
			return o.st, nil
		}
	}
	r.mu.Unlock()
	st, err := openStoreFor(ctx, exp.Store, r.httpClient(), false, r.logger())
	if err != nil {
		return nil, err
	}
	r.mu.Lock()
	defer r.mu.Unlock()
	for _, o := range r.owned.stores { // another run opened it meanwhile
		if o.cfg == exp.Store {
			return o.st, nil
		}
	}
	r.owned.stores = append(r.owned.stores, ownedStore{cfg: exp.Store, st: st})
	return st, nil
}

// credential returns the Entra ID credential for opts, made with the
// Runner's HTTP client the first time and kept until Close, so its token
// cache serves every run.
func (r *Runner) credential(opts azauth.Options) (azcore.TokenCredential, error) {
	r.mu.Lock()
	for _, o := range r.owned.creds {
		if o.opts == opts {
			r.mu.Unlock()
			return o.cred, nil
		}
	}
	r.mu.Unlock()
	cred, err := azauth.NewCredential(opts, &azcore.ClientOptions{Transport: r.httpClient()})
	if err != nil {
		return nil, err
	}
	r.mu.Lock()
	defer r.mu.Unlock()
	r.owned.creds = append(r.owned.creds, ownedCred{opts: opts, cred: cred})
	return cred, nil
}

// Close releases what the Runner opened: the stores and credentials it
// keeps are dropped and the idle connections of the HTTP client it made
// are closed. Runs still going keep what they hold. A Runner used after
// Close opens anew. It never fails; the error is for io.Closer.
func (r *Runner) Close() error {
	r.mu.Lock()
	o := r.owned
	r.owned = owned{}
	r.mu.Unlock()
	if o.transport != nil {
		o.transport.CloseIdleConnections()
	}
	return nil
}

// openStore opens the store a store section describes, sending through hc
// (nil: the default transport). It keeps nothing: a Runner keeps the
// stores it opens (Runner.store); the functions that run without a Runner
// (Records, RunOwned, FindRun) open one per call.
func openStore(ctx context.Context, c StoreConfig, hc *http.Client) (store.Store, error) {
	return openStoreFor(ctx, c, hc, false, nil)
}

// openStoreReading opens a store for reading only (status, finding a run):
// an Azure Blob container is not created when missing.
func openStoreReading(ctx context.Context, c StoreConfig) (store.Store, error) {
	return openStoreFor(ctx, c, nil, true, nil)
}

// openStoreFor opens a store; log (nil: slog.Default()) gets its warning
// that it was lost and created again.
func openStoreFor(ctx context.Context, c StoreConfig, hc *http.Client, readOnly bool, log *slog.Logger) (store.Store, error) {
	switch c.Type {
	case "dir":
		s, err := store.NewDirStore(c.Path)
		if err != nil {
			return nil, err // it names the directory
		}
		s.Logger = log
		return s, nil
	case "azblob":
		o := store.BlobOptions{AccountURL: c.AccountURL, Container: c.Container,
			ConnectionString: c.ConnectionString.Reveal(), SASURL: c.SASURL.Reveal(),
			BlockSize: c.BlockSize, Concurrency: c.Concurrency, HTTPClient: hc, ReadOnly: readOnly, Logger: log}
		if c.AccountURL != "" {
			var co *azcore.ClientOptions
			if hc != nil {
				co = &azcore.ClientOptions{Transport: hc}
			}
			cred, err := azauth.NewCredential(c.Auth.Options, co)
			if err != nil {
				return nil, fmt.Errorf("blob store credential: %w", err)
			}
			o.Credential = cred
		}
		ctx, cancel := context.WithTimeout(ctx, openStoreTimeout)
		defer cancel()
		return store.NewBlobStore(ctx, o)
	default:
		return nil, fmt.Errorf("unknown store type %q", c.Type)
	}
}
