package s3data_test

import (
	"bytes"
	"io"
	"net/http"
	"net/http/httptest"
	"net/url"
	"path"
	"strings"
	"testing"

	"github.com/tus/tusd/v2/pkg/handler"
	"github.com/tus/tusd/v2/pkg/memorylocker"
	"golang.org/x/exp/slog"

	"github.com/tusgate/tusgate/gateway/s3data"
	"github.com/tusgate/tusgate/internal/s3test"
	"github.com/tusgate/tusgate/internal/tusclient"
)

// newTusServer serves tusd's handler over st on 127.0.0.1 and returns the
// creation endpoint.
func newTusServer(t *testing.T, st *s3data.Store) string {
	t.Helper()
	composer := handler.NewStoreComposer()
	composer.UseCore(st)
	composer.UseTerminater(st)
	composer.UseLengthDeferrer(st)
	memorylocker.New().UseIn(composer)
	h, err := handler.NewHandler(handler.Config{
		BasePath:      "/files/",
		StoreComposer: composer,
		Logger:        slog.New(slog.NewTextHandler(io.Discard, nil)),
	})
	if err != nil {
		t.Fatalf("tusd handler: %v", err)
	}
	mux := http.NewServeMux()
	mux.Handle("/files/", http.StripPrefix("/files/", h))
	srv := httptest.NewServer(mux)
	t.Cleanup(srv.Close)
	return srv.URL + "/files/"
}

// idOf returns the tusd id in an upload URL.
func idOf(t *testing.T, uploadURL string) string {
	t.Helper()
	u, err := url.Parse(uploadURL)
	if err != nil {
		t.Fatal(err)
	}
	return path.Base(u.Path)
}

// tusd's handler over the Store, driven like a client: creation with
// upload, PATCHes, HEAD, completion; bytes readable by another instance
// during and after; DELETE removes everything.
func TestTusHandler(t *testing.T) {
	t.Parallel()
	srv := s3test.Start(t)
	st, _ := newStore(t, srv)
	other, _ := newStore(t, srv)
	endpoint := newTusServer(t, st)
	c := &tusclient.Client{}
	ctx := t.Context()

	const size = 7*MiB + 3
	data := randomData(size, 10)
	uploadURL, off, err := c.CreateWithUpload(ctx, endpoint, size, map[string]string{"filename": "a.mp4"}, data[:2*MiB])
	if err != nil || off != 2*MiB {
		t.Fatalf("creation with upload: offset %d, %v", off, err)
	}
	id := idOf(t, uploadURL)
	if len(id) != 32 || strings.Contains(id, "+") {
		t.Fatalf("upload id %q: want tusd's 32 hex digits, without the multipart id", id)
	}
	if off, err = c.Patch(ctx, uploadURL, off, bytes.NewReader(data[2*MiB:6*MiB]), 4*MiB, -1); err != nil || off != 6*MiB {
		t.Fatalf("PATCH: offset %d, %v", off, err)
	}
	info, err := c.Head(ctx, uploadURL)
	if err != nil || info.Offset != 6*MiB || info.Length != size {
		t.Fatalf("HEAD: %+v, %v", info, err)
	}
	checkRange(t, other, id, 0, data[:6*MiB])
	if off, err = c.Patch(ctx, uploadURL, off, bytes.NewReader(data[6*MiB:]), size-6*MiB, -1); err != nil || off != size {
		t.Fatalf("last PATCH: offset %d, %v", off, err)
	}
	checkRange(t, other, id, 0, data)
	if segs := staged(t, srv, id); len(segs) != 0 {
		t.Fatalf("staging objects after completion: %v", segs)
	}
	if err := c.Delete(ctx, uploadURL); err != nil {
		t.Fatalf("DELETE: %v", err)
	}
	if keys := bucketKeys(t, srv); len(keys) != 0 {
		t.Fatalf("objects left after DELETE: %v", keys)
	}
}

// A deferred-length upload through tusd whose last PATCH only declares the
// length (empty body): the bytes in tusd's incomplete part reach the final
// object.
func TestTusHandlerDeferredEmptyLastPatch(t *testing.T) {
	t.Parallel()
	srv := s3test.Start(t)
	st, _ := newStore(t, srv)
	endpoint := newTusServer(t, st)
	c := &tusclient.Client{}
	ctx := t.Context()

	const size = 7*MiB + 5
	data := randomData(size, 11)
	uploadURL, err := c.Create(ctx, endpoint, tusclient.Deferred, map[string]string{"filename": "a.mp4"})
	if err != nil {
		t.Fatalf("creation: %v", err)
	}
	id := idOf(t, uploadURL)
	off := int64(0)
	for _, n := range []int64{3 * MiB, size - 3*MiB} {
		if off, err = c.Patch(ctx, uploadURL, off, bytes.NewReader(data[off:off+n]), n, -1); err != nil {
			t.Fatalf("PATCH: %v", err)
		}
	}
	checkRange(t, st, id, 0, data)
	if off, err = c.Patch(ctx, uploadURL, off, bytes.NewReader(nil), 0, size); err != nil || off != size {
		t.Fatalf("PATCH declaring the length: offset %d, %v", off, err)
	}
	info, err := c.Head(ctx, uploadURL)
	if err != nil || info.Offset != size || info.Length != size {
		t.Fatalf("HEAD: %+v, %v", info, err)
	}
	checkRange(t, st, id, 0, data)
	if segs := staged(t, srv, id); len(segs) != 0 {
		t.Fatalf("staging objects after completion: %v (the final object should serve reads)", segs)
	}
}
