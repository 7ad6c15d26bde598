package store_test

import (
	"testing"

	"github.com/tusgate/tusgate/store"
)

// FuzzPlan checks the part plan's arithmetic for any size and part size
// api.video allows: parts cover [0,size) exactly once, in order, every part
// but the last is at least 5 MiB, none is above 200 MiB, and PartOf agrees
// with Range.
func FuzzPlan(f *testing.F) {
	f.Add(int64(1), int64(50<<20))
	f.Add(int64(5<<20), int64(5<<20))
	f.Add(int64(5<<20+1), int64(5<<20))
	f.Add(int64(30<<30), int64(200<<20))
	f.Add(int64(12<<20), int64(7<<20+3))
	f.Fuzz(func(t *testing.T, rawSize, rawPartSize int64) {
		// Fold any input into the ranges api.video allows.
		partSize := store.MinPartSize + abs(rawPartSize)%(store.MaxPartSize-store.MinPartSize+1)
		size := 1 + abs(rawSize)%store.MaxVideoSize
		p := store.Plan{FirstPartSize: store.MinPartSize, PartSize: partSize}
		if err := p.Validate(); err != nil {
			t.Fatal(err)
		}
		n := p.Parts(size)
		if n < 1 || n > store.MaxParts {
			t.Fatalf("Parts(%d) = %d, want 1..%d", size, n, store.MaxParts)
		}
		var next int64
		for k := 1; k <= n; k++ {
			start, end := p.Range(k, size)
			if start != next {
				t.Fatalf("part %d starts at %d, want %d (gap or overlap)", k, start, next)
			}
			if end <= start || end-start > store.MaxPartSize {
				t.Fatalf("part %d is [%d,%d): empty or above 200 MiB", k, start, end)
			}
			if k < n && end-start < store.MinPartSize {
				t.Fatalf("part %d of %d is %d bytes, below 5 MiB", k, n, end-start)
			}
			if p.PartOf(start) != k || p.PartOf(end-1) != k {
				t.Fatalf("PartOf disagrees with Range for part %d", k)
			}
			next = end
		}
		if next != size {
			t.Fatalf("parts end at %d, want %d", next, size)
		}
	})
}

func abs(x int64) int64 {
	if x < 0 {
		if x == -x { // math.MinInt64
			return 0
		}
		return -x
	}
	return x
}
