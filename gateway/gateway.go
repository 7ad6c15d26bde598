// Package gateway is tusgate's HTTP front: the tus 1.0.0 endpoint (tusd
// embedded as a library over a disk data store), the upload status API and
// the health checks.
//
// The gateway validates upload creation (metadata, api.video token, size),
// records each upload in the state store, and, while bytes arrive, updates
// the record at part boundaries of the upload's plan and on completion,
// telling a Notifier each time. It never forwards bytes itself: the forwarder
// reads them through the Backend (Source).
//
// Token modes: a client that sends the `token` metadata uses delegated mode
// (its api.video upload token, whose deadline the gateway learns from a
// TokenInspector when one is configured, else from `tokenExpiresAt`). When
// TokenRequired is off (an API key is configured) a client that sends no
// token gets a managed upload: the forwarder mints its token.
//
// Failures: when the state store fails, creation, HEAD and PATCH answer 503
// with Retry-After rather than take bytes the gateway cannot track (a PATCH
// crossing a part boundary ends there, its bytes kept); the next HEAD or
// PATCH records what the data file holds. A full disk gives 507 with
// Retry-After, the bytes already written kept. Reconcile repairs records
// after a crash (call it before serving); RunJanitor deletes uploads nobody
// resumed within Config.UploadExpiry (tus expiration extension).
//
// Abuse limits, for an endpoint facing the internet: per client address
// (the connection's peer, or X-Forwarded-For behind Config.TrustedProxies;
// IPv6 per /64) at most Config.MaxOpenUploadsPerClient incomplete uploads
// and Config.CreateRate creations per second (429, with Retry-After for the
// rate), both counted in memory by each instance; an Upload-Metadata header
// of at most Config.MaxMetadataSize bytes (431); a body that stalls for
// Config.NetworkTimeout ends its request (the bytes received are kept); a
// PATCH carrying more bytes than the upload's length gets 413 and nothing
// beyond the length is stored.
package gateway

import (
	"context"
	"errors"
	"fmt"
	"math"
	"net"
	"net/http"
	"net/netip"
	"net/url"
	"regexp"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/promhttp"
	"github.com/tus/tusd/v2/pkg/handler"
	"github.com/tus/tusd/v2/pkg/memorylocker"
	"github.com/tus/tusd/v2/pkg/prometheuscollector"
	"go.uber.org/zap"

	"github.com/tusgate/tusgate/gateway/tuslog"
	"github.com/tusgate/tusgate/store"
)

// Notifier is told when an upload is created, has new durable bytes (a part
// boundary crossed), completes, has its length declared, fails at the
// gateway (token deadline passed before part 1), or is terminated.
// Notify is called on the request's goroutine, sometimes while the upload's
// tus lock is held: it must not block (hand the id off at once).
type Notifier interface{ Notify(id string) }

// ErrUnknownToken is wrapped by TokenInspector.TokenDeadline when api.video
// does not know the token (deleted, expired, never existed).
var ErrUnknownToken = errors.New("unknown upload token")

// TokenInspector looks up an api.video upload token (needs the API key).
type TokenInspector interface {
	// TokenDeadline returns when token expires; zero time means never. It
	// returns an error wrapping ErrUnknownToken when api.video does not know
	// the token (deleted, expired, never existed); any other error is an
	// outage. Errors must not contain the token.
	TokenDeadline(ctx context.Context, token string) (time.Time, error)
}

// Config configures a Gateway. The zero value of a field means its default.
type Config struct {
	// Locker serialises requests on one upload. Default: tusd's in-process
	// memorylocker (one instance); use a distributed locker (store/redislock)
	// when several instances share uploads.
	Locker handler.Locker
	// BasePath is the URL path of the tus endpoint. Default "/files/".
	BasePath string
	// Backend holds the upload bytes. Default: tusd's disk store in DataDir
	// (NewDiskBackend).
	Backend Backend
	// DataDir is the directory holding the upload bytes when Backend is nil.
	// Required then; created if missing.
	DataDir string
	// MaxSize is the largest upload accepted, in bytes. Default (0)
	// store.MaxVideoSize. It is also capped at what 10,000 parts of Plan hold.
	MaxSize int64
	// Plan is the part plan given to new uploads. Required (see store.Plan.Validate).
	Plan store.Plan
	// CompletionWindow is how long after part 1's acceptance the rest of an
	// upload may take. Default 24h.
	CompletionWindow time.Duration
	// Grants, when set, requires a signed upload grant (Authorization:
	// Bearer) on every tus request: the creation records the grant's subject
	// as the upload's owner (and its metadata), and HEAD, PATCH, DELETE and
	// the status routes need a grant for that subject (403 otherwise). A
	// grant's max_size and file_types limit the creation. Nil: no grant is
	// needed (anyone who reaches the gateway may upload).
	Grants GrantVerifier
	// AuthHook, when set, is asked before every creation (after the grant);
	// its refusal is the client's 4xx, its silence a 503.
	AuthHook AuthChecker
	// AllowedFileTypes lists the `filetype` prefixes accepted at creation
	// when the grant names none. Default DefaultAllowedFileTypes ("video/");
	// "*" allows any. A creation without a filetype is accepted.
	AllowedFileTypes []string
	// KeepDelivered keeps the bytes of delivered uploads in the Backend;
	// by default PurgeDelivered removes them (api.video has them).
	KeepDelivered bool
	// Webhooks queues webhook events (package webhook) in the records of
	// new uploads, from upload.created on.
	Webhooks bool
	// TokenRequired makes the `token` metadata mandatory at creation
	// (delegated-only mode, no API key configured).
	TokenRequired bool
	// TokenMinLifetime refuses, at creation, a token whose deadline (from
	// Tokens, else `tokenExpiresAt`) is less than this far in the future.
	// Default 0: only expired tokens are refused.
	TokenMinLifetime time.Duration
	// Tokens, when set, looks up every token a client sends at creation (at
	// most TokenLookupTimeout): a token api.video does not know is refused
	// with 403, a failed lookup gives 503 with Retry-After, and a known
	// token's deadline beats `tokenExpiresAt`. Nil (no API key): the deadline
	// is `tokenExpiresAt` when given, else unknown.
	Tokens TokenInspector
	// TokenLookupTimeout bounds each Tokens lookup. Default 5s.
	TokenLookupTimeout time.Duration
	// Registerer, when set, gets tusd's metrics collector (tusd_* series).
	Registerer prometheus.Registerer
	// Gatherer, when set, is served at GET /metrics; nil: /metrics is 404.
	Gatherer prometheus.Gatherer
	// VerboseTusdLogs logs tusd's per-request records (RequestIncoming,
	// ResponseOutgoing, ChunkWriteStart, UploadCreated, …) at Info. Default
	// false: they are logged at Debug; tusd's warnings and errors keep their
	// level either way.
	VerboseTusdLogs bool
	// CORSOrigins lists the origins (scheme://host[:port]) allowed to call
	// the gateway from a browser. Empty means same origin only; "*" allows
	// any origin.
	CORSOrigins []string
	// RespectForwardedHeaders builds the Location of new uploads from
	// X-Forwarded-Host/-Proto and Forwarded (behind a trusted reverse proxy).
	RespectForwardedHeaders bool
	// IdleTimeout is how long an incomplete upload may go without a new byte
	// (the last write to its data file, or its creation while it holds none)
	// before its status reports "stalled": true. A stalled upload stays
	// resumable. Default (0) 1m.
	IdleTimeout time.Duration
	// EventsInterval is how often GET /uploads/{id}/events checks the
	// upload's status for changes. Default 500ms.
	EventsInterval time.Duration
	// UploadExpiry is how long an incomplete upload may go without a new
	// byte (measured as for IdleTimeout) before it expires (tus expiration
	// extension): responses to POST, PATCH and HEAD of an incomplete upload
	// carry the time as Upload-Expires, and ExpireUploads (run by
	// RunJanitor) then deletes its bytes and record. Uploads with every byte
	// received never expire. Default (0) 24h.
	UploadExpiry time.Duration
	// NetworkTimeout bounds each read of a request body (tusd's per-read
	// deadline, renewed after every successful read): a PATCH whose client
	// stops sending for this long ends there, the bytes received so far
	// kept, and tusd answers 500 ERR_READ_TIMEOUT so tus clients retry.
	// Default (0) 60s.
	NetworkTimeout time.Duration
	// MaxOpenUploadsPerClient bounds the incomplete uploads one client
	// address (see TrustedProxies) may have created at a time: one more
	// creation gets 429 "too many open uploads from this address". An upload
	// stops counting once it is complete, failed, terminated or expired. The
	// count is kept in memory by each instance (it starts at zero after a
	// restart; instances behind one load balancer count separately).
	// Default (0) 100; negative: no limit.
	MaxOpenUploadsPerClient int
	// MaxOpenUploadsPerSubject bounds, with Grants, the incomplete uploads
	// one grant subject (user) may have created at a time, counted like
	// MaxOpenUploadsPerClient (in memory, per instance): one more creation
	// gets 429 "too many open uploads for this user". Default (0) 100;
	// negative: no limit.
	MaxOpenUploadsPerSubject int
	// CreateRate bounds upload creations per client address, in creations
	// per second (a token bucket per address holding CreateBurst
	// creations); beyond it, creation gets 429 with Retry-After. Counted in
	// memory by each instance. Default (0) 10; negative: no limit.
	CreateRate float64
	// CreateBurst is how many creations one client address may make at once
	// before CreateRate applies. Default (0) 20.
	CreateBurst int
	// MaxMetadataSize bounds the raw Upload-Metadata header of a creation,
	// in bytes; a larger one gets 431. Default (0) 4096.
	MaxMetadataSize int
	// TrustedProxies lists the reverse proxies whose X-Forwarded-For header
	// names the client for the per-client limits: when the connection's
	// peer is in one of these prefixes, the client address is the rightmost
	// X-Forwarded-For address that is not. Empty (default): the peer's
	// address is the client's and X-Forwarded-For is never trusted. IPv6
	// clients are counted per /64.
	TrustedProxies []netip.Prefix
	// Now returns the current time. Default time.Now.
	Now func() time.Time
	// stallAfter is how long a batched body read waits before the stall
	// timer lowers its socket's mark (lowwater.go); tests change it.
	stallAfter time.Duration
	// Logger receives the gateway's logs (name it, e.g. Named("gateway"));
	// tusd's logs go to Logger.Named("tusd"). Default: no logging.
	Logger *zap.Logger
}

// withDefaults returns c with defaults filled in, or an error listing every
// invalid setting.
func (c Config) withDefaults() (Config, error) {
	if c.EventsInterval <= 0 {
		c.EventsInterval = defaultEventsInterval
	}
	if c.Locker == nil {
		c.Locker = memorylocker.New()
	}
	if c.BasePath == "" {
		c.BasePath = "/files/"
	}
	if !strings.HasSuffix(c.BasePath, "/") {
		c.BasePath += "/"
	}
	if c.MaxSize <= 0 {
		c.MaxSize = store.MaxVideoSize
	}
	if c.CompletionWindow <= 0 {
		c.CompletionWindow = 24 * time.Hour
	}
	if c.IdleTimeout <= 0 {
		c.IdleTimeout = time.Minute
	}
	if c.UploadExpiry <= 0 {
		c.UploadExpiry = 24 * time.Hour
	}
	if c.TokenLookupTimeout <= 0 {
		c.TokenLookupTimeout = 5 * time.Second
	}
	if c.NetworkTimeout <= 0 {
		c.NetworkTimeout = 60 * time.Second
	}
	if c.stallAfter <= 0 {
		c.stallAfter = defaultStallAfter
	}
	if c.MaxOpenUploadsPerClient == 0 {
		c.MaxOpenUploadsPerClient = 100
	}
	if c.MaxOpenUploadsPerSubject == 0 {
		c.MaxOpenUploadsPerSubject = 100
	}
	if c.CreateRate == 0 {
		c.CreateRate = 10
	}
	if c.CreateBurst <= 0 {
		c.CreateBurst = 20
	}
	if c.MaxMetadataSize <= 0 {
		c.MaxMetadataSize = 4096
	}
	proxies := make([]netip.Prefix, 0, len(c.TrustedProxies))
	for _, p := range c.TrustedProxies {
		if p.IsValid() && p.Addr().Is4In6() && p.Bits() >= 96 {
			p = netip.PrefixFrom(p.Addr().Unmap(), p.Bits()-96)
		}
		proxies = append(proxies, p.Masked())
	}
	c.TrustedProxies = proxies
	if c.Now == nil {
		c.Now = time.Now
	}
	if c.Logger == nil {
		c.Logger = zap.NewNop()
	}
	var errs []error
	switch {
	case !strings.HasPrefix(c.BasePath, "/"):
		errs = append(errs, fmt.Errorf("base path %q: must start with /", c.BasePath))
	case c.BasePath == "/", c.BasePath == "/uploads/", c.BasePath == "/healthz/", c.BasePath == "/readyz/", c.BasePath == "/metrics/":
		errs = append(errs, fmt.Errorf("base path %q: clashes with another route", c.BasePath))
	}
	if c.DataDir == "" && c.Backend == nil {
		errs = append(errs, errors.New("data dir: required"))
	}
	if err := c.Plan.Validate(); err != nil {
		errs = append(errs, fmt.Errorf("plan: %w", err))
	}
	if c.TokenMinLifetime < 0 {
		errs = append(errs, fmt.Errorf("token min lifetime %v: must not be negative", c.TokenMinLifetime))
	}
	if _, err := corsConfig(c.CORSOrigins); err != nil {
		errs = append(errs, err)
	}
	if math.IsNaN(c.CreateRate) || math.IsInf(c.CreateRate, 0) {
		errs = append(errs, fmt.Errorf("create rate %v: must be a finite number", c.CreateRate))
	}
	for _, p := range c.TrustedProxies {
		if !p.IsValid() {
			errs = append(errs, errors.New("trusted proxies: invalid prefix"))
		}
	}
	return c, errors.Join(errs...)
}

// maxPlanSize is the largest upload MaxParts parts of p hold.
func maxPlanSize(p store.Plan) int64 {
	return p.End(store.MaxParts)
}

// corsConfig builds tusd's CORS configuration from an origin allowlist.
func corsConfig(origins []string) (*handler.CorsConfig, error) {
	cors := handler.DefaultCorsConfig
	// Browsers let scripts read Upload-Expires (expiration extension),
	// Retry-After (429, 503, 507), WWW-Authenticate (401 grants) and
	// X-Request-ID only when they are exposed.
	cors.ExposeHeaders += ", Upload-Expires, Retry-After, WWW-Authenticate, X-Request-ID"
	if len(origins) == 0 {
		// No CORS headers at all: browsers allow same-origin requests only.
		cors.Disable = true
		return &cors, nil
	}
	var quoted []string
	for _, o := range origins {
		o = strings.TrimSuffix(strings.TrimSpace(o), "/")
		if o == "*" {
			cors.AllowOrigin = regexp.MustCompile(`^.*$`)
			return &cors, nil
		}
		u, err := url.Parse(o)
		if err != nil || (u.Scheme != "http" && u.Scheme != "https") || u.Host == "" || u.Path != "" || u.RawQuery != "" || u.User != nil {
			return nil, fmt.Errorf("CORS origin %q: must be scheme://host[:port] or *", o)
		}
		quoted = append(quoted, regexp.QuoteMeta(strings.ToLower(o)))
	}
	cors.AllowOrigin = regexp.MustCompile(`^(?:` + strings.Join(quoted, "|") + `)$`)
	return &cors, nil
}

// Gateway serves the tus endpoint, the status API and the health checks.
type Gateway struct {
	cfg     Config
	maxSize int64
	st      store.Store
	n       Notifier
	log     *zap.Logger
	be      Backend
	metrics *httpMetrics
	tus     *handler.UnroutedHandler
	locker  handler.Locker
	// releases orders lock release requests after WriteChunk starts (a
	// tusd data race; see releasegate.go).
	releases *releaseGate
	// copyBufs recycles the 1 MiB copy buffers of fast PATCH streams,
	// smallBufs the 8 KiB ones of the others; bufsHeld counts the buffers
	// of both sizes that requests hold.
	copyBufs  sync.Pool
	smallBufs sync.Pool
	bufsHeld  atomic.Int64
	// lowWater counts what fast streams' socket low-water marks did.
	lowWater lowWaterStats
	cors     *handler.CorsConfig
	handler  http.Handler

	// live holds, per upload being received by this process, the durable
	// offset between state-store updates (id → *liveUpload).
	live sync.Map
	// open counts the incomplete uploads of each client address; creates
	// limits the creation rate of each.
	open *openUploads
	// openSubj counts open uploads per grant subject.
	openSubj *openUploads
	creates  *rateLimiter

	mu       sync.Mutex
	shutdown bool
	cancels  []context.CancelCauseFunc
}

// New returns a Gateway storing upload bytes in cfg.DataDir, records in st,
// and telling n about new bytes.
func New(cfg Config, st store.Store, n Notifier) (*Gateway, error) {
	cfg, err := cfg.withDefaults()
	if err != nil {
		return nil, fmt.Errorf("gateway config: %w", err)
	}
	if st == nil || n == nil {
		return nil, errors.New("gateway: store and notifier are required")
	}
	be := cfg.Backend
	if be == nil {
		if be, err = NewDiskBackend(cfg.DataDir); err != nil {
			return nil, fmt.Errorf("gateway: %w", err)
		}
	}
	g := &Gateway{
		cfg:      cfg,
		maxSize:  min(cfg.MaxSize, maxPlanSize(cfg.Plan)),
		st:       st,
		n:        n,
		log:      cfg.Logger,
		be:       be,
		metrics:  newHTTPMetrics(),
		locker:   cfg.Locker,
		releases: newReleaseGate(),
		open:     newOpenUploads(cfg.MaxOpenUploadsPerClient),
		openSubj: newOpenUploads(cfg.MaxOpenUploadsPerSubject),
		creates:  newRateLimiter(cfg.CreateRate, cfg.CreateBurst),
	}
	g.cors, _ = corsConfig(cfg.CORSOrigins)

	ds := &dataStore{g: g}
	composer := handler.NewStoreComposer()
	composer.UseCore(ds)
	composer.UseTerminater(ds)
	composer.UseLengthDeferrer(ds)
	composer.UseLocker(g.releases.locker(g.locker))

	var levels []tuslog.Option
	if !cfg.VerboseTusdLogs {
		levels = append(levels, tuslog.WithLevels(tuslog.QuietLevel))
	}
	g.tus, err = handler.NewUnroutedHandler(handler.Config{
		StoreComposer:           composer,
		BasePath:                cfg.BasePath,
		MaxSize:                 g.maxSize,
		DisableDownload:         true,
		DisableConcatenation:    true,
		Cors:                    g.cors,
		RespectForwardedHeaders: cfg.RespectForwardedHeaders,
		NetworkTimeout:          cfg.NetworkTimeout,
		Logger:                  tuslog.NewLogger(cfg.Logger.Named("tusd"), levels...),
		PreUploadCreateCallback: g.preCreate,
	})
	if err != nil {
		return nil, fmt.Errorf("gateway: tusd handler: %w", err)
	}
	if cfg.Registerer != nil {
		if err := g.metrics.register(cfg.Registerer); err != nil {
			return nil, fmt.Errorf("gateway: register metrics: %w", err)
		}
		if err := cfg.Registerer.Register(prometheuscollector.New(g.tus.Metrics)); err != nil {
			return nil, fmt.Errorf("gateway: register tusd metrics: %w", err)
		}
		for _, c := range g.lowWater.collectors() {
			if err := cfg.Registerer.Register(c); err != nil {
				return nil, fmt.Errorf("gateway: register metrics: %w", err)
			}
		}
	}
	g.handler = g.routes()
	return g, nil
}

// Handler returns the gateway's routes: the tus endpoint at BasePath,
// GET /uploads/{id}, GET /healthz, GET /readyz and, when Config.Gatherer is
// set, GET /metrics.
func (g *Gateway) Handler() http.Handler { return g.handler }

// Source returns read access to received bytes, for the forwarder. The
// disk store also frees the bytes of delivered parts (Discard) unless
// Config.KeepDelivered asks for every byte to stay.
func (g *Gateway) Source() Backend {
	if g.cfg.KeepDelivered {
		return keepBytes{g.be}
	}
	return g.be
}

// keepBytes is a Backend with only Backend's methods: the forwarder finds
// no Discard on it.
type keepBytes struct{ Backend }

// MaxSize returns the largest upload accepted, in bytes: Config.MaxSize
// capped at what 10,000 parts of the plan hold.
func (g *Gateway) MaxSize() int64 { return g.maxSize }

// BaseContext returns a function for http.Server.BaseContext: request
// contexts derive from ctx and are cancelled with handler.ErrServerShutdown
// by Shutdown, which makes tusd end running PATCHes cleanly (the bytes
// already received are kept and the client gets a 503 it can resume from).
//
//	srv := &http.Server{Handler: g.Handler(), BaseContext: g.BaseContext(ctx)}
//	srv.RegisterOnShutdown(g.Shutdown)
func (g *Gateway) BaseContext(ctx context.Context) func(net.Listener) context.Context {
	base, cancel := context.WithCancelCause(ctx)
	g.mu.Lock()
	if g.shutdown {
		cancel(handler.ErrServerShutdown)
	} else {
		g.cancels = append(g.cancels, cancel)
	}
	g.mu.Unlock()
	return func(net.Listener) context.Context { return base }
}

// Shutdown cancels every request context made by BaseContext with
// handler.ErrServerShutdown. Register it with http.Server.RegisterOnShutdown
// so it runs when the server starts shutting down. It is safe to call more
// than once.
func (g *Gateway) Shutdown() {
	g.mu.Lock()
	defer g.mu.Unlock()
	g.shutdown = true
	for _, cancel := range g.cancels {
		cancel(handler.ErrServerShutdown)
	}
	g.cancels = nil
}

// routes registers every route in one place.
func (g *Gateway) routes() http.Handler {
	mux := http.NewServeMux()
	tus := g.withRequestState(advertiseExpiration(g.tus.Middleware(g.tusGuard(http.HandlerFunc(g.tusRouter)))))
	base := g.cfg.BasePath
	mux.Handle(base, http.StripPrefix(base, tus))
	mux.Handle(strings.TrimSuffix(base, "/"), http.StripPrefix(strings.TrimSuffix(base, "/"), tus))
	mux.HandleFunc("GET /uploads/{id}", g.handleStatus)
	mux.HandleFunc("OPTIONS /uploads/{id}", g.handleStatusPreflight)
	mux.HandleFunc("GET /uploads/{id}/events", g.handleEvents)
	mux.HandleFunc("OPTIONS /uploads/{id}/events", g.handleStatusPreflight)
	mux.HandleFunc("GET /healthz", g.handleHealthz)
	mux.HandleFunc("GET /readyz", g.handleReadyz)
	if g.cfg.Gatherer != nil {
		mux.Handle("GET /metrics", promhttp.HandlerFor(g.cfg.Gatherer, promhttp.HandlerOpts{
			ErrorLog:      promLogger{g.log.Named("metrics")},
			ErrorHandling: promhttp.ContinueOnError,
		}))
	}
	return g.observe(mux)
}

// tusRouter dispatches tus requests (after tusd's Middleware and tusGuard)
// to tusd's handlers. GET (download) is not served: the bytes go to
// api.video, not back out.
func (g *Gateway) tusRouter(w http.ResponseWriter, r *http.Request) {
	id := strings.Trim(r.URL.Path, "/")
	if id == "" {
		if r.Method == http.MethodPost {
			g.tus.PostFile(w, r)
			// tusd sends no Location with an error: a client whose creation
			// failed after the upload was created (state store failure,
			// creation-with-upload body too large, cut or too slow) cannot
			// resume it, so it goes at once.
			if rs := requestStateFrom(r.Context()); rs != nil && rs.record != nil && (rs.discard || rs.status >= 400) {
				g.discardCreated(r.Context(), rs.record.ID, rs.status)
			}
			return
		}
		w.Header().Set("Allow", "POST, OPTIONS")
		http.Error(w, "method not allowed", http.StatusMethodNotAllowed)
		return
	}
	switch r.Method {
	case http.MethodHead:
		g.tus.HeadFile(w, r)
	case http.MethodPatch:
		g.tus.PatchFile(w, r)
	case http.MethodDelete:
		g.tus.DelFile(w, r)
	default:
		w.Header().Set("Allow", "HEAD, PATCH, DELETE, OPTIONS")
		http.Error(w, "method not allowed", http.StatusMethodNotAllowed)
	}
}

// promLogger passes promhttp's errors to zap as warnings.
type promLogger struct{ log *zap.Logger }

// Println implements promhttp.Logger.
func (l promLogger) Println(v ...any) {
	l.log.Warn(strings.TrimSuffix(fmt.Sprintln(v...), "\n"))
}
