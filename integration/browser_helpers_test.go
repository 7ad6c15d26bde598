package integration_test

import (
	"bufio"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"net/url"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/tusgate/tusgate/apivideo"
	"github.com/tusgate/tusgate/demo"
	"github.com/tusgate/tusgate/forwarder"
	"github.com/tusgate/tusgate/gateway"
	"github.com/tusgate/tusgate/store"
	"github.com/tusgate/tusgate/store/boltstore"
)

// Browser tests need Chromium (Debian's chromium package), Node.js and the
// npm packages of integration/browser (npm ci). Without them they skip, or
// fail when TUSGATE_REQUIRE_BROWSER=1 (scripts/test.sh sets it once it has
// installed them).
const (
	// browserDir holds the driver, the test page and node_modules.
	browserDir = "browser"
	// browserTimeout bounds one driver command (a page load, a wait).
	browserTimeout = 60 * time.Second
	// requireBrowserEnv turns a missing browser dependency into a failure.
	requireBrowserEnv = "TUSGATE_REQUIRE_BROWSER"
	// chromiumEnv overrides the Chromium binary (default /usr/bin/chromium).
	chromiumEnv = "TUSGATE_CHROMIUM"
)

// chromiumPath returns the Chromium binary the driver starts.
func chromiumPath() string {
	if p := os.Getenv(chromiumEnv); p != "" {
		return p
	}
	return "/usr/bin/chromium"
}

// requireBrowserDeps skips t (or fails it under TUSGATE_REQUIRE_BROWSER=1)
// unless Chromium, node and the npm packages are installed.
func requireBrowserDeps(t *testing.T) {
	t.Helper()
	var missing []string
	if _, err := exec.LookPath("node"); err != nil {
		missing = append(missing, "node (Node.js) is not on PATH")
	}
	if fi, err := os.Stat(chromiumPath()); err != nil || fi.IsDir() {
		missing = append(missing, chromiumPath()+" is missing (apt-get install chromium, or set "+chromiumEnv+")")
	}
	for _, f := range []string{
		"playwright-core/package.json",
		"tus-js-client/dist/tus.min.js",
		"@uppy/core/package.json",
		"@uppy/tus/package.json",
		"esbuild/package.json",
	} {
		if _, err := os.Stat(filepath.Join(browserDir, "node_modules", f)); err != nil {
			missing = append(missing, "integration/browser/node_modules/"+f+" is missing (npm ci --prefix integration/browser)")
			break
		}
	}
	if len(missing) == 0 {
		return
	}
	msg := "browser tests need: " + strings.Join(missing, "; ")
	if os.Getenv(requireBrowserEnv) == "1" {
		t.Fatal(msg)
	}
	t.Skip("skipped: " + msg)
}

// browser is a headless Chromium page driven by browser/driver.mjs. Its
// methods fail the test on any error; call them from the test goroutine.
type browser struct {
	t       *testing.T
	cmd     *exec.Cmd
	stdin   io.WriteCloser
	answers chan driverAnswer
	log     *logBuffer
	seq     int
	exited  chan struct{}
	// Version is Chromium's version.
	Version string
}

type driverAnswer struct {
	ID    int             `json:"id"`
	OK    bool            `json:"ok"`
	Value json.RawMessage `json:"value"`
	Error string          `json:"error"`
}

// startBrowser starts the driver (node + Chromium with a fresh profile); it
// is closed when t ends, and its log (the page's console) is shown if t
// failed.
func startBrowser(t *testing.T) *browser {
	t.Helper()
	requireBrowserDeps(t)
	cmd := exec.Command("node", "driver.mjs")
	cmd.Dir = browserDir
	cmd.Env = append(os.Environ(), "CHROMIUM="+chromiumPath())
	b := &browser{t: t, cmd: cmd, answers: make(chan driverAnswer, 1), log: &logBuffer{}, exited: make(chan struct{})}
	cmd.Stderr = b.log
	var err error
	if b.stdin, err = cmd.StdinPipe(); err != nil {
		t.Fatal(err)
	}
	stdout, err := cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	if err := cmd.Start(); err != nil {
		t.Fatalf("start the browser driver: %v", err)
	}
	var readers sync.WaitGroup
	readers.Go(func() { // owned by the cleanup below
		defer close(b.answers)
		sc := bufio.NewScanner(stdout)
		sc.Buffer(make([]byte, 64<<10), 64<<20)
		for sc.Scan() {
			var a driverAnswer
			if err := json.Unmarshal(sc.Bytes(), &a); err != nil {
				fmt.Fprintf(b.log, "driver: bad answer %q: %v\n", sc.Text(), err)
				continue
			}
			b.answers <- a
		}
	})
	go func() { // owned by the cleanup below
		readers.Wait()
		_ = cmd.Wait()
		close(b.exited)
	}()
	t.Cleanup(func() {
		_, _ = b.send("close", nil, 10*time.Second)
		_ = b.stdin.Close()
		go func() { // ends when the driver's stdout does
			for range b.answers { // late answers nobody waits for
			}
		}()
		select {
		case <-b.exited:
		case <-time.After(15 * time.Second):
			_ = cmd.Process.Kill()
			<-b.exited
		}
		if t.Failed() {
			t.Logf("browser driver log (page console):\n%s", b.log.String())
		}
	})
	// The driver answers id 0 once Chromium runs.
	select {
	case a, ok := <-b.answers:
		if !ok || !a.OK {
			t.Fatalf("browser driver did not start: %s\n%s", a.Error, b.log.String())
		}
		_ = json.Unmarshal(a.Value, &b.Version)
	case <-time.After(browserTimeout):
		t.Fatalf("browser driver did not start within %v:\n%s", browserTimeout, b.log.String())
	}
	return b
}

// send runs one driver command and returns its value.
func (b *browser) send(cmd string, args map[string]any, timeout time.Duration) (json.RawMessage, error) {
	b.seq++
	msg := map[string]any{"id": b.seq, "cmd": cmd}
	for k, v := range args {
		msg[k] = v
	}
	line, err := json.Marshal(msg)
	if err != nil {
		return nil, err
	}
	if _, err := b.stdin.Write(append(line, '\n')); err != nil {
		return nil, fmt.Errorf("driver %s: %w", cmd, err)
	}
	deadline := time.After(timeout)
	for {
		select {
		case a, ok := <-b.answers:
			if !ok {
				return nil, fmt.Errorf("driver %s: the driver exited", cmd)
			}
			if a.ID != b.seq {
				continue // a late answer to a command that timed out
			}
			if !a.OK {
				return nil, fmt.Errorf("driver %s: %s", cmd, a.Error)
			}
			return a.Value, nil
		case <-deadline:
			return nil, fmt.Errorf("driver %s: no answer within %v", cmd, timeout)
		}
	}
}

func (b *browser) do(cmd string, args map[string]any, out any) {
	b.t.Helper()
	v, err := b.send(cmd, args, browserTimeout+5*time.Second)
	if err != nil {
		b.t.Fatal(err)
	}
	if out != nil {
		if err := json.Unmarshal(v, out); err != nil {
			b.t.Fatalf("driver %s: decode %s: %v", cmd, v, err)
		}
	}
}

// Goto loads url and fails the test unless it answered 200.
func (b *browser) Goto(url string) {
	b.t.Helper()
	var status int
	b.do("goto", map[string]any{"url": url}, &status)
	if status != http.StatusOK {
		b.t.Fatalf("load %s: got status %d, want 200", url, status)
	}
}

// Reload reloads the page.
func (b *browser) Reload() {
	b.t.Helper()
	b.do("reload", nil, nil)
}

// Eval evaluates a JavaScript expression in the page into out.
func (b *browser) Eval(expr string, out any) {
	b.t.Helper()
	b.do("eval", map[string]any{"expr": expr}, out)
}

// WaitFor polls a JavaScript expression until it is truthy (at most
// browserTimeout) and decodes its value into out.
func (b *browser) WaitFor(expr string, out any) {
	b.t.Helper()
	b.do("waitFor", map[string]any{"expr": expr, "timeoutMs": browserTimeout.Milliseconds()}, out)
}

// SetInputFiles picks the file at path in the file input sel.
func (b *browser) SetInputFiles(sel, path string) {
	b.t.Helper()
	b.do("setInputFiles", map[string]any{"selector": sel, "path": path}, nil)
}

// Text returns the rendered text of the first element matching sel.
func (b *browser) Text(sel string) string {
	b.t.Helper()
	var s string
	b.do("text", map[string]any{"selector": sel}, &s)
	return s
}

// Screenshot saves the whole page as a PNG.
func (b *browser) Screenshot(path string) {
	b.t.Helper()
	b.do("screenshot", map[string]any{"path": path, "fullPage": true}, nil)
}

// browserBytes returns the bytes browser/page/harness.js makes for seed
// and size (makeBytes: the low byte of each xorshift32 state).
func browserBytes(seed uint32, size int) []byte {
	b := make([]byte, size)
	x := seed
	if x == 0 {
		x = 1
	}
	for i := range b {
		x ^= x << 13
		x ^= x >> 17
		x ^= x << 5
		b[i] = byte(x)
	}
	return b
}

// pageServer serves the test page (browser/page), tus-js-client's browser
// bundle from node_modules, and an esbuild bundle of @uppy/core and
// @uppy/tus, on its own loopback origin.
type pageServer struct {
	// URL is the page's origin, http://127.0.0.1:port.
	URL string

	uppyOnce  sync.Once
	uppyPath  string
	uppyError error
}

// startPageServer starts a page server closed when t ends.
func startPageServer(t *testing.T) *pageServer {
	t.Helper()
	p := &pageServer{uppyPath: filepath.Join(t.TempDir(), "uppy.js")}
	mux := http.NewServeMux()
	page := func(name, ctype string) http.HandlerFunc {
		return func(w http.ResponseWriter, r *http.Request) {
			w.Header().Set("Content-Type", ctype)
			w.Header().Set("Cache-Control", "no-store")
			http.ServeFile(w, r, filepath.Join(browserDir, "page", name))
		}
	}
	mux.Handle("GET /{$}", page("index.html", "text/html; charset=utf-8"))
	mux.Handle("GET /harness.js", page("harness.js", "text/javascript; charset=utf-8"))
	mux.Handle("GET /node_modules/tus-js-client/dist/", http.StripPrefix("/node_modules/",
		http.FileServerFS(os.DirFS(filepath.Join(browserDir, "node_modules")))))
	mux.HandleFunc("GET /build/uppy.js", func(w http.ResponseWriter, r *http.Request) {
		p.uppyOnce.Do(func() {
			cmd := exec.Command("node", "build.mjs", p.uppyPath)
			cmd.Dir = browserDir
			if out, err := cmd.CombinedOutput(); err != nil {
				p.uppyError = fmt.Errorf("node build.mjs: %w\n%s", err, out)
			}
		})
		if p.uppyError != nil {
			http.Error(w, p.uppyError.Error(), http.StatusInternalServerError)
			return
		}
		w.Header().Set("Content-Type", "text/javascript; charset=utf-8")
		http.ServeFile(w, r, p.uppyPath)
	})
	srv := httptest.NewServer(mux)
	t.Cleanup(srv.Close)
	p.URL = srv.URL
	return p
}

// scenario is one run of the test page's harness (see harness.js).
type scenario struct {
	Mode     string // "tus" or "uppy"
	Endpoint string
	Token    string
	Seed     uint32
	Size     int
	Chunk    int64 // 0: one PATCH
}

// ScenarioURL returns the page URL that runs s.
func (p *pageServer) ScenarioURL(s scenario) string {
	q := url.Values{}
	q.Set("mode", s.Mode)
	q.Set("endpoint", s.Endpoint)
	q.Set("token", s.Token)
	q.Set("seed", strconv.FormatUint(uint64(s.Seed), 10))
	q.Set("size", strconv.Itoa(s.Size))
	if s.Chunk > 0 {
		q.Set("chunk", strconv.FormatInt(s.Chunk, 10))
	}
	return p.URL + "/?" + q.Encode()
}

// harnessState is window.harness.
type harnessState struct {
	State       string            `json:"state"`
	Mode        string            `json:"mode"`
	Resumed     bool              `json:"resumed"`
	Previous    []string          `json:"previous"`
	UploadURL   string            `json:"uploadURL"`
	Progress    int64             `json:"progress"`
	Requests    []harnessRequest  `json:"requests"`
	Responses   []harnessResponse `json:"responses"`
	StatusPolls int               `json:"statusPolls"`
	Status      *gateway.Status   `json:"status"`
	Error       *string           `json:"error"`
}

type harnessRequest struct {
	Method string  `json:"method"`
	URL    string  `json:"url"`
	Offset *string `json:"offset"`
}

type harnessResponse struct {
	Request      int     `json:"request"` // index in harnessState.Requests
	Method       string  `json:"method"`
	URL          string  `json:"url"`
	Status       int     `json:"status"`
	Location     *string `json:"location"`
	Offset       *string `json:"offset"`
	Length       *string `json:"length"`
	TusResumable *string `json:"tusResumable"`
}

// harness returns the page's window.harness.
func (b *browser) harness() harnessState {
	b.t.Helper()
	var h harnessState
	b.Eval("window.harness", &h)
	return h
}

// waitHarnessDone waits until the page's upload is delivered (or failed)
// and returns the final state; it fails the test unless it was delivered.
func (b *browser) waitHarnessDone() harnessState {
	b.t.Helper()
	if _, err := b.send("waitFor", map[string]any{
		"expr":      `window.harness && ["delivered", "failed", "error"].includes(window.harness.state)`,
		"timeoutMs": browserTimeout.Milliseconds(),
	}, browserTimeout+5*time.Second); err != nil {
		h := b.harness()
		b.t.Fatalf("the page's upload did not finish: %v; state %s, error %s, progress %d", err, h.State, ptrString(h.Error), h.Progress)
	}
	h := b.harness()
	if h.State != "delivered" {
		b.t.Fatalf("the page's upload: got state %s (error %s, status %+v), want delivered", h.State, ptrString(h.Error), h.Status)
	}
	return h
}

// checkTusHeadersReadable asserts that every tus response the page's
// script saw exposed the headers tus clients need (a cross-origin page
// reads only the headers the gateway lists in Access-Control-Expose-Headers).
func checkTusHeadersReadable(t *testing.T, h harnessState) {
	t.Helper()
	if len(h.Responses) == 0 {
		t.Fatal("the page recorded no tus response")
	}
	for i, r := range h.Responses {
		if r.Status >= 400 || r.Status == 0 {
			continue
		}
		if r.TusResumable == nil {
			t.Errorf("response %d (%s %d): Tus-Resumable not readable by the page", i, r.Method, r.Status)
		}
		switch r.Method {
		case http.MethodPost:
			if r.Location == nil {
				t.Errorf("response %d (POST %d): Location not readable by the page", i, r.Status)
			}
		case http.MethodHead:
			if r.Offset == nil || r.Length == nil {
				t.Errorf("response %d (HEAD %d): Upload-Offset %s, Upload-Length %s: want both readable", i, r.Status, ptrString(r.Offset), ptrString(r.Length))
			}
		case http.MethodPatch:
			if r.Offset == nil {
				t.Errorf("response %d (PATCH %d): Upload-Offset not readable by the page", i, r.Status)
			}
		}
	}
}

// checkCORSExposed sends a HEAD with Origin to an upload and asserts the
// gateway allows origin and exposes the tus headers.
func checkCORSExposed(t *testing.T, gw *gatewayProc, uploadURL, origin string) {
	t.Helper()
	req, err := http.NewRequestWithContext(t.Context(), http.MethodHead, uploadURL, nil)
	if err != nil {
		t.Fatal(err)
	}
	req.Header.Set("Tus-Resumable", "1.0.0")
	req.Header.Set("Origin", origin)
	resp, err := gw.HTTP.Do(req)
	if err != nil {
		t.Fatalf("HEAD %s: %v", uploadURL, err)
	}
	resp.Body.Close()
	if got := resp.Header.Get("Access-Control-Allow-Origin"); got != origin {
		t.Errorf("Access-Control-Allow-Origin: got %q, want %q", got, origin)
	}
	exposed := map[string]bool{}
	for _, h := range strings.Split(resp.Header.Get("Access-Control-Expose-Headers"), ",") {
		exposed[http.CanonicalHeaderKey(strings.TrimSpace(h))] = true
	}
	for _, h := range []string{"Location", "Upload-Offset", "Upload-Length", "Tus-Resumable", "Upload-Expires"} {
		if !exposed[h] {
			t.Errorf("Access-Control-Expose-Headers %q: %s missing", resp.Header.Get("Access-Control-Expose-Headers"), h)
		}
	}
}

// tusdCounter reads a tusd_* counter from the gateway's /metrics.
func tusdCounter(t *testing.T, gw *gatewayProc, name string) float64 {
	t.Helper()
	req, err := http.NewRequestWithContext(t.Context(), http.MethodGet, gw.URL+"/metrics", nil)
	if err != nil {
		t.Fatal(err)
	}
	resp, err := gw.HTTP.Do(req)
	if err != nil {
		t.Fatalf("GET /metrics: %v", err)
	}
	defer resp.Body.Close()
	sc := bufio.NewScanner(resp.Body)
	sc.Buffer(make([]byte, 64<<10), 1<<20)
	for sc.Scan() {
		if v, ok := strings.CutPrefix(sc.Text(), name+" "); ok {
			f, err := strconv.ParseFloat(strings.TrimSpace(v), 64)
			if err != nil {
				t.Fatalf("/metrics %s: %v", sc.Text(), err)
			}
			return f
		}
	}
	t.Fatalf("/metrics has no %s", name)
	return 0
}

// faultProxy is a TCP proxy on 127.0.0.1 between the browser and the
// gateway that can cut the network once a number of bytes went from the
// browser to the gateway: either every connection is closed and the next
// ones refused (a network drop), or the crossing connection stalls until
// Release (an upload caught mid-flight).
type faultProxy struct {
	// URL is the proxy's base URL, http://127.0.0.1:port.
	URL string

	ln     net.Listener
	target string
	wg     sync.WaitGroup

	mu       sync.Mutex
	conns    map[net.Conn]struct{}
	sent     int64 // browser → gateway bytes
	trigger  int64 // 0: never
	stall    bool  // at trigger: stall (else cut)
	refuse   int   // connections still to refuse after a cut
	refused  int
	fired    chan struct{} // closed when the fault happened
	released chan struct{} // closed by Release
	closed   bool
}

// startFaultProxy starts a proxy to target (host:port), closed when t ends.
func startFaultProxy(t *testing.T, target string) *faultProxy {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	p := &faultProxy{
		URL: "http://" + ln.Addr().String(), ln: ln, target: target,
		conns: map[net.Conn]struct{}{}, fired: make(chan struct{}), released: make(chan struct{}),
	}
	p.wg.Go(p.accept)
	t.Cleanup(p.close)
	return p
}

// CutAfter makes the proxy close every connection once n bytes went from
// the browser to the gateway, then refuse the next refuse connections
// (accepted and closed at once).
func (p *faultProxy) CutAfter(n int64, refuse int) {
	p.mu.Lock()
	defer p.mu.Unlock()
	p.trigger, p.stall, p.refuse = n, false, refuse
}

// StallAfter makes the connection that carries the n-th byte from the
// browser stop forwarding (in both directions) until Release, which then
// closes it.
func (p *faultProxy) StallAfter(n int64) {
	p.mu.Lock()
	defer p.mu.Unlock()
	p.trigger, p.stall = n, true
}

// Fired is closed once the fault happened.
func (p *faultProxy) Fired() <-chan struct{} { return p.fired }

// Refused returns how many connections were refused after a cut.
func (p *faultProxy) Refused() int {
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.refused
}

// Sent returns the bytes forwarded from the browser to the gateway.
func (p *faultProxy) Sent() int64 {
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.sent
}

// Release ends a stall: the stalled connection is closed.
func (p *faultProxy) Release() {
	p.mu.Lock()
	defer p.mu.Unlock()
	select {
	case <-p.released:
	default:
		close(p.released)
	}
}

func (p *faultProxy) accept() {
	for {
		c, err := p.ln.Accept()
		if err != nil {
			return
		}
		p.mu.Lock()
		if p.closed {
			p.mu.Unlock()
			_ = c.Close()
			return
		}
		if p.refuse > 0 && p.isFired() {
			p.refuse--
			p.refused++
			p.mu.Unlock()
			if tc, ok := c.(*net.TCPConn); ok {
				_ = tc.SetLinger(0) // a reset, as from a dead route
			}
			_ = c.Close()
			continue
		}
		p.conns[c] = struct{}{}
		p.mu.Unlock()
		p.wg.Go(func() { p.serve(c) })
	}
}

func (p *faultProxy) isFired() bool {
	select {
	case <-p.fired:
		return true
	default:
		return false
	}
}

// serve pipes one browser connection to a new gateway connection.
func (p *faultProxy) serve(c net.Conn) {
	defer p.drop(c)
	up, err := net.Dial("tcp", p.target)
	if err != nil {
		return
	}
	p.mu.Lock()
	if p.closed {
		p.mu.Unlock()
		_ = up.Close()
		return
	}
	p.conns[up] = struct{}{}
	p.mu.Unlock()
	defer p.drop(up)

	var pipes sync.WaitGroup
	pipes.Go(func() { // gateway → browser
		_, _ = io.Copy(c, up)
		_ = c.Close()
	})
	buf := make([]byte, 32<<10)
	for {
		n, err := c.Read(buf)
		if n > 0 {
			forward, action := p.account(int64(n))
			if forward > 0 {
				if _, werr := up.Write(buf[:forward]); werr != nil {
					break
				}
			}
			if action == "cut" {
				p.cutAll()
				break
			}
			if action == "stall" {
				<-p.released
				break
			}
		}
		if err != nil {
			break
		}
	}
	_ = up.Close()
	_ = c.Close()
	pipes.Wait()
}

// account counts n bytes read from the browser and returns how many to
// forward and the fault to apply after them ("", "cut" or "stall").
func (p *faultProxy) account(n int64) (int64, string) {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.trigger <= 0 || p.isFired() || p.sent+n < p.trigger {
		p.sent += n
		return n, ""
	}
	forward := p.trigger - p.sent
	p.sent = p.trigger
	close(p.fired)
	if p.stall {
		return forward, "stall"
	}
	return forward, "cut"
}

// cutAll closes every connection, as a dropped network would.
func (p *faultProxy) cutAll() {
	p.mu.Lock()
	defer p.mu.Unlock()
	for c := range p.conns {
		if tc, ok := c.(*net.TCPConn); ok {
			_ = tc.SetLinger(0)
		}
		_ = c.Close()
	}
}

func (p *faultProxy) drop(c net.Conn) {
	p.mu.Lock()
	defer p.mu.Unlock()
	delete(p.conns, c)
}

func (p *faultProxy) close() {
	p.mu.Lock()
	p.closed = true
	for c := range p.conns {
		_ = c.Close()
	}
	p.mu.Unlock()
	p.Release()
	_ = p.ln.Close()
	p.wg.Wait()
}

// demoStack is tusgate with the demo's routes assembled in-process (what
// `tusgate --demo` serves): a gateway on the embedded store, a forwarder to
// the demo's emulator, and the demo page, on one loopback origin.
type demoStack struct {
	// URL is the origin, http://127.0.0.1:port.
	URL  string
	Demo *demo.Demo

	mu       sync.Mutex
	requests []string // "METHOD /path", in arrival order
}

// Requests returns the requests the stack received, as "METHOD /path".
func (s *demoStack) Requests() []string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return slices.Clone(s.requests)
}

// startDemoStack starts a demo stack stopped when t ends.
func startDemoStack(t *testing.T) *demoStack {
	t.Helper()
	d, err := demo.Start(t.Context(), nil)
	if err != nil {
		t.Fatal(err)
	}
	dir := t.TempDir()
	st, err := boltstore.Open(filepath.Join(dir, "state.db"))
	if err != nil {
		d.Close()
		t.Fatal(err)
	}
	var fwd *forwarder.Forwarder
	gw, err := gateway.New(gateway.Config{
		DataDir:       filepath.Join(dir, "uploads"),
		MaxSize:       demo.MaxSize,
		Plan:          store.Plan{FirstPartSize: store.MinPartSize, PartSize: partSize},
		TokenRequired: true,
	}, st, notifyFunc(func(id string) { fwd.Notify(id) }))
	if err != nil {
		d.Close()
		_ = st.Close()
		t.Fatal(err)
	}
	fwd = forwarder.New(forwarder.Config{Owner: "browser-demo"}, st, gw.Source(), apivideo.New(d.APIVideoURL()))
	ctx, cancel := context.WithCancel(context.WithoutCancel(t.Context()))
	var wg sync.WaitGroup
	wg.Go(func() { _ = fwd.Run(ctx) })
	stack := &demoStack{Demo: d}
	h := d.Wrap(gw.Handler(), "/files/")
	srv := httptest.NewUnstartedServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		stack.mu.Lock()
		stack.requests = append(stack.requests, r.Method+" "+r.URL.Path)
		stack.mu.Unlock()
		h.ServeHTTP(w, r)
	}))
	srv.Config.BaseContext = gw.BaseContext(ctx)
	srv.Config.RegisterOnShutdown(gw.Shutdown)
	srv.Start()
	t.Cleanup(func() {
		gw.Shutdown()
		srv.CloseClientConnections()
		srv.Close()
		cancel()
		wg.Wait()
		d.Close()
		if err := st.Close(); err != nil {
			t.Errorf("close the state store: %v", err)
		}
	})
	stack.URL = srv.URL
	return stack
}

// startDemoBinary starts `tusgate --demo` on a free loopback port and a
// temporary data dir, killed when t ends.
func startDemoBinary(t *testing.T) *gatewayProc {
	t.Helper()
	port := strconv.Itoa(freePort(t))
	tr := &http.Transport{}
	hc := &http.Client{Transport: tr, Timeout: time.Minute}
	gw := &gatewayProc{
		t:         t,
		URL:       "http://127.0.0.1:" + port,
		Endpoint:  "http://127.0.0.1:" + port + "/files/",
		DataDir:   t.TempDir(),
		HTTP:      hc,
		transport: tr,
		env:       hermeticEnv(),
		out:       &logBuffer{},
	}
	gw.args = []string{"--demo", "--listen", "127.0.0.1:" + port, "--data-dir", gw.DataDir, "--log-level", "debug"}
	t.Cleanup(func() {
		if gw.cur != nil {
			gw.signalAndWait(syscall.SIGKILL)
		}
		tr.CloseIdleConnections()
		if t.Failed() {
			t.Logf("tusgate --demo output:\n%s", gw.out.String())
		}
	})
	gw.start()
	return gw
}

// getJSON GETs path on gw and decodes its 200 JSON answer into out.
func getJSON(t *testing.T, gw *gatewayProc, path string, out any) {
	t.Helper()
	req, err := http.NewRequestWithContext(t.Context(), http.MethodGet, gw.URL+path, nil)
	if err != nil {
		t.Fatal(err)
	}
	resp, err := gw.HTTP.Do(req)
	if err != nil {
		t.Fatalf("GET %s: %v", path, err)
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		t.Fatalf("GET %s: got %s, want 200", path, resp.Status)
	}
	if err := json.NewDecoder(resp.Body).Decode(out); err != nil {
		t.Fatalf("GET %s: decode: %v", path, err)
	}
}

type notifyFunc func(id string)

func (f notifyFunc) Notify(id string) { f(id) }
