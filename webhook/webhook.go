// Package webhook tells the platform about its uploads: it POSTs the webhook
// events that the upload record's transitions queue in its outbox
// (store.Upload.Outbox) to one URL, signed, at least once.
//
// # Events
//
// upload.created, upload.received (every byte is in), video.delivered (the
// video id and asset URLs), upload.failed (the reason) and upload.terminated
// (tus DELETE). The body is a Payload; every request carries
// X-Tusgate-Signature (the hex HMAC-SHA256 of the raw body, keyed with the
// webhook secret: check it with Verify), X-Tusgate-Event-Id,
// X-Tusgate-Event-Type, X-Tusgate-Delivery-Attempt and User-Agent: tusgate.
//
// # Delivery
//
// A transition and the event it causes are saved in one atomic write of the
// upload's record, so a crash never loses one without the other. The
// Dispatcher finds records with pending events through the gateway's and the
// forwarder's Notify calls and by listing the active uploads (a record stays
// listed while its outbox holds events, even when its state is terminal), so
// events queued before a restart, or by another instance, are delivered too.
//
// The events of one upload go out in order: the next is sent once the
// previous one was acknowledged. A 2xx answer acknowledges an event; anything
// else (another status, a network error, a timeout; redirects are not
// followed) is retried with capped exponential backoff with jitter, waiting
// at least the Retry-After of a 429 or 503 (at most an hour). The time of the
// next attempt is saved in the record, so a restart keeps the schedule. An
// event that still fails Config.MaxAge after it happened is dropped, with an
// error in the log.
//
// Before sending an event, a dispatcher claims it with a lease in the record,
// so that several gateway instances sharing a state store send each event
// once in the normal case. Delivery is still at least once: an
// acknowledgement that cannot be recorded (store outage, crash), or a lease
// that expires while the receiver is slow, means the event is sent again.
// Receivers de-duplicate on the event id.
package webhook

import (
	"context"
	crand "crypto/rand"
	"errors"
	"fmt"
	"math/rand/v2"
	"net/http"
	"net/url"
	"sync"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"go.uber.org/zap"

	"github.com/tusgate/tusgate/store"
)

// Store is the part of the state store the dispatcher uses.
type Store interface {
	// Get returns the record, or an error wrapping store.ErrNotFound.
	Get(ctx context.Context, id string) (*store.Upload, error)
	// Update applies fn atomically (see store.Store.Update).
	Update(ctx context.Context, id string, fn func(*store.Upload) error) (*store.Upload, error)
	// ListActive returns the ids of the active uploads, including terminal
	// ones whose outbox holds events.
	ListActive(ctx context.Context) ([]string, error)
}

// Defaults of Config.
const (
	DefaultTimeout    = 10 * time.Second
	DefaultMaxAge     = 24 * time.Hour
	DefaultWorkers    = 4
	DefaultMinBackoff = time.Second
	DefaultMaxBackoff = 10 * time.Minute
	DefaultResync     = 30 * time.Second
)

// Internal bounds.
const (
	// maxRetryAfter caps the wait a receiver's Retry-After asks for.
	maxRetryAfter = time.Hour
	// storeRetry is how long an upload waits after a state-store failure.
	storeRetry = 5 * time.Second
	// recordFor bounds the retries of recording an outcome (ack, retry,
	// release), also during shutdown.
	recordFor = 10 * time.Second
	// maxEventsPerPass bounds the events of one upload a worker sends
	// before it lets other uploads go.
	maxEventsPerPass = 8
	// maxBodyRead is how much of a response body is read (then discarded)
	// so the connection can be reused.
	maxBodyRead = 64 << 10
)

// Config tunes a Dispatcher. Zero values take the documented defaults.
type Config struct {
	// URL is the http or https endpoint every event is POSTed to. It may
	// carry credentials (user:password@, sent as Basic auth, or a query
	// token): logs show it without its user info and query. Empty:
	// webhooks are off, and the dispatcher only drops the events older
	// than MaxAge (queued while webhooks were on, or by an instance that
	// has them), so their records leave the active list.
	URL string
	// Secret keys the HMAC-SHA256 signature of every body. Required with
	// URL; never logged.
	Secret []byte
	// Timeout bounds one request, from connecting to reading the answer.
	// Default 10s.
	Timeout time.Duration
	// MaxAge is how long after it happened an event that keeps failing is
	// retried; it is then dropped, with an error in the log. Default 24h.
	MaxAge time.Duration
	// Workers bounds the requests in flight (one per upload at a time).
	// Default 4.
	Workers int
	// MinBackoff and MaxBackoff bound the wait between the attempts of an
	// event: about MinBackoff after the first failure, doubling, with
	// jitter, capped at MaxBackoff. Defaults 1s and 10 min.
	MinBackoff, MaxBackoff time.Duration
	// Resync is how often every active upload is reloaded from the store,
	// to find events queued by other instances or before a restart.
	// Default 30s.
	Resync time.Duration
	// Owner identifies this dispatcher's leases on events (the instance
	// id). A restarted process with the same Owner takes its leases back at
	// once. Default: a random id.
	Owner string
	// Transport sends the requests. Default: a clone of
	// http.DefaultTransport.
	Transport http.RoundTripper
	// Logger receives the dispatcher's logs. Default zap.NewNop().
	Logger *zap.Logger
	// Now is the clock. Default time.Now.
	Now func() time.Time
	// Registerer receives the dispatcher's Prometheus metrics; nil: none.
	Registerer prometheus.Registerer
}

func (c *Config) setDefaults() {
	if c.Timeout <= 0 {
		c.Timeout = DefaultTimeout
	}
	if c.MaxAge <= 0 {
		c.MaxAge = DefaultMaxAge
	}
	if c.Workers <= 0 {
		c.Workers = DefaultWorkers
	}
	if c.MinBackoff <= 0 {
		c.MinBackoff = DefaultMinBackoff
	}
	if c.MaxBackoff <= 0 {
		c.MaxBackoff = DefaultMaxBackoff
	}
	c.MaxBackoff = max(c.MaxBackoff, c.MinBackoff)
	if c.Resync <= 0 {
		c.Resync = DefaultResync
	}
	if c.Owner == "" {
		c.Owner = "webhook-" + crand.Text()
	}
	if c.Transport == nil {
		c.Transport = http.DefaultTransport.(*http.Transport).Clone()
	}
	if c.Logger == nil {
		c.Logger = zap.NewNop()
	}
	if c.Now == nil {
		c.Now = time.Now
	}
}

// validate reports every problem of the configuration.
func (c *Config) validate() error {
	var errs []error
	if c.URL != "" {
		u, err := url.Parse(c.URL)
		switch {
		case err != nil:
			// url.Parse quotes the URL, which may hold credentials.
			errs = append(errs, errors.New("webhook URL does not parse"))
		case u.Scheme != "http" && u.Scheme != "https":
			errs = append(errs, fmt.Errorf("webhook URL %s: want an http or https URL", redact(c.URL)))
		case u.Host == "":
			errs = append(errs, fmt.Errorf("webhook URL %s: no host", redact(c.URL)))
		}
		if len(c.Secret) == 0 {
			errs = append(errs, errors.New("webhook secret is required with a webhook URL: receivers check the signature with it"))
		}
	}
	if c.Timeout < 0 || c.MaxAge < 0 || c.MinBackoff < 0 || c.MaxBackoff < 0 || c.Resync < 0 {
		errs = append(errs, errors.New("webhook durations must not be negative"))
	}
	return errors.Join(errs...)
}

// redact returns rawURL without user info, query and fragment, for logs.
func redact(rawURL string) string {
	u, err := url.Parse(rawURL)
	if err != nil {
		return "(unparsable URL)"
	}
	u.User, u.RawQuery, u.ForceQuery, u.Fragment, u.RawFragment = nil, "", false, "", ""
	return u.String()
}

// Dispatcher delivers the webhook events of the uploads in a state store.
// Create it with New, start it with Run, and tell it about changed uploads
// with Notify.
type Dispatcher struct {
	cfg      Config
	st       Store
	client   *http.Client
	endpoint string // the URL, redacted
	lease    time.Duration
	log      *zap.Logger
	m        *metrics

	wake chan struct{}

	mu      sync.Mutex
	dirty   map[string]bool      // uploads to look at now
	due     map[string]time.Time // uploads to look at later
	busy    map[string]bool      // uploads a worker is on
	pending map[string]pending   // what the last look at each upload saw
}

// pending is what the dispatcher last saw of an upload's outbox.
type pending struct {
	events int
	oldest time.Time
}

// New returns a Dispatcher that delivers the events of st's uploads as cfg
// says. It does nothing until Run. It returns an error naming every problem
// of cfg (the URL is never quoted with its credentials).
func New(cfg Config, st Store) (*Dispatcher, error) {
	if err := cfg.validate(); err != nil {
		return nil, err
	}
	cfg.setDefaults()
	d := &Dispatcher{
		cfg: cfg,
		st:  st,
		client: &http.Client{
			Transport: cfg.Transport,
			Timeout:   cfg.Timeout,
			CheckRedirect: func(*http.Request, []*http.Request) error {
				return http.ErrUseLastResponse
			},
		},
		lease:   2*cfg.Timeout + recordFor,
		log:     cfg.Logger,
		wake:    make(chan struct{}, 1),
		dirty:   map[string]bool{},
		due:     map[string]time.Time{},
		busy:    map[string]bool{},
		pending: map[string]pending{},
	}
	if cfg.URL != "" {
		d.endpoint = redact(cfg.URL)
	}
	d.m = newMetrics(cfg.Registerer, d.queueStats)
	return d, nil
}

// Notify tells the dispatcher that upload id changed (it may have queued an
// event). It never blocks.
func (d *Dispatcher) Notify(id string) {
	d.mu.Lock()
	d.dirty[id] = true
	d.mu.Unlock()
	d.poke()
}

func (d *Dispatcher) poke() {
	select {
	case d.wake <- struct{}{}:
	default:
	}
}

// Run delivers events until ctx is done, then waits for the requests in
// flight to stop (they are cancelled; their events are released for the
// next attempt) and returns nil. It lists the active uploads at once, then
// every Config.Resync.
func (d *Dispatcher) Run(ctx context.Context) error {
	if d.cfg.URL == "" {
		d.log.Info("webhooks off: events left from when they were on are dropped after the max age", zap.Duration("maxAge", d.cfg.MaxAge))
	} else {
		d.log.Info("webhooks on", zap.String("url", d.endpoint), zap.Int("workers", d.cfg.Workers),
			zap.Duration("timeout", d.cfg.Timeout), zap.Duration("maxAge", d.cfg.MaxAge))
	}
	var wg sync.WaitGroup
	defer wg.Wait()
	resync := time.NewTicker(d.cfg.Resync)
	defer resync.Stop()
	timer := time.NewTimer(time.Hour)
	defer timer.Stop()
	d.resync(ctx)
	for {
		next := d.start(ctx, &wg)
		timer.Stop()
		if !next.IsZero() {
			timer.Reset(max(next.Sub(d.cfg.Now()), time.Millisecond))
		}
		select {
		case <-ctx.Done():
			return nil
		case <-d.wake:
		case <-timer.C:
		case <-resync.C:
			d.resync(ctx)
		}
	}
}

// resync marks every active upload dirty.
func (d *Dispatcher) resync(ctx context.Context) {
	ids, err := d.st.ListActive(ctx)
	if err != nil {
		if ctx.Err() == nil {
			d.log.Warn("webhooks: list active uploads", zap.Error(err))
		}
		return
	}
	d.mu.Lock()
	for _, id := range ids {
		d.dirty[id] = true
	}
	d.mu.Unlock()
}

// start hands the uploads to look at now to free workers, and returns when
// the next upload waiting for a time is due (zero: none).
func (d *Dispatcher) start(ctx context.Context, wg *sync.WaitGroup) time.Time {
	now := d.cfg.Now()
	d.mu.Lock()
	defer d.mu.Unlock()
	for id, at := range d.due {
		if !at.After(now) {
			d.dirty[id] = true
			delete(d.due, id)
		}
	}
	for id := range d.dirty {
		if len(d.busy) >= d.cfg.Workers {
			break // a worker that finishes pokes the loop
		}
		if d.busy[id] {
			continue // looked at again when its worker is done
		}
		delete(d.dirty, id)
		delete(d.due, id)
		d.busy[id] = true
		wg.Go(func() {
			at := d.process(ctx, id)
			d.mu.Lock()
			delete(d.busy, id)
			if !at.IsZero() {
				d.due[id] = at
			}
			d.mu.Unlock()
			d.poke()
		})
	}
	var next time.Time
	for _, at := range d.due {
		if next.IsZero() || at.Before(next) {
			next = at
		}
	}
	return next
}

// observe records what the dispatcher saw of upload id's outbox (u nil: the
// record is gone).
func (d *Dispatcher) observe(id string, u *store.Upload) {
	d.mu.Lock()
	defer d.mu.Unlock()
	if u == nil || len(u.Outbox) == 0 {
		delete(d.pending, id)
		return
	}
	d.pending[id] = pending{events: len(u.Outbox), oldest: u.Outbox[0].CreatedAt}
}

// queueStats returns the events pending in the uploads the dispatcher knows
// of, and the age of the oldest.
func (d *Dispatcher) queueStats() (events int, oldest time.Duration) {
	now := d.cfg.Now()
	d.mu.Lock()
	defer d.mu.Unlock()
	for _, p := range d.pending {
		events += p.events
		oldest = max(oldest, now.Sub(p.oldest))
	}
	return events, oldest
}

// process sends the due events of upload id, in order, and returns when it
// must be looked at again (zero: only when notified).
func (d *Dispatcher) process(ctx context.Context, id string) time.Time {
	for range maxEventsPerPass {
		if ctx.Err() != nil {
			return time.Time{}
		}
		u, err := d.st.Get(ctx, id)
		if errors.Is(err, store.ErrNotFound) {
			d.observe(id, nil)
			return time.Time{}
		}
		if err != nil {
			if ctx.Err() == nil {
				d.log.Warn("webhooks: load upload", zap.String("id", id), zap.Error(err))
			}
			return d.cfg.Now().Add(storeRetry)
		}
		d.observe(id, u)
		now := d.cfg.Now()
		ev, at, ok := u.NextEvent(d.cfg.Owner, now)
		if !ok {
			return at
		}
		if d.cfg.URL == "" {
			if expiry := ev.CreatedAt.Add(d.cfg.MaxAge); now.Before(expiry) {
				return expiry
			}
			d.drop(ctx, u, ev, "webhooks are off")
			continue
		}
		_, err = d.st.Update(ctx, id, func(r *store.Upload) error {
			return r.ClaimEvent(ev.ID, d.cfg.Owner, now.Add(d.lease), now)
		})
		switch {
		case errors.Is(err, store.ErrConflict):
			continue // changed meanwhile: look again
		case errors.Is(err, store.ErrNotFound):
			d.observe(id, nil)
			return time.Time{}
		case err != nil:
			if ctx.Err() == nil {
				d.log.Warn("webhooks: claim event", zap.String("id", id), zap.String("event", ev.ID), zap.Error(err))
			}
			return d.cfg.Now().Add(storeRetry)
		}
		res := d.send(ctx, u, ev)
		switch {
		case res.ok:
			d.ack(ctx, u, ev)
		case ctx.Err() != nil:
			d.release(ctx, u.ID, ev)
			return time.Time{}
		default:
			if next, retry := d.retry(ctx, u, ev, res); retry {
				return next
			}
		}
	}
	return d.cfg.Now()
}

// ack records the acknowledgement of ev, retrying through store failures
// for a while (also after ctx ended): an acknowledgement left unrecorded
// means the event is sent again.
func (d *Dispatcher) ack(ctx context.Context, u *store.Upload, ev store.Event) {
	d.m.deliveries.WithLabelValues("delivered").Inc()
	err := d.record(ctx, u.ID, func(r *store.Upload) error { return r.AckEvent(ev.ID) })
	if err != nil && !errors.Is(err, store.ErrConflict) && !errors.Is(err, store.ErrNotFound) {
		d.log.Warn("webhook delivered but not recorded: it will be sent again", zap.String("id", u.ID),
			zap.String("event", ev.ID), zap.String("type", string(ev.Type)), zap.Error(err))
		return
	}
	d.log.Debug("webhook delivered", zap.String("id", u.ID), zap.String("event", ev.ID),
		zap.String("type", string(ev.Type)), zap.Int("attempt", ev.Attempts+1))
}

// retry records a failed attempt of ev and returns when to try again; when
// ev is MaxAge old it is dropped instead (retry false).
func (d *Dispatcher) retry(ctx context.Context, u *store.Upload, ev store.Event, res result) (next time.Time, retry bool) {
	now := d.cfg.Now()
	expiry := ev.CreatedAt.Add(d.cfg.MaxAge)
	if !now.Before(expiry) {
		d.m.deliveries.WithLabelValues("failed").Inc()
		d.drop(ctx, u, ev, res.msg)
		return time.Time{}, false
	}
	attempts := ev.Attempts + 1
	delay := d.backoff(attempts)
	if res.retryAfter > delay {
		delay = res.retryAfter
	}
	next = now.Add(delay)
	if next.After(expiry) {
		next = expiry // one last attempt at MaxAge
	}
	d.m.deliveries.WithLabelValues("failed").Inc()
	d.log.Warn("webhook delivery failed; will retry", zap.String("id", u.ID), zap.String("event", ev.ID),
		zap.String("type", string(ev.Type)), zap.Int("attempt", attempts), zap.Time("next", next), zap.String("error", res.msg))
	err := d.record(ctx, u.ID, func(r *store.Upload) error { return r.RetryEvent(ev.ID, d.cfg.Owner, next, res.msg) })
	if err != nil && !errors.Is(err, store.ErrConflict) && !errors.Is(err, store.ErrNotFound) {
		d.log.Warn("webhooks: record failed attempt", zap.String("id", u.ID), zap.String("event", ev.ID), zap.Error(err))
	}
	return next, true
}

// drop removes ev from the outbox without delivering it.
func (d *Dispatcher) drop(ctx context.Context, u *store.Upload, ev store.Event, why string) {
	err := d.record(ctx, u.ID, func(r *store.Upload) error { return r.DropEvent(ev.ID) })
	if err != nil {
		if !errors.Is(err, store.ErrConflict) && !errors.Is(err, store.ErrNotFound) {
			d.log.Warn("webhooks: drop event", zap.String("id", u.ID), zap.String("event", ev.ID), zap.Error(err))
		}
		return
	}
	d.m.deliveries.WithLabelValues("dropped").Inc()
	d.log.Error("webhook event dropped: not delivered within the max age", zap.String("id", u.ID),
		zap.String("event", ev.ID), zap.String("type", string(ev.Type)), zap.Time("createdAt", ev.CreatedAt),
		zap.Int("attempts", ev.Attempts), zap.Duration("maxAge", d.cfg.MaxAge), zap.String("lastError", why))
}

// release gives back the lease on ev after a cancelled attempt.
func (d *Dispatcher) release(ctx context.Context, id string, ev store.Event) {
	err := d.record(ctx, id, func(r *store.Upload) error { return r.ReleaseEvent(ev.ID, d.cfg.Owner) })
	if err != nil && !errors.Is(err, store.ErrConflict) && !errors.Is(err, store.ErrNotFound) {
		d.log.Warn("webhooks: release event", zap.String("id", id), zap.String("event", ev.ID), zap.Error(err))
	}
}

// record applies fn to the record of id, retrying state-store failures for
// up to recordFor, even after ctx ended.
func (d *Dispatcher) record(ctx context.Context, id string, fn func(*store.Upload) error) error {
	ctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), recordFor)
	defer cancel()
	for attempt := 1; ; attempt++ {
		_, err := d.st.Update(ctx, id, fn)
		if err == nil || !errors.Is(err, store.ErrUnavailable) {
			return err
		}
		wait := min(50*time.Millisecond<<min(attempt, 10), time.Second)
		t := time.NewTimer(wait)
		select {
		case <-t.C:
		case <-ctx.Done():
			t.Stop()
			return err
		}
	}
}

// backoff returns the wait after the n-th failed attempt (n ≥ 1): the
// ceiling MinBackoff·2^(n-1), capped at MaxBackoff, with jitter: a random
// value in [ceiling/2, ceiling).
func (d *Dispatcher) backoff(n int) time.Duration {
	ceil := d.cfg.MinBackoff << min(n-1, 30)
	if ceil <= 0 || ceil > d.cfg.MaxBackoff {
		ceil = d.cfg.MaxBackoff
	}
	half := ceil / 2
	return half + rand.N(ceil-half+1)
}
