package gateway_test

import (
	"bufio"
	"bytes"
	"context"
	"io"
	"net/http"
	"net/http/httptrace"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/tusgate/tusgate/gateway"
)

// A fast body is read in batches and arrives intact.
func TestFastBodyReadsInBatches(t *testing.T) {
	t.Parallel()
	h := newHarness(t, nil)
	const patches, size = 4, 3 * MiB
	data := randomData(patches * size)
	u := h.mustPost(t, int64(len(data)), nil)
	for i := range patches {
		off := i * size
		if resp, body := h.patchReq(t, u, int64(off), data[off:off+size]); resp.StatusCode != http.StatusNoContent {
			t.Fatalf("PATCH %d: got %d %q", i, resp.StatusCode, body)
		}
	}
	if got := h.readAll(t, idOf(u), int64(len(data))); !bytes.Equal(got, data) {
		t.Fatal("data file: got other bytes than those sent")
	}
	if raised, _ := gateway.LowWaterStats(h.gw); raised == 0 {
		t.Error("no read waited on a raised low-water mark: fast bodies are not batched")
	}
}

// The mark never asks for more than what is left of the body: the last
// bytes of a body, sent after the gateway has read the rest, are read at
// once (here the stall timer, which would otherwise rescue them, is off).
func TestBatchedBodyEndIsReadAtOnce(t *testing.T) {
	t.Parallel()
	h := newHarness(t, func(c *gateway.Config) { gateway.StallAfter(c, time.Hour) })
	fast, tail := randomData(2*MiB), randomData(10<<10)
	u := h.mustPost(t, int64(len(fast)+len(tail)), nil)
	id := idOf(u)
	conn := h.rawPatch(t, id, len(fast)+len(tail))
	if _, err := conn.Write(fast); err != nil {
		t.Fatal(err)
	}
	waitFor(t, "the gateway to read the fast bytes", func() bool { return h.received(t, id) == len(fast) })
	if raised, _ := gateway.LowWaterStats(h.gw); raised == 0 {
		t.Fatal("the fast bytes were not batched: this test proves nothing")
	}
	if _, err := conn.Write(tail); err != nil {
		t.Fatal(err)
	}
	resp, err := http.ReadResponse(bufio.NewReader(conn), nil)
	if err != nil {
		t.Fatalf("read the response to the PATCH (its last bytes wait below the mark?): %v", err)
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusNoContent {
		t.Errorf("PATCH: got %d, want 204", resp.StatusCode)
	}
	if got := h.readAll(t, id, int64(len(fast)+len(tail))); !bytes.Equal(got, append(fast, tail...)) {
		t.Error("data file: got other bytes than those sent")
	}
}

// The mark is put back once the body is read: the next request on the same
// keep-alive connection, a few hundred bytes, is answered.
func TestBatchedConnectionServesNextRequest(t *testing.T) {
	t.Parallel()
	h := newHarness(t, nil)
	data := randomData(2*MiB + 12345)
	u := h.mustPost(t, int64(len(data)), nil)
	hc := &http.Client{Transport: &http.Transport{MaxConnsPerHost: 1}}
	t.Cleanup(hc.CloseIdleConnections)
	send := func(method string, header http.Header, body []byte) (*http.Response, bool) {
		t.Helper()
		ctx, cancel := context.WithTimeout(t.Context(), 10*time.Second)
		defer cancel()
		reused := false
		ctx = httptrace.WithClientTrace(ctx, &httptrace.ClientTrace{
			GotConn: func(info httptrace.GotConnInfo) { reused = info.Reused },
		})
		req, err := http.NewRequestWithContext(ctx, method, u, bytes.NewReader(body))
		if err != nil {
			t.Fatal(err)
		}
		req.Header = header
		resp, err := hc.Do(req)
		if err != nil {
			t.Fatalf("%s on the upload's connection: %v", method, err)
		}
		_, _ = io.Copy(io.Discard, resp.Body)
		resp.Body.Close()
		return resp, reused
	}
	patch := http.Header{"Tus-Resumable": {"1.0.0"}, "Upload-Offset": {"0"}, "Content-Type": {"application/offset+octet-stream"}}
	if resp, _ := send(http.MethodPatch, patch, data); resp.StatusCode != http.StatusNoContent {
		t.Fatalf("PATCH: got %d", resp.StatusCode)
	}
	if raised, _ := gateway.LowWaterStats(h.gw); raised == 0 {
		t.Fatal("the PATCH was not batched: this test proves nothing")
	}
	resp, reused := send(http.MethodHead, http.Header{"Tus-Resumable": {"1.0.0"}}, nil)
	if !reused {
		t.Fatal("the HEAD went over a new connection: this test proves nothing")
	}
	if got := resp.Header.Get("Upload-Offset"); resp.StatusCode != http.StatusOK || got != strconv.Itoa(len(data)) {
		t.Errorf("HEAD after a batched PATCH: got %d, offset %q; want 200, %d", resp.StatusCode, got, len(data))
	}
}

// A fast client that goes silent loses none of the bytes it sent: the
// stall timer lowers the mark, so the bytes queued below it reach the file
// before the network timeout ends the request.
func TestStalledFastBodyKeepsItsBytes(t *testing.T) {
	t.Parallel()
	const timeout = 2 * time.Second
	h := newHarness(t, func(c *gateway.Config) { c.NetworkTimeout = timeout })
	const announced = 8 * MiB
	// Fast enough to be batched, then less than the mark, then silence.
	fast, tail := randomData(2*MiB), randomData(100<<10)
	data := append(fast, tail...)
	u := h.mustPost(t, announced, nil)
	id := idOf(u)
	conn := h.rawPatch(t, id, announced)
	if _, err := conn.Write(fast); err != nil {
		t.Fatal(err)
	}
	waitFor(t, "the gateway to read the fast bytes", func() bool { return h.received(t, id) == len(fast) })
	if _, err := conn.Write(tail); err != nil {
		t.Fatal(err)
	}
	// The tail, less than the mark, reaches the file well before the
	// network timeout (without the stall timer it waits in the socket for
	// the timeout and is lost with the connection).
	waitFor(t, "the status API to report every byte sent", func() bool { return h.received(t, id) == len(data) })
	if _, stalls := gateway.LowWaterStats(h.gw); stalls == 0 {
		t.Error("no batched read stalled: the bytes were not held below the mark, this test proves nothing")
	}
	resp, err := http.ReadResponse(bufio.NewReader(conn), nil)
	if err != nil {
		t.Fatalf("read the response to the stalled PATCH: %v", err)
	}
	body, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	if resp.StatusCode != http.StatusInternalServerError || !strings.HasPrefix(string(body), "ERR_READ_TIMEOUT") {
		t.Errorf("stalled PATCH: got %d %q, want 500 ERR_READ_TIMEOUT", resp.StatusCode, body)
	}
	if got := h.readAll(t, id, int64(len(data))); !bytes.Equal(got, data) {
		t.Error("data file: got other bytes than those sent")
	}
	hresp, _ := h.do(t, http.MethodHead, u, tusHeader, nil)
	if got := hresp.Header.Get("Upload-Offset"); got != strconv.Itoa(len(data)) {
		t.Errorf("HEAD Upload-Offset: got %q, want %d", got, len(data))
	}
}
