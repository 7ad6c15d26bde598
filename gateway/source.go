package gateway

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"time"

	"github.com/tus/tusd/v2/pkg/filestore"
	"github.com/tus/tusd/v2/pkg/handler"

	"github.com/tusgate/tusgate/store"
)

// ErrNotReceived means the data store holds fewer bytes than a range asks for.
var ErrNotReceived = errors.New("bytes not received yet")

// infoAttempts is how many times DataSource reads an upload's .info file
// that tusd may be rewriting at that moment.
const infoAttempts = 5

// DataSource reads the received bytes of uploads straight from the data
// store, also while they are still being received. It never goes through
// tusd's handler, whose HEAD and GET would interrupt a running PATCH.
type DataSource struct {
	fs filestore.FileStore
}

// OpenRange returns a reader of bytes [offset, offset+length) of upload id.
// It returns an error wrapping store.ErrNotFound when the upload's bytes do
// not exist, and ErrNotReceived when fewer than offset+length bytes are in.
func (d *DataSource) OpenRange(ctx context.Context, id string, offset, length int64) (io.ReadCloser, error) {
	if offset < 0 || length < 0 {
		return nil, fmt.Errorf("open upload %s range [%d, +%d): negative offset or length", id, offset, length)
	}
	up, err := d.getUpload(ctx, id)
	if err != nil {
		return nil, err
	}
	info, err := up.GetInfo(ctx)
	if err != nil {
		return nil, fmt.Errorf("open upload %s: %w", id, err)
	}
	if offset+length > info.Offset {
		return nil, fmt.Errorf("open upload %s range [%d, %d): %d bytes received: %w", id, offset, offset+length, info.Offset, ErrNotReceived)
	}
	rc, err := up.GetReader(ctx)
	if err != nil {
		if errors.Is(err, os.ErrNotExist) {
			return nil, fmt.Errorf("open upload %s data: %w", id, store.ErrNotFound)
		}
		return nil, fmt.Errorf("open upload %s data: %w", id, err)
	}
	f, ok := rc.(*os.File)
	if !ok {
		rc.Close()
		return nil, fmt.Errorf("open upload %s data: the data store does not give random access", id)
	}
	return &sectionReadCloser{SectionReader: io.NewSectionReader(f, offset, length), f: f}, nil
}

// Received returns how many bytes of upload id the data store holds.
func (d *DataSource) Received(ctx context.Context, id string) (int64, error) {
	up, err := d.getUpload(ctx, id)
	if err != nil {
		return 0, err
	}
	info, err := up.GetInfo(ctx)
	if err != nil {
		return 0, fmt.Errorf("read upload %s info: %w", id, err)
	}
	return info.Offset, nil
}

// getUpload opens an upload of the disk store, retrying while its .info
// file is being rewritten (tusd truncates and rewrites it in place, so a
// concurrent read can see it empty or partial).
func (d *DataSource) getUpload(ctx context.Context, id string) (handler.Upload, error) {
	for attempt := 1; ; attempt++ {
		up, err := d.fs.GetUpload(ctx, id)
		if err == nil {
			return up, nil
		}
		if errors.Is(err, handler.ErrNotFound) {
			return nil, fmt.Errorf("open upload %s: %w", id, store.ErrNotFound)
		}
		_, isSyntax := errors.AsType[*json.SyntaxError](err)
		if (!isSyntax && !errors.Is(err, io.ErrUnexpectedEOF)) || attempt == infoAttempts {
			return nil, fmt.Errorf("open upload %s: %w", id, err)
		}
		t := time.NewTimer(time.Duration(attempt) * 5 * time.Millisecond)
		select {
		case <-ctx.Done():
			t.Stop()
			return nil, fmt.Errorf("open upload %s: %w", id, context.Cause(ctx))
		case <-t.C:
		}
	}
}

type sectionReadCloser struct {
	*io.SectionReader
	f *os.File
}

func (s *sectionReadCloser) Close() error { return s.f.Close() }
