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
	// DefaultLinger is how long a process keeps an upload's lock in Redis
	// after Unlock, unless WithLinger is given.
	DefaultLinger = 2 * time.Second
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
	linger          time.Duration
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

// WithLinger sets how long the process keeps an upload's lock in Redis
// after Unlock (default DefaultLinger, 2s), so that the next request for the
// upload on this process locks it with no Redis command. A release request
// from another process ends the linger at once. Zero or a negative value
// disables lingering: Unlock then deletes the lock at once.
func WithLinger(d time.Duration) Option {
	return func(o *options) { o.linger = max(d, 0) }
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
// concurrent use; create one per process and share its client. Call Close
// when the process stops serving requests, before closing the client, so
// that the locks it keeps after Unlock (see WithLinger) are released at once
// instead of at their expiry.
type Locker struct {
	client redis.UniversalClient
	opts   options
	hub    *hub

	// afterAcquire, when set (tests only), runs after SET NX succeeded and
	// before the holder subscribes.
	afterAcquire func(id string)

	mu        sync.Mutex
	leases    map[string]*lease    // by lock key: the lease this process holds
	contended map[string]time.Time // by lock key: asked for by others, until then
	sweepAt   int                  // size of contended that triggers a sweep
	closed    bool                 // Close was called: Unlock no longer lingers
}

var _ handler.Locker = (*Locker)(nil)

// New returns a Locker on client. The client stays owned by the caller and
// must stay open while locks are held or lingering (until Close).
func New(client redis.UniversalClient, opts ...Option) *Locker {
	o := options{
		prefix:  DefaultPrefix,
		expiry:  DefaultExpiry,
		pollMin: DefaultPollMin,
		pollMax: DefaultPollMax,
		linger:  DefaultLinger,
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
		client:    client,
		opts:      o,
		hub:       &hub{client: client, log: o.logger, barrierWait: o.renew},
		leases:    make(map[string]*lease),
		contended: make(map[string]time.Time),
		sweepAt:   minSweep,
	}
}

// contendedFor is how long a Locker remembers that another process asked
// for one of its locks: Unlock of that upload's locks does not linger
// meanwhile, so requests that alternate between processes cost no more
// than without lingering.
const contendedFor = 30 * time.Second

// closeConcurrency bounds the deletes that Close runs at once.
const closeConcurrency = 16

// minSweep is the least size of Locker.contended that triggers a sweep of
// its expired entries.
const minSweep = 1024

// markContended remembers that another process asked for the lock with
// key. The caller holds l.mu.
func (l *Locker) markContended(key string, now time.Time) {
	l.contended[key] = now.Add(contendedFor)
	if len(l.contended) < l.sweepAt {
		return
	}
	for k, until := range l.contended {
		if !now.Before(until) {
			delete(l.contended, k)
		}
	}
	l.sweepAt = max(minSweep, 2*len(l.contended))
}

// isContended reports whether another process asked for the lock with key
// less than contendedFor ago. The caller holds l.mu.
func (l *Locker) isContended(key string, now time.Time) bool {
	until, ok := l.contended[key]
	return ok && now.Before(until)
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

// Close releases the locks kept after Unlock (deleting them in Redis) and
// waits for their callbacks; from then on Unlock releases at once. Locks
// still held stay held until their Unlock, and Lock keeps working. Close
// returns the errors of the deletes (such a lock then expires on its own).
// When it releases the last lease, it waits (at most the renew interval)
// for Redis to confirm that the process left every release channel.
// Calling it again does no harm.
func (l *Locker) Close() error {
	l.mu.Lock()
	l.closed = true
	var idle, dying []*lease
	for _, ls := range l.leases {
		switch {
		case ls.dropping:
			dying = append(dying, ls)
		case ls.holder == nil:
			ls.dropping = true
			idle = append(idle, ls)
		}
	}
	l.mu.Unlock()

	errs := make([]error, len(idle))
	var wg sync.WaitGroup
	sem := make(chan struct{}, closeConcurrency)
	for i, ls := range idle {
		sem <- struct{}{}
		wg.Go(func() {
			defer func() { <-sem }()
			errs[i] = ls.drop()
		})
	}
	wg.Wait()
	for _, ls := range append(idle, dying...) {
		<-ls.gone
		ls.running.Wait() // its timer and request callbacks
	}
	if err := errors.Join(errs...); err != nil {
		return fmt.Errorf("redislock: close: %w", err)
	}
	return nil
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
//
// A lock that this process keeps after an Unlock (see WithLinger) is taken
// over with no Redis command; one held by another lock of this process is
// asked for directly, and handed over on its Unlock.
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
	took, err := k.takeLocal(ctx, requestRelease)
	if err != nil || took {
		return err
	}
	return k.acquire(ctx, requestRelease)
}

// setHeld records h as k's holding. It is called before h is visible to any
// other goroutine, so that a requestRelease that calls Unlock finds it.
func (k *lock) setHeld(h *holding) {
	k.mu.Lock()
	k.held = h
	k.mu.Unlock()
}

// takeLocal takes the lease this process holds for k's upload: at once if
// it lingers, after the Unlock of its holder (asked to release) if another
// lock of this process holds it. It reports false when the process holds no
// lease for the upload (or its lease ended meanwhile): Lock then goes to
// Redis.
func (k *lock) takeLocal(ctx context.Context, requestRelease func()) (bool, error) {
	l := k.locker
	for {
		if ctx.Err() != nil {
			return false, handler.ErrLockTimeout
		}
		l.mu.Lock()
		ls := l.leases[k.key]
		if ls == nil {
			l.mu.Unlock()
			return false, nil
		}
		var (
			wait   <-chan struct{}
			holder *holding
		)
		switch {
		case ls.dropping:
			wait = ls.gone
		case ls.holder != nil:
			holder = ls.holder
			wait = holder.unlocked
		case !ls.lost && time.Now().Add(l.opts.renew).Before(ls.validUntil):
			// Valid beyond the next renewal (renew's own test for a
			// loss): take it over.
			h := newHolding(ls, requestRelease)
			k.setHeld(h)
			ls.holder = h
			ls.armLinger() // disarms it
			l.mu.Unlock()
			return true, nil
		default:
			// Lost, or its renewals failed for too long (the renewal
			// is late to notice): end it here and lock through Redis.
			ls.dropping = true
			l.mu.Unlock()
			if err := ls.drop(); err != nil {
				l.opts.logger.Warn("release expired lingering lock", zap.String("id", k.id), zap.Error(err))
			}
			continue
		}
		l.mu.Unlock()
		if holder != nil {
			holder.release()
		}
		select {
		case <-wait:
		case <-ctx.Done():
			return false, handler.ErrLockTimeout
		}
	}
}

// acquire takes the lock in Redis (see the package documentation), asking
// its holder to release it, until ctx is done.
func (k *lock) acquire(ctx context.Context, requestRelease func()) error {
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
			k.hold(base, token, start, requestRelease)
			return nil
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

// hold turns a lock just acquired in Redis into a lease of this process
// held by k: subscribe, check for a request that came before the
// subscription, arm the renewal timer.
func (k *lock) hold(base context.Context, token string, acquiredAt time.Time, requestRelease func()) {
	l := k.locker
	if l.afterAcquire != nil {
		l.afterAcquire(k.id)
	}
	ctx, cancel := context.WithCancel(base)
	ls := &lease{
		locker:     l,
		id:         k.id,
		key:        k.key,
		reqKey:     k.reqKey,
		channel:    k.channel,
		token:      token,
		ctx:        ctx,
		cancel:     cancel,
		gone:       make(chan struct{}),
		validUntil: acquiredAt.Add(l.opts.expiry),
	}
	h := newHolding(ls, requestRelease)
	ls.holder = h
	k.setHeld(h)
	l.hub.subscribe(ctx, k.channel, ls)
	// The subscription is live: a request sent before it left P:lockreq.
	ls.renew()
	l.mu.Lock()
	// A lease still in the map is ending, or was lost: this one replaces
	// it (each removes itself only while it is the current one).
	l.leases[k.key] = ls
	ls.start()
	l.mu.Unlock()
}

// Unlock releases the lock. The process keeps the lease for the linger
// time (see WithLinger) unless someone else asked for it (or for an
// earlier lease of the upload, less than contendedFor ago), it was lost,
// the Locker is closed or lingering is disabled: then Unlock leaves the
// release channel and deletes the key if it still holds the lease's token.
// Unlocking a lock that is not held does nothing.
func (k *lock) Unlock() error {
	k.mu.Lock()
	h := k.held
	k.held = nil
	k.mu.Unlock()
	if h == nil {
		return nil
	}
	h.mu.Lock()
	h.stopped = true
	h.mu.Unlock()

	ls := h.lease
	l := k.locker
	l.mu.Lock()
	ls.holder = nil
	now := time.Now()
	linger := l.opts.linger > 0 && !l.closed && !ls.wanted && !ls.lost && !ls.dropping && !l.isContended(k.key, now)
	drop := !linger && !ls.dropping
	if linger {
		ls.idleSince = now
	} else {
		ls.dropping = true
	}
	ls.armLinger()
	close(h.unlocked) // local waiters take it over, or wait for gone
	l.mu.Unlock()

	if linger || !drop {
		return nil
	}
	if err := ls.drop(); err != nil {
		return fmt.Errorf("redislock: unlock %q: %w", k.id, err)
	}
	return nil
}

// holding is one lock's tenure of a lease.
type holding struct {
	lease          *lease
	requestRelease func()
	unlocked       chan struct{} // closed by Unlock

	mu      sync.Mutex
	asked   bool // requestRelease was called
	stopped bool // Unlock has begun: requestRelease is no longer called
}

func newHolding(ls *lease, requestRelease func()) *holding {
	return &holding{lease: ls, requestRelease: requestRelease, unlocked: make(chan struct{})}
}

// release calls requestRelease once, unless Unlock has begun. The caller
// holds no lock of the Locker: requestRelease may call Unlock.
func (h *holding) release() {
	h.mu.Lock()
	if h.asked || h.stopped {
		h.mu.Unlock()
		return
	}
	h.asked = true
	h.mu.Unlock()
	h.requestRelease()
}
