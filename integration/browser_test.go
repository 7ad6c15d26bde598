package integration_test

// Browser end-to-end tests: headless Chromium (Debian's chromium package)
// runs the real tus-js-client and Uppy (@uppy/core + @uppy/tus), installed
// from npm into integration/browser/node_modules by `npm ci` (never
// committed), against the gateway binary and the api.video emulator. The
// page comes from another loopback origin than the gateway (as a platform's
// page would), so every test also exercises CORS. browser/driver.mjs drives
// Chromium through playwright-core; browser/page/harness.js runs the upload
// in the page and records what the client saw in window.harness.
//
// Without Chromium, node or node_modules the tests skip with the reason
// (TUSGATE_REQUIRE_BROWSER=1 makes that a failure).

import (
	"bytes"
	"image/png"
	"net/http"
	"net/url"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/tusgate/tusgate/demo"
	"github.com/tusgate/tusgate/gateway"
)

// updateScreenshotEnv, set to 1, makes TestBrowserDemoPage write its
// screenshot to docs/demo.png (the README's picture).
const updateScreenshotEnv = "TUSGATE_UPDATE_SCREENSHOT"

// browserUploadSize is the size of the files the browser uploads: three
// api.video parts (5 + 5 + 2 MiB).
const browserUploadSize = 12 * mib

// hostPort returns the host:port of a base URL.
func hostPort(t *testing.T, base string) string {
	t.Helper()
	u, err := url.Parse(base)
	if err != nil {
		t.Fatal(err)
	}
	return u.Host
}

// countRequests counts the page's tus requests with method.
func countRequests(h harnessState, method string) int {
	n := 0
	for _, r := range h.Requests {
		if r.Method == method {
			n++
		}
	}
	return n
}

// requestLog summarises the page's tus requests and answers, e.g.
// "POST→201 PATCH→0 HEAD→200 PATCH→204" (0: no answer, the network failed).
func requestLog(h harnessState) string {
	status := make([]int, len(h.Requests))
	for _, r := range h.Responses {
		if r.Request >= 0 && r.Request < len(status) {
			status[r.Request] = r.Status
		}
	}
	parts := make([]string, len(h.Requests))
	for i, r := range h.Requests {
		parts[i] = r.Method + "→" + strconv.Itoa(status[i])
	}
	return strings.Join(parts, " ")
}

// checkResumedFromServer asserts that the page resumed from the offset the
// gateway reported: a HEAD answered 200 with an offset of at least min, and
// the next PATCH started exactly there. It returns that offset.
func checkResumedFromServer(t *testing.T, h harnessState, minOffset int64) int64 {
	t.Helper()
	var offset int64 = -1
	for _, r := range h.Responses {
		if r.Method == http.MethodHead && r.Status == http.StatusOK && r.Offset != nil {
			offset, _ = strconv.ParseInt(*r.Offset, 10, 64)
			break
		}
	}
	if offset < minOffset {
		t.Fatalf("the page's HEAD after the interruption: got offset %d, want at least %d (responses: %+v)", offset, minOffset, h.Responses)
	}
	sawHead := false
	for _, r := range h.Requests {
		switch {
		case r.Method == http.MethodHead:
			sawHead = true
		case sawHead && r.Method == http.MethodPatch:
			if r.Offset == nil || *r.Offset != strconv.FormatInt(offset, 10) {
				t.Errorf("first PATCH after the HEAD: got Upload-Offset %s, want %d", ptrString(r.Offset), offset)
			}
			return offset
		}
	}
	t.Errorf("the page sent no PATCH after its HEAD (requests: %+v)", h.Requests)
	return offset
}

// TestBrowserTusUpload: tus-js-client in Chromium, on a page of another
// origin, uploads 12 MiB in 4 MiB PATCHes; the emulator holds one video,
// byte-identical; the page read Location, Upload-Offset, Upload-Length and
// Tus-Resumable (exposed by CORS) and the status API across origins.
func TestBrowserTusUpload(t *testing.T) {
	b := startBrowser(t)
	page := startPageServer(t)
	emu := newEmulator(t)
	gw := startGateway(t, emu, gatewayOptions{Store: "embedded", Args: []string{"--cors-origins", page.URL}})
	token := emu.CreateToken(time.Hour)
	data := browserBytes(1, browserUploadSize)

	b.Goto(page.ScenarioURL(scenario{Mode: "tus", Endpoint: gw.Endpoint, Token: token, Seed: 1, Size: len(data), Chunk: 4 * mib}))
	h := b.waitHarnessDone()

	st, _ := waitDelivered(t, gw, uploadID(t, h.UploadURL))
	checkDelivered(t, emu, token, data, st)
	checkTusHeadersReadable(t, h)
	if got := countRequests(h, http.MethodPost); got != 1 {
		t.Errorf("creations (POST): got %d, want 1", got)
	}
	if got := countRequests(h, http.MethodPatch); got != 3 {
		t.Errorf("PATCHes of 4 MiB: got %d, want 3", got)
	}
	if h.Status == nil || h.Status.VideoID == nil || st.VideoID == nil || *h.Status.VideoID != *st.VideoID {
		t.Errorf("video id the page read from GET /uploads/{id}: got %v, want %s", h.Status, ptrString(st.VideoID))
	}
	if !strings.HasPrefix(h.UploadURL, gw.Endpoint) {
		t.Errorf("upload URL: got %s, want one under %s", h.UploadURL, gw.Endpoint)
	}
	checkCORSExposed(t, gw, h.UploadURL, page.URL)
	t.Logf("Chromium %s; tus-js-client sent %d requests", b.Version, len(h.Requests))
}

// TestBrowserTusResumesAfterNetworkDrop: the network between Chromium and
// the gateway drops after 6 MiB of a one-PATCH upload (every connection
// reset, the next two refused); tus-js-client retries on its own, asks the
// gateway for the offset (HEAD) and sends the rest from there: one upload,
// one video, byte-identical.
func TestBrowserTusResumesAfterNetworkDrop(t *testing.T) {
	b := startBrowser(t)
	page := startPageServer(t)
	emu := newEmulator(t)
	gw := startGateway(t, emu, gatewayOptions{Store: "embedded", Args: []string{"--cors-origins", page.URL}})
	proxy := startFaultProxy(t, hostPort(t, gw.URL))
	proxy.CutAfter(6*mib, 2)
	token := emu.CreateToken(time.Hour)
	data := browserBytes(2, browserUploadSize)

	b.Goto(page.ScenarioURL(scenario{Mode: "tus", Endpoint: proxy.URL + "/files/", Token: token, Seed: 2, Size: len(data)}))
	h := b.waitHarnessDone()

	select {
	case <-proxy.Fired():
	default:
		t.Fatal("the network never dropped")
	}
	if got := proxy.Refused(); got != 2 {
		t.Errorf("connections refused after the drop: got %d, want 2", got)
	}
	offset := checkResumedFromServer(t, h, 1)
	unanswered := 0
	for i := range h.Requests {
		if !slices.ContainsFunc(h.Responses, func(r harnessResponse) bool { return r.Request == i }) {
			unanswered++
		}
	}
	if unanswered < 2 {
		t.Errorf("requests the network failed: got %d (%s), want the cut PATCH and at least one refused retry", unanswered, requestLog(h))
	}
	st, _ := waitDelivered(t, gw, uploadID(t, h.UploadURL))
	checkDelivered(t, emu, token, data, st)
	checkTusHeadersReadable(t, h)
	if got := countRequests(h, http.MethodPost); got != 1 {
		t.Errorf("creations (POST): got %d, want 1", got)
	}
	if got := tusdCounter(t, gw, "tusd_uploads_created"); got != 1 {
		t.Errorf("uploads the gateway created: got %v, want 1", got)
	}
	t.Logf("resumed at offset %d after the drop at %d bytes sent; requests %s", offset, 6*mib, requestLog(h))
}

// TestBrowserTusResumesAfterReload: the page is reloaded while its upload is
// stuck after 6 MiB; the new page finds the upload by tus-js-client's
// fingerprint in localStorage, asks the gateway for its offset and finishes
// it: the gateway created one upload, the emulator holds one video,
// byte-identical.
func TestBrowserTusResumesAfterReload(t *testing.T) {
	b := startBrowser(t)
	page := startPageServer(t)
	emu := newEmulator(t)
	gw := startGateway(t, emu, gatewayOptions{Store: "embedded", Args: []string{"--cors-origins", page.URL}})
	proxy := startFaultProxy(t, hostPort(t, gw.URL))
	proxy.StallAfter(6 * mib)
	token := emu.CreateToken(time.Hour)
	data := browserBytes(3, browserUploadSize)

	b.Goto(page.ScenarioURL(scenario{Mode: "tus", Endpoint: proxy.URL + "/files/", Token: token, Seed: 3, Size: len(data)}))
	waitFor(t, "the upload to stall at 6 MiB", func() bool {
		select {
		case <-proxy.Fired():
			return true
		default:
			return false
		}
	})
	before := b.harness()
	if before.UploadURL == "" || before.Resumed {
		t.Fatalf("before the reload: got upload URL %q, resumed %v; want a new upload", before.UploadURL, before.Resumed)
	}
	id := uploadID(t, before.UploadURL)
	held, _ := waitStatus(t, gw, id, func(s gateway.Status) bool { return s.Received >= partSize })

	b.Reload()
	proxy.Release() // the old page's connection is gone
	h := b.waitHarnessDone()

	if !h.Resumed || len(h.Previous) == 0 || h.Previous[0] != before.UploadURL {
		t.Errorf("after the reload: got resumed %v, previous uploads %v; want %s found by fingerprint", h.Resumed, h.Previous, before.UploadURL)
	}
	if h.UploadURL != before.UploadURL {
		t.Errorf("upload URL after the reload: got %s, want %s", h.UploadURL, before.UploadURL)
	}
	if got := countRequests(h, http.MethodPost); got != 0 {
		t.Errorf("creations (POST) by the reloaded page: got %d, want 0", got)
	}
	offset := checkResumedFromServer(t, h, partSize)
	st, _ := waitDelivered(t, gw, id)
	checkDelivered(t, emu, token, data, st)
	checkTusHeadersReadable(t, h)
	if got := tusdCounter(t, gw, "tusd_uploads_created"); got != 1 {
		t.Errorf("uploads the gateway created: got %v, want 1", got)
	}
	t.Logf("the gateway held %d bytes at the reload; the new page resumed at %d; its requests %s", held.Received, offset, requestLog(h))
}

// TestBrowserUppyUpload: Uppy (@uppy/core with @uppy/tus) in Chromium, on a
// page of another origin, uploads 12 MiB (a Blob added with addFile, the
// token in its meta): one video, byte-identical.
func TestBrowserUppyUpload(t *testing.T) {
	b := startBrowser(t)
	page := startPageServer(t)
	emu := newEmulator(t)
	gw := startGateway(t, emu, gatewayOptions{Store: "embedded", Args: []string{"--cors-origins", page.URL}})
	token := emu.CreateToken(time.Hour)
	data := browserBytes(4, browserUploadSize)

	b.Goto(page.ScenarioURL(scenario{Mode: "uppy", Endpoint: gw.Endpoint, Token: token, Seed: 4, Size: len(data)}))
	h := b.waitHarnessDone()

	st, _ := waitDelivered(t, gw, uploadID(t, h.UploadURL))
	checkDelivered(t, emu, token, data, st)
	checkTusHeadersReadable(t, h)
	if got := countRequests(h, http.MethodPost); got != 1 {
		t.Errorf("creations (POST): got %d, want 1", got)
	}
	if st.Filename == nil || *st.Filename != "video.mp4" {
		t.Errorf("filename (Uppy's name meta): got %s, want video.mp4", ptrString(st.Filename))
	}
}

// TestBrowserDemoPage: the demo page (what `tusgate --demo` serves at /),
// with a 12 MiB file picked in its file input, follows the gateway's event
// stream and shows both legs complete, the video id the emulator holds, and
// that the emulator's bytes are identical to the file; the test saves a
// screenshot (to docs/demo.png with TUSGATE_UPDATE_SCREENSHOT=1).
func TestBrowserDemoPage(t *testing.T) {
	b := startBrowser(t)
	stack := startDemoStack(t)
	data := browserBytes(5, browserUploadSize)
	videoID := pickOnDemoPage(t, b, stack.URL, "holiday.mp4", data)

	videos := stack.Demo.Emulator().Videos()
	if len(videos) != 1 {
		t.Fatalf("emulator videos: got %d, want 1", len(videos))
	}
	v := videos[0]
	if videoID != v.ID {
		t.Errorf("video id on the page: got %q, want %q", videoID, v.ID)
	}
	if !v.Complete || v.SHA256 != sha256Hex(data) {
		t.Errorf("emulator video: complete %v, SHA-256 %s; want complete, %s", v.Complete, v.SHA256, sha256Hex(data))
	}
	if got := b.Text("#received"); !strings.Contains(got, "identical to your file") || !strings.Contains(got, "12,582,912 bytes") {
		t.Errorf("what the page says api.video received: got %q, want 12,582,912 bytes, identical", got)
	}
	if got := b.Text("#status"); !strings.HasPrefix(got, "Delivered") {
		t.Errorf("status line: got %q, want Delivered…", got)
	}
	if got := b.Text("#player-url"); got != "https://embed.api.video/vod/"+v.ID {
		t.Errorf("player URL on the page: got %q, want https://embed.api.video/vod/%s", got, v.ID)
	}
	var events, polls int
	for _, r := range stack.Requests() {
		switch {
		case strings.HasPrefix(r, "GET /uploads/") && strings.HasSuffix(r, "/events"):
			events++
		case strings.HasPrefix(r, "GET /uploads/"):
			polls++
		}
	}
	if events == 0 || polls != 0 {
		t.Errorf("the page's status requests: got %d event streams and %d polls, want the event stream only", events, polls)
	}
	var bars []bool
	b.Eval(`["to-gateway", "to-apivideo"].map((id) => { const p = document.getElementById(id); return p.value === p.max && p.max === `+strconv.Itoa(len(data))+`; })`, &bars)
	if len(bars) != 2 || !bars[0] || !bars[1] {
		t.Errorf("progress bars full: got %v, want [true true]", bars)
	}

	shot := filepath.Join(t.TempDir(), "demo.png")
	b.Screenshot(shot)
	raw, err := os.ReadFile(shot)
	if err != nil {
		t.Fatal(err)
	}
	img, err := png.Decode(bytes.NewReader(raw))
	if err != nil {
		t.Fatalf("screenshot: %v", err)
	}
	if w := img.Bounds().Dx(); w != 960 {
		t.Errorf("screenshot width: got %d, want 960", w)
	}
	if os.Getenv(updateScreenshotEnv) == "1" {
		dst := filepath.Join("..", "docs", "demo.png")
		if err := os.MkdirAll(filepath.Dir(dst), 0o755); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(dst, raw, 0o644); err != nil {
			t.Fatal(err)
		}
		t.Logf("screenshot written to docs/demo.png")
	}
}

// TestBrowserDemoBinary: `tusgate --demo` (the built binary) serves the
// demo page beside the gateway, and a file picked on the page reaches its
// emulator byte for byte. It skips while the binary has no --demo flag.
func TestBrowserDemoBinary(t *testing.T) {
	b := startBrowser(t)
	gw := startDemoBinary(t)
	data := browserBytes(6, 7*mib)
	videoID := pickOnDemoPage(t, b, gw.URL, "clip.mp4", data)
	if got := b.Text("#received"); !strings.Contains(got, "identical to your file") {
		t.Errorf("what the page says api.video received: got %q, want identical", got)
	}
	var v demo.VideoResponse
	getJSON(t, gw, "/demo/videos/"+videoID, &v)
	if !v.Complete || v.Size != int64(len(data)) || v.SHA256 != sha256Hex(data) {
		t.Errorf("the demo's emulator video %s: got %+v, want complete, %d bytes, SHA-256 %s", videoID, v, len(data), sha256Hex(data))
	}
}

// TestBrowserVendoredTusClient: the demo's vendored tus-js-client bundle
// is the one npm installs for these tests (the version pinned in
// browser/package.json), so the demo and the tests run the same client.
func TestBrowserVendoredTusClient(t *testing.T) {
	npm := filepath.Join(browserDir, "node_modules", "tus-js-client", "dist", "tus.min.js")
	want, err := os.ReadFile(npm)
	if err != nil {
		if os.Getenv(requireBrowserEnv) == "1" {
			t.Fatal(err)
		}
		t.Skipf("skipped: %v (npm ci --prefix integration/browser)", err)
	}
	got, err := os.ReadFile(filepath.Join("..", "demo", "assets", "tus.min.js"))
	if err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(got, want) {
		t.Errorf("demo/assets/tus.min.js differs from %s: copy it (and update demo/assets/NOTICE)", npm)
	}
}

// pickOnDemoPage opens the demo page at base, picks a file named name
// holding data, and returns the video id the page shows once it has
// compared the emulator's bytes with the file.
func pickOnDemoPage(t *testing.T, b *browser, base, name string, data []byte) string {
	t.Helper()
	file := filepath.Join(t.TempDir(), name)
	if err := os.WriteFile(file, data, 0o600); err != nil {
		t.Fatal(err)
	}
	b.Goto(base + "/")
	b.SetInputFiles("#file", file)
	var videoID string
	b.WaitFor(`document.querySelector("#received .match, #received .mismatch") && document.getElementById("video-id").textContent`, &videoID)
	return videoID
}
