package gateway_test

import (
	"bufio"
	"bytes"
	"encoding/base64"
	"fmt"
	"io"
	"net/http"
	"net/netip"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/tusgate/tusgate/gateway"
	"github.com/tusgate/tusgate/store"
)

// base64Of encodes s as an Upload-Metadata value.
func base64Of(s string) string { return base64.StdEncoding.EncodeToString([]byte(s)) }

const msgTooManyOpen = "ERR_TOO_MANY_OPEN_UPLOADS: too many open uploads from this address"

// post sends a bare creation of size bytes, with extra headers.
func (h *harness) post(t *testing.T, size int64, extra map[string]string) (*http.Response, string) {
	t.Helper()
	header := map[string]string{"Tus-Resumable": "1.0.0", "Upload-Length": strconv.FormatInt(size, 10)}
	for k, v := range extra {
		header[k] = v
	}
	return h.do(t, http.MethodPost, h.endpoint, header, nil)
}

// mustPost creates an upload of size bytes and returns its URL.
func (h *harness) mustPost(t *testing.T, size int64, extra map[string]string) string {
	t.Helper()
	resp, body := h.post(t, size, extra)
	if resp.StatusCode != http.StatusCreated {
		t.Fatalf("POST %v: got %d %q, want 201", extra, resp.StatusCode, body)
	}
	return resp.Header.Get("Location")
}

// assertRefused checks that a creation gets status with a body starting
// with want, and returns the response.
func (h *harness) assertRefused(t *testing.T, what string, size int64, extra map[string]string, status int, want string) *http.Response {
	t.Helper()
	resp, body := h.post(t, size, extra)
	if resp.StatusCode != status || !strings.HasPrefix(body, want) {
		t.Fatalf("%s: got %d %q, want %d %q", what, resp.StatusCode, body, status, want)
	}
	return resp
}

func TestMaxOpenUploadsPerClient(t *testing.T) {
	t.Parallel()
	clk := newClock(testNow)
	h := clockHarness(t, clk, func(c *gateway.Config) {
		c.MaxOpenUploadsPerClient = 3
		c.CreateRate = -1
		c.UploadExpiry = time.Hour
	})
	a, b, c := h.mustPost(t, 10, nil), h.mustPost(t, 10, nil), h.mustPost(t, 10, nil)
	resp := h.assertRefused(t, "4th open upload", 10, nil, http.StatusTooManyRequests, msgTooManyOpen)
	if got := resp.Header.Get("Tus-Resumable"); got != "1.0.0" {
		t.Errorf("429 Tus-Resumable: got %q, want 1.0.0", got)
	}
	// Refused and invalid creations hold no slot.
	h.assertRefused(t, "invalid creation at the limit", 0, nil, http.StatusBadRequest, "ERR_EMPTY_UPLOAD")

	// Completed: its slot is free.
	if _, err := h.client.Patch(t.Context(), a, 0, strings.NewReader("0123456789"), 10, -1); err != nil {
		t.Fatal(err)
	}
	d := h.mustPost(t, 10, nil)
	h.assertRefused(t, "after a completion", 10, nil, http.StatusTooManyRequests, msgTooManyOpen)

	// Terminated (tus DELETE).
	if err := h.client.Delete(t.Context(), b); err != nil {
		t.Fatal(err)
	}
	e := h.mustPost(t, 10, nil)

	// Failed behind the gateway's back (by the forwarder): found when the
	// client is at its limit, at most once per 5s.
	h.tamper(t, idOf(c), func(u *store.Upload) { _ = u.Fail(store.ReasonTokenRejected, "rejected", clk.Now()) })
	h.assertRefused(t, "failed upload, check not due", 10, nil, http.StatusTooManyRequests, msgTooManyOpen)
	clk.Add(5 * time.Second)
	f := h.mustPost(t, 10, nil)

	// Failed at the gateway: its token deadline passed before part 1.
	clk.Add(5 * time.Second)
	if err := h.client.Delete(t.Context(), f); err != nil {
		t.Fatal(err)
	}
	g := h.mustPost(t, 10, map[string]string{"Upload-Metadata": "token dG8xYWJj,tokenExpiresAt " + base64Of(clk.Now().Add(time.Minute).Format(time.RFC3339))})
	clk.Add(2 * time.Minute)
	if resp, body := h.do(t, http.MethodHead, g, tusHeader, nil); resp.StatusCode != http.StatusGone {
		t.Fatalf("HEAD past the token deadline: got %d %q, want 410", resp.StatusCode, body)
	}
	// Released by the 410 itself: a store check is not due yet.
	h.st.failGet.Store(true)
	gNext := h.mustPost(t, 10, nil)
	h.st.failGet.Store(false)

	// Expired (no byte for UploadExpiry).
	clk.Add(2 * time.Hour)
	if n, err := h.gw.ExpireUploads(t.Context()); err != nil || n != 3 {
		t.Fatalf("ExpireUploads: got %d, %v, want 3 (%s %s %s)", n, err, d, e, gNext)
	}
	for i := range 3 {
		h.mustPost(t, 10, map[string]string{"X-Attempt": strconv.Itoa(i)})
	}
	h.assertRefused(t, "after expiry, at the limit again", 10, nil, http.StatusTooManyRequests, msgTooManyOpen)
}

func TestOpenUploadsSweptByJanitor(t *testing.T) {
	t.Parallel()
	clk := newClock(testNow)
	h := clockHarness(t, clk, func(c *gateway.Config) {
		c.MaxOpenUploadsPerClient = 1
		c.UploadExpiry = time.Hour
	})
	u := h.mustPost(t, 10, nil)
	// Failed by the forwarder; the client never comes back to its limit
	// before the janitor runs.
	h.tamper(t, idOf(u), func(u *store.Upload) { _ = u.Fail(store.ReasonTokenRejected, "rejected", clk.Now()) })
	clk.Add(30 * time.Minute)
	if _, err := h.gw.ExpireUploads(t.Context()); err != nil {
		t.Fatal(err)
	}
	// Checked only once counted for UploadExpiry.
	h.st.failGet.Store(true)
	h.assertRefused(t, "before the sweep", 10, nil, http.StatusTooManyRequests, msgTooManyOpen)
	h.st.failGet.Store(false)
	clk.Add(30 * time.Minute)
	if _, err := h.gw.ExpireUploads(t.Context()); err != nil {
		t.Fatal(err)
	}
	// Freed by the sweep: a store check at creation would fail.
	h.st.failGet.Store(true)
	h.mustPost(t, 10, nil)
	h.st.failGet.Store(false)
}

func TestClientAddress(t *testing.T) {
	t.Parallel()
	xff := func(v string) map[string]string { return map[string]string{"X-Forwarded-For": v} }
	t.Run("X-Forwarded-For ignored without trusted proxies", func(t *testing.T) {
		t.Parallel()
		h := newHarness(t, func(c *gateway.Config) { c.MaxOpenUploadsPerClient = 1 })
		h.mustPost(t, 10, xff("203.0.113.1"))
		h.assertRefused(t, "spoofed X-Forwarded-For", 10, xff("203.0.113.2"), http.StatusTooManyRequests, msgTooManyOpen)
	})
	t.Run("X-Forwarded-For of a trusted proxy", func(t *testing.T) {
		t.Parallel()
		h := newHarness(t, func(c *gateway.Config) {
			c.MaxOpenUploadsPerClient = 1
			c.TrustedProxies = []netip.Prefix{netip.MustParsePrefix("127.0.0.0/8"), netip.MustParsePrefix("10.0.0.0/8")}
		})
		steps := []struct {
			xff     string
			allowed bool
		}{
			{"203.0.113.1", true},
			{"203.0.113.2", true},
			{"203.0.113.1", false},
			// The client wrote the left entry; the proxy appended the right one.
			{"203.0.113.1, 203.0.113.3", true},
			{"198.51.100.9, 203.0.113.3", false},
			// Two trusted proxies in a row.
			{"203.0.113.4, 10.1.2.3", true},
			{"203.0.113.4,10.9.9.9", false},
			// IPv6 counts per /64.
			{"2001:db8::1", true},
			{"2001:db8::2", false},
			{"2001:db8:0:1::1", true},
			// No X-Forwarded-For: the proxy itself is the client.
			{"", true},
			{"", false},
			// Garbage stops at the last trusted hop (the proxy).
			{"203.0.113.5, not-an-ip", false},
		}
		for _, s := range steps {
			header := map[string]string{}
			if s.xff != "" {
				header = xff(s.xff)
			}
			resp, body := h.post(t, 10, header)
			if got := resp.StatusCode == http.StatusCreated; got != s.allowed {
				t.Errorf("X-Forwarded-For %q: got %d %q, want allowed %v", s.xff, resp.StatusCode, body, s.allowed)
			}
		}
	})
}

func TestCreateRate(t *testing.T) {
	t.Parallel()
	const msg = "ERR_RATE_LIMITED: too many upload creations from this address"
	t.Run("defaults: bursts of 20, then 10 per second", func(t *testing.T) {
		t.Parallel()
		clk := newClock(testNow)
		h := clockHarness(t, clk, nil)
		for range 20 {
			h.mustPost(t, 10, nil)
		}
		resp := h.assertRefused(t, "21st creation", 10, nil, http.StatusTooManyRequests, msg+": at most 10 per second (bursts of 20); retry in 1 s")
		if got := resp.Header.Get("Retry-After"); got != "1" {
			t.Errorf("Retry-After: got %q, want 1", got)
		}
		clk.Add(100 * time.Millisecond)
		h.mustPost(t, 10, nil)
		h.assertRefused(t, "no token left", 10, nil, http.StatusTooManyRequests, msg)
	})
	t.Run("configured", func(t *testing.T) {
		t.Parallel()
		clk := newClock(testNow)
		h := clockHarness(t, clk, func(c *gateway.Config) {
			c.CreateRate, c.CreateBurst = 0.25, 2
			c.TrustedProxies = []netip.Prefix{netip.MustParsePrefix("127.0.0.1/32")}
		})
		h.mustPost(t, 10, nil)
		// A refused creation takes a token too.
		h.assertRefused(t, "invalid creation", 0, nil, http.StatusBadRequest, "ERR_EMPTY_UPLOAD")
		resp := h.assertRefused(t, "3rd creation", 10, nil, http.StatusTooManyRequests, msg+": at most 0.25 per second (bursts of 2); retry in 4 s")
		if got := resp.Header.Get("Retry-After"); got != "4" {
			t.Errorf("Retry-After: got %q, want 4", got)
		}
		// Another client is not affected.
		h.mustPost(t, 10, map[string]string{"X-Forwarded-For": "203.0.113.7"})
		clk.Add(3 * time.Second)
		resp = h.assertRefused(t, "after 3s", 10, nil, http.StatusTooManyRequests, msg)
		if got := resp.Header.Get("Retry-After"); got != "1" {
			t.Errorf("Retry-After after 3s: got %q, want 1", got)
		}
		clk.Add(time.Second)
		h.mustPost(t, 10, nil)
		// HEAD, PATCH and the status API are not rate limited.
		u := h.mustPost(t, 10, map[string]string{"X-Forwarded-For": "203.0.113.8"})
		for range 5 {
			if resp, _ := h.do(t, http.MethodHead, u, tusHeader, nil); resp.StatusCode != http.StatusOK {
				t.Fatalf("HEAD: got %d, want 200", resp.StatusCode)
			}
		}
	})
	t.Run("no limit", func(t *testing.T) {
		t.Parallel()
		h := newHarness(t, func(c *gateway.Config) { c.CreateRate, c.MaxOpenUploadsPerClient = -1, -1 })
		for range 30 {
			h.mustPost(t, 10, nil)
		}
	})
}

func TestMaxMetadataSize(t *testing.T) {
	t.Parallel()
	// meta returns a valid Upload-Metadata header of exactly n bytes.
	meta := func(n int) string {
		h := "filename " + base64Of("a.mp4") + ",pad "
		// "pad " + base64 of k bytes is 4*ceil(k/3) long: pad with a key-only
		// entry to hit n exactly.
		h += base64Of(strings.Repeat("x", 3*((n-len(h)-20)/4)))
		h += "," + strings.Repeat("k", n-len(h)-1)
		if len(h) != n {
			panic(fmt.Sprintf("meta(%d) is %d bytes", n, len(h)))
		}
		return h
	}
	tests := []struct {
		name   string
		limit  int
		header string
		want   int
		body   string
	}{
		{"default limit, at it", 0, meta(4096), http.StatusCreated, ""},
		{"default limit, above", 0, meta(4097), http.StatusRequestHeaderFieldsTooLarge,
			"ERR_METADATA_TOO_LARGE: Upload-Metadata is 4097 bytes long, more than the 4096 bytes allowed"},
		{"configured, at it", 100, meta(100), http.StatusCreated, ""},
		{"configured, above", 100, meta(101), http.StatusRequestHeaderFieldsTooLarge,
			"ERR_METADATA_TOO_LARGE: Upload-Metadata is 101 bytes long, more than the 100 bytes allowed"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			h := newHarness(t, func(c *gateway.Config) { c.MaxMetadataSize = tt.limit })
			resp, body := h.post(t, 10, map[string]string{"Upload-Metadata": tt.header})
			if resp.StatusCode != tt.want || !strings.HasPrefix(body, tt.body) {
				t.Errorf("got %d %q, want %d %q", resp.StatusCode, body, tt.want, tt.body)
			}
			if tt.want != http.StatusCreated {
				h.assertNothingCreated(t)
			}
		})
	}
	t.Run("sent twice", func(t *testing.T) {
		t.Parallel()
		h := newHarness(t, nil)
		req, err := http.NewRequestWithContext(t.Context(), http.MethodPost, h.endpoint, nil)
		if err != nil {
			t.Fatal(err)
		}
		req.Header.Set("Tus-Resumable", "1.0.0")
		req.Header.Set("Upload-Length", "10")
		req.Header.Add("Upload-Metadata", "filename "+base64Of("a.mp4"))
		req.Header.Add("Upload-Metadata", "token "+base64Of("to1abc"))
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		body, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		if want := "ERR_INVALID_METADATA: Upload-Metadata must be sent once, not 2 times"; resp.StatusCode != http.StatusBadRequest || !strings.HasPrefix(string(body), want) {
			t.Errorf("got %d %q, want 400 %q", resp.StatusCode, body, want)
		}
		h.assertNothingCreated(t)
	})
}

// chunked hides its length, so that the client sends it chunked.
type chunked struct{ r io.Reader }

func (c chunked) Read(p []byte) (int, error) { return c.r.Read(p) }

func TestPatchBeyondLength(t *testing.T) {
	t.Parallel()
	data := randomData(300)
	tests := []struct {
		name     string
		deferred bool
		size     int64
		// first is sent (and accepted) before the PATCH that goes too far.
		first int
		// send is how many bytes that PATCH carries; chunked hides the count.
		send    int
		chunked bool
		// want is what the data file holds afterwards.
		want int64
	}{
		{name: "Content-Length beyond the length", size: 100, send: 150, want: 0},
		{name: "Content-Length beyond the rest", size: 100, first: 60, send: 50, want: 60},
		{name: "chunked beyond the length", size: 100, send: 150, chunked: true, want: 100},
		{name: "chunked beyond the rest", size: 100, first: 60, send: 100, chunked: true, want: 100},
		{name: "deferred length, chunked beyond the maximum size", deferred: true, send: 300, chunked: true, want: 200},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			h := newHarness(t, func(c *gateway.Config) { c.MaxSize = 200 })
			var u string
			if tt.deferred {
				u = h.mustPost(t, 0, map[string]string{"Upload-Length": "", "Upload-Defer-Length": "1"})
			} else {
				u = h.mustPost(t, tt.size, nil)
			}
			id := idOf(u)
			if tt.first > 0 {
				if resp, body := h.patchReq(t, u, 0, data[:tt.first]); resp.StatusCode != http.StatusNoContent {
					t.Fatalf("first PATCH: got %d %q, want 204", resp.StatusCode, body)
				}
			}
			var body io.Reader = bytes.NewReader(data[tt.first : tt.first+tt.send])
			if tt.chunked {
				body = chunked{body}
			}
			resp, got := h.do(t, http.MethodPatch, u, patchHeader(int64(tt.first)), body)
			if want := "ERR_UPLOAD_SIZE_EXCEEDED: upload's size exceeded"; resp.StatusCode != http.StatusRequestEntityTooLarge || !strings.HasPrefix(got, want) {
				t.Errorf("PATCH of %d bytes at %d: got %d %q, want 413 %q", tt.send, tt.first, resp.StatusCode, got, want)
			}
			if n := h.fileSize(t, id); n != tt.want {
				t.Errorf("data file: got %d bytes, want %d", n, tt.want)
			}
			if tt.want > 0 {
				if stored := h.readAll(t, id, tt.want); !bytes.Equal(stored, data[:tt.want]) {
					t.Errorf("data file: got other bytes than the first %d sent", tt.want)
				}
			}
			resp, _ = h.do(t, http.MethodHead, u, tusHeader, nil)
			if got := resp.Header.Get("Upload-Offset"); got != strconv.FormatInt(tt.want, 10) {
				t.Errorf("HEAD Upload-Offset: got %q, want %d", got, tt.want)
			}
		})
	}
	t.Run("creation-with-upload beyond the length", func(t *testing.T) {
		t.Parallel()
		h := newHarness(t, func(c *gateway.Config) { c.MaxOpenUploadsPerClient = 1 })
		for _, body := range []io.Reader{bytes.NewReader(data[:20]), chunked{bytes.NewReader(data[:20])}} {
			header := map[string]string{"Tus-Resumable": "1.0.0", "Upload-Length": "10", "Content-Type": "application/offset+octet-stream"}
			resp, got := h.do(t, http.MethodPost, h.endpoint, header, body)
			if resp.StatusCode != http.StatusRequestEntityTooLarge || resp.Header.Get("Location") != "" {
				t.Errorf("POST of 20 bytes for 10: got %d %q (Location %q), want 413 without Location", resp.StatusCode, got, resp.Header.Get("Location"))
			}
			// The client never learnt the upload's URL: it is gone, and
			// holds no open-upload slot.
			h.assertNothingCreated(t)
		}
		h.mustPost(t, 10, nil)
	})
}

func TestNetworkTimeout(t *testing.T) {
	t.Parallel()
	const timeout = 300 * time.Millisecond
	h := newHarness(t, func(c *gateway.Config) { c.NetworkTimeout = timeout })
	u := h.mustPost(t, 1000, nil)
	id := idOf(u)
	data := randomData(100)

	// Announce 1000 bytes, send 100, then go silent (the connection stays open).
	start := time.Now()
	conn := h.rawPatch(t, id, 1000)
	if _, err := conn.Write(data); err != nil {
		t.Fatal(err)
	}
	resp, err := http.ReadResponse(bufio.NewReader(conn), nil)
	if err != nil {
		t.Fatalf("read the response to the stalled PATCH: %v", err)
	}
	elapsed := time.Since(start)
	body, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	// tusd answers a read timeout with 500 on purpose: tus clients retry it.
	if resp.StatusCode != http.StatusInternalServerError || !strings.HasPrefix(string(body), "ERR_READ_TIMEOUT") {
		t.Errorf("stalled PATCH: got %d %q, want 500 ERR_READ_TIMEOUT", resp.StatusCode, body)
	}
	if elapsed < timeout || elapsed > 5*time.Second {
		t.Errorf("stalled PATCH cut after %v, want about %v", elapsed, timeout)
	}
	// The bytes received are kept, and the client resumes after them.
	if got := h.readAll(t, id, 100); !bytes.Equal(got, data) {
		t.Errorf("data file: got other bytes than the 100 sent")
	}
	hresp, _ := h.do(t, http.MethodHead, u, tusHeader, nil)
	if got := hresp.Header.Get("Upload-Offset"); got != "100" {
		t.Errorf("HEAD Upload-Offset: got %q, want 100", got)
	}
	rest := make([]byte, 900)
	if resp, body := h.patchReq(t, u, 100, rest); resp.StatusCode != http.StatusNoContent {
		t.Errorf("resume: got %d %q, want 204", resp.StatusCode, body)
	}
}
