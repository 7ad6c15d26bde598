package gateway

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"net/http"
	"strconv"
	"strings"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"go.uber.org/zap"
)

// headerRequestID carries a request's id: a client's (or proxy's) when it
// sends a sane one, else one the gateway makes. tusd logs it as requestId.
const headerRequestID = "X-Request-ID"

// maxRequestIDLen bounds a request id taken from a client.
const maxRequestIDLen = 64

type requestIDKey struct{}

// requestID returns the id of the request ctx belongs to, or "".
func requestID(ctx context.Context) string {
	id, _ := ctx.Value(requestIDKey{}).(string)
	return id
}

// logger returns the gateway's logger with the request id of ctx, if any.
func (g *Gateway) logger(ctx context.Context) *zap.Logger {
	if id := requestID(ctx); id != "" {
		return g.log.With(zap.String("requestId", id))
	}
	return g.log
}

// saneRequestID reports whether a client's request id may be used (and
// logged): 1..64 characters of letters, digits, '-', '_', '.', ':'.
func saneRequestID(s string) bool {
	if s == "" || len(s) > maxRequestIDLen {
		return false
	}
	for _, r := range s {
		if !(r >= 'a' && r <= 'z' || r >= 'A' && r <= 'Z' || r >= '0' && r <= '9' || strings.ContainsRune("-_.:", r)) {
			return false
		}
	}
	return true
}

// newRequestID returns 16 random hex digits.
func newRequestID() string {
	var b [8]byte
	_, _ = rand.Read(b[:])
	return hex.EncodeToString(b[:])
}

// httpMetrics are the gateway's request metrics.
type httpMetrics struct {
	requests *prometheus.CounterVec
	duration *prometheus.HistogramVec
	uploads  *prometheus.CounterVec
}

func newHTTPMetrics() *httpMetrics {
	return &httpMetrics{
		requests: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "tusgate_http_requests_total",
			Help: "HTTP requests answered, by route (tus, status, events, healthz, readyz, metrics, other), method and status code.",
		}, []string{"route", "method", "code"}),
		duration: prometheus.NewHistogramVec(prometheus.HistogramOpts{
			Name:    "tusgate_http_request_duration_seconds",
			Help:    "Time to answer HTTP requests, by route and method (a PATCH lasts as long as its body).",
			Buckets: []float64{.005, .025, .1, .5, 2.5, 10, 60, 300, 1800},
		}, []string{"route", "method"}),
		uploads: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "tusgate_uploads_total",
			Help: "Upload lifecycle events seen by the gateway: created, received (every byte in), terminated, expired, failed (at creation or on data loss).",
		}, []string{"event"}),
	}
}

func (m *httpMetrics) register(r prometheus.Registerer) error {
	for _, c := range []prometheus.Collector{m.requests, m.duration, m.uploads} {
		if err := r.Register(c); err != nil {
			return err
		}
	}
	return nil
}

// observe wraps every route: it gives the request an id (the client's
// X-Request-ID when sane, else a new one) that the response echoes and
// every log line of the request carries, counts the request and its
// duration by route, and logs one line per request at debug level (with
// the upload id for the tus and status routes).
func (g *Gateway) observe(next http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		start := time.Now()
		id := r.Header.Get(headerRequestID)
		if !saneRequestID(id) {
			id = newRequestID()
			r.Header.Set(headerRequestID, id)
		}
		w.Header().Set(headerRequestID, id)
		cw := &codeWriter{ResponseWriter: w}
		next.ServeHTTP(cw, r.WithContext(context.WithValue(r.Context(), requestIDKey{}, id)))
		route, upload := g.route(r)
		code := cw.code
		if code == 0 {
			code = http.StatusOK
		}
		elapsed := time.Since(start)
		g.metrics.requests.WithLabelValues(route, r.Method, strconv.Itoa(code)).Inc()
		g.metrics.duration.WithLabelValues(route, r.Method).Observe(elapsed.Seconds())
		if ce := g.log.Check(zap.DebugLevel, "request"); ce != nil {
			fields := []zap.Field{zap.String("requestId", id), zap.String("method", r.Method), zap.String("route", route),
				zap.Int("status", code), zap.Duration("duration", elapsed)}
			if upload != "" {
				fields = append(fields, zap.String("id", upload))
			}
			ce.Write(fields...)
		}
	})
}

// route names the route of r for metrics, and the upload id it is about.
func (g *Gateway) route(r *http.Request) (route, upload string) {
	p := r.URL.Path
	switch {
	case strings.HasPrefix(p, g.cfg.BasePath) || p == strings.TrimSuffix(g.cfg.BasePath, "/"):
		upload = strings.Trim(strings.TrimPrefix(p, g.cfg.BasePath), "/")
		if len(upload) > 128 {
			upload = ""
		}
		return "tus", upload
	case strings.HasPrefix(p, "/uploads/"):
		rest := strings.TrimPrefix(p, "/uploads/")
		if id, ok := strings.CutSuffix(rest, "/events"); ok {
			return "events", id
		}
		if len(rest) > 128 {
			rest = ""
		}
		return "status", rest
	case p == "/healthz", p == "/readyz", p == "/metrics":
		return strings.TrimPrefix(p, "/"), ""
	}
	return "other", ""
}

// codeWriter records the status code of a response. It keeps Unwrap, so
// http.ResponseController (tusd's read deadlines, event-stream flushes)
// still reaches the connection.
type codeWriter struct {
	http.ResponseWriter
	code int
}

// WriteHeader implements http.ResponseWriter.
func (c *codeWriter) WriteHeader(code int) {
	if c.code == 0 && code >= 200 {
		c.code = code
	}
	c.ResponseWriter.WriteHeader(code)
}

// Write implements http.ResponseWriter.
func (c *codeWriter) Write(b []byte) (int, error) {
	if c.code == 0 {
		c.code = http.StatusOK
	}
	return c.ResponseWriter.Write(b)
}

// Unwrap returns the wrapped ResponseWriter.
func (c *codeWriter) Unwrap() http.ResponseWriter { return c.ResponseWriter }
