package apivideo

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"math"
	"net"
	"net/http"
	"net/url"
	"strconv"
	"strings"
	"time"
)

// maxErrorBody caps how much of an error answer is read and kept.
const maxErrorBody = 4 << 10

// Error is a non-2xx answer from api.video, parsed from its JSON problem
// body ({"type","title","name","status","detail"}).
type Error struct {
	// StatusCode is the HTTP status.
	StatusCode int
	// Type is the problem's type URL
	// (https://docs.api.video/reference/<slug>).
	Type string
	// Title is the problem's human-readable summary.
	Title string
	// Name is the offending field, if any.
	Name string
	// Detail is an optional longer explanation.
	Detail string
	// RetryAfter is how long to wait before the next request, from the
	// X-RateLimit-Retry-After header (seconds); it matters on 429.
	RetryAfter time.Duration
	// Body is the start of the answer (at most 4 KiB) when it was not a
	// JSON problem.
	Body string
}

// Error describes the answer in one line.
func (e *Error) Error() string {
	var b strings.Builder
	fmt.Fprintf(&b, "api.video answered %d", e.StatusCode)
	switch {
	case e.Title != "":
		b.WriteString(": " + e.Title)
	case e.Body != "":
		body := e.Body
		if len(body) > 200 {
			body = body[:200] + "…"
		}
		fmt.Fprintf(&b, ": %q", body)
	default:
		b.WriteString(": " + http.StatusText(e.StatusCode))
	}
	if e.Name != "" {
		fmt.Fprintf(&b, " (%s)", e.Name)
	}
	if e.Detail != "" {
		b.WriteString(": " + e.Detail)
	}
	return b.String()
}

// IsTransient reports whether err is worth retrying: a network error, a
// timeout, a cut answer, a 5xx or a 429 (wait [RetryAfter] first). Every
// other api.video answer (4xx) is permanent, as are invalid requests, a
// failing part Body and a canceled context.
func IsTransient(err error) bool {
	if err == nil {
		return false
	}
	var apiErr *Error
	if errors.As(err, &apiErr) {
		return apiErr.StatusCode >= 500 || apiErr.StatusCode == http.StatusTooManyRequests
	}
	var src *sourceError
	if errors.As(err, &src) || errors.Is(err, context.Canceled) || errors.Is(err, ErrInvalidRequest) {
		return false
	}
	var reqErr *requestError
	if errors.As(err, &reqErr) {
		return true
	}
	var netErr net.Error
	return errors.As(err, &netErr) || errors.Is(err, context.DeadlineExceeded) ||
		errors.Is(err, io.ErrUnexpectedEOF)
}

// RetryAfter returns how long api.video asked to wait when err is a 429
// answer (possibly 0 if it sent no X-RateLimit-Retry-After), and false for
// any other error.
func RetryAfter(err error) (time.Duration, bool) {
	var apiErr *Error
	if errors.As(err, &apiErr) && apiErr.StatusCode == http.StatusTooManyRequests {
		return apiErr.RetryAfter, true
	}
	return 0, false
}

// parseRetryAfter reads X-RateLimit-Retry-After (seconds), falling back to
// the standard Retry-After header.
func parseRetryAfter(h http.Header) time.Duration {
	for _, name := range []string{"X-RateLimit-Retry-After", "Retry-After"} {
		v := strings.TrimSpace(h.Get(name))
		if v == "" {
			continue
		}
		secs, err := strconv.ParseFloat(v, 64)
		if err != nil || secs < 0 || math.IsNaN(secs) || secs > 1e9 {
			continue
		}
		return time.Duration(secs * float64(time.Second))
	}
	return 0
}

// redactor replaces secrets (an upload token in a URL) with "REDACTED" in
// error texts.
type redactor struct{ secrets []string }

func newRedactor(secret string) redactor {
	if secret == "" {
		return redactor{}
	}
	r := redactor{secrets: []string{secret}}
	for _, v := range []string{url.QueryEscape(secret), url.PathEscape(secret)} {
		if v != secret {
			r.secrets = append(r.secrets, v)
		}
	}
	return r
}

func (r redactor) scrub(s string) string {
	for _, secret := range r.secrets {
		s = strings.ReplaceAll(s, secret, "REDACTED")
	}
	return s
}

// scrubURLError returns err with the URL of a top-level *url.Error
// scrubbed, so errors.As(err, **url.Error) does not hand the secret out.
func (r redactor) scrubURLError(err error) error {
	if ue, ok := err.(*url.Error); ok {
		return &url.Error{Op: ue.Op, URL: r.scrub(ue.URL), Err: ue.Err}
	}
	return err
}

// wrap prefixes err with op and scrubs the result.
func (r redactor) wrap(op string, err error) error {
	return &scrubbedError{msg: r.scrub(op + ": " + err.Error()), err: r.scrubURLError(err)}
}

// requestError wraps a failure in transit (no answer, or a cut one).
func (r redactor) requestError(err error) error {
	return &requestError{scrubbedError{msg: r.scrub(err.Error()), err: r.scrubURLError(err)}}
}

// apiError reads a non-2xx answer into an *Error.
func (r redactor) apiError(resp *http.Response) error {
	e := &Error{StatusCode: resp.StatusCode, RetryAfter: parseRetryAfter(resp.Header)}
	data, _ := io.ReadAll(io.LimitReader(resp.Body, maxErrorBody))
	var p struct {
		Type   string `json:"type"`
		Title  string `json:"title"`
		Name   string `json:"name"`
		Detail string `json:"detail"`
	}
	if err := json.Unmarshal(data, &p); err == nil && (p.Title != "" || p.Type != "") {
		e.Type, e.Title, e.Name, e.Detail = r.scrub(p.Type), r.scrub(p.Title), r.scrub(p.Name), r.scrub(p.Detail)
	} else {
		e.Body = r.scrub(strings.TrimSpace(string(data)))
	}
	return e
}

// scrubbedError has a scrubbed message and keeps the chain for errors.Is
// and errors.As.
type scrubbedError struct {
	msg string
	err error
}

func (e *scrubbedError) Error() string { return e.msg }
func (e *scrubbedError) Unwrap() error { return e.err }

// requestError is a request that failed in transit: a network error, a
// timeout, or an answer cut short. IsTransient reports it as transient
// unless the part's Body failed or the context was canceled.
type requestError struct{ scrubbedError }

// Timeout reports whether the failure was a timeout.
func (e *requestError) Timeout() bool {
	var t interface{ Timeout() bool }
	return errors.As(e.err, &t) && t.Timeout()
}

// collisionSlug is the problem type api.video answers when a part number
// was already sent for the video.
const collisionSlug = "video-content-range-by-part-part-already-sent"

// IsCollision reports whether api.video refused a part because a part with
// the same number was already accepted for the video.
func IsCollision(err error) bool {
	var e *Error
	return errors.As(err, &e) && e.StatusCode == http.StatusBadRequest && strings.HasSuffix(e.Type, "/"+collisionSlug)
}
