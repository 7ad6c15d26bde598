package main

import (
	"io"
	"net/http"
	"net/http/httptest"
	"strconv"
	"sync/atomic"
	"testing"
)

// A generated PATCH body goes from the pattern straight to the socket
// through the real transport, not through net/http's 32 KiB copy buffer.
func TestPatchBodyIsWrittenFromThePattern(t *testing.T) {
	var received atomic.Int64
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		n, _ := io.Copy(io.Discard, r.Body)
		received.Add(n)
		w.Header().Set("Upload-Offset", strconv.FormatInt(n, 10))
		w.WriteHeader(http.StatusNoContent)
	}))
	t.Cleanup(srv.Close)
	var direct atomic.Int64
	hc := newHTTPClient(1, &direct)
	t.Cleanup(hc.CloseIdleConnections)
	const size = 3<<20 + 123
	body := &dataReader{pattern: newPattern(), n: size}
	got, err := tusClient{hc: hc}.patch(t.Context(), srv.URL, 0, size, body)
	if err != nil {
		t.Fatal(err)
	}
	if got != size || received.Load() != size {
		t.Fatalf("server got %d bytes (offset %d), want %d", received.Load(), got, size)
	}
	// The transport writes the first bytes into its buffer behind the
	// request head; the rest must go directly.
	if d := direct.Load(); d < size-64<<10 {
		t.Errorf("%d of %d bytes written directly from the pattern, want all but the transport's first buffer", d, size)
	}
}
