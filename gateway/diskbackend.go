package gateway

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"path/filepath"
	"strings"
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

// diskBackend is the default Backend: tusd's disk store in one directory
// (a local disk, or a volume every instance mounts). The forwarder reads
// the received bytes straight from the files, also while they are still
// being received; it never goes through tusd's handler, whose HEAD and GET
// would interrupt a running PATCH.
type diskBackend struct {
	filestore.FileStore
	dir string
}

var _ Backend = (*diskBackend)(nil)

// NewDiskBackend returns the Backend keeping upload bytes in dir (tusd's
// disk store: <id> and <id>.info per upload), created if missing.
func NewDiskBackend(dir string) (Backend, error) {
	if err := os.MkdirAll(dir, 0o750); err != nil {
		return nil, fmt.Errorf("create data dir: %w", err)
	}
	return &diskBackend{FileStore: filestore.New(dir), dir: dir}, nil
}

// binPath is the data file of upload id.
func (d *diskBackend) binPath(id string) string { return filepath.Join(d.dir, id) }

// infoPath is tusd's .info file of upload id.
func (d *diskBackend) infoPath(id string) string { return filepath.Join(d.dir, id+".info") }

// StreamsDurably implements Backend: the disk store copies with io.Copy
// (read, then write, then read), so a byte is in the file by the time the
// next Read is called.
func (d *diskBackend) StreamsDurably() bool { return true }

// OpenRange implements Backend.
func (d *diskBackend) OpenRange(ctx context.Context, id string, offset, length int64) (io.ReadCloser, error) {
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

// Offset implements Backend: the size of the data file, once tusd's .info
// file exists.
func (d *diskBackend) Offset(_ context.Context, id string) (int64, error) {
	if _, err := os.Stat(d.infoPath(id)); err != nil {
		return 0, diskErr(id, err)
	}
	fi, err := os.Stat(d.binPath(id))
	if err != nil {
		return 0, diskErr(id, err)
	}
	return fi.Size(), nil
}

// diskErr wraps a file error of upload id, mapping a missing file to
// store.ErrNotFound.
func diskErr(id string, err error) error {
	if errors.Is(err, fs.ErrNotExist) {
		return fmt.Errorf("upload %s: %w: %w", id, store.ErrNotFound, err)
	}
	return fmt.Errorf("upload %s: %w", id, err)
}

// LastWrite implements Backend: the data file's modification time, or zero
// while it holds no byte. It writes nothing, so PATCHes cost nothing more.
func (d *diskBackend) LastWrite(_ context.Context, id string) (time.Time, error) {
	fi, err := os.Stat(d.binPath(id))
	if err != nil {
		return time.Time{}, diskErr(id, err)
	}
	if fi.Size() == 0 {
		return time.Time{}, nil
	}
	return fi.ModTime(), nil
}

// Discard frees the disk blocks and page cache of a range api.video has
// accepted, while the rest of the upload is still being received or sent:
// the file keeps its size (tusd's offset), the range reads as zeros, and a
// multi-gigabyte upload holds disk and memory only for the bytes not yet
// delivered. The file's modification time is kept, since LastWrite reports
// it as the client's last write (a write racing the Discard may see its
// time moved back by the Discard's few microseconds). A file system
// without hole punching gives an error wrapping errors.ErrUnsupported or
// EOPNOTSUPP; nothing is lost then, the bytes stay until the upload's
// files are removed.
func (d *diskBackend) Discard(_ context.Context, id string, offset, length int64) error {
	if offset < 0 || length <= 0 {
		return fmt.Errorf("discard upload %s range [%d, +%d): offset must be at least 0 and length above 0", id, offset, length)
	}
	path := d.binPath(id)
	f, err := os.OpenFile(path, os.O_WRONLY, 0)
	if err != nil {
		return diskErr(id, err)
	}
	defer f.Close()
	fi, err := f.Stat()
	if err != nil {
		return diskErr(id, err)
	}
	if offset+length > fi.Size() {
		return fmt.Errorf("discard upload %s range [%d, %d): %d bytes received: %w", id, offset, offset+length, fi.Size(), ErrNotReceived)
	}
	if err := punchHole(f, offset, length); err != nil {
		return fmt.Errorf("discard upload %s range [%d, %d): %w", id, offset, offset+length, err)
	}
	if err := os.Chtimes(path, time.Time{}, fi.ModTime()); err != nil {
		return fmt.Errorf("discard upload %s: keep its modification time: %w", id, err)
	}
	return nil
}

// Remove implements Backend: it removes the data and .info files directly,
// whatever state they are in (tusd may not be able to open them).
func (d *diskBackend) Remove(_ context.Context, id string) error {
	var errs []error
	for _, p := range []string{d.binPath(id), d.infoPath(id)} {
		if err := os.Remove(p); err != nil && !errors.Is(err, fs.ErrNotExist) {
			errs = append(errs, err)
		}
	}
	if err := errors.Join(errs...); err != nil {
		return fmt.Errorf("remove files of upload %s: %w", id, err)
	}
	return nil
}

// List implements Backend: the uploads with a .info file, modified at the
// later of their two files' modification times.
func (d *diskBackend) List(context.Context) ([]Stored, error) {
	entries, err := os.ReadDir(d.dir)
	if err != nil {
		return nil, fmt.Errorf("list uploads: %w", err)
	}
	var out []Stored
	for _, e := range entries {
		id, ok := strings.CutSuffix(e.Name(), ".info")
		if !ok || id == "" || e.IsDir() {
			continue
		}
		s := Stored{ID: id}
		for _, p := range []string{d.infoPath(id), d.binPath(id)} {
			if fi, err := os.Stat(p); err == nil && fi.ModTime().After(s.Modified) {
				s.Modified = fi.ModTime()
			}
		}
		out = append(out, s)
	}
	return out, nil
}

// Check implements Backend: it creates and removes a file in the directory.
func (d *diskBackend) Check(context.Context) error {
	f, err := os.CreateTemp(d.dir, ".readyz-*")
	if err != nil {
		return err
	}
	name := f.Name()
	cerr := f.Close()
	rerr := os.Remove(name)
	return errors.Join(cerr, rerr)
}

// getUpload opens an upload of the disk store, retrying while its .info
// file is being rewritten (tusd truncates and rewrites it in place, so a
// concurrent read can see it empty or partial).
func (d *diskBackend) getUpload(ctx context.Context, id string) (handler.Upload, error) {
	for attempt := 1; ; attempt++ {
		up, err := d.FileStore.GetUpload(ctx, id)
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

// sectionReadCloser is a range of an upload's data file, read with pread(2)
// from a file of its own.
type sectionReadCloser struct {
	*io.SectionReader
	f *os.File
}

func (s *sectionReadCloser) Close() error { return s.f.Close() }

// FileSection implements apivideo.FileSection, so the forwarder sends the
// range with sendfile(2). The file is this section's own (OpenRange opens
// one per range) and the section reads it with pread(2), so the caller may
// move the file's offset.
func (s *sectionReadCloser) FileSection() (f *os.File, offset, remaining int64) {
	_, base, size := s.Outer()
	pos, _ := s.Seek(0, io.SeekCurrent) // cannot fail
	return s.f, base + pos, max(size-pos, 0)
}
