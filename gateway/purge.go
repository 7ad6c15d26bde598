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
