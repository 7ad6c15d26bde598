package gateway

import (
	"bytes"
	"context"
	"io"
	"testing"
	"time"

	"github.com/tusgate/tusgate/store"
)

// sizeRecorder records the size of every write.
type sizeRecorder struct{ sizes []int }

func (s *sizeRecorder) Write(p []byte) (int, error) {
	s.sizes = append(s.sizes, len(p))
	return len(p), nil
}

// chunkReader returns at most chunk bytes per Read from r, advancing the
// clock by step each time.
type chunkReader struct {
	r     io.Reader
	chunk int
	now   *time.Time
	step  time.Duration
}

func (c *chunkReader) Read(p []byte) (int, error) {
	*c.now = c.now.Add(c.step)
	return c.r.Read(p[:min(len(p), c.chunk)])
}

// copyWith runs countingReader.WriteTo over src with a plan whose parts
// never end (no state-store record) and returns the write sizes.
func copyWith(t *testing.T, src io.Reader, now *time.Time) []int {
	t.Helper()
	g := &Gateway{cfg: Config{Now: func() time.Time { return *now }}}
	lu := &liveUpload{plan: store.Plan{FirstPartSize: 1 << 40, PartSize: 1 << 40}}
	c := &countingReader{ctx: context.Background(), u: &upload{g: g}, lu: lu, src: src, size: 1 << 41}
	var w sizeRecorder
	if _, err := c.WriteTo(&w); err != nil {
		t.Fatal(err)
	}
	return w.sizes
}

// A fast stream moves to the 1 MiB buffer after growAfter bytes; a stream
// whose small reads are full but slow keeps the 8 KiB buffer.
func TestCopyBufferAdapts(t *testing.T) {
	now := time.Unix(0, 0)
	fast := copyWith(t, &chunkReader{r: bytes.NewReader(make([]byte, 8<<20)), chunk: 1 << 30, now: &now}, &now)
	if got := max(fast[0], fast[1]); got != smallCopyBuf {
		t.Errorf("first writes of a fast stream: %d bytes, want the %d-byte small buffer", got, smallCopyBuf)
	}
	small := 0
	for _, n := range fast {
		if n <= smallCopyBuf {
			small++
		}
	}
	if small != growAfter/smallCopyBuf || fast[small] != largeCopyBuf {
		t.Errorf("fast stream: %d small writes then %d bytes, want %d then %d", small, fast[small], growAfter/smallCopyBuf, largeCopyBuf)
	}

	// 8 KiB every 20 ms: 64 KiB take 160 ms, beyond growWithin.
	slow := copyWith(t, &chunkReader{r: bytes.NewReader(make([]byte, 1<<20)), chunk: smallCopyBuf, now: &now, step: 20 * time.Millisecond}, &now)
	for _, n := range slow {
		if n > smallCopyBuf {
			t.Fatalf("slow stream wrote %d bytes at once: it took the large buffer", n)
		}
	}
}
