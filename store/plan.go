package store

import "fmt"

// Limits of api.video's chunked upload API (see shared/apivideo-upload.md).
const (
	// MinPartSize is the smallest chunk api.video accepts for any part but the last.
	MinPartSize int64 = 5 << 20
	// MaxPartSize is the largest chunk api.video accepts.
	MaxPartSize int64 = 200 << 20
	// MaxParts is the largest number of parts one video may have.
	MaxParts = 10000
	// MaxVideoSize is the largest video api.video accepts.
	MaxVideoSize int64 = 30 << 30
)

// Plan is the deterministic split of an upload's bytes into api.video parts:
// part 1 is [0, FirstPartSize), parts 2.. are consecutive slices of PartSize
// bytes, and the last part holds the remainder. It is stored with the upload
// so a configuration change never re-plans an upload already started.
type Plan struct {
	// FirstPartSize is the size of part 1 in bytes.
	FirstPartSize int64 `json:"first"`
	// PartSize is the size of every later part but the last, in bytes.
	PartSize int64 `json:"size"`
}

// Validate reports whether the plan respects api.video's limits.
func (p Plan) Validate() error {
	if p.FirstPartSize < MinPartSize || p.FirstPartSize > MaxPartSize {
		return fmt.Errorf("first part size %d: must be between %d and %d bytes", p.FirstPartSize, MinPartSize, MaxPartSize)
	}
	if p.PartSize < MinPartSize || p.PartSize > MaxPartSize {
		return fmt.Errorf("part size %d: must be between %d and %d bytes", p.PartSize, MinPartSize, MaxPartSize)
	}
	return nil
}

// Start returns the offset of the first byte of part k (k ≥ 1).
func (p Plan) Start(k int) int64 {
	if k <= 1 {
		return 0
	}
	return p.FirstPartSize + int64(k-2)*p.PartSize
}

// End returns the offset just past part k when the upload is larger than
// the part (the end before clipping to the upload size).
func (p Plan) End(k int) int64 {
	if k <= 1 {
		return p.FirstPartSize
	}
	return p.FirstPartSize + int64(k-1)*p.PartSize
}

// Parts returns how many parts an upload of size bytes has. Zero bytes make
// zero parts.
func (p Plan) Parts(size int64) int {
	switch {
	case size <= 0:
		return 0
	case size <= p.FirstPartSize:
		return 1
	default:
		rest := size - p.FirstPartSize
		return 1 + int((rest+p.PartSize-1)/p.PartSize)
	}
}

// Range returns the byte range [start, end) of part k of an upload of size
// bytes.
func (p Plan) Range(k int, size int64) (start, end int64) {
	start, end = p.Start(k), p.End(k)
	if end > size {
		end = size
	}
	return start, end
}

// PartOf returns the number of the part that contains byte offset off.
func (p Plan) PartOf(off int64) int {
	if off < p.FirstPartSize {
		return 1
	}
	return 2 + int((off-p.FirstPartSize)/p.PartSize)
}
