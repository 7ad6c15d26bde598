package gateway_test

import (
	"bytes"
	"context"
	"fmt"
	"io"
	"io/fs"
	"net/http"
	"net/netip"
	"net/url"
	"os"
	"path/filepath"
	"sort"
	"strconv"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"go.uber.org/zap"
	"go.uber.org/zap/zapcore"

	"github.com/tusgate/tusgate/gateway"
)

// Token lookups of switchInspector.
const (
	lookupOK = iota
	lookupOutage
	lookupUnknown
)

// switchInspector answers token lookups as its mode says; its errors quote
// the token, as a careless api.video client's would.
type switchInspector struct {
	mode     atomic.Int32
	deadline atomic.Int64 // unix nanoseconds
}

func (s *switchInspector) setDeadline(t time.Time) { s.deadline.Store(t.UnixNano()) }

func (s *switchInspector) TokenDeadline(_ context.Context, token string) (time.Time, error) {
	switch s.mode.Load() {
	case lookupOutage:
		return time.Time{}, fmt.Errorf("GET https://ws.api.video/upload-tokens/%s: connection refused", token)
	case lookupUnknown:
		return time.Time{}, fmt.Errorf("GET /upload-tokens/%s: 404: %w", token, gateway.ErrUnknownToken)
	}
	return time.Unix(0, s.deadline.Load()).UTC(), nil
}

// transcript records everything the gateway answered.
type transcript struct{ b strings.Builder }

func (tr *transcript) add(what string, resp *http.Response, body string) {
	keys := make([]string, 0, len(resp.Header))
	for k := range resp.Header {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	fmt.Fprintf(&tr.b, "== %s: %s\n", what, resp.Status)
	for _, k := range keys {
		fmt.Fprintf(&tr.b, "%s: %s\n", k, strings.Join(resp.Header[k], ", "))
	}
	fmt.Fprintf(&tr.b, "\n%s\n", body)
}

// TestSecretsNeverWritten runs the gateway's main scenarios with a known
// token, then searches everything the gateway wrote (response headers and
// bodies, every log entry, every file of the data directory) for it.
func TestSecretsNeverWritten(t *testing.T) {
	t.Parallel()
	const token = "to9KnownSecretTokenQ7xZ"
	b64Token := base64Of(token)
	clk := newClock(testNow)
	insp := &switchInspector{}
	insp.setDeadline(testNow.Add(time.Hour))
	reg := prometheus.NewRegistry()
	h := clockHarness(t, clk, func(c *gateway.Config) {
		c.TokenRequired = true
		c.Tokens = insp
		c.VerboseTusdLogs = true
		c.Registerer, c.Gatherer = reg, reg
		c.MaxOpenUploadsPerClient = 2
		c.CreateRate, c.CreateBurst = 1, 3
		c.MaxMetadataSize = 512
		c.CORSOrigins = []string{"https://app.example"}
		c.TrustedProxies = []netip.Prefix{netip.MustParsePrefix("127.0.0.1/32")}
	})
	var tr transcript
	clients := 0
	// req sends a request as a new client address unless client is set.
	req := func(what, method, u, client string, header map[string]string, body io.Reader) (*http.Response, string) {
		t.Helper()
		if client == "" {
			clients++
			client = "203.0.113." + strconv.Itoa(clients)
		}
		hd := map[string]string{"Tus-Resumable": "1.0.0", "X-Forwarded-For": client, "Origin": "https://app.example"}
		for k, v := range header {
			hd[k] = v
		}
		resp, b := h.do(t, method, u, hd, body)
		tr.add(what, resp, b)
		return resp, b
	}
	expect := func(what string, resp *http.Response, body string, want int) {
		t.Helper()
		if resp.StatusCode != want {
			t.Fatalf("%s: got %d %q, want %d", what, resp.StatusCode, body, want)
		}
	}
	meta := func(deadline time.Time, extra ...string) string {
		return strings.Join(append([]string{"filename " + base64Of("movie.mp4"), "token " + b64Token,
			"tokenExpiresAt " + base64Of(deadline.Format(time.RFC3339))}, extra...), ",")
	}
	octets := map[string]string{"Content-Type": "application/offset+octet-stream"}
	patch := func(what, u string, off int64, data []byte, want int) {
		t.Helper()
		hd := map[string]string{"Upload-Offset": strconv.FormatInt(off, 10), "Content-Type": "application/offset+octet-stream"}
		resp, body := req(what, http.MethodPatch, u, "", hd, bytes.NewReader(data))
		expect(what, resp, body, want)
	}
	const size = 6 * MiB
	data := randomData(size)

	// A delivered-to-the-gateway upload: create, PATCH across a part
	// boundary, HEAD, status, PATCH to the end.
	resp, body := req("create", http.MethodPost, h.endpoint, "", map[string]string{
		"Upload-Length": strconv.Itoa(size), "Upload-Metadata": meta(testNow.Add(time.Hour), "title "+base64Of("My movie"))}, nil)
	expect("create", resp, body, http.StatusCreated)
	a := resp.Header.Get("Location")
	patch("PATCH 1", a, 0, data[:5*MiB+1], http.StatusNoContent)
	resp, body = req("HEAD", http.MethodHead, a, "", nil, nil)
	expect("HEAD", resp, body, http.StatusOK)
	resp, body = req("status", http.MethodGet, h.srv.URL+"/uploads/"+idOf(a), "", nil, nil)
	expect("status", resp, body, http.StatusOK)
	patch("PATCH 2", a, 5*MiB+1, data[5*MiB+1:], http.StatusNoContent)
	resp, body = req("status complete", http.MethodGet, h.srv.URL+"/uploads/"+idOf(a), "", nil, nil)
	expect("status complete", resp, body, http.StatusOK)

	// Creation with upload, then DELETE.
	resp, body = req("creation with upload", http.MethodPost, h.endpoint, "", map[string]string{
		"Upload-Length": "100", "Upload-Metadata": meta(testNow.Add(time.Hour)), "Content-Type": "application/offset+octet-stream"},
		bytes.NewReader(data[:40]))
	expect("creation with upload", resp, body, http.StatusCreated)
	resp, body = req("DELETE", http.MethodDelete, resp.Header.Get("Location"), "", nil, nil)
	expect("DELETE", resp, body, http.StatusNoContent)

	// An upload failed at the gateway: its token deadline passes before
	// part 1 reached api.video; PATCH and HEAD get 410.
	insp.setDeadline(testNow.Add(2 * time.Minute))
	resp, body = req("create (short deadline)", http.MethodPost, h.endpoint, "", map[string]string{
		"Upload-Length": strconv.Itoa(size), "Upload-Metadata": meta(testNow.Add(2 * time.Minute))}, nil)
	expect("create (short deadline)", resp, body, http.StatusCreated)
	b := resp.Header.Get("Location")
	patch("PATCH before the deadline", b, 0, data[:MiB], http.StatusNoContent)
	clk.Add(3 * time.Minute)
	patch("PATCH past the deadline", b, MiB, data[MiB:2*MiB], http.StatusGone)
	resp, body = req("HEAD failed", http.MethodHead, b, "", nil, nil)
	expect("HEAD failed", resp, body, http.StatusGone)
	resp, body = req("status failed", http.MethodGet, h.srv.URL+"/uploads/"+idOf(b), "", nil, nil)
	expect("status failed", resp, body, http.StatusOK)

	// Refused creations, each carrying the token.
	later := clk.Now().Add(time.Hour)
	refusals := []struct {
		what   string
		client string
		header map[string]string
		body   io.Reader
		mode   int32
		// expired makes api.video say the token expired a minute ago.
		expired bool
		want    int
	}{
		{what: "expired token", header: map[string]string{"Upload-Metadata": meta(later)}, expired: true, want: http.StatusBadRequest},
		{what: "malformed tokenExpiresAt", header: map[string]string{"Upload-Metadata": "token " + b64Token + ",tokenExpiresAt " + base64Of("soon")}, want: http.StatusBadRequest},
		{what: "bad entry after the token", header: map[string]string{"Upload-Metadata": meta(later, "bad !!")}, want: http.StatusBadRequest},
		{what: "bad base64 next to the token", header: map[string]string{"Upload-Metadata": "token " + b64Token + ",x " + b64Token + "*"}, want: http.StatusBadRequest},
		{what: "metadata too large", header: map[string]string{"Upload-Metadata": meta(later, "pad "+base64Of(strings.Repeat("p", 600)))}, want: http.StatusRequestHeaderFieldsTooLarge},
		{what: "token lookup outage", header: map[string]string{"Upload-Metadata": meta(later)}, mode: lookupOutage, want: http.StatusServiceUnavailable},
		{what: "token unknown to api.video", header: map[string]string{"Upload-Metadata": meta(later)}, mode: lookupUnknown, want: http.StatusForbidden},
		{what: "body larger than the length", header: map[string]string{"Upload-Metadata": meta(later), "Upload-Length": "10", "Content-Type": octets["Content-Type"]},
			body: bytes.NewReader(data[:20]), want: http.StatusRequestEntityTooLarge},
		{what: "rate 1", client: "198.51.100.1", header: map[string]string{"Upload-Metadata": meta(later, "bad !!")}, want: http.StatusBadRequest},
		{what: "rate 2", client: "198.51.100.1", header: map[string]string{"Upload-Metadata": meta(later, "bad !!")}, want: http.StatusBadRequest},
		{what: "rate 3", client: "198.51.100.1", header: map[string]string{"Upload-Metadata": meta(later, "bad !!")}, want: http.StatusBadRequest},
		{what: "rate limited", client: "198.51.100.1", header: map[string]string{"Upload-Metadata": meta(later)}, want: http.StatusTooManyRequests},
		{what: "open 1", client: "198.51.100.2", header: map[string]string{"Upload-Metadata": meta(later)}, want: http.StatusCreated},
		{what: "open 2", client: "198.51.100.2", header: map[string]string{"Upload-Metadata": meta(later)}, want: http.StatusCreated},
		{what: "too many open", client: "198.51.100.2", header: map[string]string{"Upload-Metadata": meta(later)}, want: http.StatusTooManyRequests},
	}
	for _, r := range refusals {
		insp.mode.Store(r.mode)
		insp.setDeadline(later)
		if r.expired {
			insp.setDeadline(clk.Now().Add(-time.Minute))
		}
		hd := map[string]string{"Upload-Length": "100"}
		for k, v := range r.header {
			hd[k] = v
		}
		resp, body := req(r.what, http.MethodPost, h.endpoint, r.client, hd, r.body)
		expect(r.what, resp, body, r.want)
	}
	insp.mode.Store(lookupOK)

	// The other routes.
	for _, r := range []struct{ method, path string }{
		{http.MethodOptions, "/files/"}, {http.MethodGet, "/metrics"}, {http.MethodGet, "/readyz"}, {http.MethodGet, "/healthz"},
		{http.MethodGet, "/uploads/" + idOf(a)}, {http.MethodGet, "/uploads/nope"},
	} {
		resp, body := req(r.method+" "+r.path, r.method, h.srv.URL+r.path, "", nil, nil)
		if resp.StatusCode >= 500 {
			t.Errorf("%s %s: got %d %q", r.method, r.path, resp.StatusCode, body)
		}
	}

	// Everything the gateway wrote.
	forms := []string{token, b64Token, url.QueryEscape(token), strings.TrimRight(b64Token, "=")}
	search := func(where, text string) {
		t.Helper()
		for _, f := range forms {
			if strings.Contains(text, f) {
				t.Errorf("%s reveals the token (as %q)", where, f)
			}
		}
	}
	search("responses", tr.b.String())
	if !strings.Contains(tr.b.String(), "deadline_missed") || !strings.Contains(tr.b.String(), "tusd_uploads_created") {
		t.Errorf("transcript lacks the failed upload or the metrics:\n%s", tr.b.String())
	}
	enc := zapcore.NewJSONEncoder(zap.NewProductionEncoderConfig())
	entries := h.logs.All()
	if len(entries) < 50 {
		t.Errorf("got %d log entries, want the whole run's (at least 50)", len(entries))
	}
	for _, e := range entries {
		buf, err := enc.EncodeEntry(e.Entry, e.Context)
		if err != nil {
			t.Fatal(err)
		}
		search("log entry "+buf.String(), buf.String())
		buf.Free()
	}
	files := 0
	err := filepath.WalkDir(h.dataDir, func(p string, d fs.DirEntry, err error) error {
		if err != nil || d.IsDir() {
			return err
		}
		b, err := os.ReadFile(p)
		if err != nil {
			return err
		}
		files++
		search("data file "+d.Name(), string(b))
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	if files < 6 {
		t.Errorf("data dir: got %d files, want those of 3 uploads at least", files)
	}
}
