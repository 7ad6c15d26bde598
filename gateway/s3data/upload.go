package s3data

import (
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"time"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/service/s3"
	"github.com/tus/tusd/v2/pkg/handler"
	"github.com/tus/tusd/v2/pkg/s3store"
	"go.uber.org/zap"
)

// maxEmptyReads is how many (0, nil) reads in a row WriteChunk accepts from
// src before giving up, as bufio does.
const maxEmptyReads = 100

// settleTimeout bounds the work that follows bytes S3 has committed
// (staging them, reading the offset back, restoring lost bytes). It runs
// even when the request's context is cancelled meanwhile (client gone,
// shutdown), so that committed bytes are not left unstaged.
const settleTimeout = 30 * time.Second

// upload is one handle on an upload, used by one request at a time (tusd
// holds the upload's lock).
type upload struct {
	s *Store
	// objectID is the upload's id for tusd and the gateway; fullID is
	// s3store's, "<objectID>+<multipart id>".
	objectID, fullID string

	// tus is this handle's copy of tusd's store, whose client is guard.
	tus   s3store.S3Store
	guard *guardedAPI

	// h is the current s3store handle. Its cached info is right, but once
	// it has run a WriteChunk (spent) its cached incomplete-part size may be
	// stale: s3store does not reset it when a write consumes the incomplete
	// part. A spent handle never writes again; a fresh one does.
	h     handler.Upload
	spent bool
	// complete is set when a write reached the declared size: every byte is
	// in a part, so FinishUpload can complete h's parts as they are.
	complete bool
}

var _ handler.Upload = (*upload)(nil)

// fresh replaces h by a new s3store handle, which reads the upload's state
// from S3 on first use.
func (u *upload) fresh(ctx context.Context) error {
	h, err := u.tus.GetUpload(ctx, u.fullID)
	if err != nil {
		return err
	}
	u.h, u.spent = h, false
	return nil
}

// GetInfo implements handler.Upload. The ID it reports is the object id:
// tusd, its clients and the gateway never see the multipart id.
func (u *upload) GetInfo(ctx context.Context) (handler.FileInfo, error) {
	info, err := u.h.GetInfo(ctx)
	info.ID = u.objectID
	return info, err
}

// GetReader implements handler.Upload: the final object of a finished
// upload (tusd's s3store refuses incomplete ones).
func (u *upload) GetReader(ctx context.Context) (io.ReadCloser, error) {
	return u.h.GetReader(ctx)
}

// WriteChunk implements handler.Upload. The gateway calls it with at most
// one api.video part. It passes src to tusd's s3store while keeping a copy
// in a temporary file, then puts exactly the bytes the store reports written
// in a staging object (key: the offset) and only then returns.
//
// A src error ends src for the store, which keeps every byte read; the
// error is returned after those bytes are committed and staged. When the
// store fails, the committed offset is read back from S3 and what it holds
// is staged. An empty src costs no request.
//
// If the staging PUT fails, the error is returned with n counting the
// committed bytes: the client gets a 5xx, and its HEAD reports them; they
// are readable by OpenRange only once the upload is finished.
func (u *upload) WriteChunk(ctx context.Context, offset int64, src io.Reader) (int64, error) {
	src, err := nonEmpty(src)
	if src == nil {
		return 0, err
	}
	f, err := os.CreateTemp(u.s.tempDir, "tusgate-s3-chunk-*")
	if err != nil {
		return 0, fmt.Errorf("s3data: write upload %s: temporary file: %w", u.objectID, err)
	}
	defer func() {
		_ = f.Close()
		_ = os.Remove(f.Name())
	}()
	body := &softEOF{r: io.TeeReader(src, f)}
	committed, err := u.commit(ctx, offset, body)
	if err == nil && body.err != nil {
		err = fmt.Errorf("s3data: write upload %s: read the chunk: %w", u.objectID, body.err)
	}
	if committed <= offset {
		return 0, err
	}
	sctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), settleTimeout)
	defer cancel()
	if serr := u.stage(sctx, offset, committed, f); serr != nil {
		u.s.log.Warn("stage written bytes: they stay unreadable until the upload is finished",
			zap.String("id", u.objectID), zap.Int64("offset", offset), zap.Int64("end", committed), zap.Error(serr))
		if err == nil {
			err = serr
		}
	}
	if err == nil {
		if info, ierr := u.h.GetInfo(ctx); ierr == nil && !info.SizeIsDeferred && committed == info.Size {
			u.complete = true
		}
	}
	return committed - offset, err
}

// stage puts bytes [offset, end) of the upload, the first end-offset bytes
// of f, in a staging object.
func (u *upload) stage(ctx context.Context, offset, end int64, f *os.File) error {
	st, err := f.Stat()
	if err != nil {
		return fmt.Errorf("s3data: stage upload %s: %w", u.objectID, err)
	}
	if st.Size() < end-offset {
		return fmt.Errorf("s3data: stage upload %s: the store reports %d bytes written, %d were read", u.objectID, end-offset, st.Size())
	}
	_, err = u.s.api.PutObject(ctx, &s3.PutObjectInput{
		Bucket:        aws.String(u.s.bucket),
		Key:           aws.String(u.s.stageKey(u.objectID, offset)),
		Body:          io.NewSectionReader(f, 0, end-offset),
		ContentLength: aws.Int64(end - offset),
	})
	if err != nil {
		return fmt.Errorf("s3data: stage upload %s bytes [%d, %d): %w", u.objectID, offset, end, err)
	}
	return nil
}

// commit writes r through s3store at offset and returns the offset S3 holds
// afterwards. On a store error it reads that offset back from S3 (s3store
// reports 0 even when parts landed) and, if s3store lost bytes it had
// committed before (it deletes its incomplete-part object before uploading
// it again), puts them back from the staging objects.
func (u *upload) commit(ctx context.Context, offset int64, r io.Reader) (int64, error) {
	if u.spent {
		if err := u.fresh(ctx); err != nil {
			return offset, fmt.Errorf("s3data: write upload %s: %w", u.objectID, err)
		}
	}
	u.guard.reset()
	u.spent = true
	n, err := u.h.WriteChunk(ctx, offset, r)
	if err == nil {
		return offset + n, nil
	}
	werr := fmt.Errorf("s3data: write upload %s at %d: %w", u.objectID, offset, err)
	sctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), settleTimeout)
	defer cancel()
	committed, rerr := u.reload(sctx)
	if rerr != nil {
		return offset, errors.Join(werr, rerr)
	}
	if committed < offset {
		committed = u.restore(sctx, committed, offset)
	}
	return committed, werr
}

// reload replaces h by a fresh handle and returns the offset S3 holds.
func (u *upload) reload(ctx context.Context) (int64, error) {
	if err := u.fresh(ctx); err != nil {
		return 0, fmt.Errorf("s3data: read back upload %s: %w", u.objectID, err)
	}
	info, err := u.h.GetInfo(ctx)
	if err != nil {
		return 0, fmt.Errorf("s3data: read back upload %s: %w", u.objectID, err)
	}
	return info.Offset, nil
}

// restore writes bytes [from, to) again from the staging objects, after
// s3store dropped them; it returns the offset S3 holds afterwards.
func (u *upload) restore(ctx context.Context, from, to int64) int64 {
	log := u.s.log.With(zap.String("id", u.objectID), zap.Int64("from", from), zap.Int64("to", to))
	rc, err := u.s.openStaged(ctx, u.objectID, from, to-from)
	if err != nil {
		log.Warn("S3 lost committed bytes of the incomplete part and they are not staged: the client must send them again", zap.Error(err))
		return from
	}
	defer rc.Close()
	body := &softEOF{r: rc}
	u.guard.reset()
	u.spent = true
	n, err := u.h.WriteChunk(ctx, from, body)
	if err == nil && body.err == nil {
		log.Info("restored bytes S3 lost from the incomplete part")
		return from + n
	}
	committed, rerr := u.reload(ctx)
	if rerr != nil {
		log.Warn("restore bytes S3 lost from the incomplete part", zap.NamedError("write", err), zap.NamedError("read", body.err), zap.NamedError("reload", rerr))
		return from
	}
	log.Warn("restore bytes S3 lost from the incomplete part", zap.Int64("restoredTo", committed), zap.NamedError("write", err), zap.NamedError("read", body.err))
	return committed
}

// FinishUpload implements handler.Upload: it completes the multipart
// upload, then deletes the staging objects (the final object now serves
// reads). When the last bytes may still sit in s3store's incomplete-part
// object (a deferred length declared after they were written), an empty
// write first turns them into the last part: completing without it would
// leave them out of the final object.
func (u *upload) FinishUpload(ctx context.Context) error {
	if !u.complete {
		if u.spent {
			if err := u.fresh(ctx); err != nil {
				return fmt.Errorf("s3data: finish upload %s: %w", u.objectID, err)
			}
		}
		info, err := u.h.GetInfo(ctx)
		if err != nil {
			return fmt.Errorf("s3data: finish upload %s: %w", u.objectID, err)
		}
		if info.SizeIsDeferred || info.Offset != info.Size {
			return fmt.Errorf("s3data: finish upload %s: %d bytes written, the size is %d (deferred: %v)", u.objectID, info.Offset, info.Size, info.SizeIsDeferred)
		}
		if _, err := u.commit(ctx, info.Offset, eofReader{}); err != nil {
			return fmt.Errorf("s3data: finish upload %s: flush the incomplete part: %w", u.objectID, err)
		}
	}
	u.guard.reset()
	if err := u.h.FinishUpload(ctx); err != nil {
		// A retry after a completion whose answer was lost finds the
		// multipart upload gone and the final object there.
		if !isNotFound(err) || !u.s.finalExists(ctx, u.objectID) {
			return fmt.Errorf("s3data: finish upload %s: %w", u.objectID, err)
		}
	}
	u.complete = true
	if err := u.s.deleteStaging(ctx, u.objectID); err != nil {
		u.s.log.Warn("delete staging objects of a finished upload (Remove deletes them)", zap.String("id", u.objectID), zap.Error(err))
	}
	return nil
}

// terminatable removes an upload (tus DELETE).
type terminatable struct {
	s *Store
	u *upload
}

// Terminate implements handler.TerminatableUpload.
func (t terminatable) Terminate(ctx context.Context) error {
	if t.u == nil {
		return errors.New("s3data: terminate an upload of another store")
	}
	return t.s.Remove(ctx, t.u.fullID)
}

// lengthDeclarable declares the length of a deferred-length upload.
type lengthDeclarable struct{ u *upload }

// DeclareLength implements handler.LengthDeclarableUpload: it rewrites the
// .info object.
func (l lengthDeclarable) DeclareLength(ctx context.Context, length int64) error {
	u := l.u
	if u == nil {
		return errors.New("s3data: declare the length of an upload of another store")
	}
	u.guard.reset()
	if err := u.tus.AsLengthDeclarableUpload(u.h).DeclareLength(ctx, length); err != nil {
		return fmt.Errorf("s3data: declare length of upload %s: %w", u.objectID, err)
	}
	return nil
}

// nonEmpty returns a reader of all of src, or nil (and src's error, nil at
// EOF) when src holds no byte.
func nonEmpty(src io.Reader) (io.Reader, error) {
	var b [1]byte
	for range maxEmptyReads {
		n, err := src.Read(b[:])
		if n > 0 {
			first := b[0]
			return io.MultiReader(&oneByte{b: first}, src), nil
		}
		if errors.Is(err, io.EOF) {
			return nil, nil
		}
		if err != nil {
			return nil, err
		}
	}
	return nil, io.ErrNoProgress
}

// oneByte is a reader of one byte.
type oneByte struct {
	b    byte
	done bool
}

// Read implements io.Reader.
func (o *oneByte) Read(p []byte) (int, error) {
	if o.done {
		return 0, io.EOF
	}
	if len(p) == 0 {
		return 0, nil
	}
	p[0], o.done = o.b, true
	return 1, io.EOF
}

// softEOF ends a stream with io.EOF where r fails, and keeps the error: a
// store fed by it keeps every byte read (s3store drops the part it was
// filling when its source fails, together with the incomplete part it
// prepended), as tusd's own request-body reader does.
type softEOF struct {
	r   io.Reader
	err error
}

// Read implements io.Reader.
func (s *softEOF) Read(p []byte) (int, error) {
	if s.err != nil {
		return 0, io.EOF
	}
	n, err := s.r.Read(p)
	if err != nil && !errors.Is(err, io.EOF) {
		s.err = err
		return n, io.EOF
	}
	return n, err
}

// eofReader is an empty reader.
type eofReader struct{}

// Read implements io.Reader.
func (eofReader) Read([]byte) (int, error) { return 0, io.EOF }
