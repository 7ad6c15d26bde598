package gateway

import (
	"context"
	"errors"
	"fmt"
	"net/http"
	"strings"
	"time"

	"go.uber.org/zap"

	"github.com/tusgate/tusgate/store"
)

// headerUploadExpires is the tus expiration extension's response header.
const headerUploadExpires = "Upload-Expires"

// expireLockTimeout bounds the wait for tusd's lock on an upload about to
// expire; an upload a request holds longer is left for the next run.
const expireLockTimeout = 5 * time.Second

// discardTimeout bounds the clean-up of an upload whose creation request
// the state store failed.
const discardTimeout = 10 * time.Second

// lastActivity returns when the last byte of upload id was stored (the
// Backend's LastWrite), or createdAt while it holds no byte or cannot tell.
// It writes nothing, so PATCHes cost the state store nothing.
func (g *Gateway) lastActivity(ctx context.Context, id string, createdAt time.Time) time.Time {
	t, err := g.be.LastWrite(ctx, id)
	if err != nil || t.IsZero() {
		return createdAt
	}
	return t
}

// stalled reports whether u is incomplete, not terminal, and got no byte for
// Config.IdleTimeout.
func (g *Gateway) stalled(ctx context.Context, u *store.Upload, now time.Time) bool {
	if u.Complete || u.State.Terminal() {
		return false
	}
	return now.Sub(g.lastActivity(ctx, u.ID, u.CreatedAt)) >= g.cfg.IdleTimeout
}

// expired reports whether u is incomplete, not terminal, and got no byte
// for Config.UploadExpiry: the time its Upload-Expires header announced has
// come.
func (g *Gateway) expired(ctx context.Context, u *store.Upload, now time.Time) bool {
	if u.Complete || u.State.Terminal() {
		return false
	}
	return !now.Before(g.lastActivity(ctx, u.ID, u.CreatedAt).Add(g.cfg.UploadExpiry))
}

// setExpires sets Upload-Expires on the response of the request rs belongs
// to, for an incomplete upload: its last activity plus Config.UploadExpiry.
func (g *Gateway) setExpires(ctx context.Context, rs *requestState) {
	if rs == nil || rs.header == nil || rs.record == nil || rs.record.Complete {
		return
	}
	at := g.lastActivity(ctx, rs.record.ID, rs.record.CreatedAt).Add(g.cfg.UploadExpiry)
	rs.header.Set(headerUploadExpires, at.UTC().Format(http.TimeFormat))
}

// advertiseExpiration adds `expiration` to the Tus-Extension header that
// tusd's Middleware sets on OPTIONS responses (tusd lacks the extension).
func advertiseExpiration(next http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.Method == http.MethodOptions {
			w = &extensionWriter{ResponseWriter: w}
		}
		next.ServeHTTP(w, r)
	})
}

// extensionWriter appends `expiration` to Tus-Extension when the header is
// written. It keeps Unwrap, so http.ResponseController still reaches the
// connection.
type extensionWriter struct {
	http.ResponseWriter
	wrote bool
}

// WriteHeader implements http.ResponseWriter.
func (e *extensionWriter) WriteHeader(code int) {
	if !e.wrote {
		e.wrote = true
		h := e.Header()
		if ext := h.Get("Tus-Extension"); ext != "" && !strings.Contains(ext, "expiration") {
			h.Set("Tus-Extension", ext+",expiration")
		}
	}
	e.ResponseWriter.WriteHeader(code)
}

// Write implements http.ResponseWriter.
func (e *extensionWriter) Write(b []byte) (int, error) {
	if !e.wrote {
		e.WriteHeader(http.StatusOK)
	}
	return e.ResponseWriter.Write(b)
}

// Unwrap returns the wrapped ResponseWriter (for http.ResponseController).
func (e *extensionWriter) Unwrap() http.ResponseWriter { return e.ResponseWriter }

// discardCreated removes an upload whose creation request failed after the
// upload was created (the state store failed, or the body of a
// creation-with-upload was too large, cut or too slow): the client got an
// error (status) without the upload's URL and creates another one. The
// record is marked terminated, or, when the store does not answer,
// Reconcile or ExpireUploads finish the job.
func (g *Gateway) discardCreated(ctx context.Context, id string, status int) {
	ctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), discardTimeout)
	defer cancel()
	now := g.cfg.Now()
	if _, err := g.st.Update(ctx, id, func(u *store.Upload) error { return u.Terminate(now) }); err != nil {
		g.logger(ctx).Warn("discard upload: terminate record", zap.String("id", id), zap.Error(err))
	} else {
		g.n.Notify(id)
	}
	g.forget(id)
	if err := g.be.Remove(ctx, id); err != nil {
		g.logger(ctx).Error("discard upload: remove files", zap.String("id", id), zap.Error(err))
	}
	g.logger(ctx).Warn("upload creation failed after the upload was created: upload discarded (the client never got its URL)",
		zap.String("id", id), zap.Int("status", status))
}

// Reconcile brings the state store in line with the data directory, after a
// crash or a state-store outage. For every active upload (store.ListActive):
//
//   - its data file (or tusd's .info file) is missing: the record fails with
//     reason store.ReasonDataLost;
//   - its record is complete but the file holds fewer bytes: data_lost too;
//   - the file holds every byte of a known-size upload but the record is not
//     complete (tusd finished, the record update did not happen): the
//     completion is recorded;
//   - the file holds bytes past a part boundary the record lacks: they are
//     recorded.
//
// The Notifier is told about every upload changed. Call it at start, before
// serving; it is safe while serving too. It returns an error only when the
// state store fails; a data file it cannot inspect is logged and skipped.
func (g *Gateway) Reconcile(ctx context.Context) error {
	ids, err := g.st.ListActive(ctx)
	if err != nil {
		return fmt.Errorf("reconcile uploads: list active uploads: %w", err)
	}
	changed := 0
	for _, id := range ids {
		ch, err := g.reconcileUpload(ctx, id)
		if err != nil {
			return fmt.Errorf("reconcile upload %s: %w", id, err)
		}
		if ch {
			changed++
		}
	}
	g.logger(ctx).Info("uploads reconciled with the data directory", zap.Int("active", len(ids)), zap.Int("changed", changed))
	return nil
}

// reconcileUpload reconciles one upload (see Reconcile) and reports whether
// its record changed. Its errors are state-store failures.
func (g *Gateway) reconcileUpload(ctx context.Context, id string) (bool, error) {
	rec, err := g.st.Get(ctx, id)
	switch {
	case errors.Is(err, store.ErrNotFound):
		return false, nil
	case err != nil:
		return false, err
	case rec.State.Terminal():
		return false, nil
	}
	size, err := g.be.Offset(ctx, id)
	switch {
	case errors.Is(err, store.ErrNotFound):
		return g.failDataLost(ctx, id, "the upload's bytes are missing from the gateway's data directory")
	case err != nil:
		g.logger(ctx).Warn("reconcile: cannot inspect the upload's data file, left as it is", zap.String("id", id), zap.Error(err))
		return false, nil
	case rec.Complete && size < rec.Size:
		return g.failDataLost(ctx, id, fmt.Sprintf("the gateway's data file holds %d of the upload's %d bytes", size, rec.Size))
	case size < rec.Received:
		// Only the tail the client has not been told about is gone (the
		// file system lost unsynced writes): tusd's offset is the file
		// size, so the client sends those bytes again.
		g.logger(ctx).Warn("reconcile: the data file holds fewer bytes than recorded; the client resends them",
			zap.String("id", id), zap.Int64("file", size), zap.Int64("recorded", rec.Received))
		return false, nil
	}
	_, _, err = g.reconcileReceived(ctx, id, size)
	switch {
	case err == nil:
		return true, nil
	case errors.Is(err, errNoChange), errors.Is(err, store.ErrNotFound), errors.Is(err, store.ErrConflict):
		return false, nil
	}
	return false, err
}

// failDataLost fails upload id with store.ReasonDataLost and notifies. It
// reports whether the record changed; its errors are state-store failures.
func (g *Gateway) failDataLost(ctx context.Context, id, msg string) (bool, error) {
	now := g.cfg.Now()
	_, err := g.st.Update(ctx, id, func(u *store.Upload) error {
		if u.State.Terminal() {
			return errNoChange
		}
		return u.Fail(store.ReasonDataLost, msg, now)
	})
	switch {
	case errors.Is(err, errNoChange), errors.Is(err, store.ErrNotFound):
		return false, nil
	case err != nil:
		return false, err
	}
	g.forget(id)
	g.logger(ctx).Warn("upload failed: data lost", zap.String("id", id), zap.String("reason", msg))
	g.n.Notify(id)
	return true, nil
}

// ExpireUploads deletes every active upload that is not complete and got no
// byte for Config.UploadExpiry (counted from its data file's last write, or
// from its creation while it holds none): its data files (through tusd's
// disk store), then its record; the Notifier is told. A HEAD or PATCH on it
// then gets 404. It returns how many uploads it deleted. An upload a request
// holds (tusd's lock) for more than a few seconds is left for the next run.
// It stops at the first state-store failure; a file it cannot remove is
// reported in the error and the others go on. It also drops, from the
// per-client counts of open uploads (Config.MaxOpenUploadsPerClient),
// uploads that ended without this instance seeing it.
func (g *Gateway) ExpireUploads(ctx context.Context) (int, error) {
	ids, err := g.st.ListActive(ctx)
	if err != nil {
		return 0, fmt.Errorf("expire uploads: list active uploads: %w", err)
	}
	n := 0
	var fileErrs []error
	for _, id := range ids {
		if err := ctx.Err(); err != nil {
			return n, errors.Join(append(fileErrs, fmt.Errorf("expire uploads: %w", context.Cause(ctx)))...)
		}
		done, err := g.expire(ctx, id)
		if done {
			n++
		}
		var fe fileError
		switch {
		case errors.As(err, &fe):
			fileErrs = append(fileErrs, fmt.Errorf("expire upload %s: %w", id, fe.err))
		case err != nil:
			return n, errors.Join(append(fileErrs, fmt.Errorf("expire upload %s: %w", id, err))...)
		}
	}
	if err := g.sweepOpen(ctx); err != nil {
		fileErrs = append(fileErrs, fmt.Errorf("expire uploads: %w", err))
	}
	return n, errors.Join(fileErrs...)
}

// fileError marks a data-file failure of expire, as opposed to a
// state-store failure.
type fileError struct{ err error }

func (e fileError) Error() string { return e.err.Error() }
func (e fileError) Unwrap() error { return e.err }

// expire deletes upload id if it expired (see ExpireUploads), holding tusd's
// lock on it so no request runs meanwhile, and reports whether it did.
func (g *Gateway) expire(ctx context.Context, id string) (bool, error) {
	rec, err := g.st.Get(ctx, id)
	switch {
	case errors.Is(err, store.ErrNotFound):
		return false, nil
	case err != nil:
		return false, err
	case !g.expired(ctx, rec, g.cfg.Now()):
		return false, nil
	}
	lock, err := g.locker.NewLock(id)
	if err != nil {
		return false, fileError{fmt.Errorf("lock: %w", err)}
	}
	lockCtx, cancel := context.WithTimeout(ctx, expireLockTimeout)
	err = lock.Lock(lockCtx, func() {})
	cancel()
	if err != nil {
		g.logger(ctx).Info("expire: upload in use, left for the next run", zap.String("id", id))
		return false, nil
	}
	defer func() {
		if err := lock.Unlock(); err != nil {
			g.logger(ctx).Warn("expire: unlock upload", zap.String("id", id), zap.Error(err))
		}
	}()
	// A request may have added bytes before the lock was free.
	rec, err = g.st.Get(ctx, id)
	switch {
	case errors.Is(err, store.ErrNotFound):
		return false, nil
	case err != nil:
		return false, err
	}
	now := g.cfg.Now()
	last := g.lastActivity(ctx, id, rec.CreatedAt)
	if !g.expired(ctx, rec, now) {
		return false, nil
	}
	if err := g.be.Remove(ctx, id); err != nil {
		return false, fileError{err}
	}
	if err := g.st.Delete(ctx, id); err != nil {
		return false, fmt.Errorf("delete record: %w", err)
	}
	g.forget(id)
	g.metrics.uploads.WithLabelValues("expired").Inc()
	g.logger(ctx).Info("upload expired: no byte received for the upload expiry, bytes and record deleted", zap.String("id", id),
		zap.Int64("received", rec.Received), zap.Time("lastActivity", last), zap.Duration("uploadExpiry", g.cfg.UploadExpiry))
	g.n.Notify(id)
	return true, nil
}

// RunJanitor calls ExpireUploads every interval (default, when every ≤ 0:
// one minute; the first run comes after one interval), and SweepOrphans on
// the first run and every sweepEveryRuns runs, until ctx ends, and logs
// what they removed and any error. It returns when ctx is done.
//
//	go func() { defer wg.Done(); gw.RunJanitor(ctx, time.Minute) }()
func (g *Gateway) RunJanitor(ctx context.Context, every time.Duration) {
	if every <= 0 {
		every = time.Minute
	}
	t := time.NewTicker(every)
	defer t.Stop()
	log := g.log.Named("janitor")
	for run := 0; ; run++ {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
		n, err := g.ExpireUploads(ctx)
		if n > 0 {
			log.Info("expired abandoned uploads", zap.Int("count", n))
		}
		if err != nil && ctx.Err() == nil {
			log.Warn("expire uploads", zap.Int("expired", n), zap.Error(err))
		}
		if run%sweepEveryRuns != 0 {
			continue
		}
		n, err = g.SweepOrphans(ctx)
		if n > 0 {
			log.Info("removed orphaned upload bytes", zap.Int("count", n))
		}
		if err != nil && ctx.Err() == nil {
			log.Warn("sweep orphaned upload bytes", zap.Int("removed", n), zap.Error(err))
		}
	}
}

// sweepEveryRuns: the janitor sweeps orphans on its first run and every
// sweepEveryRuns runs after it (hourly with the default minute; a sweep
// lists the whole data store).
const sweepEveryRuns = 60
