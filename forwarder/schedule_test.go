package forwarder_test

import (
	"cmp"
	"context"
	"fmt"
	"io"
	"maps"
	"slices"
	"sync"
	"testing"
	"testing/synctest"
	"time"

	"github.com/tusgate/tusgate/apivideo"
	"github.com/tusgate/tusgate/forwarder"
	"github.com/tusgate/tusgate/store"
)

// The scheduling proof: a trace of uploads with mixed token deadlines and
// client speeds is played against the real Forwarder (one worker) in a
// synctest bubble, where time is simulated and deterministic. The same trace
// is scheduled offline by an earliest-deadline-first reference and by
// first-come-first-served. tusgate must meet every deadline the EDF reference
// meets, and miss strictly fewer than FCFS.

// traceUpload is one upload of a trace. Its bytes arrive at rate from
// arrival on; its token expires deadline after arrival (0: never).
type traceUpload struct {
	id       string
	arrival  time.Duration
	size     int64
	rate     int64 // bytes per second from the client
	deadline time.Duration
}

// sendRate is api.video's simulated ingest speed: a 5 MiB part takes 0.5 s.
const sendRate = 10 * MiB

func partTime(n int64) time.Duration { return time.Duration(n * int64(time.Second) / sendRate) }

// busyTrace: three large uploads with no deadline arrive first at full speed
// and fill the queue with later parts; then slow mobile clients with 8 s
// tokens arrive one after another; one of them cannot make it at all (its
// first 5 MiB arrive after its deadline).
func busyTrace() []traceUpload {
	tr := []traceUpload{
		{id: "big1", arrival: 0, size: 60 * MiB, rate: 200 * MiB},
		{id: "big2", arrival: 100 * time.Millisecond, size: 60 * MiB, rate: 200 * MiB},
		{id: "big3", arrival: 200 * time.Millisecond, size: 60 * MiB, rate: 200 * MiB},
		{id: "doomed", arrival: time.Second, size: 6 * MiB, rate: 512 << 10, deadline: 8 * time.Second},
	}
	for i := range 8 {
		tr = append(tr, traceUpload{
			id:       fmt.Sprintf("mobile%d", i),
			arrival:  time.Second + time.Duration(i)*1500*time.Millisecond,
			size:     12 * MiB,
			rate:     1 * MiB,
			deadline: 8 * time.Second,
		})
	}
	return tr
}

// simPart is one part in an offline schedule.
type simPart struct {
	u     int // index in the trace
	k     int
	ready time.Duration // bytes durable
	dur   time.Duration
}

// offline schedules the trace on one worker, never sending a first part
// whose deadline has passed, choosing among ready parts with less. It
// returns the ids whose part 1 was accepted after its deadline or never.
func offline(tr []traceUpload, less func(a, b simPart) int) map[string]bool {
	var pending []simPart
	for i, u := range tr {
		for k := 1; k <= plan5.Parts(u.size); k++ {
			_, end := plan5.Range(k, u.size)
			start := plan5.Start(k)
			ready := u.arrival + time.Duration(end*int64(time.Second)/u.rate)
			pending = append(pending, simPart{u: i, k: k, ready: ready, dur: partTime(end - start)})
		}
	}
	firstDone := map[int]time.Duration{}
	missed := map[string]bool{}
	var now time.Duration
	for len(pending) > 0 {
		var ready []simPart
		next := time.Duration(1 << 62)
		for _, p := range pending {
			_, gotFirst := firstDone[p.u]
			switch {
			case p.k > 1 && !gotFirst:
			case p.ready <= now:
				ready = append(ready, p)
			default:
				next = min(next, p.ready)
			}
		}
		if len(ready) == 0 {
			if next == 1<<62 {
				break // only parts of failed uploads are left
			}
			now = next
			continue
		}
		p := slices.MinFunc(ready, less)
		pending = slices.DeleteFunc(pending, func(q simPart) bool { return q.u == p.u && q.k == p.k })
		u := tr[p.u]
		if p.k == 1 && u.deadline > 0 && now >= u.arrival+u.deadline {
			missed[u.id] = true
			pending = slices.DeleteFunc(pending, func(q simPart) bool { return q.u == p.u })
			continue
		}
		now += p.dur
		if p.k == 1 {
			firstDone[p.u] = now
			if u.deadline > 0 && now > u.arrival+u.deadline {
				missed[u.id] = true
			}
		}
	}
	return missed
}

func fcfs(tr []traceUpload) func(a, b simPart) int {
	return func(a, b simPart) int {
		return cmp.Or(cmp.Compare(a.ready, b.ready), cmp.Compare(a.u, b.u), cmp.Compare(a.k, b.k))
	}
}

// edf is the reference policy: first parts before later parts, first parts
// by absolute token deadline (none last), then arrival order.
func edf(tr []traceUpload) func(a, b simPart) int {
	abs := func(p simPart) time.Duration {
		if tr[p.u].deadline == 0 {
			return 1 << 62
		}
		return tr[p.u].arrival + tr[p.u].deadline
	}
	class := func(p simPart) int { return min(p.k-1, 1) }
	return func(a, b simPart) int {
		if c := cmp.Compare(class(a), class(b)); c != 0 {
			return c
		}
		if class(a) == 0 {
			if c := cmp.Compare(abs(a), abs(b)); c != 0 {
				return c
			}
		}
		return cmp.Or(cmp.Compare(tr[a.u].arrival, tr[b.u].arrival), cmp.Compare(a.k, b.k))
	}
}

func TestSchedulingMeetsEveryDeadlineEDFCanMeet(t *testing.T) {
	tr := busyTrace()
	edfMissed := offline(tr, edf(tr))
	fcfsMissed := offline(tr, fcfs(tr))

	var got map[string]bool
	synctest.Test(t, func(t *testing.T) { got = playTrace(t, tr) })

	t.Logf("missed deadlines: tusgate %v, EDF reference %v, FCFS %v", keys(got), keys(edfMissed), keys(fcfsMissed))
	for id := range got {
		if !edfMissed[id] {
			t.Errorf("tusgate missed %s, whose deadline the EDF schedule meets", id)
		}
	}
	if len(got) >= len(fcfsMissed) {
		t.Errorf("tusgate missed %d deadlines, want strictly fewer than FCFS's %d", len(got), len(fcfsMissed))
	}
	if !got["doomed"] {
		t.Error("the upload whose bytes arrive after its deadline was not reported missed")
	}
}

func keys(m map[string]bool) []string { return slices.Sorted(maps.Keys(m)) }

// playTrace runs the real forwarder over the trace in simulated time and
// returns the ids that missed their token deadline.
func playTrace(t *testing.T, tr []traceUpload) map[string]bool {
	st := newMemStore()
	up := &simUploader{accepted: map[string]time.Time{}}
	fwd := forwarder.New(forwarder.Config{
		Workers: 1, ParallelParts: 1, Owner: "sim", LeaseDuration: time.Hour,
	}, st, zeroSource{}, up)
	ctx, cancel := context.WithCancel(t.Context())
	var wg sync.WaitGroup
	wg.Go(func() { _ = fwd.Run(ctx) })

	start := time.Now()
	for _, u := range tr {
		wg.Go(func() { feed(ctx, st, fwd, u, start) })
	}
	// Every upload ends delivered or failed well within the horizon.
	horizon := time.NewTimer(10 * time.Minute)
	defer horizon.Stop()
	for !st.allTerminal(len(tr)) {
		select {
		case <-st.changed():
		case <-horizon.C:
			t.Fatal("simulation did not finish within 10 simulated minutes")
		}
	}
	cancel()
	wg.Wait()

	missed := map[string]bool{}
	for _, u := range tr {
		rec, err := st.Get(t.Context(), u.id)
		if err != nil {
			t.Fatal(err)
		}
		at, ok := up.acceptedAt(u.id)
		deadline := start.Add(u.arrival + u.deadline)
		switch {
		case rec.State == store.StateFailed:
			if rec.Error.Reason != store.ReasonDeadlineMissed {
				t.Errorf("%s failed with %s, want only deadline misses", u.id, rec.Error.Reason)
			}
			missed[u.id] = true
		case rec.State != store.StateDelivered:
			t.Errorf("%s ended %s", u.id, rec.State)
		case u.deadline > 0 && (!ok || at.After(deadline)):
			missed[u.id] = true
		}
	}
	return missed
}

// feed plays one client: the record appears at arrival, and the received
// offset is recorded at each part boundary as the bytes arrive.
func feed(ctx context.Context, st *memStore, fwd *forwarder.Forwarder, u traceUpload, start time.Time) {
	if !sleepUntil(ctx, start.Add(u.arrival)) {
		return
	}
	rec := &store.Upload{ID: u.id, State: store.StateReceiving, Size: u.size, Plan: plan5,
		Token: "to-sim", CompletionWindow: 24 * time.Hour, CreatedAt: time.Now(), UpdatedAt: time.Now()}
	if u.deadline > 0 {
		rec.TokenDeadline = start.Add(u.arrival + u.deadline)
	}
	_ = st.Create(ctx, rec)
	fwd.Notify(u.id)
	for k := 1; k <= plan5.Parts(u.size); k++ {
		_, end := plan5.Range(k, u.size)
		if !sleepUntil(ctx, start.Add(u.arrival+time.Duration(end*int64(time.Second)/u.rate))) {
			return
		}
		_, _ = st.Update(ctx, u.id, func(r *store.Upload) error {
			return r.RecordReceived(end, end == u.size, time.Now())
		})
		fwd.Notify(u.id)
	}
}

// sleepUntil waits for simulated time t (the client is sending meanwhile).
func sleepUntil(ctx context.Context, t time.Time) bool {
	timer := time.NewTimer(time.Until(t))
	defer timer.Stop()
	select {
	case <-timer.C:
		return true
	case <-ctx.Done():
		return false
	}
}

// simUploader is api.video at sendRate: a part takes its size / sendRate.
type simUploader struct {
	mu       sync.Mutex
	accepted map[string]time.Time // upload id → part 1 accepted
}

func (s *simUploader) UploadPart(ctx context.Context, req apivideo.PartRequest) (*apivideo.Video, error) {
	if _, err := io.Copy(io.Discard, req.Body); err != nil {
		return nil, err
	}
	timer := time.NewTimer(partTime(req.Size))
	defer timer.Stop()
	select {
	case <-timer.C:
	case <-ctx.Done():
		return nil, ctx.Err()
	}
	id := req.FileName
	if req.Part == 1 {
		s.mu.Lock()
		s.accepted[id] = time.Now()
		s.mu.Unlock()
	}
	return &apivideo.Video{VideoID: "vi" + id}, nil
}

func (s *simUploader) acceptedAt(id string) (time.Time, bool) {
	s.mu.Lock()
	defer s.mu.Unlock()
	t, ok := s.accepted[id]
	return t, ok
}

// zeroSource serves any range as zeros.
type zeroSource struct{}

func (zeroSource) OpenRange(_ context.Context, _ string, _, n int64) (io.ReadCloser, error) {
	return io.NopCloser(io.LimitReader(zeroReader{}, n)), nil
}

type zeroReader struct{}

func (zeroReader) Read(b []byte) (int, error) {
	clear(b)
	return len(b), nil
}

// memStore is an in-memory forwarder.Store for simulations (the real stores
// do file or network I/O, which a synctest bubble cannot idle on; they pass
// the conformance suite in store/storetest).
type memStore struct {
	mu   sync.Mutex
	recs map[string]*store.Upload
	ch   chan struct{}
}

func newMemStore() *memStore {
	return &memStore{recs: map[string]*store.Upload{}, ch: make(chan struct{}, 1)}
}

func (m *memStore) Create(_ context.Context, u *store.Upload) error {
	m.mu.Lock()
	defer m.mu.Unlock()
	m.recs[u.ID] = u.Clone()
	return nil
}

func (m *memStore) Get(_ context.Context, id string) (*store.Upload, error) {
	m.mu.Lock()
	defer m.mu.Unlock()
	u, ok := m.recs[id]
	if !ok {
		return nil, store.ErrNotFound
	}
	return u.Clone(), nil
}

func (m *memStore) Update(_ context.Context, id string, fn func(*store.Upload) error) (*store.Upload, error) {
	m.mu.Lock()
	defer m.mu.Unlock()
	u, ok := m.recs[id]
	if !ok {
		return nil, store.ErrNotFound
	}
	c := u.Clone()
	if err := fn(c); err != nil {
		return nil, err
	}
	m.recs[id] = c
	select {
	case m.ch <- struct{}{}:
	default:
	}
	return c.Clone(), nil
}

func (m *memStore) ListActive(context.Context) ([]string, error) {
	m.mu.Lock()
	defer m.mu.Unlock()
	var ids []string
	for id, u := range m.recs {
		if !u.State.Terminal() {
			ids = append(ids, id)
		}
	}
	return ids, nil
}

func (m *memStore) changed() <-chan struct{} { return m.ch }

func (m *memStore) allTerminal(n int) bool {
	m.mu.Lock()
	defer m.mu.Unlock()
	if len(m.recs) < n {
		return false
	}
	for _, u := range m.recs {
		if !u.State.Terminal() {
			return false
		}
	}
	return true
}
