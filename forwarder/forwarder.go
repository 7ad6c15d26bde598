// Package forwarder delivers received upload bytes to api.video.
//
// It plans each upload into parts (store.Plan), sends each part as soon as
// its bytes are durable in the data store, most urgent first: first parts by
// token deadline (earliest first, no deadline last), then later parts by
// completion deadline. A part is claimed with a lease in the state store
// before it is sent and recorded as delivered after api.video accepted it, so
// a restart resumes exactly where the last process stopped.
package forwarder

import (
	"context"
	"errors"
	"fmt"
	"io"
	"math/rand/v2"
	"sync"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"go.uber.org/zap"

	"github.com/tusgate/tusgate/apivideo"
	"github.com/tusgate/tusgate/store"
)

// Store is the part of the state store the forwarder uses.
type Store interface {
	Get(ctx context.Context, id string) (*store.Upload, error)
	Update(ctx context.Context, id string, fn func(*store.Upload) error) (*store.Upload, error)
	ListActive(ctx context.Context) ([]string, error)
}

// Source reads the bytes an upload has received so far.
type Source interface {
	// OpenRange returns a reader of exactly length bytes from offset.
	OpenRange(ctx context.Context, id string, offset, length int64) (io.ReadCloser, error)
}

// Discarder is a Source that can free the bytes of a part api.video has
// accepted before the whole upload is delivered (the disk store punches a
// hole). The forwarder never reads a delivered part again.
type Discarder interface {
	Discard(ctx context.Context, id string, offset, length int64) error
}

// Uploader sends one part to api.video.
type Uploader interface {
	UploadPart(ctx context.Context, req apivideo.PartRequest) (*apivideo.Video, error)
}

// Minter creates api.video upload tokens (managed mode).
type Minter interface {
	CreateUploadToken(ctx context.Context, ttl time.Duration) (*apivideo.UploadToken, error)
}

// Config tunes a Forwarder. Zero values take the documented defaults.
type Config struct {
	// Workers bounds the parts in flight across all uploads. Default 4.
	Workers int
	// ParallelParts bounds the parts in flight of one upload (after part 1,
	// which always goes alone). Default 3.
	ParallelParts int
	// LeaseDuration is how long a claim on a part lasts unless renewed.
	// Default 30s; it is renewed every third of it while the part streams.
	LeaseDuration time.Duration
	// Owner identifies this process's leases. A restarted process with the
	// same Owner takes its old leases back at once. Required.
	Owner string
	// MinBackoff and MaxBackoff bound the full-jitter exponential backoff
	// between attempts of one part. Defaults 500ms and 30s.
	MinBackoff, MaxBackoff time.Duration
	// MaxAttempts is how many transient failures in a row fail an upload
	// whose deadline does not end the retries first. Default 30.
	MaxAttempts int
	// Resync is how often every active upload is reloaded from the store,
	// to pick up leases that expired elsewhere. Default LeaseDuration.
	Resync time.Duration
	// Minter mints upload tokens for managed uploads (store.Upload.
	// TokenManaged) just before their part 1 is sent. Nil: managed uploads
	// fail with token_rejected.
	Minter Minter
	// TokenTTL is the lifetime of minted tokens. Default 1h.
	TokenTTL time.Duration
	// Registerer receives the forwarder's Prometheus metrics; nil: none.
	Registerer prometheus.Registerer
	// Now is the clock. Default time.Now.
	Now func() time.Time
	// Changed, when set, is told of every upload the forwarder delivered or
	// failed (the webhook dispatcher: their events wait in the record). It
	// must not block.
	Changed func(id string)
	// Logger receives the forwarder's logs. Default zap.NewNop().
	Logger *zap.Logger
}

func (c *Config) setDefaults() {
	if c.Workers <= 0 {
		c.Workers = 4
	}
	if c.ParallelParts <= 0 {
		c.ParallelParts = 3
	}
	if c.LeaseDuration <= 0 {
		c.LeaseDuration = 30 * time.Second
	}
	if c.MinBackoff <= 0 {
		c.MinBackoff = 500 * time.Millisecond
	}
	if c.MaxBackoff <= 0 {
		c.MaxBackoff = 30 * time.Second
	}
	if c.MaxAttempts <= 0 {
		c.MaxAttempts = 30
	}
	if c.Resync <= 0 {
		c.Resync = c.LeaseDuration
	}
	if c.TokenTTL <= 0 {
		c.TokenTTL = time.Hour
	}
	if c.Now == nil {
		c.Now = time.Now
	}
	if c.Logger == nil {
		c.Logger = zap.NewNop()
	}
}

// Forwarder schedules and sends parts. Create it with New, start it with Run,
// and tell it about new bytes with Notify.
type Forwarder struct {
	cfg Config
	st  Store
	src Source
	up  Uploader
	log *zap.Logger
	m   *metrics

	wake chan struct{}

	mu      sync.Mutex
	dirty   map[string]bool
	uploads map[string]*tracked
	busy    int
}

// tracked is the forwarder's view of one active upload.
type tracked struct {
	rec       *store.Upload
	inFlight  map[int]bool
	notBefore time.Time // backoff after a failed attempt
}

// New returns a Forwarder; it does nothing until Run.
func New(cfg Config, st Store, src Source, up Uploader) *Forwarder {
	cfg.setDefaults()
	return &Forwarder{
		cfg:     cfg,
		st:      st,
		src:     src,
		up:      up,
		log:     cfg.Logger,
		m:       newMetrics(cfg.Registerer),
		wake:    make(chan struct{}, 1),
		dirty:   map[string]bool{},
		uploads: map[string]*tracked{},
	}
}

// Notify tells the forwarder that upload id changed (new bytes, completion,
// termination). It never blocks.
func (f *Forwarder) Notify(id string) {
	f.mu.Lock()
	f.dirty[id] = true
	f.mu.Unlock()
	f.poke()
}

func (f *Forwarder) poke() {
	select {
	case f.wake <- struct{}{}:
	default:
	}
}

// Run schedules parts until ctx is done, then waits for the parts in flight
// to stop (their sends are cancelled; their leases are released) and returns.
func (f *Forwarder) Run(ctx context.Context) error {
	var wg sync.WaitGroup
	defer wg.Wait()

	f.resync(ctx)
	resync := time.NewTicker(f.cfg.Resync)
	defer resync.Stop()
	timer := time.NewTimer(time.Hour)
	defer timer.Stop()

	for {
		next := f.schedule(ctx, &wg)
		if !timer.Stop() {
			select {
			case <-timer.C:
			default:
			}
		}
		if !next.IsZero() {
			timer.Reset(max(next.Sub(f.cfg.Now()), time.Millisecond))
		}
		select {
		case <-ctx.Done():
			return nil
		case <-f.wake:
		case <-timer.C:
		case <-resync.C:
			f.resync(ctx)
		}
	}
}

// resync marks every active upload in the store dirty.
func (f *Forwarder) resync(ctx context.Context) {
	ids, err := f.st.ListActive(ctx)
	if err != nil {
		if ctx.Err() == nil {
			f.log.Warn("list active uploads", zap.Error(err))
		}
		return
	}
	f.mu.Lock()
	for _, id := range ids {
		f.dirty[id] = true
	}
	f.mu.Unlock()
}

// schedule reloads dirty uploads, fails those whose deadline passed, starts
// as many of the most urgent parts as there are free workers, and returns
// when it next needs to run (zero: only when woken).
func (f *Forwarder) schedule(ctx context.Context, wg *sync.WaitGroup) time.Time {
	f.reload(ctx)
	now := f.cfg.Now()

	f.mu.Lock()
	defer f.mu.Unlock()
	var next time.Time
	later := func(t time.Time) {
		if !t.IsZero() && (next.IsZero() || t.Before(next)) {
			next = t
		}
	}
	defer f.observeQueue(now)
	for f.busy < f.cfg.Workers {
		j, ok := f.pick(now, later)
		if !ok {
			break
		}
		t := f.uploads[j.id]
		t.inFlight[j.part] = true
		f.busy++
		f.m.inFlight.Inc()
		wg.Add(1)
		go func() {
			defer wg.Done()
			f.send(ctx, j)
			f.mu.Lock()
			delete(t.inFlight, j.part)
			f.busy--
			f.m.inFlight.Dec()
			f.dirty[j.id] = true
			f.mu.Unlock()
			f.poke()
		}()
	}
	return next
}

// observeQueue sets the queue-depth gauges: the ready parts not yet
// started. Caller holds f.mu.
func (f *Forwarder) observeQueue(now time.Time) {
	var first, later int
	for _, t := range f.uploads {
		if t.notBefore.After(now) {
			continue
		}
		for _, k := range t.rec.ReadyPartsFor(f.cfg.Owner, now) {
			switch {
			case t.inFlight[k]:
			case k == 1:
				first++
			default:
				later++
			}
		}
	}
	f.m.queueDepth.WithLabelValues("first").Set(float64(first))
	f.m.queueDepth.WithLabelValues("later").Set(float64(later))
}

// job is one part to send, with the record it was planned from.
type job struct {
	id   string
	part int
	rec  *store.Upload
}

// pick returns the most urgent part that can start now. Caller holds f.mu.
// later is told of times at which something not ready now becomes ready.
func (f *Forwarder) pick(now time.Time, later func(time.Time)) (job, bool) {
	var best job
	var bestKey urgency
	found := false
	for id, t := range f.uploads {
		u := t.rec
		if t.notBefore.After(now) {
			later(t.notBefore)
			continue
		}
		if u.VideoID == "" && !u.TokenDeadline.IsZero() && !u.TokenManaged {
			if !now.Before(u.TokenDeadline) {
				// Passed: reload it now so checkDeadlines fails it, even
				// if its client went quiet and nothing else marks it.
				f.dirty[id] = true
				later(now)
				continue
			}
			later(u.TokenDeadline)
		}
		limit := f.cfg.ParallelParts
		if u.VideoID == "" {
			limit = 1
		}
		if len(t.inFlight) >= limit {
			continue
		}
		for _, k := range u.ReadyPartsFor(f.cfg.Owner, now) {
			if t.inFlight[k] {
				continue
			}
			key := urgencyOf(u, k)
			if !found || key.less(bestKey) {
				best, bestKey, found = job{id: id, part: k, rec: u}, key, true
			}
			break // parts of one upload go in ascending order
		}
		for k, l := range u.InFlight {
			if l.Owner != f.cfg.Owner && !t.inFlight[k] {
				later(l.Until) // someone else's lease: look again when it ends
			}
		}
	}
	return best, found
}

// urgency orders parts: first parts before later parts; first parts by token
// deadline (none sorts last), later parts by completion deadline; then by
// creation time and part number for a stable order.
type urgency struct {
	class    int
	deadline time.Time
	created  time.Time
	part     int
}

func urgencyOf(u *store.Upload, k int) urgency {
	if k == 1 {
		return urgency{class: 0, deadline: u.TokenDeadline, created: u.CreatedAt, part: k}
	}
	return urgency{class: 1, deadline: u.CompletionDeadline, created: u.CreatedAt, part: k}
}

func (a urgency) less(b urgency) bool {
	if a.class != b.class {
		return a.class < b.class
	}
	if !a.deadline.Equal(b.deadline) {
		switch {
		case a.deadline.IsZero():
			return false
		case b.deadline.IsZero():
			return true
		}
		return a.deadline.Before(b.deadline)
	}
	if !a.created.Equal(b.created) {
		return a.created.Before(b.created)
	}
	return a.part < b.part
}

// reload refreshes the dirty uploads from the store and ends the ones that
// can no longer be delivered.
func (f *Forwarder) reload(ctx context.Context) {
	f.mu.Lock()
	ids := make([]string, 0, len(f.dirty))
	for id := range f.dirty {
		ids = append(ids, id)
	}
	clear(f.dirty)
	f.mu.Unlock()

	for _, id := range ids {
		u, err := f.st.Get(ctx, id)
		if err != nil && !errors.Is(err, store.ErrNotFound) {
			if ctx.Err() == nil {
				f.log.Warn("load upload", zap.String("id", id), zap.Error(err))
				f.mu.Lock()
				f.dirty[id] = true // try again on the next wake
				f.mu.Unlock()
			}
			continue
		}
		if err == nil {
			u = f.checkDeadlines(ctx, u)
		}
		f.mu.Lock()
		t := f.uploads[id]
		switch {
		case u == nil || u.State.Terminal():
			if t != nil && len(t.inFlight) == 0 {
				delete(f.uploads, id)
			} else if t != nil {
				t.rec = u
			}
		case t == nil:
			f.uploads[id] = &tracked{rec: u, inFlight: map[int]bool{}}
		default:
			t.rec = u
		}
		f.mu.Unlock()
	}
}

// checkDeadlines fails an upload whose token deadline passed before part 1
// was accepted, or whose completion deadline passed before the last part,
// and an upload that completed with no bytes.
func (f *Forwarder) checkDeadlines(ctx context.Context, u *store.Upload) *store.Upload {
	if u.State.Terminal() {
		return u
	}
	now := f.cfg.Now()
	var reason, msg string
	switch {
	case u.Complete && !u.SizeDeferred && u.Size == 0:
		reason, msg = store.ReasonEmptyUpload, "the upload has no bytes; api.video needs at least one"
	case u.VideoID == "" && !u.TokenManaged && !u.TokenDeadline.IsZero() && !now.Before(u.TokenDeadline):
		reason, msg = store.ReasonDeadlineMissed, fmt.Sprintf("the upload token expired at %s before the first part reached api.video", u.TokenDeadline.UTC().Format(time.RFC3339))
	case u.VideoID != "" && !u.CompletionDeadline.IsZero() && !now.Before(u.CompletionDeadline):
		reason, msg = store.ReasonDeadlineMissed, fmt.Sprintf("api.video's completion window ended at %s before the last part was delivered", u.CompletionDeadline.UTC().Format(time.RFC3339))
	default:
		return u
	}
	return f.fail(ctx, u, reason, msg)
}

// fail records a terminal failure and returns the saved record (or u when the
// store refused, e.g. because another instance finished it first).
func (f *Forwarder) fail(ctx context.Context, u *store.Upload, reason, msg string) *store.Upload {
	saved, err := f.st.Update(ctx, u.ID, func(r *store.Upload) error {
		return r.Fail(reason, msg, f.cfg.Now())
	})
	if err != nil {
		if ctx.Err() == nil && !errors.Is(err, store.ErrConflict) {
			f.log.Warn("record failure", zap.String("id", u.ID), zap.String("reason", reason), zap.Error(err))
		}
		if latest, err := f.st.Get(ctx, u.ID); err == nil {
			return latest
		}
		return u
	}
	f.log.Warn("upload failed", zap.String("id", u.ID), zap.String("reason", reason), zap.String("message", msg))
	if f.cfg.Changed != nil {
		f.cfg.Changed(u.ID)
	}
	f.m.failures.WithLabelValues("permanent").Inc()
	if reason == store.ReasonDeadlineMissed {
		f.m.deadlineMisses.Inc()
	}
	return saved
}

// backoff returns the full-jitter delay before attempt n+1 (n ≥ 1).
func (f *Forwarder) backoff(n int) time.Duration {
	ceil := f.cfg.MinBackoff << min(n-1, 20)
	if ceil <= 0 || ceil > f.cfg.MaxBackoff {
		ceil = f.cfg.MaxBackoff
	}
	return f.cfg.MinBackoff/2 + rand.N(ceil)
}
