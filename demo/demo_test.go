package demo_test

import (
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"io"
	"io/fs"
	"net/http"
	"net/http/httptest"
	"os"
	"path"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"go.uber.org/zap"
	"go.uber.org/zap/zapcore"
	"go.uber.org/zap/zaptest/observer"

	"github.com/tusgate/tusgate/apivideo"
	"github.com/tusgate/tusgate/apivideo/apivideotest"
	"github.com/tusgate/tusgate/demo"
	"github.com/tusgate/tusgate/forwarder"
	"github.com/tusgate/tusgate/gateway"
	"github.com/tusgate/tusgate/internal/tusclient"
	"github.com/tusgate/tusgate/store"
	"github.com/tusgate/tusgate/store/boltstore"
)

// tusMinSHA256 is the SHA-256 of tus-js-client 4.3.1's dist/tus.min.js,
// as stated in assets/NOTICE.
const tusMinSHA256 = "8cbb1b63fccc3bba0ae73ad1deb160ce046c3750851d0c3e94921ae3ef070eb8"

// startDemo starts a demo logging to an observer (Debug and up) and closes
// it when t ends.
func startDemo(t *testing.T) (*demo.Demo, *observer.ObservedLogs) {
	t.Helper()
	core, logs := observer.New(zapcore.DebugLevel)
	d, err := demo.Start(t.Context(), zap.New(core))
	if err != nil {
		t.Fatalf("demo.Start: %v", err)
	}
	t.Cleanup(d.Close)
	return d, logs
}

// get sends a request to h and returns the recorded response.
func serve(t *testing.T, h http.Handler, method, target string) *httptest.ResponseRecorder {
	t.Helper()
	req := httptest.NewRequestWithContext(t.Context(), method, target, nil)
	rec := httptest.NewRecorder()
	h.ServeHTTP(rec, req)
	return rec
}

func TestStartRefusesDoneContext(t *testing.T) {
	ctx, cancel := context.WithCancel(t.Context())
	cancel()
	d, err := demo.Start(ctx, nil)
	if err == nil {
		d.Close()
		t.Fatal("demo.Start with a cancelled context: got no error, want one")
	}
}

func TestEmulatorListensOnLoopback(t *testing.T) {
	d, _ := startDemo(t)
	if !strings.HasPrefix(d.APIVideoURL(), "http://127.0.0.1:") {
		t.Fatalf("APIVideoURL: got %q, want http://127.0.0.1:port", d.APIVideoURL())
	}
	// A real listener: an ordinary HTTP client reaches it.
	resp, err := http.Get(d.APIVideoURL() + "/upload")
	if err != nil {
		t.Fatalf("GET the emulator: %v", err)
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusMethodNotAllowed {
		t.Errorf("GET /upload on the emulator: got %d, want 405", resp.StatusCode)
	}
}

func TestPage(t *testing.T) {
	d, _ := startDemo(t)
	for _, endpoint := range []string{"/files/", "https://uploads.example.com/tus/"} {
		t.Run(endpoint, func(t *testing.T) {
			rec := serve(t, d.Handler(endpoint), http.MethodGet, "/")
			if rec.Code != http.StatusOK {
				t.Fatalf("GET /: got %d, want 200", rec.Code)
			}
			if got, want := rec.Header().Get("Content-Type"), "text/html; charset=utf-8"; got != want {
				t.Errorf("Content-Type: got %q, want %q", got, want)
			}
			body := rec.Body.String()
			for _, want := range []string{
				`<meta name="tusgate-endpoint" content="` + endpoint + `">`,
				`<script src="/demo/tus.min.js" defer></script>`,
				`<script src="/demo/app.js" defer></script>`,
				`<input id="file" type="file"`,
				`<progress id="to-gateway"`,
				`<progress id="to-apivideo"`,
				`id="video-id"`,
				`role="status" aria-live="polite"`,
			} {
				if !strings.Contains(body, want) {
					t.Errorf("page does not contain %s", want)
				}
			}
			csp := rec.Header().Get("Content-Security-Policy")
			if !strings.Contains(csp, "default-src 'self'") {
				t.Errorf("Content-Security-Policy: got %q, want default-src 'self'", csp)
			}
			if abs := strings.HasPrefix(endpoint, "https://"); abs != strings.Contains(csp, "https://uploads.example.com") {
				t.Errorf("Content-Security-Policy %q: the endpoint's origin allowed = %v, want %v", csp, !abs, abs)
			}
			if got := rec.Header().Get("X-Content-Type-Options"); got != "nosniff" {
				t.Errorf("X-Content-Type-Options: got %q, want nosniff", got)
			}
		})
	}
}

func TestPageEscapesEndpoint(t *testing.T) {
	d, _ := startDemo(t)
	rec := serve(t, d.Handler(`/files/"><script>alert(1)</script>`), http.MethodGet, "/")
	if strings.Contains(rec.Body.String(), "<script>alert(1)") {
		t.Fatal("the endpoint reached the page unescaped")
	}
}

func TestAssets(t *testing.T) {
	d, _ := startDemo(t)
	h := d.Handler("/files/")
	for _, tc := range []struct{ path, ctype string }{
		{"/demo/app.js", "text/javascript; charset=utf-8"},
		{"/demo/style.css", "text/css; charset=utf-8"},
		{"/demo/tus.min.js", "text/javascript; charset=utf-8"},
		{"/demo/NOTICE", "text/plain; charset=utf-8"},
		{"/demo/tus-js-client.LICENSE", "text/plain; charset=utf-8"},
	} {
		rec := serve(t, h, http.MethodGet, tc.path)
		if rec.Code != http.StatusOK {
			t.Errorf("GET %s: got %d, want 200", tc.path, rec.Code)
			continue
		}
		if got := rec.Header().Get("Content-Type"); got != tc.ctype {
			t.Errorf("GET %s Content-Type: got %q, want %q", tc.path, got, tc.ctype)
		}
		want, err := os.ReadFile(filepath.Join("assets", path.Base(tc.path)))
		if err != nil {
			t.Fatal(err)
		}
		if !bytes.Equal(rec.Body.Bytes(), want) {
			t.Errorf("GET %s: body differs from assets/%s", tc.path, path.Base(tc.path))
		}
	}

	rec := serve(t, h, http.MethodGet, "/demo/tus.min.js")
	sum := sha256.Sum256(rec.Body.Bytes())
	if got := hex.EncodeToString(sum[:]); got != tusMinSHA256 {
		t.Errorf("vendored tus.min.js SHA-256: got %s, want %s (update assets/NOTICE with the new version)", got, tusMinSHA256)
	}
	notice, err := fs.ReadFile(os.DirFS("assets"), "NOTICE")
	if err != nil {
		t.Fatal(err)
	}
	if !bytes.Contains(notice, []byte(tusMinSHA256)) {
		t.Errorf("assets/NOTICE does not name tus.min.js's SHA-256 %s", tusMinSHA256)
	}

	for _, p := range []string{"/demo/", "/demo/missing.js", "/demo/index.html", "/demo/..%2fdemo.go", "/other", "/files/"} {
		if rec := serve(t, h, http.MethodGet, p); rec.Code != http.StatusNotFound {
			t.Errorf("GET %s: got %d, want 404", p, rec.Code)
		}
	}
}

func TestToken(t *testing.T) {
	d, logs := startDemo(t)
	h := d.Handler("/files/")

	if rec := serve(t, h, http.MethodGet, "/demo/token"); rec.Code != http.StatusMethodNotAllowed {
		t.Errorf("GET /demo/token: got %d, want 405", rec.Code)
	}
	before := time.Now()
	rec := serve(t, h, http.MethodPost, "/demo/token")
	if rec.Code != http.StatusOK {
		t.Fatalf("POST /demo/token: got %d, want 200: %s", rec.Code, rec.Body)
	}
	if got := rec.Header().Get("Content-Type"); got != "application/json" {
		t.Errorf("Content-Type: got %q, want application/json", got)
	}
	if got := rec.Header().Get("Cache-Control"); got != "no-store" {
		t.Errorf("Cache-Control: got %q, want no-store", got)
	}
	var tok demo.TokenResponse
	if err := json.Unmarshal(rec.Body.Bytes(), &tok); err != nil {
		t.Fatalf("decode %s: %v", rec.Body, err)
	}
	if tok.Token == "" {
		t.Fatal("token: got empty")
	}

	// The emulator knows the token, and it expires no earlier than the
	// page is told.
	client := apivideo.New(d.APIVideoURL(), apivideo.WithAPIKey(apivideotest.DefaultAPIKey))
	info, err := client.GetUploadToken(t.Context(), tok.Token)
	if err != nil {
		t.Fatalf("the emulator does not know the minted token: %v", err)
	}
	if info.ExpiresAt == nil || info.ExpiresAt.Before(tok.ExpiresAt) {
		t.Errorf("token expiry: emulator %v, page told %v; want the page's no later", info.ExpiresAt, tok.ExpiresAt)
	}
	if lo, hi := before.Add(demo.TokenTTL-2*time.Second), time.Now().Add(demo.TokenTTL); tok.ExpiresAt.Before(lo) || tok.ExpiresAt.After(hi) {
		t.Errorf("expiresAt: got %v, want within [%v, %v]", tok.ExpiresAt, lo, hi)
	}

	// A second token is a different one.
	rec2 := serve(t, h, http.MethodPost, "/demo/token")
	var tok2 demo.TokenResponse
	_ = json.Unmarshal(rec2.Body.Bytes(), &tok2)
	if tok2.Token == "" || tok2.Token == tok.Token {
		t.Errorf("second token: got %q, want a new one", tok2.Token)
	}

	// Logged, without the token.
	if logs.FilterMessageSnippet("minted").Len() != 2 {
		t.Errorf("log entries about minted tokens: got %d, want 2", logs.FilterMessageSnippet("minted").Len())
	}
	for _, e := range logs.All() {
		line := e.Message
		for k, v := range e.ContextMap() {
			line += " " + k + "=" + toString(v)
		}
		if strings.Contains(line, tok.Token) || strings.Contains(line, tok2.Token) {
			t.Errorf("a log entry holds a token: %q", e.Message)
		}
	}
}

func toString(v any) string {
	b, _ := json.Marshal(v)
	return string(b)
}

func TestVideo(t *testing.T) {
	d, _ := startDemo(t)
	h := d.Handler("/files/")

	rec := serve(t, h, http.MethodGet, "/demo/videos/vi-unknown")
	if rec.Code != http.StatusNotFound || rec.Header().Get("Content-Type") != "application/json" {
		t.Errorf("GET an unknown video: got %d %q, want 404 application/json", rec.Code, rec.Header().Get("Content-Type"))
	}

	token := d.Emulator().CreateToken(time.Hour)
	data := bytes.Repeat([]byte("tusgate!"), 1000)
	client := apivideo.New(d.APIVideoURL())
	v, err := client.UploadPart(t.Context(), apivideo.PartRequest{
		Token: token, FileName: "clip.mp4", Part: 1, TotalParts: 1,
		Body: bytes.NewReader(data), Size: int64(len(data)),
	})
	if err != nil {
		t.Fatalf("upload to the emulator: %v", err)
	}

	rec = serve(t, h, http.MethodGet, "/demo/videos/"+v.VideoID)
	if rec.Code != http.StatusOK {
		t.Fatalf("GET /demo/videos/%s: got %d, want 200: %s", v.VideoID, rec.Code, rec.Body)
	}
	if strings.Contains(rec.Body.String(), token) {
		t.Error("the video's answer holds its upload token")
	}
	var got demo.VideoResponse
	if err := json.Unmarshal(rec.Body.Bytes(), &got); err != nil {
		t.Fatalf("decode %s: %v", rec.Body, err)
	}
	sum := sha256.Sum256(data)
	want := demo.VideoResponse{
		VideoID: v.VideoID, Complete: true, Size: int64(len(data)), Parts: 1,
		SHA256: hex.EncodeToString(sum[:]), Player: "https://embed.api.video/vod/" + v.VideoID,
	}
	if got != want {
		t.Errorf("video: got %+v, want %+v", got, want)
	}
}

func TestWrapRoutes(t *testing.T) {
	d, _ := startDemo(t)
	gw := http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) { _, _ = io.WriteString(w, "gateway") })
	h := d.Wrap(gw, "/files/")
	for _, tc := range []struct {
		method, path string
		gateway      bool
	}{
		{http.MethodGet, "/", false},
		{http.MethodHead, "/", false},
		{http.MethodGet, "/demo/app.js", false},
		{http.MethodPost, "/demo/token", false},
		{http.MethodPost, "/", true}, // tus with --base-path /? the gateway refuses it anyway
		{http.MethodPost, "/files/", true},
		{http.MethodPatch, "/files/abc", true},
		{http.MethodGet, "/uploads/abc", true},
		{http.MethodGet, "/healthz", true},
		{http.MethodGet, "/metrics", true},
		{http.MethodGet, "/favicon.ico", true},
	} {
		rec := serve(t, h, tc.method, tc.path)
		if got := rec.Body.String() == "gateway"; got != tc.gateway {
			t.Errorf("%s %s served by the gateway: got %v, want %v", tc.method, tc.path, got, tc.gateway)
		}
	}
}

// TestWrapWithGateway runs the demo beside a real gateway and forwarder (as
// `tusgate --demo` does): an upload with a token from /demo/token reaches
// the emulator byte for byte, and /demo/videos/{id} reports it.
func TestWrapWithGateway(t *testing.T) {
	d, _ := startDemo(t)
	srv := startStack(t, d)

	rec, err := http.Post(srv.URL+"/demo/token", "", nil)
	if err != nil {
		t.Fatal(err)
	}
	var tok demo.TokenResponse
	if err := json.NewDecoder(rec.Body).Decode(&tok); err != nil {
		t.Fatal(err)
	}
	rec.Body.Close()

	data := make([]byte, 7<<20+123)
	for i := range data {
		data[i] = byte(i*7 + i>>11)
	}
	tc := &tusclient.Client{}
	u, err := tc.Create(t.Context(), srv.URL+"/files/", int64(len(data)), map[string]string{
		"filename": "clip.mp4", "token": tok.Token, "tokenExpiresAt": tok.ExpiresAt.Format(time.RFC3339),
	})
	if err != nil {
		t.Fatalf("create: %v", err)
	}
	if err := tc.Upload(t.Context(), u, bytes.NewReader(data), int64(len(data)), 3<<20); err != nil {
		t.Fatalf("upload: %v", err)
	}

	st := waitDelivered(t, srv.URL+"/uploads/"+path.Base(u))
	resp, err := http.Get(srv.URL + "/demo/videos/" + *st.VideoID)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	var v demo.VideoResponse
	if err := json.NewDecoder(resp.Body).Decode(&v); err != nil {
		t.Fatal(err)
	}
	sum := sha256.Sum256(data)
	if !v.Complete || v.Size != int64(len(data)) || v.SHA256 != hex.EncodeToString(sum[:]) || v.Parts != 2 {
		t.Errorf("emulator video: got %+v, want complete, %d bytes in 2 parts, SHA-256 %x", v, len(data), sum)
	}

	page, err := http.Get(srv.URL + "/")
	if err != nil {
		t.Fatal(err)
	}
	page.Body.Close()
	if page.StatusCode != http.StatusOK || page.Header.Get("Content-Type") != "text/html; charset=utf-8" {
		t.Errorf("GET / beside the gateway: got %d %q, want the page", page.StatusCode, page.Header.Get("Content-Type"))
	}
}

// waitDelivered polls the status URL until the upload is delivered.
func waitDelivered(t *testing.T, statusURL string) gateway.Status {
	t.Helper()
	deadline := time.Now().Add(30 * time.Second)
	tick := time.NewTicker(20 * time.Millisecond)
	defer tick.Stop()
	for {
		var st gateway.Status
		resp, err := http.Get(statusURL)
		if err != nil {
			t.Fatal(err)
		}
		_ = json.NewDecoder(resp.Body).Decode(&st)
		resp.Body.Close()
		switch {
		case st.State == store.StateDelivered:
			return st
		case st.State.Terminal():
			t.Fatalf("upload ended %s: %+v", st.State, st.Error)
		case time.Now().After(deadline):
			t.Fatalf("upload not delivered within 30s: last status %+v", st)
		}
		<-tick.C
	}
}

// startStack assembles a gateway (embedded store) and forwarder to the
// demo's emulator, serves them with the demo's routes on loopback, and
// stops everything when t ends.
func startStack(t *testing.T, d *demo.Demo) *httptest.Server {
	t.Helper()
	dir := t.TempDir()
	st, err := boltstore.Open(filepath.Join(dir, "state.db"))
	if err != nil {
		t.Fatal(err)
	}
	var fwd *forwarder.Forwarder
	gw, err := gateway.New(gateway.Config{
		DataDir:       filepath.Join(dir, "uploads"),
		MaxSize:       demo.MaxSize,
		Plan:          store.Plan{FirstPartSize: store.MinPartSize, PartSize: store.MinPartSize},
		TokenRequired: true,
	}, st, notifier(func(id string) { fwd.Notify(id) }))
	if err != nil {
		t.Fatal(err)
	}
	fwd = forwarder.New(forwarder.Config{Owner: "demo-test"}, st, gw.Source(), apivideo.New(d.APIVideoURL()))
	ctx, cancel := context.WithCancel(context.WithoutCancel(t.Context()))
	var wg sync.WaitGroup
	wg.Go(func() { _ = fwd.Run(ctx) })
	srv := httptest.NewServer(d.Wrap(gw.Handler(), "/files/"))
	t.Cleanup(func() {
		srv.Close()
		cancel()
		wg.Wait()
		_ = st.Close()
	})
	return srv
}

type notifier func(id string)

func (f notifier) Notify(id string) { f(id) }
