package store_test

import (
	"math/rand/v2"
	"testing"

	"github.com/tusgate/tusgate/store"
)

const mib = 1 << 20

// checkPlan verifies that the parts of an upload of size bytes tile [0, size)
// in order, without gaps or overlaps, within api.video's part limits, and that
// PartOf agrees with Range.
func checkPlan(t *testing.T, p store.Plan, size int64) {
	t.Helper()
	n := p.Parts(size)
	if n < 1 || n > store.MaxParts {
		t.Fatalf("plan %+v, size %d: got %d parts, want 1..%d", p, size, n, store.MaxParts)
	}
	var next int64
	for k := 1; k <= n; k++ {
		start, end := p.Range(k, size)
		if start != next {
			t.Fatalf("plan %+v, size %d: part %d starts at %d, want %d", p, size, k, start, next)
		}
		if end <= start {
			t.Fatalf("plan %+v, size %d: part %d is empty [%d, %d)", p, size, k, start, end)
		}
		if l := end - start; l > store.MaxPartSize || (k < n && l < store.MinPartSize) {
			t.Fatalf("plan %+v, size %d: part %d/%d has %d bytes, want %d..%d", p, size, k, n, l, store.MinPartSize, store.MaxPartSize)
		}
		for _, off := range []int64{start, end - 1, start + (end-start)/2} {
			if got := p.PartOf(off); got != k {
				t.Fatalf("plan %+v: PartOf(%d) = %d, want %d", p, off, got, k)
			}
		}
		if p.Start(k) != start || (k < n && p.End(k) != end) || p.End(k) < end {
			t.Fatalf("plan %+v, size %d: part %d Start/End = %d/%d, Range = %d/%d", p, size, k, p.Start(k), p.End(k), start, end)
		}
		next = end
	}
	if next != size {
		t.Fatalf("plan %+v, size %d: parts end at %d, want %d", p, size, next, size)
	}
}

func TestPlanTable(t *testing.T) {
	def := store.Plan{FirstPartSize: store.MinPartSize, PartSize: 50 * mib}
	small := store.Plan{FirstPartSize: store.MinPartSize, PartSize: store.MinPartSize}
	big := store.Plan{FirstPartSize: store.MaxPartSize, PartSize: store.MaxPartSize}
	tests := []struct {
		plan  store.Plan
		size  int64
		parts int
	}{
		{def, 1, 1},
		{def, 5*mib - 1, 1},
		{def, 5 * mib, 1},
		{def, 5*mib + 1, 2},
		{def, 55 * mib, 2},
		{def, 55*mib + 1, 3},
		{def, 105 * mib, 3},
		{def, 1 << 30, 1 + (1<<30-5*mib+50*mib-1)/(50*mib)},
		{def, store.MaxVideoSize, 1 + int((store.MaxVideoSize-5*mib+50*mib-1)/(50*mib))},
		{small, 10 * mib, 2},
		{small, 10*mib + 1, 3},
		{small, store.MaxVideoSize, 6144},
		{big, 200 * mib, 1},
		{big, 400*mib + 7, 3},
	}
	for _, tt := range tests {
		if got := tt.plan.Parts(tt.size); got != tt.parts {
			t.Errorf("plan %+v: Parts(%d) = %d, want %d", tt.plan, tt.size, got, tt.parts)
		}
		checkPlan(t, tt.plan, tt.size)
	}
	for _, size := range []int64{0, -1} {
		if got := def.Parts(size); got != 0 {
			t.Errorf("Parts(%d) = %d, want 0", size, got)
		}
	}
}

func TestPlanRandom(t *testing.T) {
	rng := rand.New(rand.NewPCG(20250314, 1))
	sizeIn := func(lo, hi int64) int64 { return lo + rng.Int64N(hi-lo+1) }
	for range 300 {
		p := store.Plan{
			FirstPartSize: sizeIn(store.MinPartSize, store.MaxPartSize),
			PartSize:      sizeIn(store.MinPartSize, store.MaxPartSize),
		}
		if err := p.Validate(); err != nil {
			t.Fatalf("Validate(%+v): %v", p, err)
		}
		// Half the sizes near a part boundary, half anywhere.
		size := sizeIn(1, store.MaxVideoSize)
		if rng.IntN(2) == 0 {
			size = max(1, p.End(rng.IntN(20)+1)+rng.Int64N(3)-1)
		}
		checkPlan(t, p, size)
	}
}

func TestPlanValidate(t *testing.T) {
	tests := []struct {
		plan store.Plan
		ok   bool
	}{
		{store.Plan{FirstPartSize: store.MinPartSize, PartSize: 50 * mib}, true},
		{store.Plan{FirstPartSize: store.MaxPartSize, PartSize: store.MinPartSize}, true},
		{store.Plan{}, false},
		{store.Plan{FirstPartSize: store.MinPartSize - 1, PartSize: 50 * mib}, false},
		{store.Plan{FirstPartSize: store.MinPartSize, PartSize: store.MaxPartSize + 1}, false},
		{store.Plan{FirstPartSize: store.MaxPartSize + 1, PartSize: store.MinPartSize}, false},
	}
	for _, tt := range tests {
		if err := tt.plan.Validate(); (err == nil) != tt.ok {
			t.Errorf("Validate(%+v) = %v, want ok=%t", tt.plan, err, tt.ok)
		}
	}
}
