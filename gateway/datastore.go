package gateway

import (
	"bufio"
	"context"
	"errors"
	"io"
	"net/http"
	"sync/atomic"
	"time"

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
// completes a part the state store does not know about yet.
func (lu *liveUpload) boundaryPending(durable, size int64, deferred bool) bool {
	return boundaryPending(lu.plan, lu.recorded.Load(), durable, size, deferred)
}

// boundaryPending reports whether durable bytes in the data store complete a
// part of plan p beyond recorded, the Received value of the record. With a
// known size the last part is left to completion; with a deferred size a
// part counts only once a byte beyond it is in, proving it is not the last.
func boundaryPending(p store.Plan, recorded, durable, size int64, deferred bool) bool {
	if deferred {
		// The smallest part end ≥ recorded.
		b := p.End(p.PartOf(max(recorded-1, 0)))
		return durable > b
	}
	b := p.End(p.PartOf(recorded))
	return b < size && durable >= b
}

// pendingReceipt returns what the record u should say once the data store
// holds fileSize bytes of the upload, when it says less: every byte
// (complete), or a part boundary crossed (off is then fileSize). ok is false
// when the record is up to date.
func pendingReceipt(u *store.Upload, fileSize int64) (off int64, complete, ok bool) {
	switch {
	case u.Complete:
		return 0, false, false
	case !u.SizeDeferred && u.Size > 0 && fileSize >= u.Size:
		return u.Size, true, true
	case boundaryPending(u.Plan, u.Received, fileSize, u.Size, u.SizeDeferred):
		return fileSize, false, true
	}
	return 0, false, false
}

// errNoChange ends a state-store update that finds nothing to change.
var errNoChange = errors.New("record already up to date")

// catchUp records, for a HEAD or PATCH (under tusd's lock on the upload),
// the bytes the data file holds beyond the record when an earlier update
// failed (state store outage, crash): a part boundary, or every byte. It
// keeps rs.record current. The error is the response the client gets.
func (g *Gateway) catchUp(ctx context.Context, rs *requestState, fileSize int64) error {
	if _, _, ok := pendingReceipt(rs.record, fileSize); !ok {
		return nil
	}
	id := rs.record.ID
	saved, before, err := g.reconcileReceived(ctx, id, fileSize)
	switch {
	case err == nil:
		rs.record = saved
		return nil
	case errors.Is(err, errNoChange):
		return nil
	case before != nil && before.State == store.StateDelivered:
		return nil
	default:
		return g.updateError(id, "catch up received bytes", before, err)
	}
}

// reconcileReceived brings the record of id up to fileSize bytes in the data
// store (see pendingReceipt) and notifies. It returns errNoChange when the
// record is up to date, and the record before the update when it was read.
func (g *Gateway) reconcileReceived(ctx context.Context, id string, fileSize int64) (saved, before *store.Upload, err error) {
	now := g.cfg.Now()
	saved, err = g.st.Update(ctx, id, func(u *store.Upload) error {
		before = u.Clone()
		off, complete, ok := pendingReceipt(u, fileSize)
		if !ok {
			return errNoChange
		}
		return u.RecordReceived(off, complete, now)
	})
	if err != nil {
		return nil, before, err
	}
	if saved.Complete {
		g.forget(id)
	} else if v, ok := g.live.Load(id); ok {
		lu := v.(*liveUpload)
		if saved.Received > lu.recorded.Load() {
			lu.recorded.Store(saved.Received)
		}
	}
	g.logger(ctx).Info("recorded bytes found in the data file", zap.String("id", id),
		zap.Int64("received", saved.Received), zap.Bool("complete", saved.Complete))
	g.n.Notify(id)
	return saved, before, nil
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
				g.logger(ctx).Error("read upload record", zap.String("id", id), zap.Error(err))
			}
			return nil, storeError(err)
		}
	}
	if e := stateError(rec); e != nil {
		g.forget(id)
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
			g.forget(id)
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
// record cannot be stored, the file is removed and the client gets a 503
// with Retry-After; a full disk gives 507.
func (d *dataStore) NewUpload(ctx context.Context, info handler.FileInfo) (handler.Upload, error) {
	g := d.g
	rs := requestStateFrom(ctx)
	if rs == nil || rs.creation == nil || info.ID == "" {
		g.logger(ctx).Error("upload creation without a validated request")
		return nil, errInternal
	}
	c := rs.creation
	up, err := g.be.NewUpload(ctx, info)
	if err != nil {
		// A full disk can leave an empty or cut-short .info file behind.
		if rerr := g.be.Remove(context.WithoutCancel(ctx), info.ID); rerr != nil {
			g.logger(ctx).Error("remove half-created upload", zap.String("id", info.ID), zap.Error(rerr))
		}
		if isDiskFull(err) {
			g.logger(ctx).Warn("create upload file: disk full", zap.String("id", info.ID), zap.Error(err))
			return nil, errDiskFull()
		}
		g.logger(ctx).Error("create upload file", zap.String("id", info.ID), zap.Error(err))
		return nil, errDataStore()
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
		Owner:            c.owner,
		CreatedAt:        now,
		UpdatedAt:        now,
	}
	if len(c.extra) > 0 {
		rec.Metadata = c.extra
	}
	if g.cfg.Webhooks {
		rec.EnableWebhooks(now)
	}
	if err := g.st.Create(ctx, rec); err != nil {
		g.logger(ctx).Error("create upload record", zap.String("id", info.ID), zap.Error(err))
		if terr := g.be.AsTerminatableUpload(up).Terminate(ctx); terr != nil {
			g.logger(ctx).Error("remove upload file after failed record creation", zap.String("id", info.ID), zap.Error(terr))
		}
		return nil, errStoreUnavailable()
	}
	g.metrics.uploads.WithLabelValues("created").Inc()
	g.logger(ctx).Info("upload created", zap.String("id", info.ID), zap.Int64("size", info.Size),
		zap.Bool("sizeDeferred", info.SizeIsDeferred), zap.Bool("token", c.token != ""), zap.Bool("managed", c.managed))
	g.live.Store(info.ID, &liveUpload{plan: rec.Plan})
	if rs.reserved {
		g.open.commit(rs.client, info.ID, now)
		rs.reserved = false
	}
	if rs.subjectReserved {
		g.openSubj.commit(rs.subject, info.ID, now)
		rs.subjectReserved = false
	}
	rs.record = rec.Clone()
	g.setExpires(ctx, rs)
	// The forwarder tracks the token deadline from the start.
	g.n.Notify(info.ID)
	return &upload{g: g, id: info.ID, inner: up}, nil
}

// GetUpload opens an existing upload. For a HEAD or PATCH, it first records
// what the data file holds beyond the record (a part boundary or every byte,
// left unrecorded by an earlier state-store failure) and sets Upload-Expires
// on an incomplete upload.
func (d *dataStore) GetUpload(ctx context.Context, id string) (handler.Upload, error) {
	g := d.g
	up, err := g.be.GetUpload(ctx, id)
	if err != nil {
		if errors.Is(err, handler.ErrNotFound) {
			return nil, handler.ErrNotFound
		}
		g.logger(ctx).Error("open upload", zap.String("id", id), zap.Error(err))
		return nil, errDataStore()
	}
	u := &upload{g: g, id: id, inner: up}
	rs := requestStateFrom(ctx)
	if rs == nil || rs.record == nil || rs.record.ID != id {
		return u, nil
	}
	info, err := u.GetInfo(ctx)
	if err != nil {
		return nil, err
	}
	if err := g.catchUp(ctx, rs, info.Offset); err != nil {
		return nil, err
	}
	if !rs.record.Complete {
		g.setExpires(ctx, rs)
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
		u.g.logger(ctx).Error("read upload info", zap.String("id", u.id), zap.Error(err))
		return handler.FileInfo{}, errDataStore()
	}
	return info, nil
}

// GetReader implements handler.Upload.
func (u *upload) GetReader(ctx context.Context) (io.ReadCloser, error) {
	rc, err := u.inner.GetReader(ctx)
	if err != nil {
		u.g.logger(ctx).Error("open upload data", zap.String("id", u.id), zap.Error(err))
		return nil, errDataStore()
	}
	return rc, nil
}

// WriteChunk writes src through a counting reader that records progress in
// the state store whenever the bytes already written complete a part. If
// that update fails, the request ends there (503 with Retry-After when the
// state store is unavailable, 410/404 when the upload failed or was
// terminated meanwhile): the bytes written so far stay in the file and count
// (tusd's offset is the file size), and the next HEAD or PATCH records them.
// A full disk ends the request with 507, the bytes written so far kept.
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
	u.g.releases.writeStarted(u.id)
	lu, err := u.g.liveFor(ctx, u.id)
	if err != nil {
		return 0, err
	}
	info, err := u.GetInfo(ctx)
	if err != nil {
		return 0, err
	}
	lu.offset.Store(offset)
	if !u.g.be.StreamsDurably() {
		return u.writeParts(ctx, lu, info, offset, src)
	}
	cr := &countingReader{ctx: ctx, u: u, lu: lu, src: src, base: offset, size: info.Size, deferred: info.SizeIsDeferred}
	if rs := requestStateFrom(ctx); rs != nil && rs.conn != nil && rs.bodyLen > 0 {
		cr.lw, cr.bodyLen = newLowWater(rs.conn, &u.g.lowWater, u.g.cfg.stallAfter), rs.bodyLen
	}
	n, err := u.inner.WriteChunk(ctx, offset, cr)
	end := offset + n
	lu.offset.Store(end)
	if cr.stop != nil {
		err = cr.stop
	} else {
		err = u.writeError(end, err)
	}
	// The bytes of the last read are written only now. Completion is
	// recorded by FinishUpload, which tusd calls next.
	complete := !info.SizeIsDeferred && end == info.Size
	if cr.stop == nil && !complete && lu.boundaryPending(end, info.Size, info.SizeIsDeferred) {
		if rerr := u.record(ctx, lu, end, false); rerr != nil && err == nil {
			err = rerr
		}
	}
	if !complete {
		u.g.setExpires(ctx, requestStateFrom(ctx))
	}
	markDiscard(ctx, err)
	return n, err
}

// writeError maps an error of the backend's WriteChunk, which ended at
// offset end, to the response the client gets (nil stays nil).
func (u *upload) writeError(end int64, err error) error {
	switch {
	case err == nil:
		return nil
	case isDiskFull(err):
		u.g.log.Warn("write upload data: disk full", zap.String("id", u.id), zap.Int64("offset", end), zap.Error(err))
		return errDiskFull()
	}
	if _, ok := errors.AsType[handler.Error](err); ok {
		return err
	}
	u.g.log.Error("write upload data", zap.String("id", u.id), zap.Int64("offset", end), zap.Error(err))
	return errDataStore()
}

// peekBuf is the read buffer writeParts puts in front of the request body
// to tell an ended body before calling the backend.
const peekBuf = 64 << 10

// writeParts writes src for a backend whose bytes are durable only once its
// WriteChunk returns (S3): one call per api.video part (or the piece of it
// src holds), recording each part boundary crossed before taking the next
// part's bytes, so the forwarder can send a part while the client is still
// sending later ones. A backend call is never made for zero bytes. The
// errors are those of WriteChunk.
func (u *upload) writeParts(ctx context.Context, lu *liveUpload, info handler.FileInfo, offset int64, src io.Reader) (int64, error) {
	br := bufio.NewReaderSize(src, peekBuf)
	off := offset
	for {
		if _, err := br.Peek(1); err != nil {
			// The body ended (tusd keeps a client's read error itself).
			break
		}
		limit := lu.plan.End(lu.plan.PartOf(off)) - off
		if !info.SizeIsDeferred {
			limit = min(limit, info.Size-off)
		}
		n, err := u.inner.WriteChunk(ctx, off, io.LimitReader(br, limit))
		off += n
		lu.offset.Store(off)
		if err = u.writeError(off, err); err != nil {
			markDiscard(ctx, err)
			return off - offset, err
		}
		complete := !info.SizeIsDeferred && off == info.Size
		if !complete && lu.boundaryPending(off, info.Size, info.SizeIsDeferred) {
			if err := u.record(ctx, lu, off, false); err != nil {
				markDiscard(ctx, err)
				return off - offset, err
			}
		}
		if n < limit || complete {
			break
		}
	}
	if info.SizeIsDeferred || off < info.Size {
		u.g.setExpires(ctx, requestStateFrom(ctx))
	}
	return off - offset, nil
}

// FinishUpload records the completion: every byte is in the data store.
func (u *upload) FinishUpload(ctx context.Context) error {
	if err := u.inner.FinishUpload(ctx); err != nil {
		u.g.logger(ctx).Error("finish upload", zap.String("id", u.id), zap.Error(err))
		return errDataStore()
	}
	info, err := u.GetInfo(ctx)
	if err != nil {
		return err
	}
	if err := u.record(ctx, nil, info.Size, true); err != nil {
		markDiscard(ctx, err)
		return err
	}
	u.g.forget(u.id)
	if rs := requestStateFrom(ctx); rs != nil && rs.header != nil {
		rs.header.Del(headerUploadExpires)
	}
	u.g.metrics.uploads.WithLabelValues("received").Inc()
	u.g.logger(ctx).Info("upload received", zap.String("id", u.id), zap.Int64("size", info.Size))
	return nil
}

// markDiscard flags a creation request (creation-with-upload) that ends
// with err because the state store failed after the record was created.
func markDiscard(ctx context.Context, err error) {
	e, ok := errors.AsType[handler.Error](err)
	if !ok || e.ErrorCode != codeStoreUnavailable {
		return
	}
	if rs := requestStateFrom(ctx); rs != nil && rs.creation != nil {
		rs.discard = true
	}
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
	// stop is the error that ended the body: the boundary update failed
	// (state store unavailable, upload failed or terminated meanwhile).
	stop error
	// lw batches the socket reads of a fast stream (nil when the request's
	// connection or length is unknown); batching is on while the large
	// buffer is, and slow says the last batched read stalled at the
	// smallest batch.
	lw       *lowWater
	bodyLen  int64
	batching bool
	slow     bool
}

// Read implements io.Reader. When the bytes written complete a part it
// records them first; if that fails it takes no more bytes.
func (c *countingReader) Read(p []byte) (int, error) {
	if err := c.settle(); err != nil {
		return 0, err
	}
	if c.batching {
		c.lw.arm(c.bodyLen - c.read)
	}
	n, err := c.src.Read(p)
	if c.batching {
		c.slow = c.lw.disarm(n)
	}
	c.read += int64(n)
	return n, err
}

// settle publishes the bytes read so far as written (they are: the
// caller wrote them before asking for more) and records them in the state
// store when they complete a part.
func (c *countingReader) settle() error {
	if c.stop != nil {
		return c.stop
	}
	durable := c.base + c.read
	c.lu.offset.Store(durable)
	if c.lu.boundaryPending(durable, c.size, c.deferred) {
		if err := c.u.record(c.ctx, c.lu, durable, false); err != nil {
			c.stop = err
			return err
		}
	}
	return nil
}

// Copy buffer sizes of countingReader.WriteTo.
const (
	// smallCopyBuf is what a stream starts with and what a slow client
	// reads into (a slow client's reads bring less than that anyway).
	// Both sizes are pooled: a slow or idle client holds neither while it
	// waits for its next bytes (see WriteTo).
	smallCopyBuf = 8 << 10
	largeCopyBuf = 1 << 20
	// shrinkAfter consecutive reads of fewer than shrinkBelow bytes into
	// the large buffer give it back (the client slowed down; one short
	// read of a fast stream does not).
	shrinkBelow = 32 << 10
	shrinkAfter = 8
	// growAfter bytes read in full small reads within growWithin make a
	// stream fast enough for the large buffer (a slow client fills the
	// small buffer too, but slowly).
	growAfter  = 64 << 10
	growWithin = 50 * time.Millisecond
)

// largeBuf returns a large copy buffer from the gateway's pool.
func (g *Gateway) largeBuf() *[largeCopyBuf]byte {
	g.bufsHeld.Add(1)
	if b, ok := g.copyBufs.Get().(*[largeCopyBuf]byte); ok {
		return b
	}
	return new([largeCopyBuf]byte)
}

// putLargeBuf gives a large copy buffer back to the pool.
func (g *Gateway) putLargeBuf(b *[largeCopyBuf]byte) {
	g.bufsHeld.Add(-1)
	g.copyBufs.Put(b)
}

// smallBuf returns a small copy buffer from the gateway's pool.
func (g *Gateway) smallBuf() *[smallCopyBuf]byte {
	g.bufsHeld.Add(1)
	if b, ok := g.smallBufs.Get().(*[smallCopyBuf]byte); ok {
		return b
	}
	return new([smallCopyBuf]byte)
}

// putSmallBuf gives a small copy buffer back to the pool.
func (g *Gateway) putSmallBuf(b *[smallCopyBuf]byte) {
	g.bufsHeld.Add(-1)
	g.smallBufs.Put(b)
}

// WriteTo implements io.WriterTo, which the filestore's io.Copy prefers to
// its own 32 KiB buffer. A stream starts with an 8 KiB buffer and switches
// to a pooled 1 MiB one once full reads bring growAfter bytes within
// growWithin (a fast client: fewer, larger file writes); it gives the large
// buffer back once shrinkAfter reads in a row come in small. Every Read
// goes through c.Read, so part boundaries are recorded as before. While it
// holds the large buffer it also batches the socket's reads (lowwater.go);
// a batched read that stalls at the smallest batch gives the large buffer
// back at once.
//
// A slow client holds no buffer between its bytes: after each read into
// the small buffer, while more of the body is to come, the buffer goes back
// to the pool and the request waits for the socket to become readable
// (lowWater.waitReadable, at once if bytes are waiting) before it takes one
// again. With a thousand clients sending 64 KiB/s that is a
// handful of buffers instead of a thousand. Only requests with a known
// length over a plain TCP connection (c.lw set) wait this way. There, after
// the first read, no byte of the body is left in the HTTP server's 4 KiB
// read buffer (the first read empties it, and reads of 8 KiB bypass it), so
// the socket says when the next one comes; the first read also sends a
// client that asked for it its "100 Continue".
func (c *countingReader) WriteTo(w io.Writer) (int64, error) {
	g := c.u.g
	small := g.smallBuf()
	var large *[largeCopyBuf]byte
	defer func() {
		if small != nil {
			g.putSmallBuf(small)
		}
		if large != nil {
			g.putLargeBuf(large)
		}
		if c.lw != nil {
			c.lw.off()
		}
	}()
	buf := small[:]
	var total int64
	// burst counts the bytes of consecutive full small reads since
	// burstStart.
	var burst int
	var burstStart time.Time
	short := 0 // consecutive short reads into the large buffer
	for {
		n, err := c.Read(buf)
		if n > 0 {
			wn, werr := w.Write(buf[:n])
			total += int64(wn)
			if werr != nil {
				return total, werr
			}
			if wn != n {
				return total, io.ErrShortWrite
			}
		}
		if err == io.EOF {
			return total, nil
		}
		if err != nil {
			return total, err
		}
		switch {
		case large == nil && n == len(small):
			now := g.cfg.Now()
			if burst == 0 || now.Sub(burstStart) > growWithin {
				burst, burstStart = 0, now
			}
			if burst += n; burst >= growAfter {
				large = g.largeBuf()
				buf = large[:]
				c.batching = c.lw != nil
			}
		case large == nil:
			burst = 0
		case c.slow:
			short = shrinkAfter
			fallthrough
		case n < shrinkBelow:
			if short++; short >= shrinkAfter {
				g.putLargeBuf(large)
				large, buf, burst, short = nil, small[:], 0, 0
				if c.batching {
					c.batching = false
					c.lw.off()
				}
			}
		default:
			short = 0
		}
		if large == nil && n > 0 && c.lw != nil && c.read < c.bodyLen {
			// Wait for the next bytes without a buffer (at once if
			// they are there already), once the bytes written are
			// published and a part they complete is recorded: a
			// client that pauses must not hold those back.
			if err := c.settle(); err != nil {
				return total, err
			}
			g.putSmallBuf(small)
			small = nil
			c.lw.waitReadable()
			small = g.smallBuf()
			buf = small[:]
		}
	}
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
		g.logger(ctx).Error("terminate upload record", zap.String("id", u.id), zap.Error(err))
		return errStoreUnavailable()
	}
	g.forget(u.id)
	if terr := g.be.AsTerminatableUpload(u.inner).Terminate(ctx); terr != nil {
		g.logger(ctx).Error("remove upload file", zap.String("id", u.id), zap.Error(terr))
		return errDataStore()
	}
	if err == nil {
		g.n.Notify(u.id)
		g.metrics.uploads.WithLabelValues("terminated").Inc()
		g.logger(ctx).Info("upload terminated", zap.String("id", u.id))
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
		g.forget(u.id)
		g.n.Notify(u.id)
		return handler.NewError("ERR_EMPTY_UPLOAD", msg, http.StatusBadRequest)
	}
	if before, err := g.update(ctx, u.id, func(rec *store.Upload) error {
		return rec.DeclareSize(length, now)
	}); err != nil {
		return g.updateError(u.id, "declare size", before, err)
	}
	if err := g.be.AsLengthDeclarableUpload(u.inner).DeclareLength(ctx, length); err != nil {
		if isDiskFull(err) {
			g.logger(ctx).Warn("declare upload length: disk full", zap.String("id", u.id), zap.Error(err))
			return errDiskFull()
		}
		g.logger(ctx).Error("declare upload length", zap.String("id", u.id), zap.Error(err))
		return errDataStore()
	}
	g.n.Notify(u.id)
	return nil
}
