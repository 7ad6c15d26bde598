package gateway

import (
	"context"
	"errors"
	"fmt"
	"math"
	"net/http"
	"net/netip"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/tus/tusd/v2/pkg/handler"
	"go.uber.org/zap"

	"github.com/tusgate/tusgate/store"
)

// openPruneInterval is how often, at most, the open uploads of one client
// address at its limit are checked against the state store (the forwarder
// fails uploads without telling the gateway). It bounds the store reads a
// client hammering the limit causes.
const openPruneInterval = 5 * time.Second

// rateSweepInterval is how often idle rate-limit buckets are dropped.
const rateSweepInterval = time.Minute

// clientKey returns the client address the per-client limits count: the
// IP of the connection's peer or, when that peer is a trusted proxy, the
// rightmost X-Forwarded-For address that is not one (the leftmost when all
// are). IPv6 addresses count per /64, one subscriber's usual allocation.
func (g *Gateway) clientKey(r *http.Request) string {
	addr := g.clientAddr(r)
	if !addr.IsValid() {
		return r.RemoteAddr
	}
	if addr.Is4() {
		return addr.String()
	}
	p, err := addr.Prefix(64)
	if err != nil {
		return addr.String()
	}
	return p.String()
}

// clientAddr returns the client's IP address: the connection's peer or,
// when that peer is a trusted proxy, the address X-Forwarded-For names
// (see clientKey); the zero Addr when the peer address does not parse.
func (g *Gateway) clientAddr(r *http.Request) netip.Addr {
	addr, ok := parseAddr(r.RemoteAddr)
	if !ok {
		return netip.Addr{}
	}
	if g.trustedProxy(addr) {
		addr = g.forwardedFor(r, addr)
	}
	return addr
}

// forwardedFor walks X-Forwarded-For from the right, starting from peer (a
// trusted proxy), and returns the first address that is not a trusted
// proxy. An entry that is not an address ends the walk at the last hop
// that could be trusted.
func (g *Gateway) forwardedFor(r *http.Request, peer netip.Addr) netip.Addr {
	hops := strings.Split(strings.Join(r.Header.Values("X-Forwarded-For"), ","), ",")
	addr := peer
	for i := len(hops) - 1; i >= 0; i-- {
		if strings.TrimSpace(hops[i]) == "" {
			continue
		}
		a, ok := parseAddr(hops[i])
		if !ok {
			return addr
		}
		addr = a
		if !g.trustedProxy(a) {
			return a
		}
	}
	return addr
}

// trustedProxy reports whether a is in Config.TrustedProxies.
func (g *Gateway) trustedProxy(a netip.Addr) bool {
	for _, p := range g.cfg.TrustedProxies {
		if p.Contains(a) {
			return true
		}
	}
	return false
}

// parseAddr parses "ip", "ip:port" or "[ip]:port" (zone dropped, IPv4-mapped
// IPv6 unmapped).
func parseAddr(s string) (netip.Addr, bool) {
	s = strings.TrimSpace(s)
	a, err := netip.ParseAddr(strings.TrimSuffix(strings.TrimPrefix(s, "["), "]"))
	if err != nil {
		ap, perr := netip.ParseAddrPort(s)
		if perr != nil {
			return netip.Addr{}, false
		}
		a = ap.Addr()
	}
	return a.WithZone("").Unmap(), true
}

// errTooManyOpen is the 429 of a creation from a client address that has
// limit incomplete uploads already.
func errTooManyOpen(limit int) handler.Error {
	return handler.NewError("ERR_TOO_MANY_OPEN_UPLOADS", fmt.Sprintf(
		"too many open uploads from this address: at most %d incomplete uploads at a time; finish or delete (tus DELETE) one first", limit),
		http.StatusTooManyRequests)
}

// errTooManyOpenForSubject is the 429 of a creation beyond a grant
// subject's open uploads.
func errTooManyOpenForSubject(limit int) handler.Error {
	return handler.NewError("ERR_TOO_MANY_OPEN_UPLOADS", fmt.Sprintf(
		"too many open uploads for this user: at most %d incomplete uploads at a time; finish or delete (tus DELETE) one first", limit),
		http.StatusTooManyRequests)
}

// errRateLimited is the 429 of a creation beyond the creation rate.
func errRateLimited(rate float64, burst int, wait time.Duration) handler.Error {
	secs := max(1, int64(math.Ceil(wait.Seconds())))
	e := handler.NewError("ERR_RATE_LIMITED", fmt.Sprintf(
		"too many upload creations from this address: at most %s per second (bursts of %d); retry in %d s",
		strconv.FormatFloat(rate, 'f', -1, 64), burst, secs), http.StatusTooManyRequests)
	e.HTTPResponse.Header["Retry-After"] = strconv.FormatInt(secs, 10)
	return e
}

// admitCreation takes a creation token of client key, or returns the 429.
func (g *Gateway) admitCreation(key string) error {
	ok, wait := g.creates.allow(key, g.cfg.Now())
	if ok {
		return nil
	}
	g.log.Info("upload creation refused: creation rate exceeded", zap.String("client", key))
	return errRateLimited(g.cfg.CreateRate, g.cfg.CreateBurst, wait)
}

// reserveOpen reserves one open upload for client key (see openUploads),
// first forgetting the uploads of key that ended without the gateway
// seeing it (failed by the forwarder, deleted by another instance) when it
// is at its limit. It returns the 429 when key is at its limit.
func (g *Gateway) reserveOpen(ctx context.Context, key string) error {
	if err := g.reserveIn(ctx, g.open, key); err != nil {
		g.logger(ctx).Info("upload creation refused: too many open uploads", zap.String("client", key),
			zap.Int("limit", g.cfg.MaxOpenUploadsPerClient))
		return errTooManyOpen(g.cfg.MaxOpenUploadsPerClient)
	}
	return nil
}

// reserveOpenForSubject is reserveOpen for a grant subject.
func (g *Gateway) reserveOpenForSubject(ctx context.Context, subject string) error {
	if err := g.reserveIn(ctx, g.openSubj, subject); err != nil {
		g.logger(ctx).Info("upload creation refused: too many open uploads for the grant's subject",
			zap.Int("limit", g.cfg.MaxOpenUploadsPerSubject))
		return errTooManyOpenForSubject(g.cfg.MaxOpenUploadsPerSubject)
	}
	return nil
}

// errAtLimit means a key is at its open-upload limit.
var errAtLimit = errors.New("at the open-upload limit")

// reserveIn reserves a slot of tr for key, first forgetting the uploads of
// key that ended without the gateway seeing it when key is at its limit.
func (g *Gateway) reserveIn(ctx context.Context, tr *openUploads, key string) error {
	if tr.reserve(key) {
		return nil
	}
	now := g.cfg.Now()
	for _, id := range tr.pruneDue(key, now) {
		u, err := g.st.Get(ctx, id)
		switch {
		case errors.Is(err, store.ErrNotFound):
			tr.release(id)
		case err != nil:
			// The store is failing: keep counting what is known.
			g.logger(ctx).Warn("open uploads: read upload record", zap.String("id", id), zap.Error(err))
			return errAtLimit
		case u.Complete, u.State.Terminal(), g.expired(ctx, u, now):
			tr.release(id)
		}
	}
	if tr.reserve(key) {
		return nil
	}
	return errAtLimit
}

// forget drops what the gateway keeps in memory about upload id once it
// can receive no more bytes (complete, failed, terminated, expired, gone).
func (g *Gateway) forget(id string) {
	g.live.Delete(id)
	g.open.release(id)
	g.openSubj.release(id)
}

// openUploads counts the incomplete uploads each client address created
// through this instance: a creation reserves a slot (pending), which
// becomes the upload's once its record exists (commit) or is given back
// (cancel); forget releases an upload's slot. It is in memory only.
type openUploads struct {
	limit int // ≤ 0: no limit, nothing counted

	mu      sync.Mutex
	clients map[string]*openClient
	owner   map[string]string // upload id → client key
}

// openClient is one client address's count.
type openClient struct {
	pending int
	// ids maps its uploads to when they were last known to be open.
	ids map[string]time.Time
	// pruned is when its uploads were last checked against the store.
	pruned time.Time
}

func newOpenUploads(limit int) *openUploads {
	return &openUploads{limit: limit, clients: map[string]*openClient{}, owner: map[string]string{}}
}

// reserve takes a slot for key, reporting false when key is at its limit.
func (o *openUploads) reserve(key string) bool {
	if o.limit <= 0 {
		return true
	}
	o.mu.Lock()
	defer o.mu.Unlock()
	c := o.clients[key]
	if c == nil {
		c = &openClient{ids: map[string]time.Time{}}
		o.clients[key] = c
	}
	if c.pending+len(c.ids) >= o.limit {
		return false
	}
	c.pending++
	return true
}

// commit turns a slot key reserved into upload id's, open at now.
func (o *openUploads) commit(key, id string, now time.Time) {
	if o.limit <= 0 {
		return
	}
	o.mu.Lock()
	defer o.mu.Unlock()
	c := o.clients[key]
	if c == nil {
		return
	}
	c.pending = max(0, c.pending-1)
	c.ids[id] = now
	o.owner[id] = key
}

// cancel gives back a slot key reserved that no upload took.
func (o *openUploads) cancel(key string) {
	if o.limit <= 0 {
		return
	}
	o.mu.Lock()
	defer o.mu.Unlock()
	if c := o.clients[key]; c != nil {
		c.pending = max(0, c.pending-1)
		o.drop(key, c)
	}
}

// release gives back upload id's slot, if it has one.
func (o *openUploads) release(id string) {
	if o.limit <= 0 {
		return
	}
	o.mu.Lock()
	defer o.mu.Unlock()
	key, ok := o.owner[id]
	if !ok {
		return
	}
	delete(o.owner, id)
	if c := o.clients[key]; c != nil {
		delete(c.ids, id)
		o.drop(key, c)
	}
}

// drop forgets client key when it holds nothing. o.mu is held.
func (o *openUploads) drop(key string, c *openClient) {
	if c.pending == 0 && len(c.ids) == 0 {
		delete(o.clients, key)
	}
}

// pruneDue returns the uploads of key to check against the state store, at
// most once per openPruneInterval.
func (o *openUploads) pruneDue(key string, now time.Time) []string {
	o.mu.Lock()
	defer o.mu.Unlock()
	c := o.clients[key]
	if c == nil || (!c.pruned.IsZero() && now.Sub(c.pruned) < openPruneInterval && !now.Before(c.pruned)) {
		return nil
	}
	c.pruned = now
	ids := make([]string, 0, len(c.ids))
	for id := range c.ids {
		ids = append(ids, id)
	}
	return ids
}

// stale returns the uploads last known to be open more than age before
// now, and marks them known open at now (so each is checked at most once
// per age).
func (o *openUploads) stale(now time.Time, age time.Duration) []string {
	o.mu.Lock()
	defer o.mu.Unlock()
	var ids []string
	for id, key := range o.owner {
		c := o.clients[key]
		if c == nil {
			continue
		}
		if at, ok := c.ids[id]; ok && now.Sub(at) >= age {
			c.ids[id] = now
			ids = append(ids, id)
		}
	}
	return ids
}

// sweepOpen forgets, in the per-client open-upload counts, the uploads
// counted for more than Config.UploadExpiry that ended without this
// instance seeing it (failed by the forwarder, deleted or expired by
// another instance), so that the counts of clients below their limit do
// not grow for ever. Its errors are state-store failures.
func (g *Gateway) sweepOpen(ctx context.Context) error {
	now := g.cfg.Now()
	for _, tr := range []*openUploads{g.open, g.openSubj} {
		for _, id := range tr.stale(now, g.cfg.UploadExpiry) {
			u, err := g.st.Get(ctx, id)
			switch {
			case errors.Is(err, store.ErrNotFound):
				tr.release(id)
			case err != nil:
				return fmt.Errorf("check open upload %s: %w", id, err)
			case u.Complete, u.State.Terminal(), g.expired(ctx, u, now):
				tr.release(id)
			}
		}
	}
	return nil
}

// rateLimiter is a token bucket per client address, in memory.
type rateLimiter struct {
	rate  float64 // tokens per second; ≤ 0: no limit
	burst float64

	mu      sync.Mutex
	buckets map[string]*bucket
	swept   time.Time
}

// bucket holds tokens as of at.
type bucket struct {
	tokens float64
	at     time.Time
}

func newRateLimiter(rate float64, burst int) *rateLimiter {
	return &rateLimiter{rate: rate, burst: float64(burst), buckets: map[string]*bucket{}}
}

// level returns b's tokens at now (a clock going back refills nothing).
func (l *rateLimiter) level(b *bucket, now time.Time) float64 {
	if !now.After(b.at) {
		return b.tokens
	}
	return min(l.burst, b.tokens+now.Sub(b.at).Seconds()*l.rate)
}

// allow takes a token of key at now. Without one, it reports false and
// how long until the next token.
func (l *rateLimiter) allow(key string, now time.Time) (bool, time.Duration) {
	if l.rate <= 0 {
		return true, 0
	}
	l.mu.Lock()
	defer l.mu.Unlock()
	l.sweep(now)
	b := l.buckets[key]
	if b == nil {
		b = &bucket{tokens: l.burst, at: now}
		l.buckets[key] = b
	}
	b.tokens = l.level(b, now)
	if now.After(b.at) {
		b.at = now
	}
	if b.tokens >= 1 {
		b.tokens--
		return true, 0
	}
	return false, time.Duration((1 - b.tokens) / l.rate * float64(time.Second))
}

// sweep drops, once per rateSweepInterval, the buckets refilled to the
// brim (their clients are idle). l.mu is held.
func (l *rateLimiter) sweep(now time.Time) {
	if now.Sub(l.swept) < rateSweepInterval && !now.Before(l.swept) {
		return
	}
	l.swept = now
	for k, b := range l.buckets {
		if l.level(b, now) >= l.burst {
			delete(l.buckets, k)
		}
	}
}
