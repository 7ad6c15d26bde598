package gateway

import (
	"context"
	"errors"
	"io"
	"net/http"
	"sync/atomic"

	"github.com/tus/tusd/v2/pkg/handler"
	"go.uber.org/zap"

	"github.com/tusgate/tusgate/store"
)

// liveUpload is what the gateway tracks in memory for an upload it is
// receiving: the durable offset between state-store updates (for the
// status API) and the offset last recorded in the state store.
type liveUpload struct {
	plan store.Plan
	// offset is the number of bytes written to the data store.
	offset atomic.Int64
	// recorded is the Received value last saved in the state store.
	recorded atomic.Int64
}

// boundaryPending reports whether durable, the number of bytes written,
// completes a part the state store does not know about yet. With a known
// size the last part is left to completion; with a deferred size a part
// counts only once a byte beyond it is in, proving it is not the last.
func (lu *liveUpload) boundaryPending(durable, size int64, deferred bool) bool {
	rec := lu.recorded.Load()
	if deferred {
		// The smallest part end ≥ rec.
		b := lu.plan.End(lu.plan.PartOf(max(rec-1, 0)))
		return durable > b
	}
	b := lu.plan.End(lu.plan.PartOf(rec))
	return b < size && durable >= b
}

// liveFor returns the live state of upload id, loading its plan and
// recorded offset from the state store on first use in this process.
func (g *Gateway) liveFor(ctx context.Context, id string) (*liveUpload, error) {
	if v, ok := g.live.Load(id); ok {
		return v.(*liveUpload), nil
	}
	var rec *store.Upload
	if rs := requestStateFrom(ctx); rs != nil && rs.record != nil && rs.record.ID == id {
		rec = rs.record
	} else {
		var err error
		if rec, err = g.st.Get(ctx, id); err != nil {
			if !errors.Is(err, store.ErrNotFound) {
				g.log.Error("read upload record", zap.String("id", id), zap.Error(err))
			}
			return nil, storeError(err)
		}
	}
	if e := stateError(rec); e != nil {
		return nil, *e
	}
	lu := &liveUpload{plan: rec.Plan}
	lu.recorded.Store(rec.Received)
	lu.offset.Store(rec.Received)
	v, _ := g.live.LoadOrStore(id, lu)
	return v.(*liveUpload), nil
}

// liveOffset returns the durable offset of an upload being received by this
// process, if any.
func (g *Gateway) liveOffset(id string) (int64, bool) {
	v, ok := g.live.Load(id)
	if !ok {
		return 0, false
	}
	return v.(*liveUpload).offset.Load(), true
}

// update applies fn to the record of id in the state store and returns a
// copy of the record as it was before (nil if it could not be read).
func (g *Gateway) update(ctx context.Context, id string, fn func(*store.Upload) error) (*store.Upload, error) {
	var before *store.Upload
	_, err := g.st.Update(ctx, id, func(u *store.Upload) error {
		before = u.Clone()
		return fn(u)
	})
	return before, err
}

// updateError maps an update failure to the response tus clients get, and
// logs infrastructure failures. A terminal upload gives 410 (failed) or 404
// (terminated).
func (g *Gateway) updateError(id, op string, before *store.Upload, err error) error {
	if errors.Is(err, store.ErrConflict) && before != nil {
		if e := stateError(before); e != nil {
			g.live.Delete(id)
			return *e
		}
		return errConflict
	}
	if !errors.Is(err, store.ErrNotFound) {
		g.log.Error("update upload record", zap.String("id", id), zap.String("op", op), zap.Error(err))
	}
	return storeError(err)
}

// dataStore wraps tusd's disk store: it creates the state-store record with
// each upload, and records progress, completion, length and termination.
// Every error it returns is a handler.Error with a safe message.
type dataStore struct{ g *Gateway }

var (
	_ handler.DataStore               = (*dataStore)(nil)
	_ handler.TerminaterDataStore     = (*dataStore)(nil)
	_ handler.LengthDeferrerDataStore = (*dataStore)(nil)
)

// NewUpload creates the upload's file, then its record, and notifies. If the
// record cannot be stored, the file is removed and the client gets a 503.
func (d *dataStore) NewUpload(ctx context.Context, info handler.FileInfo) (handler.Upload, error) {
	g := d.g
	rs := requestStateFrom(ctx)
	if rs == nil || rs.creation == nil || info.ID == "" {
		g.log.Error("upload creation without a validated request")
		return nil, errInternal
	}
	c := rs.creation
	up, err := g.fs.NewUpload(ctx, info)
	if err != nil {
		g.log.Error("create upload file", zap.String("id", info.ID), zap.Error(err))
		return nil, errDataStore
	}
	now := g.cfg.Now()
	rec := &store.Upload{
		ID:               info.ID,
		State:            store.StateReceiving,
		Size:             info.Size,
		SizeDeferred:     info.SizeIsDeferred,
		Plan:             g.cfg.Plan,
		CompletionWindow: g.cfg.CompletionWindow,
		Token:            c.token,
		TokenDeadline:    c.tokenDeadline,
		TokenManaged:     c.managed,
		Filename:         c.filename,
		Filetype:         c.filetype,
		CreatedAt:        now,
		UpdatedAt:        now,
	}
	if len(c.extra) > 0 {
		rec.Metadata = c.extra
	}
	if err := g.st.Create(ctx, rec); err != nil {
		g.log.Error("create upload record", zap.String("id", info.ID), zap.Error(err))
		if terr := g.fs.AsTerminatableUpload(up).Terminate(ctx); terr != nil {
			g.log.Error("remove upload file after failed record creation", zap.String("id", info.ID), zap.Error(terr))
		}
		return nil, errStoreUnavailable
	}
	g.log.Info("upload created", zap.String("id", info.ID), zap.Int64("size", info.Size),
		zap.Bool("sizeDeferred", info.SizeIsDeferred), zap.Bool("token", c.token != ""), zap.Bool("managed", c.managed))
	g.live.Store(info.ID, &liveUpload{plan: rec.Plan})
	// The forwarder tracks the token deadline from the start.
	g.n.Notify(info.ID)
	return &upload{g: g, id: info.ID, inner: up}, nil
}

// GetUpload opens an existing upload. If its bytes are complete but its
// record does not say so (the completion update failed earlier), it records
// the completion now.
func (d *dataStore) GetUpload(ctx context.Context, id string) (handler.Upload, error) {
	g := d.g
	up, err := g.fs.GetUpload(ctx, id)
	if err != nil {
		if errors.Is(err, handler.ErrNotFound) {
			return nil, handler.ErrNotFound
		}
		g.log.Error("open upload", zap.String("id", id), zap.Error(err))
		return nil, errDataStore
	}
	u := &upload{g: g, id: id, inner: up}
	if rs := requestStateFrom(ctx); rs != nil && rs.record != nil && rs.record.ID == id && !rs.record.Complete {
		info, err := up.GetInfo(ctx)
		if err == nil && !info.SizeIsDeferred && info.Size > 0 && info.Offset == info.Size {
			if err := u.record(ctx, nil, info.Size, true); err != nil {
				return nil, err
			}
			g.live.Delete(id)
		}
	}
	return u, nil
}

// AsTerminatableUpload implements handler.TerminaterDataStore.
func (d *dataStore) AsTerminatableUpload(up handler.Upload) handler.TerminatableUpload {
	return terminatable{u: asUpload(up)}
}

// AsLengthDeclarableUpload implements handler.LengthDeferrerDataStore.
func (d *dataStore) AsLengthDeclarableUpload(up handler.Upload) handler.LengthDeclarableUpload {
	return lengthDeclarable{u: asUpload(up)}
}

// asUpload unwraps an upload tusd got from dataStore; tusd only ever hands
// back uploads of its Core store.
func asUpload(up handler.Upload) *upload {
	u, _ := up.(*upload)
	return u
}

// upload wraps an upload of the disk store.
type upload struct {
	g     *Gateway
	id    string
	inner handler.Upload
}

var _ handler.Upload = (*upload)(nil)

// GetInfo implements handler.Upload.
func (u *upload) GetInfo(ctx context.Context) (handler.FileInfo, error) {
	info, err := u.inner.GetInfo(ctx)
	if err != nil {
		u.g.log.Error("read upload info", zap.String("id", u.id), zap.Error(err))
		return handler.FileInfo{}, errDataStore
	}
	return info, nil
}

// GetReader implements handler.Upload.
func (u *upload) GetReader(ctx context.Context) (io.ReadCloser, error) {
	rc, err := u.inner.GetReader(ctx)
	if err != nil {
		u.g.log.Error("open upload data", zap.String("id", u.id), zap.Error(err))
		return nil, errDataStore
	}
	return rc, nil
}

// WriteChunk writes src through a counting reader that records progress in
// the state store whenever the bytes already written complete a part.
func (u *upload) WriteChunk(ctx context.Context, offset int64, src io.Reader) (int64, error) {
	// tusd v2.9.1 sets the request's body reader before calling WriteChunk,
	// and a goroutine of its reads it without synchronisation once the
	// request is cancelled with ErrServerShutdown (a data race in tusd).
	// Taking g.mu, which Shutdown holds while it cancels, orders the write
	// before that read; a PATCH that starts after Shutdown ends at once.
	u.g.mu.Lock()
	shutdown := u.g.shutdown
	u.g.mu.Unlock()
	if shutdown {
		return 0, handler.ErrServerShutdown
	}
	lu, err := u.g.liveFor(ctx, u.id)
	if err != nil {
		return 0, err
	}
	info, err := u.GetInfo(ctx)
	if err != nil {
		return 0, err
	}
	lu.offset.Store(offset)
	cr := &countingReader{ctx: ctx, u: u, lu: lu, src: src, base: offset, size: info.Size, deferred: info.SizeIsDeferred}
	n, err := u.inner.WriteChunk(ctx, offset, cr)
	end := offset + n
	lu.offset.Store(end)
	if err != nil {
		if _, ok := errors.AsType[handler.Error](err); !ok {
			u.g.log.Error("write upload data", zap.String("id", u.id), zap.Int64("offset", end), zap.Error(err))
			err = errDataStore
		}
	}
	// The bytes of the last read are written only now. Completion is
	// recorded by FinishUpload, which tusd calls next.
	complete := !info.SizeIsDeferred && end == info.Size
	if !complete && lu.boundaryPending(end, info.Size, info.SizeIsDeferred) {
		if rerr := u.record(ctx, lu, end, false); rerr != nil && err == nil {
			if e, ok := errors.AsType[handler.Error](rerr); ok && e.HTTPResponse.StatusCode != http.StatusServiceUnavailable {
				err = rerr
			}
		}
	}
	return n, err
}

// FinishUpload records the completion: every byte is in the data store.
func (u *upload) FinishUpload(ctx context.Context) error {
	if err := u.inner.FinishUpload(ctx); err != nil {
		u.g.log.Error("finish upload", zap.String("id", u.id), zap.Error(err))
		return errDataStore
	}
	info, err := u.GetInfo(ctx)
	if err != nil {
		return err
	}
	if err := u.record(ctx, nil, info.Size, true); err != nil {
		return err
	}
	u.g.live.Delete(u.id)
	u.g.log.Info("upload received", zap.String("id", u.id), zap.Int64("size", info.Size))
	return nil
}

// record saves that off bytes are in the data store (and whether that is
// all of them) and notifies. A delivered upload is left as it is.
func (u *upload) record(ctx context.Context, lu *liveUpload, off int64, complete bool) error {
	now := u.g.cfg.Now()
	before, err := u.g.update(ctx, u.id, func(rec *store.Upload) error {
		return rec.RecordReceived(off, complete, now)
	})
	if err != nil {
		if before != nil && before.State == store.StateDelivered {
			return nil
		}
		return u.g.updateError(u.id, "record received", before, err)
	}
	if lu != nil && off > lu.recorded.Load() {
		lu.recorded.Store(off)
	}
	u.g.n.Notify(u.id)
	return nil
}

// countingReader wraps the request body on its way to the disk store. The
// store copies with io.Copy (read, then write, then read), so when Read is
// called, every byte returned by earlier Reads is already in the file: that
// count is the durable offset.
type countingReader struct {
	ctx      context.Context
	u        *upload
	lu       *liveUpload
	src      io.Reader
	base     int64 // offset of the first byte of src
	read     int64 // bytes returned so far
	size     int64
	deferred bool
	// retryAt holds back a failed boundary update until this offset, so a
	// store outage does not turn into a store call per read.
	retryAt int64
}

// Read implements io.Reader.
func (c *countingReader) Read(p []byte) (int, error) {
	durable := c.base + c.read
	c.lu.offset.Store(durable)
	if durable >= c.retryAt && c.lu.boundaryPending(durable, c.size, c.deferred) {
		if err := c.u.record(c.ctx, c.lu, durable, false); err != nil {
			e, ok := errors.AsType[handler.Error](err)
			if ok && e.HTTPResponse.StatusCode != http.StatusServiceUnavailable {
				// Failed or terminated meanwhile: stop taking bytes.
				return 0, err
			}
			c.retryAt = c.lu.plan.End(c.lu.plan.PartOf(durable))
		}
	}
	n, err := c.src.Read(p)
	c.read += int64(n)
	return n, err
}

// terminatable records a tus DELETE, then removes the bytes.
type terminatable struct{ u *upload }

// Terminate implements handler.TerminatableUpload.
func (t terminatable) Terminate(ctx context.Context) error {
	u := t.u
	if u == nil {
		return errInternal
	}
	g := u.g
	now := g.cfg.Now()
	_, err := g.update(ctx, u.id, func(rec *store.Upload) error { return rec.Terminate(now) })
	switch {
	case err == nil, errors.Is(err, store.ErrNotFound), errors.Is(err, store.ErrConflict):
		// Terminated now, no record, or delivered / already terminated:
		// in every case the bytes can go.
	default:
		g.log.Error("terminate upload record", zap.String("id", u.id), zap.Error(err))
		return errStoreUnavailable
	}
	g.live.Delete(u.id)
	if terr := g.fs.AsTerminatableUpload(u.inner).Terminate(ctx); terr != nil {
		g.log.Error("remove upload file", zap.String("id", u.id), zap.Error(terr))
		return errDataStore
	}
	if err == nil {
		g.n.Notify(u.id)
		g.log.Info("upload terminated", zap.String("id", u.id))
	}
	return nil
}

// lengthDeclarable records the length of a deferred-length upload.
type lengthDeclarable struct{ u *upload }

// DeclareLength implements handler.LengthDeclarableUpload. The state store
// is updated first: a retry after a data-store failure declares the same
// length again, which the record accepts.
func (l lengthDeclarable) DeclareLength(ctx context.Context, length int64) error {
	u := l.u
	if u == nil {
		return errInternal
	}
	g := u.g
	now := g.cfg.Now()
	if length == 0 {
		const msg = "the upload declared a length of 0 bytes: api.video does not accept empty videos"
		if before, err := g.update(ctx, u.id, func(rec *store.Upload) error {
			return rec.Fail(store.ReasonEmptyUpload, msg, now)
		}); err != nil {
			return g.updateError(u.id, "fail empty upload", before, err)
		}
		g.live.Delete(u.id)
		g.n.Notify(u.id)
		return handler.NewError("ERR_EMPTY_UPLOAD", msg, http.StatusBadRequest)
	}
	if before, err := g.update(ctx, u.id, func(rec *store.Upload) error {
		return rec.DeclareSize(length, now)
	}); err != nil {
		return g.updateError(u.id, "declare size", before, err)
	}
	if err := g.fs.AsLengthDeclarableUpload(u.inner).DeclareLength(ctx, length); err != nil {
		g.log.Error("declare upload length", zap.String("id", u.id), zap.Error(err))
		return errDataStore
	}
	g.n.Notify(u.id)
	return nil
}
