package gateway_test

import (
	"bufio"
	"bytes"
	"context"
	"fmt"
	"io"
	"net"
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

// rawRequest sends a PATCH's request line and headers (extra ones
// included) followed by the first bytes of its body in one write, as a
// client whose first packet carries both.
func (h *harness) rawRequest(t *testing.T, id string, n int, extra string, first []byte) net.Conn {
	t.Helper()
	conn, err := net.Dial("tcp", h.srv.Listener.Addr().String())
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { conn.Close() })
	if err := conn.SetDeadline(time.Now().Add(20 * time.Second)); err != nil {
		t.Fatal(err)
	}
	req := fmt.Sprintf("PATCH /files/%s HTTP/1.1\r\nHost: %s\r\nTus-Resumable: 1.0.0\r\n"+
		"Content-Type: application/offset+octet-stream\r\nUpload-Offset: 0\r\nContent-Length: %d\r\n%s\r\n",
		id, h.srv.Listener.Addr(), n, extra)
	if _, err := conn.Write(append([]byte(req), first...)); err != nil {
		t.Fatal(err)
	}
	return conn
}

// readPatchResponse reads the response to a raw PATCH and checks it is 204.
func readPatchResponse(t *testing.T, br *bufio.Reader) {
	t.Helper()
	resp, err := http.ReadResponse(br, nil)
	if err != nil {
		t.Fatalf("read the response to the PATCH: %v", err)
	}
	body, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	if resp.StatusCode != http.StatusNoContent {
		t.Fatalf("PATCH: got %d %q, want 204", resp.StatusCode, body)
	}
}

// A client that pauses in the middle of its body holds no copy buffer
// while it pauses, and its bytes all arrive once it goes on: the first
// bytes come with the request's headers (so the HTTP server's read buffer
// holds them), the next ones after the gateway has taken those, and the
// last ones after the buffer has been given back.
func TestPausedBodyHoldsNoBuffer(t *testing.T) {
	t.Parallel()
	h := newHarness(t, nil)
	data := randomData(300 << 10)
	u := h.mustPost(t, int64(len(data)), nil)
	id := idOf(u)
	a, b := 1000, 20<<10
	conn := h.rawRequest(t, id, len(data), "", data[:a])
	waitFor(t, "the gateway to take the bytes sent with the headers", func() bool { return h.received(t, id) == a })
	if _, err := conn.Write(data[a:b]); err != nil {
		t.Fatal(err)
	}
	waitFor(t, "the gateway to take the next bytes", func() bool { return h.received(t, id) == b })
	waitFor(t, "the paused PATCH to give its copy buffer back", func() bool { return gateway.BuffersHeld(h.gw) == 0 })
	if _, err := conn.Write(data[b:]); err != nil {
		t.Fatal(err)
	}
	readPatchResponse(t, bufio.NewReader(conn))
	if got := h.readAll(t, id, int64(len(data))); !bytes.Equal(got, data) {
		t.Error("data file: got other bytes than those sent")
	}
	if got := gateway.BuffersHeld(h.gw); got != 0 {
		t.Errorf("after the PATCH: %d copy buffers still held", got)
	}
}

// A client that asks for "100 Continue" sends nothing before it gets it:
// the gateway reads (and so answers) before it ever waits on the socket.
func TestExpectContinueBodyIsRead(t *testing.T) {
	t.Parallel()
	h := newHarness(t, nil)
	data := randomData(50 << 10)
	u := h.mustPost(t, int64(len(data)), nil)
	id := idOf(u)
	conn := h.rawRequest(t, id, len(data), "Expect: 100-continue\r\n", nil)
	br := bufio.NewReader(conn)
	line, err := br.ReadString('\n')
	if err != nil {
		t.Fatalf("wait for 100 Continue: %v", err)
	}
	if !strings.HasPrefix(line, "HTTP/1.1 100") {
		t.Fatalf("first response line: got %q, want HTTP/1.1 100 Continue", line)
	}
	if _, err := br.ReadString('\n'); err != nil { // the blank line after it
		t.Fatal(err)
	}
	if _, err := conn.Write(data[:4000]); err != nil {
		t.Fatal(err)
	}
	waitFor(t, "the gateway to take the first bytes", func() bool { return h.received(t, id) == 4000 })
	if _, err := conn.Write(data[4000:]); err != nil {
		t.Fatal(err)
	}
	readPatchResponse(t, br)
	if got := h.readAll(t, id, int64(len(data))); !bytes.Equal(got, data) {
		t.Error("data file: got other bytes than those sent")
	}
}

// A body sent whole with its headers is answered at once: nothing waits
// on the socket once the body is read.
func TestBodyWithHeadersIsAnsweredAtOnce(t *testing.T) {
	t.Parallel()
	h := newHarness(t, nil)
	data := randomData(3000)
	u := h.mustPost(t, int64(len(data)), nil)
	id := idOf(u)
	conn := h.rawRequest(t, id, len(data), "", data)
	readPatchResponse(t, bufio.NewReader(conn))
	if got := h.readAll(t, id, int64(len(data))); !bytes.Equal(got, data) {
		t.Error("data file: got other bytes than those sent")
	}
}
