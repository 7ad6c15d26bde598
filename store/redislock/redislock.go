package redislock

import (
	"context"
	"crypto/rand"
	"errors"
	"fmt"
	mrand "math/rand/v2"
	"sync"
	"time"

	"github.com/redis/go-redis/v9"
	"github.com/tus/tusd/v2/pkg/handler"
	"go.uber.org/zap"
)

// Defaults of the options.
const (
	// DefaultPrefix is the key prefix used unless WithPrefix is given.
	DefaultPrefix = "tusgate"
	// DefaultExpiry is the lock's time to live unless WithExpiry is given.
	DefaultExpiry = 10 * time.Second
	// DefaultPollMin is the waiter's first backoff between acquisition
	// attempts unless WithPollInterval is given.
	DefaultPollMin = 10 * time.Millisecond
	// DefaultPollMax caps the waiter's backoff between acquisition attempts
	// unless WithPollInterval is given.
	DefaultPollMax = 250 * time.Millisecond
)

// ErrAlreadyLocked is returned by Lock when the lock object already holds
// its lock. tusd creates a new lock object for each request.
var ErrAlreadyLocked = errors.New("redislock: lock already held by this lock object")

// Option configures a Locker.
type Option func(*options)

type options struct {
	prefix          string
	expiry          time.Duration
	renew           time.Duration
	requestInterval time.Duration
	pollMin         time.Duration
	pollMax         time.Duration
	logger          *zap.Logger
}

// WithPrefix sets the key and channel prefix (default DefaultPrefix). An
// empty prefix keeps the default. On Redis Cluster the prefix must not
// contain '{' or '}': it would change the keys' hash tags.
func WithPrefix(prefix string) Option {
	return func(o *options) {
		if prefix != "" {
			o.prefix = prefix
		}
	}
}

// WithExpiry sets the lock's time to live in Redis (default 10s): how long a
// crashed holder blocks its upload. Values below 30ms keep the default.
func WithExpiry(d time.Duration) Option {
	return func(o *options) {
		if d >= 30*time.Millisecond {
			o.expiry = d
		}
	}
}

// WithRenewInterval sets how often a holder extends its lock and checks for
// release requests (default expiry/3). Values that are not positive or not
// below the expiry keep the default.
func WithRenewInterval(d time.Duration) Option {
	return func(o *options) { o.renew = d }
}

// WithRequestInterval sets how often a waiter re-sends its release request
// to the same holder (default: the renew interval). The request key lives
// twice as long. Non-positive values keep the default.
func WithRequestInterval(d time.Duration) Option {
	return func(o *options) { o.requestInterval = d }
}

// WithPollInterval sets the waiter's backoff between acquisition attempts:
// it starts at minimum and doubles up to maximum, with jitter (defaults
// DefaultPollMin and DefaultPollMax). Non-positive values keep the defaults;
// a maximum below the minimum is raised to it.
func WithPollInterval(minimum, maximum time.Duration) Option {
	return func(o *options) {
		if minimum > 0 {
			o.pollMin = minimum
		}
		if maximum > 0 {
			o.pollMax = maximum
		}
	}
}

// WithLogger sets the logger for failures that Lock and Unlock cannot
// return: renewal errors, lost locks, Pub/Sub trouble (default: none).
func WithLogger(logger *zap.Logger) Option {
	return func(o *options) {
		if logger != nil {
			o.logger = logger
		}
	}
}

// Locker is a handler.Locker whose locks live in Redis. It is safe for
// concurrent use; create one per process and share its client.
type Locker struct {
	client redis.UniversalClient
	opts   options
	hub    *hub

	// afterAcquire, when set (tests only), runs after SET NX succeeded and
	// before the holder subscribes.
	afterAcquire func(id string)
}

var _ handler.Locker = (*Locker)(nil)

// New returns a Locker on client. The client stays owned by the caller and
// must stay open while locks are held.
func New(client redis.UniversalClient, opts ...Option) *Locker {
	o := options{
		prefix:  DefaultPrefix,
		expiry:  DefaultExpiry,
		pollMin: DefaultPollMin,
		pollMax: DefaultPollMax,
		logger:  zap.NewNop(),
	}
	for _, opt := range opts {
		opt(&o)
	}
	if o.renew <= 0 || o.renew >= o.expiry {
		o.renew = o.expiry / 3
	}
	if o.requestInterval <= 0 {
		o.requestInterval = o.renew
	}
	if o.pollMax < o.pollMin {
		o.pollMax = o.pollMin
	}
	o.logger = o.logger.Named("redislock")
	return &Locker{
		client: client,
		opts:   o,
		hub:    &hub{client: client, log: o.logger, barrierWait: o.renew},
	}
}

// UseIn makes composer use l as its locker.
func (l *Locker) UseIn(composer *handler.StoreComposer) {
	composer.UseLocker(l)
}

// NewLock returns an unlocked lock for the upload id. It does not talk to
// Redis.
func (l *Locker) NewLock(id string) (handler.Lock, error) {
	if id == "" {
		return nil, errors.New("redislock: new lock: empty upload id")
	}
	tag := "{" + hashTag(id) + "}"
	return &lock{
		locker:  l,
		id:      id,
		key:     l.opts.prefix + ":lock:" + tag,
		reqKey:  l.opts.prefix + ":lockreq:" + tag,
		channel: l.opts.prefix + ":release:" + tag,
	}, nil
}

// hashTag returns the text between the braces of id's keys: id itself,
// unless it starts with '}' (the hash tag would be empty, so Redis Cluster
// would hash each whole key and split an upload's keys over two slots) or
// with '%', which then escapes it ("%" + id), keeping the mapping one to one.
// tusd hands over ids taken from request paths, so any id must work.
func hashTag(id string) string {
	if id[0] == '}' || id[0] == '%' {
		return "%" + id
	}
	return id
}

// lock is one handler.Lock: tusd makes one per request.
type lock struct {
	locker  *Locker
	id      string
	key     string
	reqKey  string
	channel string

	mu   sync.Mutex
	held *holding // nil unless locked
}

// Lock acquires the lock, asking the current holder (on any instance) to
// release it, and retrying until ctx is done; then it returns
// handler.ErrLockTimeout. requestRelease is called at most once, from
// another goroutine, when someone else wants the lock or when the lock is
// lost; it may call Unlock.
func (k *lock) Lock(ctx context.Context, requestRelease func()) error {
	k.mu.Lock()
	busy := k.held != nil
	k.mu.Unlock()
	if busy {
		return ErrAlreadyLocked
	}
	if requestRelease == nil {
		requestRelease = func() {}
	}
	o := &k.locker.opts
	// Redis calls outlive a cancelled ctx: a SET NX whose reply is lost to a
	// cancellation may still have taken the lock, and the holder outlives
	// Lock's ctx (tusd cancels it when Lock returns).
	base := context.WithoutCancel(ctx)
	token := rand.Text()

	var (
		lastHolder string
		nextForce  time.Time
		lastErr    error
		delay      = o.pollMin
	)
	for {
		if ctx.Err() != nil {
			return k.giveUp(base, token, lastErr)
		}
		start := time.Now()
		force := !start.Before(nextForce)
		acquired, holder, err := k.tryAcquire(base, token, lastHolder, force)
		switch {
		case err != nil:
			lastErr = err
		case acquired:
			return k.hold(base, token, start, requestRelease)
		default:
			if force || holder != lastHolder {
				nextForce = start.Add(o.requestInterval)
			}
			lastHolder = holder
		}
		// Full jitter over the upper half keeps waiters apart without
		// ever spinning.
		wait := delay/2 + mrand.N(delay/2+1)
		timer := time.NewTimer(wait)
		select {
		case <-ctx.Done():
			timer.Stop()
			return k.giveUp(base, token, lastErr)
		case <-timer.C:
		}
		delay = min(2*delay, o.pollMax)
	}
}

// tryAcquire runs one attempt of the acquire script.
func (k *lock) tryAcquire(base context.Context, token, lastHolder string, force bool) (acquired bool, holder string, err error) {
	o := &k.locker.opts
	ctx, cancel := context.WithTimeout(base, o.renew)
	defer cancel()
	forceArg := "0"
	if force {
		forceArg = "1"
	}
	res, err := acquireScript.Run(ctx, k.locker.client, []string{k.key, k.reqKey},
		token, o.expiry.Milliseconds(), (2 * o.requestInterval).Milliseconds(), k.channel, lastHolder, forceArg).Slice()
	if err != nil {
		return false, "", fmt.Errorf("redislock: acquire %q: %w", k.id, err)
	}
	if len(res) != 2 {
		return false, "", fmt.Errorf("redislock: acquire %q: unexpected reply %v", k.id, res)
	}
	n, _ := res[0].(int64)
	holder, _ = res[1].(string)
	return n == 1, holder, nil
}

// giveUp withdraws the waiter's request and any lock it may have taken
// unknowingly, and returns the timeout error.
func (k *lock) giveUp(base context.Context, token string, lastErr error) error {
	ctx, cancel := context.WithTimeout(base, k.locker.opts.renew)
	defer cancel()
	if err := deleteIfOursScript.Run(ctx, k.locker.client, []string{k.key, k.reqKey}, token).Err(); err != nil {
		k.locker.opts.logger.Warn("withdraw lock request", zap.String("id", k.id), zap.Error(err))
	}
	if lastErr != nil {
		return fmt.Errorf("%w (last error: %w)", handler.ErrLockTimeout, lastErr)
	}
	return handler.ErrLockTimeout
}

// hold turns an acquired lock into a held one: subscribe, check for a
// request that came before the subscription, start renewing.
func (k *lock) hold(base context.Context, token string, acquiredAt time.Time, requestRelease func()) error {
	l := k.locker
	if l.afterAcquire != nil {
		l.afterAcquire(k.id)
	}
	ctx, cancel := context.WithCancel(base)
	h := &holding{
		lock:           k,
		token:          token,
		requestRelease: requestRelease,
		ctx:            ctx,
		cancel:         cancel,
		requests:       make(chan struct{}, 1),
		stop:           make(chan struct{}),
		done:           make(chan struct{}),
		validUntil:     acquiredAt.Add(l.opts.expiry),
	}
	l.hub.subscribe(ctx, k.channel, h)
	// The subscription is live: a request sent before it left P:lockreq.
	h.renew()
	k.mu.Lock()
	k.held = h
	k.mu.Unlock()
	go h.keep()
	return nil
}

// Unlock releases the lock: it stops renewing, leaves the release channel
// and deletes the key if it still holds this holder's token. Unlocking a lock
// that is not held does nothing.
func (k *lock) Unlock() error {
	k.mu.Lock()
	h := k.held
	k.held = nil
	k.mu.Unlock()
	if h == nil {
		return nil
	}
	h.shutdown()
	k.locker.hub.unsubscribe(h)
	ctx, cancel := context.WithTimeout(context.WithoutCancel(h.ctx), k.locker.opts.renew)
	defer cancel()
	if err := deleteIfOursScript.Run(ctx, k.locker.client, []string{k.key}, h.token).Err(); err != nil {
		return fmt.Errorf("redislock: unlock %q: %w", k.id, err)
	}
	return nil
}

// holding is the state of a held lock, owned by its keep goroutine.
type holding struct {
	lock           *lock
	token          string
	requestRelease func()
	ctx            context.Context // cancelled by shutdown
	cancel         context.CancelFunc
	requests       chan struct{} // release requested (buffer 1)
	stop           chan struct{} // closed by shutdown
	done           chan struct{} // closed when keep returns
	session        *session      // set and read by the hub under its mutex

	// Owned by keep (and by hold before keep starts).
	validUntil time.Time
	lost       bool
	released   bool // requestRelease was called (or skipped after stop)

	mu         sync.Mutex
	stopped    bool
	inCallback bool
}

// requested records a release request from the requester with token from
// (a Pub/Sub payload). It never blocks.
func (h *holding) requested(from string) {
	if from == h.token {
		return
	}
	select {
	case h.requests <- struct{}{}:
	default:
	}
}

// keep renews the lock until shutdown and calls requestRelease when asked.
func (h *holding) keep() {
	defer close(h.done)
	ticker := time.NewTicker(h.lock.locker.opts.renew)
	defer ticker.Stop()
	for {
		select {
		case <-h.stop:
			return
		case <-h.requests:
			h.release()
		case <-ticker.C:
			if !h.lost {
				h.renew()
			}
		}
	}
}

// renew extends the lock and checks for a release request; it is called by
// hold before keep starts and then only by keep.
func (h *holding) renew() {
	o := &h.lock.locker.opts
	ctx, cancel := context.WithTimeout(h.ctx, o.renew)
	defer cancel()
	sent := time.Now()
	status, err := renewScript.Run(ctx, h.lock.locker.client, []string{h.lock.key, h.lock.reqKey},
		h.token, o.expiry.Milliseconds()).Int()
	switch {
	case err != nil:
		if h.ctx.Err() != nil {
			return // shutting down
		}
		if !time.Now().Add(o.renew).Before(h.validUntil) {
			o.logger.Warn("lock lost: cannot renew in time", zap.String("id", h.lock.id), zap.Error(err))
			h.lost = true
			h.requested("")
			return
		}
		o.logger.Warn("renew lock", zap.String("id", h.lock.id), zap.Error(err))
	case status == renewLost:
		o.logger.Warn("lock lost: taken over or expired", zap.String("id", h.lock.id))
		h.lost = true
		h.requested("")
	case status == renewRequested:
		h.validUntil = sent.Add(o.expiry)
		h.requested("")
	case status == renewOK:
		h.validUntil = sent.Add(o.expiry)
	default:
		o.logger.Error("renew lock: unexpected reply", zap.String("id", h.lock.id), zap.Int("reply", status))
	}
}

// release calls requestRelease once, unless Unlock has begun.
func (h *holding) release() {
	if h.released {
		return
	}
	h.released = true
	h.mu.Lock()
	if h.stopped {
		h.mu.Unlock()
		return
	}
	h.inCallback = true
	h.mu.Unlock()
	defer func() {
		h.mu.Lock()
		h.inCallback = false
		h.mu.Unlock()
	}()
	h.requestRelease()
}

// shutdown stops keep and waits for it, unless it is inside requestRelease
// (which may be calling Unlock right now): then keep returns as soon as the
// callback does.
func (h *holding) shutdown() {
	h.mu.Lock()
	h.stopped = true
	wait := !h.inCallback
	h.mu.Unlock()
	close(h.stop)
	h.cancel()
	if wait {
		<-h.done
	}
}
