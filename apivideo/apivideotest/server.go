// Package apivideotest runs an emulator of api.video's upload API for tests,
// in the style of net/http/httptest: a real HTTP server on 127.0.0.1 that
// enforces every rule of shared/apivideo-upload.md, so tests fail where
// api.video would fail.
//
// It serves POST /auth/api-key, POST /auth/refresh, POST|GET /upload-tokens,
// GET|DELETE /upload-tokens/{token} and POST /upload?token=…, lets tests
// read back what every video received ([Server.Videos], [Server.Requests])
// and injects faults ([Server.FailNext], [Server.InjectFault],
// [Server.FailRandomly]).
//
// Typical use:
//
//	clock := apivideotest.NewClock(time.Date(2025, 1, 1, 0, 0, 0, 0, time.UTC))
//	srv := apivideotest.NewServer(apivideotest.WithClock(clock.Now))
//	defer srv.Close()
//	token := srv.CreateToken(time.Hour)
//	// … upload to srv.URL with token …
//	clock.Advance(2 * time.Hour) // the token has expired now
//	srv.FailNext(1, apivideotest.StatusFault(503))
//	v, _ := srv.Video(videoID)
//
// # Faults
//
// A [Fault] says what goes wrong with one request: a Delay, an error
// Status (5xx, or 429 with RetryAfter), a connection Cut after some body
// bytes (nothing stored), or a LoseAnswer (the chunk is stored, then the
// connection is closed, so the client cannot know). Program them with:
//
//   - [Server.FailNext](n, f): the next n uploads suffer f;
//   - [Server.InjectFault](hook): hook decides for every request (it sees
//     the token and the part number);
//   - [Server.FailRandomly](p, seed, f): each upload suffers f with
//     probability p, from a seeded generator.
//
// Every request, faulty or not, is recorded in [Server.Requests].
//
// # Choices where api.video is undocumented
//
//   - Chunks that arrive after the completion window get 401 when the
//     token is no longer valid, else 400 ("upload-window-closed").
//   - A videoId that does not exist or belongs to another token gets 404.
//   - GET /upload-tokens/{token} answers 404 for expired tokens as for
//     deleted ones; /auth/api-key and /auth/refresh answer 400 to bad
//     credentials, other endpoints 401.
//   - The rate limit (WithRateLimit) counts POST /upload requests only;
//     every answer carries the X-RateLimit-* headers.
package apivideotest

import (
	"crypto/rand"
	"encoding/json"
	"net/http"
	"net/http/httptest"
	"strconv"
	"strings"
	"sync"
	"time"
)

// Limits of api.video's upload API, enforced by the emulator.
const (
	// MinPartSize is the smallest chunk accepted for any chunk but the last.
	MinPartSize int64 = 5 << 20
	// MaxPartSize is the largest chunk (and the largest whole upload).
	MaxPartSize int64 = 200 << 20
	// MaxParts is the largest number of chunks of one video.
	MaxParts = 10000
	// MaxVideoSize is the largest video.
	MaxVideoSize int64 = 30 << 30
)

const (
	// DefaultAPIKey is the API key the server accepts when WithAPIKeys is
	// not given.
	DefaultAPIKey = "apivideotest-api-key"
	// DefaultCompletionWindow is how long after its first chunk a video
	// accepts more chunks.
	DefaultCompletionWindow = 24 * time.Hour
	// DefaultRateWindow is the rate-limit window when WithRateLimit is not
	// given (the limit is then not enforced).
	DefaultRateWindow = time.Minute

	accessTokenTTL = time.Hour
	// unlimitedRate is the X-RateLimit-Limit announced when no limit is set.
	unlimitedRate = 1_000_000
	// readBufferSize is the buffer the request body is read through.
	readBufferSize = 1 << 20
)

// limits are the size rules; tests of this package lower some of them.
type limits struct {
	minPart, maxPart, maxVideo int64
	maxParts                   int
}

// Option configures a Server.
type Option func(*Server)

// WithClock sets the clock that decides token expiry, the completion
// window and the rate-limit window, and stamps recorded requests (default
// time.Now). See [Clock].
func WithClock(now func() time.Time) Option {
	return func(s *Server) {
		if now != nil {
			s.now = now
		}
	}
}

// WithCompletionWindow sets how long after its first accepted chunk a video
// accepts more chunks, even once its token has expired or was deleted
// (default 24h).
func WithCompletionWindow(d time.Duration) Option {
	return func(s *Server) { s.window = d }
}

// WithRateLimit limits POST /upload to limit requests per window (measured
// on the server's clock, from the first request of the window). Once the
// budget is spent the server answers 429 with X-RateLimit-Retry-After
// until the window ends. Default: unlimited (the headers are still sent).
func WithRateLimit(limit int, window time.Duration) Option {
	return func(s *Server) {
		s.rateLimit = limit
		if window > 0 {
			s.rateWindow = window
		}
	}
}

// WithAPIKeys sets the API keys the token endpoints accept (default
// [DefaultAPIKey]).
func WithAPIKeys(keys ...string) Option {
	return func(s *Server) {
		s.apiKeys = make(map[string]bool, len(keys))
		for _, k := range keys {
			s.apiKeys[k] = true
		}
	}
}

// WithKeepBytes sets whether the server keeps the bytes of every chunk
// (default true). When false it keeps only each chunk's size and SHA-256,
// so benchmarks can push gigabytes; VideoInfo.SHA256 and Bytes are then
// empty.
func WithKeepBytes(keep bool) Option {
	return func(s *Server) { s.keepBytes = keep }
}

// WithHashing sets whether the server hashes the chunks it receives
// (default true). Without it the server keeps only each chunk's size, as
// with WithKeepBytes(false), and every SHA256 it reports is empty.
// SHA-256 takes 0.6 to 0.9 CPU-seconds per GB even with the CPU's SHA
// instructions, and one upload is read and hashed on one core: throughput
// benchmarks that check sizes only turn it off, so that the emulator does
// not cap them below 1 GB/s.
func WithHashing(hash bool) Option {
	return func(s *Server) { s.hash = hash }
}

// Server is a running api.video emulator. Its methods are safe for
// concurrent use.
type Server struct {
	// URL is the base URL of the server (http://127.0.0.1:port), to use
	// as the api.video host.
	URL string

	ts     *httptest.Server
	closed chan struct{} // closed by Close, to release delayed requests

	// Configuration, fixed after NewServer.
	now        func() time.Time
	window     time.Duration
	rateLimit  int
	rateWindow time.Duration
	apiKeys    map[string]bool
	keepBytes  bool
	hash       bool
	limits     limits

	closeOnce     sync.Once
	mu            sync.Mutex
	tokens        map[string]*uploadToken
	tokenSeq      int
	accessTokens  map[string]time.Time // bearer token -> expiry
	refreshTokens map[string]bool
	videos        map[string]*video
	videoList     []*video // creation order
	requests      []Request
	rateStart     time.Time
	rateUsed      int
	faults        faultState
}

// NewServer starts an emulator on 127.0.0.1. Close it when done.
func NewServer(opts ...Option) *Server {
	s := &Server{
		now:           time.Now,
		window:        DefaultCompletionWindow,
		rateWindow:    DefaultRateWindow,
		apiKeys:       map[string]bool{DefaultAPIKey: true},
		keepBytes:     true,
		hash:          true,
		limits:        limits{minPart: MinPartSize, maxPart: MaxPartSize, maxVideo: MaxVideoSize, maxParts: MaxParts},
		tokens:        make(map[string]*uploadToken),
		accessTokens:  make(map[string]time.Time),
		refreshTokens: make(map[string]bool),
		videos:        make(map[string]*video),
		closed:        make(chan struct{}),
	}
	for _, opt := range opts {
		opt(s)
	}
	s.keepBytes = s.keepBytes && s.hash
	s.ts = httptest.NewServer(http.HandlerFunc(s.serveHTTP))
	s.URL = s.ts.URL
	return s
}

// Close shuts the server down, waiting for requests in progress (a
// request held by a Delay fault is cut at once).
func (s *Server) Close() {
	s.closeOnce.Do(func() { close(s.closed) })
	s.ts.Close()
}

// Client returns an HTTP client for the server (its connections are closed
// by Close).
func (s *Server) Client() *http.Client { return s.ts.Client() }

// Request is one request the server received, as recorded on arrival and
// completed when answered.
type Request struct {
	// Seq is the request's index in Requests (0-based arrival order).
	Seq int
	// Method and Path are the request's method and URL path.
	Method, Path string
	// Header is a copy of the request's headers.
	Header http.Header
	// Time is when the request arrived, by the server's clock.
	Time time.Time
	// Token is the upload token of a POST /upload (the emulator is test
	// code: it may keep secrets).
	Token string
	// ContentRange is the Content-Range header of an upload.
	ContentRange string
	// Part is the part number of a "part n/…" Content-Range, else 0.
	Part int
	// VideoID is the videoId form field sent with an upload.
	VideoID string
	// Size is the number of file bytes an upload carried.
	Size int64
	// Status is the status the server answered (or would have answered,
	// when Cut); 0 when the connection was cut before an answer was
	// decided.
	Status int
	// Title is the problem title of an error answer.
	Title string
	// Accepted reports whether the upload's chunk was stored.
	Accepted bool
	// AcceptedVideoID is the video the chunk was stored in.
	AcceptedVideoID string
	// Fault reports whether an injected fault affected the request.
	Fault bool
	// Cut reports whether the connection was closed instead of answered.
	Cut bool
}

// Requests returns every request received so far, in arrival order.
func (s *Server) Requests() []Request {
	s.mu.Lock()
	defer s.mu.Unlock()
	out := make([]Request, len(s.requests))
	copy(out, s.requests)
	return out
}

// exchange is one request being served.
type exchange struct {
	s          *Server
	w          http.ResponseWriter
	r          *http.Request
	seq        int
	at         time.Time // arrival, by the server's clock
	loseAnswer bool      // process the request but cut instead of answering
}

// record updates the request's record under the lock.
func (x *exchange) record(f func(*Request)) {
	x.s.mu.Lock()
	defer x.s.mu.Unlock()
	f(&x.s.requests[x.seq])
}

// reply answers with status and v as JSON (no body when v is nil).
func (x *exchange) reply(status int, v any) {
	x.record(func(r *Request) { r.Status = status })
	if x.loseAnswer {
		x.cut()
		return
	}
	if v == nil {
		x.w.WriteHeader(status)
		return
	}
	x.w.Header().Set("Content-Type", "application/json")
	x.w.WriteHeader(status)
	_ = json.NewEncoder(x.w).Encode(v) // a failed write means the client is gone
}

// fail answers with the problem p.
func (x *exchange) fail(p *problem) {
	x.record(func(r *Request) { r.Title = p.Title })
	x.reply(p.Status, p)
}

// cut closes the connection without answering.
func (x *exchange) cut() {
	x.record(func(r *Request) { r.Cut = true })
	conn, _, err := http.NewResponseController(x.w).Hijack()
	if err != nil {
		panic(http.ErrAbortHandler) // aborts the connection as well
	}
	_ = conn.Close()
}

func (s *Server) serveHTTP(w http.ResponseWriter, r *http.Request) {
	now := s.now()
	upload := r.URL.Path == "/upload"
	rec := Request{Method: r.Method, Path: r.URL.Path, Header: r.Header.Clone(), Time: now}
	if upload {
		rec.Token = r.URL.Query().Get("token")
		rec.ContentRange = r.Header.Get("Content-Range")
		if cr, ok := parseContentRange(rec.ContentRange); ok && cr.form == formParts {
			rec.Part = cr.part
		}
	}

	s.mu.Lock()
	rec.Seq = len(s.requests)
	s.requests = append(s.requests, rec)
	rate := s.takeRateLocked(now, upload && r.Method == http.MethodPost)
	s.mu.Unlock()

	x := &exchange{s: s, w: w, r: r, seq: rec.Seq, at: now}
	rate.setHeaders(w.Header())
	if rate.limited {
		drain(r)
		x.fail(newProblem(http.StatusTooManyRequests, "too-many-requests", "Too many requests.", "",
			"The upload rate limit is reached: retry after "+strconv.Itoa(rate.retryAfter)+" seconds."))
		return
	}

	f := s.pickFault(FaultRequest{
		Seq: rec.Seq, Method: rec.Method, Path: rec.Path, Time: now,
		Token: rec.Token, ContentRange: rec.ContentRange, Part: rec.Part,
	})
	if f != (Fault{}) {
		x.record(func(r *Request) { r.Fault = true })
		if !x.applyFault(f) {
			return
		}
	}
	s.route(x)
}

func (s *Server) route(x *exchange) {
	path, method := x.r.URL.Path, x.r.Method
	allow := func(methods ...string) bool {
		for _, m := range methods {
			if m == method {
				return true
			}
		}
		drain(x.r)
		x.fail(newProblem(http.StatusMethodNotAllowed, "method-not-allowed", "Method is not allowed for this route.", "", ""))
		return false
	}
	switch {
	case path == "/upload":
		if allow(http.MethodPost) {
			s.handleUpload(x)
		}
	case path == "/auth/api-key":
		if allow(http.MethodPost) {
			s.handleAuthAPIKey(x)
		}
	case path == "/auth/refresh":
		if allow(http.MethodPost) {
			s.handleAuthRefresh(x)
		}
	case path == "/upload-tokens":
		if allow(http.MethodGet, http.MethodPost) {
			if method == http.MethodGet {
				s.handleListTokens(x)
			} else {
				s.handleCreateToken(x)
			}
		}
	case strings.HasPrefix(path, "/upload-tokens/") && !strings.Contains(path[len("/upload-tokens/"):], "/"):
		if allow(http.MethodGet, http.MethodDelete) {
			s.handleToken(x, path[len("/upload-tokens/"):])
		}
	default:
		drain(x.r)
		x.fail(newProblem(http.StatusNotFound, "unrecognized-request-url", "Unrecognized request URL.", "", ""))
	}
}

// rateState is the rate-limit outcome of one request.
type rateState struct {
	limit, remaining, retryAfter int
	limited                      bool
}

func (r rateState) setHeaders(h http.Header) {
	h.Set("X-RateLimit-Limit", strconv.Itoa(r.limit))
	h.Set("X-RateLimit-Remaining", strconv.Itoa(r.remaining))
	h.Set("X-RateLimit-Retry-After", strconv.Itoa(r.retryAfter))
}

// takeRateLocked spends one unit of the upload budget when counted is true
// and reports the state for the rate-limit headers.
func (s *Server) takeRateLocked(now time.Time, counted bool) rateState {
	if s.rateStart.IsZero() || !now.Before(s.rateStart.Add(s.rateWindow)) {
		s.rateStart, s.rateUsed = now, 0
	}
	left := s.rateStart.Add(s.rateWindow).Sub(now)
	st := rateState{retryAfter: int((left + time.Second - 1) / time.Second)}
	if s.rateLimit <= 0 {
		st.limit, st.remaining = unlimitedRate, unlimitedRate
		return st
	}
	st.limit = s.rateLimit
	if counted {
		if s.rateUsed >= s.rateLimit {
			st.limited = true
			st.retryAfter = max(st.retryAfter, 1)
			return st
		}
		s.rateUsed++
	}
	st.remaining = s.rateLimit - s.rateUsed
	return st
}

// problem is an api.video error body.
type problem struct {
	Type   string `json:"type"`
	Title  string `json:"title"`
	Name   string `json:"name"`
	Status int    `json:"status"`
	Detail string `json:"detail,omitempty"`
}

func newProblem(status int, slug, title, name, detail string) *problem {
	return &problem{
		Type:   "https://docs.api.video/reference/" + slug,
		Title:  title,
		Name:   name,
		Status: status,
		Detail: detail,
	}
}

// drain reads the rest of the request body so the client sees the answer
// rather than a reset connection.
func drain(r *http.Request) {
	buf := make([]byte, 32<<10)
	for {
		if _, err := r.Body.Read(buf); err != nil {
			return
		}
	}
}

const alnum = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789"

// newID returns prefix followed by n random alphanumerics.
func newID(prefix string, n int) string {
	b := make([]byte, n)
	_, _ = rand.Read(b) // never fails
	for i := range b {
		b[i] = alnum[int(b[i])%len(alnum)]
	}
	return prefix + string(b)
}

// apiTime formats t as api.video does (2020-12-02T10:13:19+00:00).
func apiTime(t time.Time) string { return t.UTC().Format("2006-01-02T15:04:05-07:00") }

// Clock is a manual clock for WithClock: it stands still until Advance or
// Set is called. It is safe for concurrent use.
type Clock struct {
	mu sync.Mutex
	t  time.Time
}

// NewClock returns a clock that reads t.
func NewClock(t time.Time) *Clock { return &Clock{t: t} }

// Now returns the clock's time.
func (c *Clock) Now() time.Time {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.t
}

// Advance moves the clock forward by d.
func (c *Clock) Advance(d time.Duration) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.t = c.t.Add(d)
}

// Set sets the clock to t.
func (c *Clock) Set(t time.Time) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.t = t
}
