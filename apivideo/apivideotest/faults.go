package apivideotest

import (
	"io"
	"math/rand/v2"
	"net/http"
	"strconv"
	"time"
)

// Fault is what the server does wrong with one request. The zero Fault
// does nothing; fields combine (a Delay happens first). Build one with the
// helpers ([StatusFault], [RateLimitFault], [CutFault], [LostAnswerFault],
// [DelayFault]) or by hand.
type Fault struct {
	// Delay holds the request this long (real time) before anything else.
	// The request is cut if the client gives up meanwhile (noticed only
	// once its body has been read, a limit of net/http) or the server
	// closes.
	Delay time.Duration
	// Status, when non-zero, answers with this status and a JSON problem
	// instead of handling the request (the body is read and discarded
	// first, so the client sees the answer). Nothing is stored.
	Status int
	// RetryAfter is the X-RateLimit-Retry-After sent with Status 429
	// (whole seconds, rounded up).
	RetryAfter time.Duration
	// Cut closes the connection without an answer after reading CutAfter
	// bytes of the request body (the raw multipart body, headers
	// included). Nothing is stored.
	Cut bool
	// CutAfter is the number of body bytes read before a Cut.
	CutAfter int64
	// LoseAnswer handles the request normally (a chunk is stored, if
	// valid) and then closes the connection instead of answering: the
	// client cannot know the chunk arrived.
	LoseAnswer bool
}

// StatusFault answers with status (e.g. 500, 502, 503) without handling the
// request.
func StatusFault(status int) Fault { return Fault{Status: status} }

// RateLimitFault answers 429 with X-RateLimit-Retry-After set to
// retryAfter.
func RateLimitFault(retryAfter time.Duration) Fault {
	return Fault{Status: http.StatusTooManyRequests, RetryAfter: retryAfter}
}

// CutFault closes the connection after reading n bytes of the request
// body.
func CutFault(n int64) Fault { return Fault{Cut: true, CutAfter: n} }

// LostAnswerFault stores the chunk and then closes the connection instead
// of answering.
func LostAnswerFault() Fault { return Fault{LoseAnswer: true} }

// DelayFault holds the request for d before handling it normally.
func DelayFault(d time.Duration) Fault { return Fault{Delay: d} }

// FaultRequest describes a request to a fault hook. The multipart body has
// not been read yet, so the videoId is unknown; Token and Part identify
// the chunk.
type FaultRequest struct {
	// Seq is the request's index in Server.Requests.
	Seq int
	// Method and Path are the request's method and URL path.
	Method, Path string
	// Time is the request's arrival by the server's clock.
	Time time.Time
	// Token is the upload token of a POST /upload.
	Token string
	// ContentRange is the Content-Range header.
	ContentRange string
	// Part is the part number of a "part n/…" Content-Range, else 0.
	Part int
}

// IsUpload reports whether the request is a POST /upload.
func (r FaultRequest) IsUpload() bool { return r.Method == http.MethodPost && r.Path == "/upload" }

// faultState holds the programmed faults. Queued faults go first, then the
// hook, then the random faults.
type faultState struct {
	queue   []Fault
	hook    func(FaultRequest) Fault
	rng     *rand.Rand
	randomP float64
	random  Fault
}

// FailNext makes the next n POST /upload requests suffer f (after those
// queued before).
func (s *Server) FailNext(n int, f Fault) {
	s.mu.Lock()
	defer s.mu.Unlock()
	for range n {
		s.faults.queue = append(s.faults.queue, f)
	}
}

// InjectFault installs hook, called for every request (uploads and token
// endpoints) that no queued fault took; the Fault it returns is applied.
// A nil hook removes it. The hook runs on the server's goroutines: it must
// be safe for concurrent use and must not block.
func (s *Server) InjectFault(hook func(FaultRequest) Fault) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.faults.hook = hook
}

// FailRandomly makes each POST /upload that neither a queued fault nor the
// hook affected suffer f with probability p, drawn from a generator seeded
// with seed (the sequence of draws is reproducible; which request gets
// which draw depends on arrival order). p ≤ 0 turns it off.
func (s *Server) FailRandomly(p float64, seed uint64, f Fault) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.faults.randomP, s.faults.random = p, f
	s.faults.rng = rand.New(rand.NewPCG(seed, seed^0x9e3779b97f4a7c15))
}

// ClearFaults removes every programmed fault.
func (s *Server) ClearFaults() {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.faults = faultState{}
}

// pickFault chooses the fault for the request r.
func (s *Server) pickFault(r FaultRequest) Fault {
	s.mu.Lock()
	if r.IsUpload() && len(s.faults.queue) > 0 {
		f := s.faults.queue[0]
		s.faults.queue = s.faults.queue[1:]
		s.mu.Unlock()
		return f
	}
	hook := s.faults.hook
	s.mu.Unlock()

	if hook != nil {
		if f := hook(r); f != (Fault{}) {
			return f
		}
	}

	s.mu.Lock()
	defer s.mu.Unlock()
	if r.IsUpload() && s.faults.randomP > 0 && s.faults.rng.Float64() < s.faults.randomP {
		return s.faults.random
	}
	return Fault{}
}

// applyFault carries out f and reports whether the request should then be
// handled normally.
func (x *exchange) applyFault(f Fault) bool {
	if f.Delay > 0 {
		t := time.NewTimer(f.Delay)
		defer t.Stop()
		select {
		case <-t.C:
		case <-x.r.Context().Done():
			x.cut() // the client is gone
			return false
		case <-x.s.closed:
			x.cut()
			return false
		}
	}
	switch {
	case f.Cut:
		_, _ = io.CopyN(io.Discard, x.r.Body, f.CutAfter)
		x.cut()
		return false
	case f.Status != 0:
		drain(x.r)
		if f.Status == http.StatusTooManyRequests {
			secs := int((f.RetryAfter + time.Second - 1) / time.Second)
			x.w.Header().Set("X-RateLimit-Remaining", "0")
			x.w.Header().Set("X-RateLimit-Retry-After", strconv.Itoa(secs))
		}
		x.fail(faultProblem(f.Status))
		return false
	}
	x.loseAnswer = f.LoseAnswer
	return true
}

func faultProblem(status int) *problem {
	switch {
	case status == http.StatusTooManyRequests:
		return newProblem(status, "too-many-requests", "Too many requests.", "", "Injected fault.")
	case status >= 500:
		return newProblem(status, "server-error", "Server error", "", "Injected fault.")
	default:
		return newProblem(status, "injected-fault", http.StatusText(status), "", "Injected fault.")
	}
}
