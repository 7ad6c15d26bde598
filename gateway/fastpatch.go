package gateway

import (
	"bufio"
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"strconv"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	"github.com/tus/tusd/v2/pkg/handler"
)

// The fast PATCH path.
//
// A PATCH body normally reaches the data file through net/http's body
// reader, tusd's body reader and a copy buffer: the kernel copies every byte
// from the socket into the process and back into the page cache. For the
// disk backend the gateway takes a large PATCH's connection over
// (http.Hijacker) and, once the client proves fast, moves the body from the
// socket into the file with splice(2): the bytes never enter the process and
// the kernel copies them once. Everything else about the request is
// unchanged: tusd's handler (locks, offsets, hooks, errors) and the
// gateway's middleware serve it through a ResponseWriter that writes the
// response on the taken-over connection.
//
// A slow client stays on the read path with the small copy buffer (see
// countingReader.WriteTo); a spliced stream that slows down goes back to it.

// minFastPatch is the smallest PATCH body (Content-Length) the fast path
// takes: below it, the cost of a new connection outweighs the saved copies.
const minFastPatch = 1 << 20

// Splice chunk bounds: each splice call moves at most one chunk, so the
// read deadline is renewed, part boundaries are recorded and the live offset
// advances between chunks. The chunk grows while chunks take less than
// spliceFast and shrinks when they take more than spliceSlow; a chunk of
// minSpliceChunk taking longer than spliceSlow sends the stream back to the
// read path (it is slow, and a deadline renewed only per chunk would not
// suit it).
const (
	minSpliceChunk = 256 << 10
	maxSpliceChunk = 16 << 20
	spliceFast     = 100 * time.Millisecond
	spliceSlow     = time.Second
)

// fastBodyKey is the context key of a fast PATCH's *connBody.
type fastBodyKey struct{}

// fastBodyFrom returns the body of a PATCH taken over by the fast path, or nil.
func fastBodyFrom(ctx context.Context) *connBody {
	b, _ := ctx.Value(fastBodyKey{}).(*connBody)
	return b
}

// fileBackend is a Backend keeping each upload's bytes in a local file the
// fast path may write directly (the disk backend).
type fileBackend interface {
	binPath(id string) string
}

// fastPatchEligible reports whether r may take the fast path: an HTTP/1.x
// PATCH without TLS and with a large declared body, on a backend of local
// files. Chunked bodies, Expect: 100-continue and TLS keep net/http's path.
func (g *Gateway) fastPatchEligible(r *http.Request) bool {
	if g.cfg.DisableFastPatch || r.Method != http.MethodPatch || r.ProtoMajor != 1 || r.TLS != nil ||
		r.ContentLength < minFastPatch || len(r.TransferEncoding) > 0 || r.Header.Get("Expect") != "" {
		return false
	}
	_, ok := g.be.(fileBackend)
	return ok
}

// fastPatches wraps every route: an eligible PATCH's connection is taken
// over and the request served on it by next, with the body readable by
// splice (see connBody); the connection is closed after the response.
func (g *Gateway) fastPatches(next http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if !g.fastPatchEligible(r) {
			next.ServeHTTP(w, r)
			return
		}
		conn, brw, err := http.NewResponseController(w).Hijack()
		if err != nil {
			next.ServeHTTP(w, r)
			return
		}
		g.hijacked.add()
		defer g.hijacked.done()
		defer conn.Close()
		// The server's deadlines no longer apply; tusd sets its own per read.
		_ = conn.SetDeadline(time.Time{})
		body := newConnBody(conn, brw.Reader, r.ContentLength, &g.spliced)
		hw := &hijackedWriter{conn: conn, bw: brw.Writer, body: body, header: http.Header{}}
		r2 := r.WithContext(context.WithValue(r.Context(), fastBodyKey{}, body))
		r2.Body = body
		next.ServeHTTP(hw, r2)
		hw.finish(r.ProtoMinor, g.cfg.NetworkTimeout)
		if body.remaining > 0 {
			// The client may still be sending: closing with unread bytes
			// would reset the connection and could destroy the response
			// in flight. Half-close, then drain briefly, like net/http.
			body.discard()
		}
	})
}

// connBody is the request body of a taken-over PATCH: Content-Length bytes,
// first those net/http had already buffered, then the connection's.
type connBody struct {
	conn net.Conn
	br   *bufio.Reader
	// tcp is conn when it is a TCP connection (splice works), else nil.
	tcp *net.TCPConn
	// remaining is how many body bytes have not been read yet. Only the
	// handler's goroutine reads the body.
	remaining int64
	// cut is set when the read deadline is moved to the past: tusd ends
	// the body that way when it cancels the request (shutdown, lock
	// release, upload stopped), and reports the cause itself.
	cut atomic.Bool
	// spliced counts the bytes moved by splice (for tests and metrics).
	spliced *atomic.Int64
}

func newConnBody(conn net.Conn, br *bufio.Reader, length int64, spliced *atomic.Int64) *connBody {
	tcp, _ := conn.(*net.TCPConn)
	return &connBody{conn: conn, br: br, tcp: tcp, remaining: length, spliced: spliced}
}

// Read implements io.Reader: at most the remaining body bytes; a connection
// ending early is io.ErrUnexpectedEOF, as with net/http's body.
func (b *connBody) Read(p []byte) (int, error) {
	if b.remaining <= 0 {
		return 0, io.EOF
	}
	if int64(len(p)) > b.remaining {
		p = p[:b.remaining]
	}
	n, err := b.br.Read(p)
	b.remaining -= int64(n)
	if errors.Is(err, io.EOF) && b.remaining > 0 {
		err = io.ErrUnexpectedEOF
	}
	return n, err
}

// Close implements io.Closer; the connection is closed after the response.
func (b *connBody) Close() error { return nil }

// spliceTo moves up to n body bytes into f at its current offset, with
// splice(2) once net/http's buffered bytes are consumed. It returns the
// bytes written to f; fewer than asked only with an error
// (io.ErrUnexpectedEOF when the client closed the connection).
func (b *connBody) spliceTo(f *os.File, n int64) (int64, error) {
	n = min(n, b.remaining)
	var done int64
	if k := int64(b.br.Buffered()); k > 0 || b.tcp == nil {
		if b.tcp != nil {
			n = min(n, k)
		}
		w, err := io.CopyN(f, b, n)
		return w, err
	}
	for done < n {
		w, err := f.ReadFrom(&io.LimitedReader{R: b.tcp, N: n - done})
		done += w
		b.remaining -= w
		b.spliced.Add(w)
		if err != nil {
			return done, err
		}
		if w == 0 {
			return done, io.ErrUnexpectedEOF
		}
	}
	return done, nil
}

// discardFor bounds how long a connection is drained after a response
// that left body bytes unread (net/http waits as long before it closes).
const discardFor = 500 * time.Millisecond

// discard half-closes the connection, then reads and drops what the client
// still sends of the body, until it stops or for discardFor: closing a
// socket with unread bytes resets the connection, which can destroy the
// response before the client has read it.
func (b *connBody) discard() {
	if b.tcp != nil {
		_ = b.tcp.CloseWrite()
	}
	_ = b.conn.SetReadDeadline(time.Now().Add(discardFor))
	_, _ = io.Copy(io.Discard, b)
}

// readError maps an error of reading a fast PATCH's body to the tusd error
// its client gets, as tusd's own body reader does.
func readError(err error) error {
	var ne net.Error
	switch {
	case errors.Is(err, io.ErrUnexpectedEOF), errors.Is(err, io.EOF), errors.Is(err, net.ErrClosed):
		return handler.ErrUnexpectedEOF
	case errors.Is(err, syscall.ECONNRESET):
		return handler.ErrConnectionReset
	case errors.As(err, &ne) && ne.Timeout(), errors.Is(err, os.ErrDeadlineExceeded):
		return handler.ErrReadTimeout
	}
	return err
}

// hijackedWriter is the ResponseWriter of a taken-over PATCH: it buffers
// the response and writes it, with Content-Length and Connection: close,
// when the handler is done. It keeps the deadline methods
// http.ResponseController uses (tusd renews the read deadline per read and
// moves it to the past to end a body).
type hijackedWriter struct {
	conn   net.Conn
	bw     *bufio.Writer
	body   *connBody
	header http.Header
	status int
	buf    bytes.Buffer
}

// Header implements http.ResponseWriter.
func (h *hijackedWriter) Header() http.Header { return h.header }

// WriteHeader implements http.ResponseWriter; informational codes are
// dropped (tusd sends none on PATCH).
func (h *hijackedWriter) WriteHeader(code int) {
	if h.status == 0 && code >= 200 {
		h.status = code
	}
}

// Write implements http.ResponseWriter.
func (h *hijackedWriter) Write(p []byte) (int, error) {
	if h.status == 0 {
		h.status = http.StatusOK
	}
	return h.buf.Write(p)
}

// Flush implements http.Flusher; the response goes out once complete.
func (h *hijackedWriter) Flush() {}

// SetReadDeadline is what http.ResponseController calls.
func (h *hijackedWriter) SetReadDeadline(t time.Time) error {
	if !t.IsZero() && !t.After(time.Now()) {
		h.body.cut.Store(true)
	}
	return h.conn.SetReadDeadline(t)
}

// SetWriteDeadline is what http.ResponseController calls.
func (h *hijackedWriter) SetWriteDeadline(t time.Time) error { return h.conn.SetWriteDeadline(t) }

// finish writes the response on the connection (HTTP/1.proto).
func (h *hijackedWriter) finish(protoMinor int, timeout time.Duration) {
	code := h.status
	if code == 0 {
		code = http.StatusOK
	}
	hdr := h.header
	hdr.Del("Transfer-Encoding")
	hdr.Set("Connection", "close")
	if hdr.Get("Date") == "" {
		hdr.Set("Date", time.Now().UTC().Format(http.TimeFormat))
	}
	body := h.buf.Bytes()
	if code == http.StatusNoContent || code == http.StatusNotModified {
		body = nil
		hdr.Del("Content-Length")
	} else {
		hdr.Set("Content-Length", strconv.Itoa(len(body)))
		if len(body) > 0 && hdr.Get("Content-Type") == "" {
			hdr.Set("Content-Type", http.DetectContentType(body))
		}
	}
	_ = h.conn.SetWriteDeadline(time.Now().Add(timeout))
	fmt.Fprintf(h.bw, "HTTP/1.%d %03d %s\r\n", min(protoMinor, 1), code, http.StatusText(code))
	_ = hdr.Write(h.bw)
	_, _ = h.bw.WriteString("\r\n")
	_, _ = h.bw.Write(body)
	_ = h.bw.Flush()
}

// WaitHijacked waits until every PATCH the fast path took over has been
// answered, or ctx ends (then it returns ctx's error). http.Server.Shutdown
// does not wait for taken-over connections: call it after Shutdown.
func (g *Gateway) WaitHijacked(ctx context.Context) error {
	select {
	case <-g.hijacked.idle():
		return nil
	case <-ctx.Done():
		return ctx.Err()
	}
}

// activeCount counts running requests; unlike sync.WaitGroup, it may be
// waited for while requests start.
type activeCount struct {
	mu   sync.Mutex
	n    int
	none chan struct{} // closed when n drops to 0
}

// add counts one more request.
func (a *activeCount) add() {
	a.mu.Lock()
	defer a.mu.Unlock()
	if a.n == 0 {
		a.none = make(chan struct{})
	}
	a.n++
}

// done counts one request less.
func (a *activeCount) done() {
	a.mu.Lock()
	defer a.mu.Unlock()
	if a.n--; a.n == 0 {
		close(a.none)
	}
}

// idle returns a channel closed once no request runs.
func (a *activeCount) idle() <-chan struct{} {
	a.mu.Lock()
	defer a.mu.Unlock()
	if a.n == 0 {
		c := make(chan struct{})
		close(c)
		return c
	}
	return a.none
}

// splice moves the rest of a fast PATCH's body into f with splice(2), chunk
// by chunk, recording part boundaries between chunks as Read does. It
// returns slow when the stream slowed down (the rest goes through Read),
// and a nil error when tusd ended the body (it reports why itself).
func (c *countingReader) splice(f *os.File) (total int64, slow bool, err error) {
	chunk := int64(minSpliceChunk)
	timeout := c.u.g.cfg.NetworkTimeout
	for c.fast.remaining > 0 {
		durable := c.base + c.read
		c.lu.offset.Store(durable)
		if c.lu.boundaryPending(durable, c.size, c.deferred) {
			if err := c.u.record(c.ctx, c.lu, durable, false); err != nil {
				c.stop = err
				return total, false, err
			}
		}
		limit := chunk
		if end := c.lu.plan.End(c.lu.plan.PartOf(durable)); end > durable {
			limit = min(limit, end-durable)
		}
		// Renew the deadline, then look for tusd's cut: a cut made after
		// the renewal moves the deadline to the past again.
		_ = c.fast.conn.SetReadDeadline(time.Now().Add(timeout))
		if c.fast.cut.Load() {
			return total, false, nil
		}
		start := time.Now()
		c.lu.splicing.Store(true)
		n, err := c.fast.spliceTo(f, limit)
		c.lu.splicing.Store(false)
		c.read += n
		total += n
		if err != nil {
			if c.fast.cut.Load() {
				return total, false, nil
			}
			return total, false, readError(err)
		}
		switch took := time.Since(start); {
		case took < spliceFast:
			chunk = min(2*chunk, maxSpliceChunk)
		case took > spliceSlow && chunk == minSpliceChunk:
			return total, true, nil
		case took > spliceSlow:
			chunk = max(chunk/2, minSpliceChunk)
		}
	}
	return total, false, nil
}
