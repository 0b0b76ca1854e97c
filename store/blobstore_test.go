package store_test

import (
	"bytes"
	"context"
	"errors"
	"io"
	"net/url"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/Azure/azure-sdk-for-go/sdk/azcore"
	"github.com/Azure/azure-sdk-for-go/sdk/azcore/policy"
	"github.com/Azure/azure-sdk-for-go/sdk/storage/azblob/bloberror"
	"github.com/Azure/azure-sdk-for-go/sdk/storage/azblob/blockblob"
	"github.com/Azure/azure-sdk-for-go/sdk/storage/azblob/container"
	"github.com/Azure/azure-sdk-for-go/sdk/storage/azblob/sas"
	"github.com/Azure/azure-sdk-for-go/sdk/storage/azblob/service"

	"github.com/dmfexport/dmfexport/internal/testenv"
	"github.com/dmfexport/dmfexport/store"
	"github.com/dmfexport/dmfexport/store/storetest"
)

// fakeCredential is never asked for a token in these tests.
type fakeCredential struct{}

func (fakeCredential) GetToken(context.Context, policy.TokenRequestOptions) (azcore.AccessToken, error) {
	return azcore.AccessToken{Token: "t", ExpiresOn: time.Now().Add(time.Hour)}, nil
}

func TestNewBlobStoreOptionErrors(t *testing.T) {
	const cs = "DefaultEndpointsProtocol=http;AccountName=acct;AccountKey=S3CRETKEYS3CRETKEY==;BlobEndpoint=http://127.0.0.1:1/acct;"
	tests := []struct {
		name    string
		opts    store.BlobOptions
		wantErr string
	}{
		{"nothing", store.BlobOptions{Container: "c1c"}, "exactly one of"},
		{"two methods", store.BlobOptions{Container: "abc", ConnectionString: cs, SASURL: "https://a.blob.core.windows.net/?sig=S3CRETSIG"}, "exactly one of"},
		{"credential without URL", store.BlobOptions{Container: "abc", Credential: fakeCredential{}}, "not an http(s) URL"},
		{"URL without credential", store.BlobOptions{Container: "abc", AccountURL: "https://a.blob.core.windows.net/"}, "without a credential"},
		{"account URL with query", store.BlobOptions{Container: "abc", AccountURL: "https://a.blob.core.windows.net/?sig=S3CRETSIG", Credential: fakeCredential{}}, "sas_url"},
		{"no container", store.BlobOptions{ConnectionString: cs}, "no container name"},
		{"upper-case container", store.BlobOptions{ConnectionString: cs, Container: "Exports"}, `container name "Exports"`},
		{"short container", store.BlobOptions{ConnectionString: cs, Container: "ab"}, "wrong length"},
		{"double hyphen", store.BlobOptions{ConnectionString: cs, Container: "a--b"}, "not allowed"},
		{"trailing hyphen", store.BlobOptions{ConnectionString: cs, Container: "ab-"}, "not allowed"},
		{"block size too small", store.BlobOptions{ConnectionString: cs, Container: "abc", BlockSize: 1000}, "block size 1000"},
		{"negative concurrency", store.BlobOptions{ConnectionString: cs, Container: "abc", Concurrency: -1}, "concurrency -1"},
		{"malformed connection string", store.BlobOptions{ConnectionString: "AccountKey=S3CRETKEYS3CRETKEY==", Container: "abc"}, "connection string"},
		{"SAS URL names a blob", store.BlobOptions{SASURL: "https://a.blob.core.windows.net/c1/b?sig=S3CRETSIG"}, "names a blob"},
		{"SAS URL container differs", store.BlobOptions{SASURL: "https://a.blob.core.windows.net/c1c?sig=S3CRETSIG", Container: "c2c"}, "differs"},
		{"SAS URL not http", store.BlobOptions{SASURL: "ftp://a/c1c?sig=S3CRETSIG"}, "not an http(s) URL"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			_, err := store.NewBlobStore(context.Background(), tt.opts)
			if err == nil || !strings.Contains(err.Error(), tt.wantErr) {
				t.Fatalf("store.NewBlobStore = %v, want an error containing %q", err, tt.wantErr)
			}
			if strings.Contains(err.Error(), "S3CRET") {
				t.Errorf("error %q leaks a secret", err)
			}
		})
	}
}

func TestBlobStoreAuthModes(t *testing.T) {
	ctx := context.Background()
	cs := testenv.AzuriteConnString(t)
	svc, err := service.NewClientFromConnectionString(cs, nil)
	if err != nil {
		t.Fatal(err)
	}
	expiry := time.Now().Add(time.Hour)
	accountSAS, err := svc.GetSASURL(sas.AccountResourceTypes{Service: true, Container: true, Object: true},
		sas.AccountPermissions{Read: true, Write: true, Delete: true, List: true, Create: true, Add: true}, expiry, nil)
	if err != nil {
		t.Fatal(err)
	}
	existing := storetest.RandomContainer()
	cc, err := container.NewClientFromConnectionString(cs, existing, nil)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := cc.Create(ctx, nil); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _, _ = cc.Delete(context.Background(), nil) })
	containerSAS, err := cc.GetSASURL(sas.ContainerPermissions{Read: true, Write: true, Delete: true, List: true, Create: true, Add: true}, expiry, nil)
	if err != nil {
		t.Fatal(err)
	}
	tests := []struct {
		name          string
		opts          store.BlobOptions
		wantContainer string // "" for the random one newTestBlobStore picks
	}{
		{"connection string", store.BlobOptions{ConnectionString: cs}, ""},
		{"account SAS URL plus container", store.BlobOptions{SASURL: accountSAS, Container: storetest.RandomContainer()}, ""},
		{"container SAS URL, existing container", store.BlobOptions{SASURL: containerSAS}, existing},
		{"container SAS URL naming the same container", store.BlobOptions{SASURL: containerSAS, Container: existing}, existing},
		{"connection string, existing container", store.BlobOptions{ConnectionString: cs, Container: existing}, existing},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			s := storetest.Blob(t, tt.opts)
			if tt.wantContainer != "" && !strings.Contains(s.Where(), `"`+tt.wantContainer+`"`) {
				t.Errorf("Where() = %q, want container %q", s.Where(), tt.wantContainer)
			}
			if !strings.Contains(s.Where(), "devstoreaccount1") {
				t.Errorf("Where() = %q, want the account name", s.Where())
			}
			if _, err := s.Put(ctx, "auth/check", strings.NewReader("ok"), map[string]string{"a": "b"}); err != nil {
				t.Fatalf("Put: %v", err)
			}
			if got := storetest.ReadAll(t, s, "auth/check"); got != "ok" {
				t.Errorf("Open = %q, want ok", got)
			}
			if err := s.Delete(ctx, "auth/check"); err != nil {
				t.Errorf("Delete: %v", err)
			}
		})
	}
}

func TestBlobStoreRefusedCredentialsHideSecrets(t *testing.T) {
	ep := testenv.AzuriteEndpoint(t)
	badKey := "QkFES0VZQkFES0VZQkFES0VZQkFES0VZQkFES0VZQkFES0VZ"
	u, _ := url.Parse(ep)
	tests := []struct {
		name   string
		opts   store.BlobOptions
		secret string
	}{
		{"wrong account key", store.BlobOptions{Container: "refused", ConnectionString: strings.Replace(testenv.AzuriteConnString(t), testenv.AzuriteKey, badKey, 1)}, badKey},
		{"forged SAS", store.BlobOptions{SASURL: u.String() + "/refused?sv=2020-10-02&ss=b&srt=sco&sp=rl&se=2099-01-01T00:00:00Z&sig=Rk9SR0VEU0lHTkFUVVJF", Container: "refused"}, "Rk9SR0VEU0lHTkFUVVJF"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
			defer cancel()
			_, err := store.NewBlobStore(ctx, tt.opts)
			if err == nil {
				t.Fatal("store.NewBlobStore succeeded with refused credentials, want an error")
			}
			msg := err.Error()
			if strings.Contains(msg, tt.secret) || strings.Contains(msg, "sig=") {
				t.Errorf("error %q leaks the secret", msg)
			}
			if !strings.Contains(msg, `container "refused" in account devstoreaccount1`) || !strings.Contains(msg, "HTTP 403") {
				t.Errorf("error %q, want it to name the container, the account and HTTP 403", msg)
			}
		})
	}
}

func TestBlobStoreReadOnly(t *testing.T) {
	ctx := context.Background()
	cs := testenv.AzuriteConnString(t)
	name := storetest.RandomContainer()
	s, err := store.NewBlobStore(ctx, store.BlobOptions{ConnectionString: cs, Container: name, ReadOnly: true})
	if err != nil {
		t.Fatalf("open read-only: %v", err)
	}
	objs, err := s.List(ctx, "x/")
	if err != nil || len(objs) != 0 {
		t.Fatalf("List of a missing container: want nothing and no error, got %v, %v", objs, err)
	}
	cc, err := container.NewClientFromConnectionString(cs, name, nil)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := cc.GetProperties(ctx, nil); !bloberror.HasCode(err, bloberror.ContainerNotFound) {
		t.Errorf("container after a read-only open: want ContainerNotFound, got %v", err)
		_, _ = cc.Delete(ctx, nil)
	}
}

// TestBlobStoreContentType: a blob is labelled for people who download it
// from the portal; a gzip object by its type only, never with a
// Content-Encoding that would make HTTP clients decompress a .gz file.
func TestBlobStoreContentType(t *testing.T) {
	ctx := context.Background()
	cs := testenv.AzuriteConnString(t)
	name := storetest.RandomContainer()
	st := storetest.Blob(t, store.BlobOptions{ConnectionString: cs, Container: name})
	cc, err := container.NewClientFromConnectionString(cs, name, nil)
	if err != nil {
		t.Fatal(err)
	}
	tests := []struct{ key, want string }{
		{"e/Customers.csv", "text/csv"},
		{"e/Customers.csv.gz", "application/gzip"},
		{"e/Orders.xml.gz", "application/gzip"},
		{"e/Products.xlsx", "application/vnd.openxmlformats-officedocument.spreadsheetml.sheet"},
		{"r/package.zip", "application/zip"},
	}
	for _, tt := range tests {
		t.Run(tt.key, func(t *testing.T) {
			if _, err := st.PutSealed(ctx, tt.key, strings.NewReader("x"), nil, nil); err != nil {
				t.Fatal(err)
			}
			p, err := cc.NewBlobClient(tt.key).GetProperties(ctx, nil)
			if err != nil {
				t.Fatal(err)
			}
			got, enc := "", ""
			if p.ContentType != nil {
				got = *p.ContentType
			}
			if p.ContentEncoding != nil {
				enc = *p.ContentEncoding
			}
			if got != tt.want || enc != "" {
				t.Errorf("%s: Content-Type %q, Content-Encoding %q; want %q and none", tt.key, got, enc, tt.want)
			}
		})
	}
}

// TestBlobStorePutFromFile: a section reader over a whole file (the
// package) is uploaded from the file itself, with no upload buffers; any
// other reader is streamed through them. Either way the blob holds what
// the reader yields, from where it stands.
func TestBlobStorePutFromFile(t *testing.T) {
	ctx := context.Background()
	cs, name := testenv.AzuriteConnString(t), storetest.RandomContainer()
	st := storetest.Blob(t, store.BlobOptions{ConnectionString: cs, Container: name}) // 1 MiB blocks, 2 at once
	cc, err := container.NewClientFromConnectionString(cs, name, nil)
	if err != nil {
		t.Fatal(err)
	}
	data := make([]byte, 3<<20+12345)
	for i := range data {
		data[i] = byte(i*7 + i>>11)
	}
	f, err := os.Create(filepath.Join(t.TempDir(), "package.zip"))
	if err != nil {
		t.Fatal(err)
	}
	defer func() { _ = f.Close() }()
	if _, err := f.Write(data); err != nil {
		t.Fatal(err)
	}
	tests := []struct {
		name      string
		src       io.ReaderAt
		size      int64
		skip      int64 // bytes read before Put
		cancelled bool
		streamed  bool // through UploadStream's buffers, block by block
	}{
		{"whole file", f, int64(len(data)), 0, false, false},
		{"part of the file", f, 2 << 20, 0, false, true},
		{"file read part-way", f, int64(len(data)), 1000, false, true},
		{"not a file", bytes.NewReader(data), int64(len(data)), 0, false, true},
		{"cancelled", f, int64(len(data)), 0, true, false},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			key := "r/" + strings.ReplaceAll(tt.name, " ", "-") + "/package.zip"
			sr := io.NewSectionReader(tt.src, 0, tt.size)
			if _, err := sr.Seek(tt.skip, io.SeekStart); err != nil {
				t.Fatal(err)
			}
			pctx := ctx
			if tt.cancelled {
				c, cancel := context.WithCancel(ctx)
				cancel()
				pctx = c
			}
			o, err := st.Put(pctx, key, sr, map[string]string{"sha256": "x"})
			if tt.cancelled {
				if !errors.Is(err, context.Canceled) {
					t.Fatalf("Put with a cancelled context = %v, want context.Canceled", err)
				}
				if _, err := st.Stat(ctx, key); !errors.Is(err, store.ErrNotExist) {
					t.Errorf("blob after a cancelled Put: Stat = %v, want ErrNotExist", err)
				}
				return
			}
			want := data[tt.skip:tt.size]
			if err != nil || o.Size != int64(len(want)) {
				t.Fatalf("Put = %+v, %v; want %d bytes stored", o, err, len(want))
			}
			if got := storetest.ReadAll(t, st, key); got != string(want) {
				t.Errorf("blob holds %d bytes unlike the %d the reader yields", len(got), len(want))
			}
			so, err := st.Stat(ctx, key)
			if err != nil || so.Size != int64(len(want)) || so.Meta["sha256"] != "x" {
				t.Errorf("Stat = %+v, %v; want %d bytes with the metadata", so, err, len(want))
			}
			bl, err := cc.NewBlockBlobClient(key).GetBlockList(ctx, blockblob.BlockListTypeCommitted, nil)
			if err != nil {
				t.Fatal(err)
			}
			// UploadStream commits a list of 1 MiB blocks; a file this
			// size goes up in one request from the file.
			if streamed := len(bl.CommittedBlocks) > 0; streamed != tt.streamed {
				t.Errorf("%d blocks committed: streamed = %v, want %v", len(bl.CommittedBlocks), streamed, tt.streamed)
			}
		})
	}
}
