package gateway

import (
	"context"
	"errors"
	"fmt"
	"net/http"
	"strconv"

	"github.com/tus/tusd/v2/pkg/handler"
	"go.uber.org/zap"

	"github.com/tusgate/tusgate/store"
)

// purgeLockTimeout bounds the wait for tusd's lock on a delivered upload
// whose bytes are about to go.
const purgeLockTimeout = 30 * expireLockTimeout

// PurgeDelivered removes the bytes of upload id from the Backend once
// api.video has every part (state delivered), holding tusd's lock on it so
// no request reads them meanwhile; for any other upload, or with
// Config.KeepDelivered, it does nothing. The record stays: the status API
// and HEAD keep answering from it. Call it when the forwarder reports an
// upload delivered (it blocks on the lock: run it in its own goroutine).
func (g *Gateway) PurgeDelivered(ctx context.Context, id string) error {
	if g.cfg.KeepDelivered {
		return nil
	}
	rec, err := g.st.Get(ctx, id)
	switch {
	case errors.Is(err, store.ErrNotFound):
		return nil
	case err != nil:
		return fmt.Errorf("purge delivered upload %s: %w", id, err)
	case rec.State != store.StateDelivered:
		return nil
	}
	lock, err := g.locker.NewLock(id)
	if err != nil {
		return fmt.Errorf("purge delivered upload %s: lock: %w", id, err)
	}
	lockCtx, cancel := context.WithTimeout(ctx, purgeLockTimeout)
	err = lock.Lock(lockCtx, func() {})
	cancel()
	if err != nil {
		return fmt.Errorf("purge delivered upload %s: lock: %w", id, err)
	}
	defer func() {
		if err := lock.Unlock(); err != nil {
			g.log.Warn("purge: unlock upload", zap.String("id", id), zap.Error(err))
		}
	}()
	if err := g.be.Remove(ctx, id); err != nil {
		return fmt.Errorf("purge delivered upload %s: %w", id, err)
	}
	g.forget(id)
	g.metrics.uploads.WithLabelValues("purged").Inc()
	g.log.Info("delivered upload's bytes removed: api.video has every part", zap.String("id", id), zap.String("videoId", rec.VideoID))
	return nil
}

// errUploadComplete is the 409 of a PATCH on a delivered upload.
var errUploadComplete = handler.NewError("ERR_UPLOAD_COMPLETE", "the upload is complete and api.video has every part: there is nothing left to send", http.StatusConflict)

// answerDelivered answers a HEAD or PATCH on a delivered upload from its
// record: its bytes may be gone (PurgeDelivered), and a tus client that
// resumes a finished upload must learn that it is complete, not that it is
// unknown (it would upload the video again).
func answerDelivered(w http.ResponseWriter, r *http.Request, rec *store.Upload) {
	if r.Method != http.MethodHead {
		writeTusError(w, r, errUploadComplete)
		return
	}
	h := w.Header()
	h.Set("Upload-Offset", strconv.FormatInt(rec.Size, 10))
	h.Set("Upload-Length", strconv.FormatInt(rec.Size, 10))
	h.Set("Cache-Control", "no-store")
	w.WriteHeader(http.StatusOK)
}

// SweepOrphans removes from the Backend the bytes no live upload needs,
// which the other clean-ups cannot see because the record left the state
// store's active set or never reached it:
//
//   - delivered (unless Config.KeepDelivered) or terminated uploads: a crash
//     between the transition and the removal;
//   - failed uploads, once Config.UploadExpiry has passed since their last
//     change (the client was told 410; nothing will resume them);
//   - bytes without a record, once Config.UploadExpiry has passed since they
//     last changed (a creation that died before its record, a state store
//     that lost its data).
//
// It returns how many uploads it removed. A failure to reach the state
// store stops it (it never removes what it cannot check); a failure to
// remove one upload is reported and the sweep goes on.
func (g *Gateway) SweepOrphans(ctx context.Context) (int, error) {
	stored, err := g.be.List(ctx)
	if err != nil {
		return 0, fmt.Errorf("sweep orphans: %w", err)
	}
	now := g.cfg.Now()
	removed := 0
	var errs []error
	for _, s := range stored {
		rec, err := g.st.Get(ctx, s.ID)
		var why string
		switch {
		case errors.Is(err, store.ErrNotFound):
			last := s.Modified
			if t, err := g.be.LastWrite(ctx, s.ID); err == nil && t.After(last) {
				last = t
			}
			if now.Sub(last) < g.cfg.UploadExpiry {
				continue // maybe a creation in progress
			}
			why = "no record"
		case err != nil:
			return removed, errors.Join(append(errs, fmt.Errorf("sweep orphans: read upload %s: %w", s.ID, err))...)
		case rec.State == store.StateDelivered && !g.cfg.KeepDelivered:
			why = "delivered"
		case rec.State == store.StateTerminated:
			why = "terminated"
		case rec.State == store.StateFailed && now.Sub(rec.UpdatedAt) >= g.cfg.UploadExpiry:
			why = "failed"
		default:
			continue
		}
		if err := g.be.Remove(ctx, s.ID); err != nil {
			errs = append(errs, fmt.Errorf("sweep orphans: remove upload %s: %w", s.ID, err))
			continue
		}
		g.forget(s.ID)
		removed++
		g.metrics.uploads.WithLabelValues("swept").Inc()
		g.log.Info("removed the bytes of an upload nothing needs", zap.String("id", s.ID), zap.String("why", why))
	}
	return removed, errors.Join(errs...)
}
