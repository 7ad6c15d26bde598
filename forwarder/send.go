package forwarder

import (
	"context"
	"errors"
	"fmt"
	"net/http"
	"time"

	"go.uber.org/zap"

	"github.com/tusgate/tusgate/apivideo"
	"github.com/tusgate/tusgate/store"
)

// send claims, streams and records one part. Every outcome is written to
// the store: delivered, released with a backoff, or a terminal failure.
func (f *Forwarder) send(ctx context.Context, j job) {
	log := f.log.With(zap.String("id", j.id), zap.Int("part", j.part))
	now := f.cfg.Now()
	var wasInFlight bool
	u, err := f.st.Update(ctx, j.id, func(u *store.Upload) error {
		var err error
		wasInFlight, err = u.Claim(j.part, f.cfg.Owner, now.Add(f.cfg.LeaseDuration), now)
		return err
	})
	if err != nil {
		if ctx.Err() == nil && !errors.Is(err, store.ErrConflict) {
			log.Warn("claim part", zap.Error(err))
			f.retryLater(j.id, 1)
		}
		return
	}

	if j.part == 1 && u.TokenManaged {
		if u, err = f.ensureToken(ctx, u); err != nil {
			if ctx.Err() == nil {
				log.Warn("mint upload token", zap.Error(err))
				f.m.failures.WithLabelValues("transient").Inc()
			}
			f.release(context.WithoutCancel(ctx), j, "mint upload token: "+err.Error(), ctx.Err() == nil, false)
			f.retryLater(j.id, u.Attempts+1)
			return
		}
	}

	sendCtx, cancel := context.WithCancelCause(ctx)
	defer cancel(nil)
	renewed := make(chan struct{})
	go func() {
		defer close(renewed)
		f.renew(sendCtx, cancel, j)
	}()
	sent := time.Now()
	video, err := f.upload(sendCtx, u, j.part)
	cancel(nil)
	<-renewed
	if ctx.Err() == nil {
		f.m.partSent(j.part, time.Since(sent), err)
	}

	if err == nil {
		f.deliver(ctx, log, u, j.part, video)
		return
	}
	if ctx.Err() != nil {
		// Shutting down: give the part back for the next process, without
		// counting an attempt (background context: ctx is done).
		f.release(context.WithoutCancel(ctx), j, "interrupted by shutdown", false, true)
		return
	}
	if cause := context.Cause(sendCtx); errors.Is(cause, errLeaseLost) {
		log.Warn("lease lost while sending; another worker owns the part now")
		return
	}
	var apiErr *apivideo.Error
	switch {
	case apivideo.IsCollision(err) && wasInFlight && j.part > 1:
		// The part was in flight when a previous attempt ended without an
		// answer: api.video has these exact bytes (the plan is deterministic).
		log.Info("api.video already has this part from an interrupted attempt; counting it as delivered")
		f.deliver(ctx, log, u, j.part, &apivideo.Video{VideoID: u.VideoID})
	case apivideo.IsTransient(err) || !errors.As(err, &apiErr):
		f.transient(ctx, log, u, j, err)
	case isTokenRefusal(apiErr) && j.part == 1 && u.TokenManaged && u.TokenMints < 2:
		// A minted token refused before part 1 was accepted is replaced once.
		log.Warn("api.video refused a minted token; minting another", zap.String("error", describe(apiErr)))
		f.dropToken(ctx, j, describe(apiErr))
	case isTokenRefusal(apiErr):
		reason := store.ReasonTokenRejected
		if !u.TokenDeadline.IsZero() && !f.cfg.Now().Before(u.TokenDeadline) {
			reason = store.ReasonTokenExpired
		}
		f.fail(ctx, u, reason, "api.video refused the upload token: "+describe(apiErr))
	default:
		f.fail(ctx, u, store.ReasonRejectedByAPIVideo, "api.video refused part "+fmt.Sprint(j.part)+": "+describe(apiErr))
	}
}

func isTokenRefusal(e *apivideo.Error) bool {
	return e.StatusCode == http.StatusUnauthorized || e.StatusCode == http.StatusForbidden
}

// tokenMargin is the least lifetime a minted token must have left to be
// used for part 1; a token closer to its end is replaced first.
const tokenMargin = time.Minute

// ensureToken mints an upload token for a managed upload whose part 1 is
// about to be sent, unless it holds one with time to spare.
func (f *Forwarder) ensureToken(ctx context.Context, u *store.Upload) (*store.Upload, error) {
	now := f.cfg.Now()
	if u.Token != "" && (u.TokenDeadline.IsZero() || u.TokenDeadline.Sub(now) > tokenMargin) {
		return u, nil
	}
	if f.cfg.Minter == nil {
		return u, errors.New("managed upload but no API key configured to mint tokens")
	}
	tok, err := f.cfg.Minter.CreateUploadToken(ctx, f.cfg.TokenTTL)
	if err != nil {
		return u, err
	}
	var deadline time.Time
	if tok.ExpiresAt != nil {
		deadline = *tok.ExpiresAt
	}
	saved, err := f.st.Update(ctx, u.ID, func(r *store.Upload) error {
		return r.SetToken(tok.Token, deadline, now)
	})
	if err != nil {
		return u, fmt.Errorf("record minted token: %w", err)
	}
	f.m.tokensMinted.Inc()
	return saved, nil
}

// dropToken forgets a managed upload's refused token and gives part 1 back,
// so the next attempt mints another.
func (f *Forwarder) dropToken(ctx context.Context, j job, msg string) {
	_, err := f.st.Update(ctx, j.id, func(u *store.Upload) error {
		u.Token = ""
		return u.Release(j.part, f.cfg.Owner, "token refused: "+msg, f.cfg.Now())
	})
	if err != nil {
		f.log.Warn("drop refused token", zap.String("id", j.id), zap.Error(err))
	}
}

// upload streams part k from the data store to api.video.
func (f *Forwarder) upload(ctx context.Context, u *store.Upload, k int) (*apivideo.Video, error) {
	start, end := u.PartRange(k)
	body, err := f.src.OpenRange(ctx, u.ID, start, end-start)
	if err != nil {
		return nil, fmt.Errorf("read part %d [%d,%d) from the data store: %w", k, start, end, err)
	}
	defer body.Close()
	total := u.TotalParts()
	name := u.Filename
	if name == "" {
		name = u.ID
	}
	return f.up.UploadPart(ctx, apivideo.PartRequest{
		Token:      u.Token.Reveal(),
		VideoID:    u.VideoID,
		FileName:   name,
		Part:       k,
		TotalParts: total,
		Body:       body,
		Size:       end - start,
	})
}

var errLeaseLost = errors.New("lease lost")

// recordDeliveryFor bounds the retries of recording an accepted part.
const recordDeliveryFor = 2 * time.Minute

// sleepCtx waits d unless ctx ends first; it reports whether d elapsed.
func sleepCtx(ctx context.Context, d time.Duration) bool {
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-t.C:
		return true
	case <-ctx.Done():
		return false
	}
}

// renew extends the part's lease every third of its duration until ctx
// ends; if the lease is lost it cancels the send.
func (f *Forwarder) renew(ctx context.Context, cancel context.CancelCauseFunc, j job) {
	tick := time.NewTicker(f.cfg.LeaseDuration / 3)
	defer tick.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-tick.C:
		}
		now := f.cfg.Now()
		_, err := f.st.Update(ctx, j.id, func(u *store.Upload) error {
			return u.Renew(j.part, f.cfg.Owner, now.Add(f.cfg.LeaseDuration), now)
		})
		if errors.Is(err, store.ErrConflict) || errors.Is(err, store.ErrNotFound) {
			cancel(errLeaseLost)
			return
		}
		if err != nil && ctx.Err() == nil {
			f.log.Warn("renew lease", zap.String("id", j.id), zap.Int("part", j.part), zap.Error(err))
		}
	}
}

// deliver records api.video's acceptance of a part.
func (f *Forwarder) deliver(ctx context.Context, log *zap.Logger, u *store.Upload, k int, v *apivideo.Video) {
	assets := store.Assets{Player: v.Assets.Player, HLS: v.Assets.HLS, Thumbnail: v.Assets.Thumbnail, MP4: v.Assets.MP4}
	now := f.cfg.Now()
	// The acceptance must be recorded even if we are shutting down or the
	// store is briefly unavailable: api.video has the bytes, and forgetting
	// part 1's videoId would start a second video. Retry for a while.
	ctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), recordDeliveryFor)
	defer cancel()
	var saved *store.Upload
	var err error
	var othersLease bool
	for attempt := 1; ; attempt++ {
		saved, err = f.st.Update(ctx, u.ID, func(r *store.Upload) error {
			// Another worker that took over an expired lease may be
			// streaming this part's bytes right now: leave them be.
			l, ok := r.InFlight[k]
			othersLease = ok && l.Owner != f.cfg.Owner
			return r.Deliver(k, v.VideoID, assets, now)
		})
		if err == nil || errors.Is(err, store.ErrConflict) || errors.Is(err, store.ErrNotFound) || !sleepCtx(ctx, f.backoff(attempt)) {
			break
		}
		log.Warn("record delivered part; retrying", zap.String("videoId", v.VideoID), zap.Int("attempt", attempt), zap.Error(err))
	}
	if err != nil {
		log.Error("record delivered part", zap.String("videoId", v.VideoID), zap.Error(err))
		return
	}
	log.Debug("part delivered", zap.String("videoId", saved.VideoID))
	f.m.delivered.Inc()
	start, end := saved.PartRange(k)
	f.m.deliveredBytes.Add(float64(end - start))
	if k == 1 {
		f.m.firstPartAccepted(saved.TokenDeadline, now)
	}
	if saved.State != store.StateDelivered && !othersLease {
		f.discard(ctx, log, saved.ID, start, end)
	}
	if saved.State == store.StateDelivered {
		log.Info("upload delivered", zap.String("videoId", saved.VideoID), zap.Int("parts", len(saved.Delivered)))
		if f.cfg.Changed != nil {
			f.cfg.Changed(saved.ID)
		}
	}
}

// discard frees a delivered part's bytes in the data store, where it can,
// so that an upload holds disk and page cache only for what is still to be
// sent. The last part's bytes go with the upload's files.
func (f *Forwarder) discard(ctx context.Context, log *zap.Logger, id string, start, end int64) {
	d, ok := f.src.(Discarder)
	if !ok {
		return
	}
	if err := d.Discard(ctx, id, start, end-start); err != nil {
		// Not worth a warning per part: the bytes stay until the upload's
		// files are removed, as on a store without Discard.
		log.Debug("free delivered bytes", zap.Error(err))
		return
	}
	f.m.discardedBytes.Add(float64(end - start))
}

// transient handles a failure worth retrying: back off, or fail the upload
// when retries are exhausted.
func (f *Forwarder) transient(ctx context.Context, log *zap.Logger, u *store.Upload, j job, err error) {
	attempts := u.Attempts + 1
	f.m.failures.WithLabelValues("transient").Inc()
	if attempts >= f.cfg.MaxAttempts {
		f.fail(ctx, u, store.ReasonRejectedByAPIVideo, fmt.Sprintf("part %d failed %d times; last error: %v", j.part, attempts, err))
		return
	}
	log.Warn("part failed; will retry", zap.Int("attempt", attempts), zap.Error(err))
	var apiErr *apivideo.Error
	f.release(ctx, j, err.Error(), true, !errors.As(err, &apiErr))
	delay := f.backoff(attempts)
	if wait, ok := apivideo.RetryAfter(err); ok && wait > delay {
		delay = wait
	}
	f.retryAfter(j.id, delay)
}

// release gives up the part's lease; counted says whether it was an
// attempt, uncertain whether api.video may have received the part (the
// send ended without an answer).
func (f *Forwarder) release(ctx context.Context, j job, msg string, counted, uncertain bool) {
	_, err := f.st.Update(ctx, j.id, func(u *store.Upload) error {
		attempts := u.Attempts
		if err := u.Release(j.part, f.cfg.Owner, msg, f.cfg.Now()); err != nil {
			return err
		}
		if !counted {
			u.Attempts = attempts
		}
		if uncertain {
			u.MarkUncertain(j.part)
		}
		return nil
	})
	if err != nil && !errors.Is(err, store.ErrNotFound) {
		f.log.Warn("release part", zap.String("id", j.id), zap.Int("part", j.part), zap.Error(err))
	}
}

func (f *Forwarder) retryLater(id string, attempts int) { f.retryAfter(id, f.backoff(attempts)) }

// retryAfter keeps the upload's parts off the schedule for d.
func (f *Forwarder) retryAfter(id string, d time.Duration) {
	f.mu.Lock()
	defer f.mu.Unlock()
	if t := f.uploads[id]; t != nil {
		t.notBefore = f.cfg.Now().Add(d)
	}
}

// describe renders an api.video error for the status API (no secrets: the
// client scrubs tokens from its errors).
func describe(e *apivideo.Error) string {
	s := fmt.Sprintf("%d %s", e.StatusCode, e.Title)
	if e.Detail != "" {
		s += ": " + e.Detail
	}
	return s
}
