package s3data

import (
	"cmp"
	"context"
	"errors"
	"fmt"
	"io"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/service/s3"

	"github.com/tusgate/tusgate/gateway"
	"github.com/tusgate/tusgate/store"
)

// segment is one staging object: bytes [off, off+size) of an upload.
type segment struct {
	key       string
	off, size int64
}

func (s segment) end() int64 { return s.off + s.size }

// listing is what one listing of an upload's keys found.
type listing struct {
	final        bool  // the final object exists (the upload is finished)
	finalSize    int64 // its size
	info         bool  // the .info object exists
	segs         []segment
	lastModified time.Time // newest of everything listed
	truncated    bool      // the listing stopped at stop, keys remain
	lastKey      string    // the last key listed
}

// list lists the keys of upload objectID (final object, .info, .part,
// staging objects) that sort after startAfter, page by page, and stops after
// the first page whose last key is at or beyond stop (when stop is set), or
// after maxPages pages (when not 0). Keys of other uploads that share the
// prefix are skipped.
func (s *Store) list(ctx context.Context, objectID, startAfter, stop string, maxPages int) (listing, error) {
	var l listing
	base := s.objectKey(objectID)
	stagePrefix := s.stagePrefix(objectID)
	in := &s3.ListObjectsV2Input{Bucket: aws.String(s.bucket), Prefix: aws.String(base)}
	if startAfter != "" {
		in.StartAfter = aws.String(startAfter)
	}
	if s.listPageSize > 0 {
		in.MaxKeys = aws.Int32(s.listPageSize)
	}
	for page := 1; ; page++ {
		out, err := s.api.ListObjectsV2(ctx, in)
		if err != nil {
			return l, fmt.Errorf("list %s*: %w", base, err)
		}
		for _, o := range out.Contents {
			key := aws.ToString(o.Key)
			l.lastKey = key
			size := aws.ToInt64(o.Size)
			switch {
			case key == base:
				l.final, l.finalSize = true, size
			case key == base+".info":
				l.info = true
			case key == base+".part":
			case strings.HasPrefix(key, stagePrefix):
				off, err := strconv.ParseInt(key[len(stagePrefix):], 10, 64)
				if err != nil || off < 0 {
					continue
				}
				l.segs = append(l.segs, segment{key: key, off: off, size: size})
			default:
				continue // another upload's key
			}
			if t := aws.ToTime(o.LastModified); t.After(l.lastModified) {
				l.lastModified = t
			}
		}
		if !aws.ToBool(out.IsTruncated) || len(out.Contents) == 0 {
			return l, nil
		}
		if (stop != "" && l.lastKey >= stop) || page == maxPages {
			l.truncated = true
			return l, nil
		}
		// StartAfter the last key, rather than the continuation token, works
		// the same on every S3-compatible server.
		in.StartAfter = aws.String(l.lastKey)
	}
}

// finalExists reports whether the final object of objectID exists.
func (s *Store) finalExists(ctx context.Context, objectID string) bool {
	_, err := s.api.HeadObject(ctx, &s3.HeadObjectInput{Bucket: aws.String(s.bucket), Key: aws.String(s.objectKey(objectID))})
	return err == nil
}

// OpenRange implements gateway.Backend. A finished upload is read from its
// final object with one ranged GET. An incomplete one is read from its
// staging objects: one listing finds the segments covering the range, and
// the reader GETs them one after the other as it reaches them (one HTTP body
// open at a time). A segment deleted meanwhile (the upload was just
// finished) is read from the final object instead.
//
// The error wraps store.ErrNotFound when the upload has no .info object and
// no final object, and gateway.ErrNotReceived when the staging objects do
// not cover the range (bytes not written yet, or written but not staged:
// see the package documentation). The reader uses ctx for its requests.
func (s *Store) OpenRange(ctx context.Context, id string, offset, length int64) (io.ReadCloser, error) {
	if offset < 0 || length < 0 {
		return nil, fmt.Errorf("s3data: open upload %s range [%d, +%d): negative offset or length", id, offset, length)
	}
	objectID, _, ok := splitID(id)
	if !ok {
		return nil, fmt.Errorf("s3data: open upload %s: %w", id, store.ErrNotFound)
	}
	end := offset + length
	// The first page holds the final object and .info (they sort before
	// the staging objects), and all staging objects of most uploads.
	l, err := s.list(ctx, objectID, "", "", 1)
	if err != nil {
		return nil, fmt.Errorf("s3data: open upload %s: %w", id, err)
	}
	switch {
	case l.final:
		if end > l.finalSize {
			return nil, fmt.Errorf("s3data: open upload %s range [%d, %d): the upload holds %d bytes: %w", id, offset, end, l.finalSize, gateway.ErrNotReceived)
		}
		var pieces []piece
		if length > 0 {
			pieces = []piece{{key: s.objectKey(objectID), start: offset, abs: offset, n: length, final: true}}
		}
		return s.newReader(ctx, id, objectID, pieces), nil
	case !l.info && (!l.truncated || l.lastKey >= s.infoKey(objectID)):
		// (A first page cut short by another upload's keys, such as those
		// of "<obj>-x", may end before .info.)
		return nil, fmt.Errorf("s3data: open upload %s: %w", id, store.ErrNotFound)
	}
	segs, err := s.segmentsAfter(ctx, l, objectID, offset, end)
	if err != nil {
		return nil, fmt.Errorf("s3data: open upload %s: %w", id, err)
	}
	pieces, err := cover(segs, offset, end)
	if err != nil {
		return nil, fmt.Errorf("s3data: open upload %s: %w", id, err)
	}
	return s.newReader(ctx, id, objectID, pieces), nil
}

// segmentsAfter returns the staging segments of first, a listing's first
// page, and those of the next pages up to the segment holding byte end-1.
// When the range starts beyond the first page, it lists from the segment
// starting at offset (the gateway cuts writes at api.video part
// boundaries, so a part's first byte starts a segment), and from the first
// page's end only if that does not cover the range.
func (s *Store) segmentsAfter(ctx context.Context, first listing, objectID string, offset, end int64) ([]segment, error) {
	stop := s.stageKey(objectID, max(end-1, 0))
	if !first.truncated || offset == end || first.lastKey >= stop {
		return first.segs, nil
	}
	if offset > 0 && first.lastKey < s.stageKey(objectID, offset) {
		jump, err := s.list(ctx, objectID, s.stageKey(objectID, offset-1), stop, 0)
		if err != nil {
			return nil, err
		}
		segs := append(slices.Clone(first.segs), jump.segs...)
		if _, err := cover(segs, offset, end); err == nil {
			return segs, nil
		}
	}
	rest, err := s.list(ctx, objectID, first.lastKey, stop, 0)
	if err != nil {
		return nil, err
	}
	return append(first.segs, rest.segs...), nil
}

// openStaged returns a reader of bytes [offset, offset+length) of objectID
// from its staging objects only.
func (s *Store) openStaged(ctx context.Context, objectID string, offset, length int64) (io.ReadCloser, error) {
	end := offset + length
	l, err := s.list(ctx, objectID, s.stagePrefix(objectID), s.stageKey(objectID, max(end-1, 0)), 0)
	if err != nil {
		return nil, err
	}
	pieces, err := cover(l.segs, offset, end)
	if err != nil {
		return nil, err
	}
	r := s.newReader(ctx, objectID, objectID, pieces)
	r.noFallback = true
	return r, nil
}

// cover returns the pieces of segs that make up bytes [offset, end): at each
// position, the segment reaching farthest. Staging objects can overlap
// after a failed write was resent; they hold the same bytes where they do.
func cover(segs []segment, offset, end int64) ([]piece, error) {
	if offset == end {
		return nil, nil
	}
	slices.SortFunc(segs, func(a, b segment) int {
		return cmp.Or(cmp.Compare(a.off, b.off), strings.Compare(a.key, b.key))
	})
	var pieces []piece
	pos := offset
	i := 0
	var best segment
	for pos < end {
		for ; i < len(segs) && segs[i].off <= pos; i++ {
			if segs[i].end() > best.end() || best.key == "" {
				best = segs[i]
			}
		}
		if best.key == "" || best.end() <= pos {
			staged := int64(0)
			if best.key != "" {
				staged = best.end()
			}
			if i < len(segs) {
				return nil, fmt.Errorf("range [%d, %d): bytes [%d, %d) are not staged: %w", offset, end, pos, segs[i].off, gateway.ErrNotReceived)
			}
			return nil, fmt.Errorf("range [%d, %d): staged bytes end at %d: %w", offset, end, max(staged, pos), gateway.ErrNotReceived)
		}
		n := min(best.end(), end) - pos
		pieces = append(pieces, piece{key: best.key, start: pos - best.off, abs: pos, n: n})
		pos += n
	}
	return pieces, nil
}

// piece is n bytes of object key from byte start, the bytes of the upload
// from abs.
type piece struct {
	key    string
	start  int64
	abs, n int64
	final  bool // key is the final object (start is then abs)
}

// rangeReader reads pieces one after the other, each with a ranged GET
// opened when the reader reaches it.
type rangeReader struct {
	ctx      context.Context
	s        *Store
	id       string
	objectID string
	pieces   []piece
	// noFallback: a missing staging object is an error rather than a
	// reason to read the final object.
	noFallback bool

	body io.ReadCloser
	left int64 // bytes still expected from body
	err  error
}

func (s *Store) newReader(ctx context.Context, id, objectID string, pieces []piece) *rangeReader {
	return &rangeReader{ctx: ctx, s: s, id: id, objectID: objectID, pieces: pieces}
}

// Read implements io.Reader.
func (r *rangeReader) Read(p []byte) (int, error) {
	for {
		if r.err != nil {
			return 0, r.err
		}
		if r.body == nil {
			if len(r.pieces) == 0 {
				return 0, io.EOF
			}
			if err := r.open(); err != nil {
				r.err = err
				return 0, err
			}
		}
		if len(p) == 0 {
			return 0, nil
		}
		if int64(len(p)) > r.left {
			p = p[:r.left]
		}
		n, err := r.body.Read(p)
		r.left -= int64(n)
		if r.left == 0 {
			_ = r.body.Close()
			r.body = nil
			r.pieces = r.pieces[1:]
			if n > 0 {
				return n, nil
			}
			continue
		}
		switch {
		case err == nil:
		case errors.Is(err, io.EOF):
			r.err = fmt.Errorf("s3data: read upload %s: %s ended %d bytes early: %w", r.id, r.pieces[0].key, r.left, io.ErrUnexpectedEOF)
		default:
			r.err = fmt.Errorf("s3data: read upload %s: %w", r.id, err)
		}
		if n > 0 || r.err == nil {
			return n, nil
		}
		return 0, r.err
	}
}

// open GETs the first piece. A staging object that is gone means the
// upload was finished meanwhile: the rest is read from the final object.
func (r *rangeReader) open() error {
	pc := r.pieces[0]
	out, err := r.get(pc)
	if err != nil && isNotFound(err) && !pc.final && !r.noFallback {
		last := r.pieces[len(r.pieces)-1]
		whole := piece{key: r.s.objectKey(r.objectID), start: pc.abs, abs: pc.abs, n: last.abs + last.n - pc.abs, final: true}
		r.pieces = []piece{whole}
		pc = whole
		out, err = r.get(pc)
	}
	if err != nil {
		if isNotFound(err) {
			return fmt.Errorf("s3data: read upload %s: %s is gone: %w", r.id, pc.key, store.ErrNotFound)
		}
		return fmt.Errorf("s3data: read upload %s: %w", r.id, err)
	}
	if out.ContentLength != nil && *out.ContentLength != pc.n {
		_ = out.Body.Close()
		return fmt.Errorf("s3data: read upload %s: %s answered %d bytes for a range of %d", r.id, pc.key, *out.ContentLength, pc.n)
	}
	r.body, r.left = out.Body, pc.n
	return nil
}

// get sends the ranged GET of pc.
func (r *rangeReader) get(pc piece) (*s3.GetObjectOutput, error) {
	return r.s.api.GetObject(r.ctx, &s3.GetObjectInput{
		Bucket: aws.String(r.s.bucket),
		Key:    aws.String(pc.key),
		Range:  aws.String(fmt.Sprintf("bytes=%d-%d", pc.start, pc.start+pc.n-1)),
	})
}

// Close implements io.Closer.
func (r *rangeReader) Close() error {
	if r.body != nil {
		err := r.body.Close()
		r.body = nil
		return err
	}
	return nil
}
