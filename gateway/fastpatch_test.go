package gateway_test

import (
	"bufio"
	"bytes"
	"context"
	"io"
	"net"
	"net/http"
	"strconv"
	"testing"

	"github.com/tusgate/tusgate/gateway"
)

// patchRaw sends one PATCH with body and returns the response and its body.
func patchRaw(t *testing.T, u string, offset int64, body []byte) (*http.Response, string) {
	t.Helper()
	req, err := http.NewRequestWithContext(t.Context(), http.MethodPatch, u, bytes.NewReader(body))
	if err != nil {
		t.Fatal(err)
	}
	req.Header.Set("Tus-Resumable", "1.0.0")
	req.Header.Set("Content-Type", "application/offset+octet-stream")
	req.Header.Set("Upload-Offset", strconv.FormatInt(offset, 10))
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	if err != nil {
		t.Fatal(err)
	}
	return resp, string(b)
}

func TestFastPatchSplicesLargeBodies(t *testing.T) {
	t.Parallel()
	for _, disabled := range []bool{false, true} {
		t.Run("disabled="+strconv.FormatBool(disabled), func(t *testing.T) {
			t.Parallel()
			h := newHarness(t, func(c *gateway.Config) { c.DisableFastPatch = disabled })
			const size = 32 * MiB
			data := randomData(size)
			u, id := h.create(t, size, nil)

			resp, body := patchRaw(t, u, 0, data)
			if resp.StatusCode != http.StatusNoContent {
				t.Fatalf("PATCH: got %d %q, want 204", resp.StatusCode, body)
			}
			if got := resp.Header.Get("Upload-Offset"); got != strconv.Itoa(size) {
				t.Errorf("Upload-Offset: got %q, want %d", got, size)
			}
			if !bytes.Equal(h.readAll(t, id, size), data) {
				t.Fatal("stored bytes differ from the uploaded ones")
			}
			if rec := h.record(t, id); !rec.Complete || rec.Received != size {
				t.Errorf("record: got complete %v received %d, want complete %d", rec.Complete, rec.Received, size)
			}
			// Every part boundary crossed mid-PATCH was recorded on the way:
			// by the read path once a read crosses it, by the fast path
			// exactly there (a splice chunk ends at the boundary).
			var bounds []int64
			for _, n := range h.n.For(id) {
				if !n.Complete && n.Received > 0 {
					bounds = append(bounds, n.Received)
				}
			}
			want := []int64{5 * MiB, 10 * MiB, 15 * MiB, 20 * MiB, 25 * MiB, 30 * MiB}
			if len(bounds) != len(want) {
				t.Fatalf("boundaries recorded: got %v, want %v", bounds, want)
			}
			for i, w := range want {
				if b := bounds[i]; b < w || b >= w+5*MiB || (!disabled && b != w) {
					t.Fatalf("boundaries recorded: got %v, want %v", bounds, want)
				}
			}
			spliced := h.gw.Spliced()
			if disabled {
				if spliced != 0 || resp.Close {
					t.Errorf("fast path disabled: got %d bytes spliced, connection close %v; want 0, false", spliced, resp.Close)
				}
				return
			}
			if spliced < size*3/4 {
				t.Errorf("spliced: got %d bytes, want at least 3/4 of %d", spliced, size)
			}
			if !resp.Close {
				t.Error("fast PATCH response: got a kept-alive connection, want Connection: close")
			}
		})
	}
}

func TestFastPatchBoundaryRecordedWhileClientStalls(t *testing.T) {
	t.Parallel()
	h := newHarness(t, nil)
	const size = 16 * MiB
	const sent = 7 * MiB
	data := randomData(size)
	u, id := h.create(t, size, nil)

	ctx, cancel := context.WithCancel(t.Context())
	done := make(chan error, 1)
	go func() {
		_, err := h.client.Patch(ctx, u, 0, &stallingReader{ctx: ctx, data: data[:sent]}, size, -1)
		done <- err
	}()
	// The first part is recorded (the forwarder may send it) and the status
	// shows every byte received, while the PATCH is still open.
	waitFor(t, "the first part to be recorded and every sent byte to show", func() bool {
		_, st, _ := h.status(t, id)
		return h.record(t, id).Received == 5*MiB && st["received"] == float64(sent)
	})
	if h.gw.Spliced() == 0 {
		t.Error("spliced: got 0 bytes, want the fast path to splice")
	}
	cancel()
	if err := <-done; err == nil {
		t.Fatal("interrupted PATCH: got no error")
	}
	info, err := h.client.Head(t.Context(), u)
	if err != nil {
		t.Fatal(err)
	}
	if info.Offset != sent {
		t.Fatalf("HEAD after the cut: offset %d, want %d", info.Offset, sent)
	}
	if err := h.client.Upload(t.Context(), u, bytes.NewReader(data), size, size); err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(h.readAll(t, id, size), data) {
		t.Error("resumed upload: stored bytes differ from the uploaded ones")
	}
}

func TestFastPatchErrorBeforeBody(t *testing.T) {
	t.Parallel()
	h := newHarness(t, nil)
	const size = 8 * MiB
	data := randomData(size)
	u, id := h.create(t, size, nil)

	// A wrong offset is refused before the body is read; the client still
	// gets the answer, not a reset connection.
	resp, body := patchRaw(t, u, 1, data[1:])
	if resp.StatusCode != http.StatusConflict {
		t.Fatalf("PATCH at a wrong offset: got %d %q, want 409", resp.StatusCode, body)
	}
	if resp.ContentLength != int64(len(body)) || body == "" {
		t.Errorf("409 body: got %q with Content-Length %d", body, resp.ContentLength)
	}
	if got := h.fileSize(t, id); got != 0 {
		t.Fatalf("data file after the refused PATCH: %d bytes, want 0", got)
	}
	resp, body = patchRaw(t, u, 0, data)
	if resp.StatusCode != http.StatusNoContent {
		t.Fatalf("PATCH: got %d %q, want 204", resp.StatusCode, body)
	}
	if !bytes.Equal(h.readAll(t, id, size), data) {
		t.Error("stored bytes differ from the uploaded ones")
	}
}

func TestFastPatchPlainTCPClient(t *testing.T) {
	t.Parallel()
	h := newHarness(t, nil)
	const size = 3 * MiB
	data := randomData(size)
	u, id := h.create(t, size, nil)

	// A hand-written HTTP/1.1 request: the response must be well-formed
	// HTTP/1.1 with the tus headers.
	conn, err := net.Dial("tcp", h.srv.Listener.Addr().String())
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	req, _ := http.NewRequest(http.MethodPatch, u, bytes.NewReader(data))
	req.Header.Set("Tus-Resumable", "1.0.0")
	req.Header.Set("Content-Type", "application/offset+octet-stream")
	req.Header.Set("Upload-Offset", "0")
	if err := req.Write(conn); err != nil {
		t.Fatal(err)
	}
	resp, err := http.ReadResponse(bufio.NewReader(conn), req)
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusNoContent || resp.Header.Get("Tus-Resumable") != "1.0.0" ||
		resp.Header.Get("Upload-Offset") != strconv.Itoa(size) || resp.Header.Get("X-Request-Id") == "" {
		t.Errorf("response: got %d with headers %v", resp.StatusCode, resp.Header)
	}
	if !bytes.Equal(h.readAll(t, id, size), data) {
		t.Error("stored bytes differ from the uploaded ones")
	}
}
