package gateway

import (
	"context"
	"net"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	"github.com/prometheus/client_golang/prometheus"
)

// Batching a fast body's socket reads.
//
// A fast upload's reads race the client: each read takes the little the
// socket holds, so the 1 MiB copy buffer comes back a few dozen KiB full
// and the gateway pays a read, a file write and a wake-up for each. Raising
// the socket's receive low-water mark (SO_RCVLOWAT) makes the kernel wake
// the reader only once lowWaterMark bytes are queued: on this project's
// benchmark machine a plain read/write loop went from 1.2–2.0 GB/s at
// 0.5–0.8 CPU s/GB to 2.7–2.9 GB/s at 0.31–0.35.
//
// Two rules keep it from holding bytes back:
//   - The mark never exceeds what is left of the body, less what the HTTP
//     server may already hold in its read buffer (bufferedSlack), so the
//     last read of a body is not left waiting.
//   - A read that waits longer than defaultStallAfter drops the mark to 1
//     (Linux wakes the reader when the mark is lowered), so the bytes of a
//     client that stalls or whose connection dies reach the file within
//     that time instead of waiting for the network timeout.
//
// The mark follows the client's rate: a stalled read halves it (down to
// minLowWaterMark), a read that finds twice the mark waiting doubles it
// (up to lowWaterMark), so a client sending 2 MB/s is read in batches of
// 128 KiB rather than alternating between stalls and unbatched reads. A
// read that stalls at the smallest mark makes countingReader treat the
// stream as slow.
const (
	lowWaterMark    = 256 << 10
	minLowWaterMark = 32 << 10
	// bufferedSlack is the size of net/http's server-side read buffer:
	// body bytes in it are no longer in the socket.
	bufferedSlack     = 4 << 10
	defaultStallAfter = 100 * time.Millisecond
)

// lowWaterStats counts, per gateway, what the low-water marks did.
type lowWaterStats struct {
	raised atomic.Int64 // reads that waited on a mark above 1
	stalls atomic.Int64 // of those, reads that stallAfter cut short
}

// collectors exports the counts as Prometheus counters.
func (s *lowWaterStats) collectors() []prometheus.Collector {
	return []prometheus.Collector{
		prometheus.NewCounterFunc(prometheus.CounterOpts{
			Name: "tusgate_batched_body_reads_total",
			Help: "Reads of upload bodies that waited for a batch of bytes (socket low-water mark raised).",
		}, func() float64 { return float64(s.raised.Load()) }),
		prometheus.NewCounterFunc(prometheus.CounterOpts{
			Name: "tusgate_batched_body_read_stalls_total",
			Help: "Batched reads that waited too long and were served with the bytes at hand (the client slowed down or stalled).",
		}, func() float64 { return float64(s.stalls.Load()) }),
	}
}

// rawConnKey is the context key of a request's connection (ConnContext).
type rawConnKey struct{}

// ConnContext returns a function for http.Server.ConnContext. It records
// each TCP connection so a fast upload can batch its socket reads (see
// lowwater.go); without it uploads are read as they arrive.
//
//	srv := &http.Server{Handler: g.Handler(), ConnContext: g.ConnContext}
func (g *Gateway) ConnContext(ctx context.Context, c net.Conn) context.Context {
	tc, ok := c.(*net.TCPConn)
	if !ok {
		return ctx
	}
	rc, err := tc.SyscallConn()
	if err != nil {
		return ctx
	}
	return context.WithValue(ctx, rawConnKey{}, rc)
}

// lowWater sets one request's socket low-water mark around its body reads.
// arm and disarm are called by the reading goroutine; the stall timer runs
// on its own, so the fields are guarded by mu.
type lowWater struct {
	rc         syscall.RawConn
	stats      *lowWaterStats
	stallAfter time.Duration

	mu sync.Mutex
	// cur is the socket's mark (1 is the kernel's default: off); mark is
	// what arm asks for, minLowWaterMark..lowWaterMark.
	cur, mark int
	// gen counts armed reads; a stall timer acts only on its own read.
	gen uint64
	// stalled: the stall timer cut the current read short; slow: at the
	// smallest mark.
	stalled, slow bool
	timer         *time.Timer
	// broken is set when the socket refused the option: the request stays
	// unbatched.
	broken bool

	// readableFn is l.readable, made once (waitReadable runs per read of a
	// slow client); woken says the wait was woken by the poller.
	readableFn func(fd uintptr) bool
	woken      bool
}

func newLowWater(rc syscall.RawConn, stats *lowWaterStats, stallAfter time.Duration) *lowWater {
	l := &lowWater{rc: rc, stats: stats, stallAfter: stallAfter, cur: 1, mark: lowWaterMark}
	l.readableFn = l.readable
	return l
}

// waitReadable returns once the socket has bytes to read, has reached its
// end or failed, or the read deadline passed (tusd's network timeout, or
// tusd ending the request early): in every case the next read says which.
// It is called only by the reading goroutine, and holds no buffer while it
// waits.
func (l *lowWater) waitReadable() {
	l.woken = false
	// An error (closed connection, deadline) is left to the next read.
	_ = l.rc.Read(l.readableFn)
}

// readable is the syscall.RawConn.Read callback of waitReadable. Its
// first call checks the socket, since the poller only reports bytes that
// arrive after the wait began; false makes the runtime wait for the
// poller, which calls it again.
func (l *lowWater) readable(fd uintptr) bool {
	if l.woken {
		return true
	}
	l.woken = true
	return socketReadable(fd)
}

// arm raises the mark for the next read of a body with remaining bytes
// left, and starts the stall timer.
func (l *lowWater) arm(remaining int64) {
	l.mu.Lock()
	defer l.mu.Unlock()
	if l.broken {
		return
	}
	l.set(int(min(max(remaining-bufferedSlack, 1), int64(l.mark))))
	l.gen++
	l.stalled, l.slow = false, false
	if l.cur > 1 {
		gen := l.gen
		l.timer = time.AfterFunc(l.stallAfter, func() { l.stall(gen) })
	}
}

// disarm follows a read that brought n bytes, adapts the mark to the
// client's rate, and reports whether the read stalled at the smallest
// mark (the client is slow).
func (l *lowWater) disarm(n int) (slow bool) {
	l.mu.Lock()
	defer l.mu.Unlock()
	if l.timer != nil {
		l.timer.Stop()
		l.timer = nil
		l.stats.raised.Add(1)
	}
	l.gen++
	switch {
	case l.stalled:
		l.mark = max(l.mark/2, minLowWaterMark)
	case n >= 2*l.mark:
		l.mark = min(l.mark*2, lowWaterMark)
	}
	return l.slow
}

// off restores the default mark; the connection may carry more requests.
func (l *lowWater) off() {
	l.mu.Lock()
	defer l.mu.Unlock()
	if l.timer != nil {
		l.timer.Stop()
		l.timer = nil
	}
	l.gen++
	l.set(1)
}

// stall lowers the mark of read gen, which has waited stallAfter.
func (l *lowWater) stall(gen uint64) {
	l.mu.Lock()
	defer l.mu.Unlock()
	if gen != l.gen {
		return
	}
	l.stalled, l.slow = true, l.mark == minLowWaterMark
	l.stats.stalls.Add(1)
	l.set(1)
}

// set changes the socket's mark; l.mu is held.
func (l *lowWater) set(v int) {
	if l.broken || v == l.cur {
		return
	}
	var serr error
	if err := l.rc.Control(func(fd uintptr) { serr = setRcvLowat(fd, v) }); err != nil || serr != nil {
		// Closed connection or an unsupported option: the reads end or
		// go on unbatched.
		l.broken = true
		return
	}
	l.cur = v
}
