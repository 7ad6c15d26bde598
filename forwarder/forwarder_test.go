package forwarder_test

import (
	"bytes"
	"cmp"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"math/rand/v2"
	"net/http"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	dto "github.com/prometheus/client_model/go"

	"github.com/tusgate/tusgate/apivideo"
	"github.com/tusgate/tusgate/apivideo/apivideotest"
	"github.com/tusgate/tusgate/forwarder"
	"github.com/tusgate/tusgate/internal/testwait"
	"github.com/tusgate/tusgate/store"
	"github.com/tusgate/tusgate/store/boltstore"
)

const MiB = 1 << 20

var plan5 = store.Plan{FirstPartSize: 5 * MiB, PartSize: 5 * MiB}

// memSource serves uploads' bytes from memory, refusing ranges past what
// the test says has been received. It implements forwarder.Discarder by
// zeroing the range, so that a part read again after it was discarded
// would change the video's checksum.
type memSource struct {
	mu         sync.Mutex
	data       map[string][]byte
	received   map[string]int64
	discarded  map[string][][2]int64
	discardErr error // when set, Discard fails with it and keeps the bytes
}

func newMemSource() *memSource {
	return &memSource{data: map[string][]byte{}, received: map[string]int64{}, discarded: map[string][][2]int64{}}
}

func (m *memSource) put(id string, b []byte, received int64) {
	m.mu.Lock()
	defer m.mu.Unlock()
	m.data[id], m.received[id] = bytes.Clone(b), received
}

func (m *memSource) OpenRange(_ context.Context, id string, off, n int64) (io.ReadCloser, error) {
	m.mu.Lock()
	defer m.mu.Unlock()
	if off+n > m.received[id] {
		return nil, fmt.Errorf("range [%d,%d) of %s not received (have %d)", off, off+n, id, m.received[id])
	}
	return io.NopCloser(bytes.NewReader(m.data[id][off : off+n])), nil
}

func (m *memSource) Discard(_ context.Context, id string, off, n int64) error {
	m.mu.Lock()
	defer m.mu.Unlock()
	if m.discardErr != nil {
		return m.discardErr
	}
	if off+n > m.received[id] {
		return fmt.Errorf("discard [%d,%d) of %s: not received (have %d)", off, off+n, id, m.received[id])
	}
	clear(m.data[id][off : off+n])
	m.discarded[id] = append(m.discarded[id], [2]int64{off, off + n})
	return nil
}

// discardedRanges returns the ranges of upload id discarded so far, in
// offset order.
func (m *memSource) discardedRanges(id string) [][2]int64 {
	m.mu.Lock()
	defer m.mu.Unlock()
	r := slices.Clone(m.discarded[id])
	slices.SortFunc(r, func(a, b [2]int64) int { return cmp.Compare(a[0], b[0]) })
	return r
}

type env struct {
	stop func() // stops the running forwarder
	t    *testing.T
	st   *boltstore.Store
	src  *memSource
	emu  *apivideotest.Server
	fwd  *forwarder.Forwarder
}

// newEnv starts a forwarder on a fresh embedded store against a fresh
// emulator; it stops when the test ends.
func newEnv(t *testing.T, cfg forwarder.Config) *env {
	t.Helper()
	st, err := boltstore.Open(filepath.Join(t.TempDir(), "state.db"))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { st.Close() })
	emu := apivideotest.NewServer()
	t.Cleanup(emu.Close)
	e := &env{t: t, st: st, src: newMemSource(), emu: emu}
	e.start(cfg)
	return e
}

// start runs a new forwarder (as after a restart) until the test ends or
// the returned stop is called.
func (e *env) start(cfg forwarder.Config) (stop func()) {
	if cfg.Owner == "" {
		cfg.Owner = "test"
	}
	if cfg.MinBackoff == 0 {
		cfg.MinBackoff, cfg.MaxBackoff = time.Millisecond, 10*time.Millisecond
	}
	fwd := forwarder.New(cfg, e.st, e.src, apivideo.New(e.emu.URL))
	ctx, cancel := context.WithCancel(e.t.Context())
	done := make(chan struct{})
	go func() {
		defer close(done)
		_ = fwd.Run(ctx)
	}()
	e.fwd = fwd
	stop = func() { cancel(); <-done }
	e.t.Cleanup(stop)
	e.stop = stop
	return stop
}

// addUpload stores a record and its bytes, of which received are in.
func (e *env) addUpload(id, token string, data []byte, received int64, mutate func(*store.Upload)) {
	e.t.Helper()
	now := time.Now()
	u := &store.Upload{
		ID: id, State: store.StateReceiving, Size: int64(len(data)), Plan: plan5,
		Token: store.Secret(token), CompletionWindow: 24 * time.Hour, Filename: id + ".mp4",
		CreatedAt: now, UpdatedAt: now,
	}
	u.Received = received
	u.Complete = received == int64(len(data))
	if mutate != nil {
		mutate(u)
	}
	e.src.put(id, data, received)
	if err := e.st.Create(e.t.Context(), u); err != nil {
		e.t.Fatal(err)
	}
	e.fwd.Notify(id)
}

// receive simulates the gateway recording more bytes.
func (e *env) receive(id string, received int64, complete bool, declare int64) {
	e.t.Helper()
	e.src.mu.Lock()
	e.src.received[id] = received
	e.src.mu.Unlock()
	_, err := e.st.Update(e.t.Context(), id, func(u *store.Upload) error {
		if declare > 0 {
			if err := u.DeclareSize(declare, time.Now()); err != nil {
				return err
			}
		}
		return u.RecordReceived(received, complete, time.Now())
	})
	if err != nil {
		e.t.Fatal(err)
	}
	e.fwd.Notify(id)
}

// waitUpload polls the store until pred holds.
func (e *env) waitUpload(id string, what string, pred func(*store.Upload) bool) *store.Upload {
	e.t.Helper()
	deadline := time.Now().Add(20 * time.Second)
	var last *store.Upload
	for time.Now().Before(deadline) {
		u, err := e.st.Get(e.t.Context(), id)
		if err == nil && pred(u) {
			return u
		}
		last = u
		waitABit(e.t)
	}
	var failure store.Failure
	if last != nil && last.Error != nil {
		failure = *last.Error
	}
	e.t.Fatalf("upload %s: timed out waiting for %s; last record: %+v (error %+v)", id, what, last, failure)
	return nil
}

// waitFor polls cond until it holds (see testwait.For).
func waitFor(t *testing.T, what string, cond func() bool) {
	t.Helper()
	testwait.For(t, 20*time.Second, what, cond)
}

// waitABit yields between polls of a condition.
func waitABit(t *testing.T) {
	select {
	case <-t.Context().Done():
	case <-time.After(5 * time.Millisecond):
	}
}

func delivered(u *store.Upload) bool { return u.State == store.StateDelivered }

func randomBytes(seed uint64, n int) []byte {
	r := rand.New(rand.NewPCG(seed, seed))
	b := make([]byte, n)
	for i := range b {
		b[i] = byte(r.Uint32())
	}
	return b
}

func sha(b []byte) string {
	s := sha256.Sum256(b)
	return hex.EncodeToString(s[:])
}

// onlyVideo returns the one video the emulator holds for token.
func (e *env) onlyVideo(token string) apivideotest.VideoInfo {
	e.t.Helper()
	var got []apivideotest.VideoInfo
	for _, v := range e.emu.Videos() {
		if v.Token == token {
			got = append(got, v)
		}
	}
	if len(got) != 1 {
		e.t.Fatalf("videos for token: got %d, want 1", len(got))
	}
	return got[0]
}

func (e *env) uploadRequests(token string) []apivideotest.Request {
	var out []apivideotest.Request
	for _, r := range e.emu.Requests() {
		if r.Path == "/upload" && r.Token == token {
			out = append(out, r)
		}
	}
	return out
}

func TestDeliversEveryPartOnce(t *testing.T) {
	e := newEnv(t, forwarder.Config{})
	tok := e.emu.CreateToken(0)
	data := randomBytes(1, 12*MiB+123)
	e.addUpload("up1", tok, data, int64(len(data)), nil)

	u := e.waitUpload("up1", "delivered", delivered)
	v := e.onlyVideo(tok)
	if !v.Complete || v.SHA256 != sha(data) {
		t.Fatalf("video: complete %v sha %s, want complete with sha %s", v.Complete, v.SHA256, sha(data))
	}
	if u.VideoID != v.ID || u.DeliveredBytes != int64(len(data)) {
		t.Errorf("record: videoId %q delivered %d, want %q and %d", u.VideoID, u.DeliveredBytes, v.ID, len(data))
	}
	if u.Assets.Player == "" || u.Assets.HLS == "" {
		t.Errorf("record assets: got %+v, want player and hls URLs", u.Assets)
	}
	sizes := make([]int64, len(v.Parts))
	for _, p := range v.Parts {
		if p.Number < 1 || p.Number > len(v.Parts) {
			t.Fatalf("part number %d out of range", p.Number)
		}
		sizes[p.Number-1] = p.Size
	}
	if want := []int64{5 * MiB, 5 * MiB, 2*MiB + 123}; fmt.Sprint(sizes) != fmt.Sprint(want) {
		t.Errorf("part sizes: got %v, want %v", sizes, want)
	}
	for _, r := range e.uploadRequests(tok) {
		if r.Part > 1 && r.VideoID != v.ID {
			t.Errorf("part %d sent with videoId %q, want %q", r.Part, r.VideoID, v.ID)
		}
		if got := r.Header.Get("AV-Origin-Client"); got == "" {
			t.Errorf("part %d: no AV-Origin-Client header", r.Part)
		}
	}
}

func TestDiscardsDeliveredPartsButTheLast(t *testing.T) {
	reg := prometheus.NewRegistry()
	e := newEnv(t, forwarder.Config{Registerer: reg})
	tok := e.emu.CreateToken(0)
	data := randomBytes(21, 12*MiB+123)
	e.addUpload("up1", tok, data, 7*MiB, nil)

	// Part 1 is freed once api.video has it, while the client still sends.
	waitFor(t, "part 1 discarded", func() bool { return len(e.src.discardedRanges("up1")) == 1 })
	if got := e.src.discardedRanges("up1"); got[0] != [2]int64{0, 5 * MiB} {
		t.Fatalf("discarded %v, want [0, 5 MiB)", got)
	}
	e.receive("up1", int64(len(data)), true, 0)
	e.waitUpload("up1", "delivered", delivered)

	// Parts 2 and 3 go in parallel: whichever completes the upload is not
	// discarded (its bytes go with the upload's files), the other is.
	parts := map[[2]int64]bool{{0, 5 * MiB}: true, {5 * MiB, 10 * MiB}: true, {10 * MiB, int64(len(data))}: true}
	got := e.src.discardedRanges("up1")
	var sum int64
	for _, r := range got {
		if !parts[r] {
			t.Errorf("discarded %v: not one whole part, or twice", r)
		}
		delete(parts, r)
		sum += r[1] - r[0]
	}
	if len(got) != 2 {
		t.Errorf("discarded %v, want every part but the one that completed the upload", got)
	}
	// Discard zeroes what it frees: a part read again would change the video.
	if v := e.onlyVideo(tok); !v.Complete || v.SHA256 != sha(data) {
		t.Errorf("video: complete %v sha %s, want complete with sha %s", v.Complete, v.SHA256, sha(data))
	}
	if got := metricValue(t, reg, "tusgate_discarded_bytes_total"); got != float64(sum) {
		t.Errorf("tusgate_discarded_bytes_total = %v, want %d", got, sum)
	}
}

func TestDiscardFailureKeepsTheBytesAndDelivers(t *testing.T) {
	reg := prometheus.NewRegistry()
	e := newEnv(t, forwarder.Config{Registerer: reg})
	e.src.discardErr = fmt.Errorf("punch hole: %w", errors.ErrUnsupported)
	tok := e.emu.CreateToken(0)
	data := randomBytes(22, 12*MiB)
	e.addUpload("up1", tok, data, int64(len(data)), nil)

	u := e.waitUpload("up1", "delivered", delivered)
	if v := e.onlyVideo(tok); !v.Complete || v.SHA256 != sha(data) || u.VideoID != v.ID {
		t.Errorf("video %s: complete %v sha %s, want complete with sha %s as the record's %s", v.ID, v.Complete, v.SHA256, sha(data), u.VideoID)
	}
	if got := e.src.discardedRanges("up1"); len(got) != 0 {
		t.Errorf("discarded %v, want nothing", got)
	}
	if got := metricValue(t, reg, "tusgate_discarded_bytes_total"); got != 0 {
		t.Errorf("tusgate_discarded_bytes_total = %v, want 0", got)
	}
}

// takeover hands part's lease to another owner while this worker sends
// it, as when its lease expired and another instance claimed the part.
type takeover struct {
	forwarder.Uploader
	st   *boltstore.Store
	id   string
	part int
}

func (tk *takeover) UploadPart(ctx context.Context, req apivideo.PartRequest) (*apivideo.Video, error) {
	if req.Part == tk.part {
		_, err := tk.st.Update(ctx, tk.id, func(u *store.Upload) error {
			u.InFlight[tk.part] = store.Lease{Owner: "other", Until: time.Now().Add(time.Hour)}
			return nil
		})
		if err != nil {
			return nil, err
		}
	}
	return tk.Uploader.UploadPart(ctx, req)
}

// A part another worker holds the lease of when this one's answer comes is
// recorded as delivered but not discarded: the other may be reading it.
func TestNoDiscardUnderAnotherWorkersLease(t *testing.T) {
	e := newEnv(t, forwarder.Config{})
	e.stop()
	fwd := forwarder.New(forwarder.Config{Owner: "test", MinBackoff: time.Millisecond, MaxBackoff: 10 * time.Millisecond},
		e.st, e.src, &takeover{Uploader: apivideo.New(e.emu.URL), st: e.st, id: "up1", part: 2})
	ctx, cancel := context.WithCancel(t.Context())
	done := make(chan struct{})
	go func() {
		defer close(done)
		_ = fwd.Run(ctx)
	}()
	t.Cleanup(func() { cancel(); <-done })
	e.fwd = fwd

	tok := e.emu.CreateToken(0)
	data := randomBytes(23, 12*MiB+123)
	e.addUpload("up1", tok, data, 11*MiB, nil)
	e.waitUpload("up1", "part 2 delivered", func(u *store.Upload) bool { return u.IsDelivered(2) })
	e.receive("up1", int64(len(data)), true, 0)
	e.waitUpload("up1", "delivered", delivered)

	if got, want := e.src.discardedRanges("up1"), [][2]int64{{0, 5 * MiB}}; fmt.Sprint(got) != fmt.Sprint(want) {
		t.Errorf("discarded %v, want only part 1's %v", got, want)
	}
	if v := e.onlyVideo(tok); !v.Complete || v.SHA256 != sha(data) {
		t.Errorf("video: complete %v sha %s, want complete with sha %s", v.Complete, v.SHA256, sha(data))
	}
}

func TestSendsPartsWhileReceiving(t *testing.T) {
	e := newEnv(t, forwarder.Config{})
	tok := e.emu.CreateToken(0)
	data := randomBytes(2, 12*MiB)
	e.addUpload("up", tok, data, 6*MiB, nil)

	// Part 1 goes out while the client is still sending.
	e.waitUpload("up", "part 1 delivered", func(u *store.Upload) bool { return u.IsDelivered(1) })
	if u, _ := e.st.Get(t.Context(), "up"); u.Complete || u.IsDelivered(2) {
		t.Fatalf("got complete=%v part2=%v before the bytes arrived", u.Complete, u.IsDelivered(2))
	}
	e.receive("up", 11*MiB, false, 0)
	e.waitUpload("up", "part 2 delivered", func(u *store.Upload) bool { return u.IsDelivered(2) })
	e.receive("up", 12*MiB, true, 0)
	e.waitUpload("up", "delivered", delivered)
	if v := e.onlyVideo(tok); v.SHA256 != sha(data) {
		t.Fatalf("video sha: got %s, want %s", v.SHA256, sha(data))
	}
}

func TestDeferredLengthSendsOpenPartsThenTheLast(t *testing.T) {
	e := newEnv(t, forwarder.Config{})
	tok := e.emu.CreateToken(0)
	data := randomBytes(3, 12*MiB)
	// Exactly 10 MiB received: part 2 ends there, so it might be the last
	// part and must wait until a byte beyond it or the size is known.
	e.addUpload("def", tok, data, 10*MiB, func(u *store.Upload) { u.SizeDeferred, u.Size = true, 0 })
	e.waitUpload("def", "part 1", func(u *store.Upload) bool { return u.IsDelivered(1) })
	e.receive("def", 10*MiB+1, false, 0)
	e.waitUpload("def", "part 2", func(u *store.Upload) bool { return u.IsDelivered(2) })
	e.receive("def", 12*MiB, true, 12*MiB)
	e.waitUpload("def", "delivered", delivered)

	var ranges []string
	for _, r := range e.uploadRequests(tok) {
		ranges = append(ranges, r.ContentRange)
	}
	if want := "[part 1/* part 2/* part 3/3]"; fmt.Sprint(ranges) != want {
		t.Errorf("Content-Range: got %v, want %s", ranges, want)
	}
	if v := e.onlyVideo(tok); !v.Complete || v.SHA256 != sha(data) {
		t.Errorf("video: complete %v, sha match %v", v.Complete, v.SHA256 == sha(data))
	}
}

func TestSmallUploadIsOnePart(t *testing.T) {
	e := newEnv(t, forwarder.Config{})
	tok := e.emu.CreateToken(0)
	data := randomBytes(4, 100<<10)
	e.addUpload("small", tok, data, int64(len(data)), nil)
	e.waitUpload("small", "delivered", delivered)
	reqs := e.uploadRequests(tok)
	if len(reqs) != 1 || reqs[0].ContentRange != "part 1/1" {
		t.Fatalf("requests: got %+v, want one with part 1/1", reqs)
	}
}

func TestRetriesTransientFailures(t *testing.T) {
	e := newEnv(t, forwarder.Config{})
	tok := e.emu.CreateToken(0)
	e.emu.FailNext(2, apivideotest.StatusFault(http.StatusBadGateway))
	e.emu.FailNext(1, apivideotest.CutFault(1<<20))
	data := randomBytes(5, 7*MiB)
	e.addUpload("flaky", tok, data, int64(len(data)), nil)
	e.waitUpload("flaky", "delivered", delivered)
	if v := e.onlyVideo(tok); v.SHA256 != sha(data) {
		t.Fatal("video bytes differ from the source")
	}
}

func TestWaitsAsToldOn429(t *testing.T) {
	e := newEnv(t, forwarder.Config{})
	tok := e.emu.CreateToken(0)
	e.emu.FailNext(1, apivideotest.RateLimitFault(time.Second))
	data := randomBytes(6, 1*MiB)
	e.addUpload("limited", tok, data, int64(len(data)), nil)
	e.waitUpload("limited", "delivered", delivered)
	reqs := e.uploadRequests(tok)
	if len(reqs) != 2 || reqs[0].Status != http.StatusTooManyRequests {
		t.Fatalf("requests: got %d (first status %d), want a 429 then a retry", len(reqs), reqs[0].Status)
	}
	if gap := reqs[1].Time.Sub(reqs[0].Time); gap < time.Second {
		t.Errorf("retry came %v after the 429, want ≥ 1s (X-RateLimit-Retry-After)", gap)
	}
}

func TestRejectedTokenFailsOnlyItsUpload(t *testing.T) {
	e := newEnv(t, forwarder.Config{})
	bad := e.emu.CreateToken(0)
	e.emu.RevokeToken(bad)
	good := e.emu.CreateToken(0)
	e.addUpload("bad", bad, randomBytes(7, 6*MiB), 6*MiB, nil)
	e.addUpload("good", good, randomBytes(8, 6*MiB), 6*MiB, nil)

	u := e.waitUpload("bad", "failed", func(u *store.Upload) bool { return u.State == store.StateFailed })
	if u.Error == nil || u.Error.Reason != store.ReasonTokenRejected || u.Error.Message == "" {
		t.Errorf("error: got %+v, want reason %s with a message", u.Error, store.ReasonTokenRejected)
	}
	e.waitUpload("good", "delivered", delivered)
}

func TestOtherClientErrorsFailWithAPIVideosReason(t *testing.T) {
	e := newEnv(t, forwarder.Config{})
	tok := e.emu.CreateToken(0)
	e.emu.FailNext(1, apivideotest.StatusFault(http.StatusBadRequest))
	e.addUpload("refused", tok, randomBytes(9, 1*MiB), 1*MiB, nil)
	u := e.waitUpload("refused", "failed", func(u *store.Upload) bool { return u.State == store.StateFailed })
	if u.Error.Reason != store.ReasonRejectedByAPIVideo {
		t.Errorf("reason: got %q, want %q", u.Error.Reason, store.ReasonRejectedByAPIVideo)
	}
	if len(e.uploadRequests(tok)) != 1 {
		t.Errorf("a 400 was retried: got %d requests, want 1", len(e.uploadRequests(tok)))
	}
}

func TestFirstPartsGoBeforeLaterParts(t *testing.T) {
	e := newEnv(t, forwarder.Config{Workers: 1})
	tokA, tokB := e.emu.CreateToken(0), e.emu.CreateToken(0)
	// A's part 1 is delivered; its parts 2 and 3 wait. B's part 1 arrives
	// later but is more urgent than any later part.
	dataA := randomBytes(10, 15*MiB)
	e.addUpload("a", tokA, dataA, 5*MiB+1, nil)
	e.waitUpload("a", "part 1 of a", func(u *store.Upload) bool { return u.IsDelivered(1) })
	e.stop() // no forwarder runs while the next state is staged
	e.src.mu.Lock()
	e.src.received["a"] = 15 * MiB
	e.src.mu.Unlock()
	if _, err := e.st.Update(t.Context(), "a", func(u *store.Upload) error { return u.RecordReceived(15*MiB, true, time.Now()) }); err != nil {
		t.Fatal(err)
	}
	deadline := time.Now().Add(time.Hour)
	e.src.put("b", randomBytes(11, 6*MiB), 6*MiB)
	now := time.Now()
	if err := e.st.Create(t.Context(), &store.Upload{ID: "b", State: store.StateReceiving, Size: 6 * MiB, Received: 6 * MiB, Complete: true,
		Plan: plan5, Token: store.Secret(tokB), TokenDeadline: deadline, CompletionWindow: 24 * time.Hour, CreatedAt: now, UpdatedAt: now}); err != nil {
		t.Fatal(err)
	}
	e.start(forwarder.Config{Workers: 1})
	e.waitUpload("a", "a delivered", delivered)
	e.waitUpload("b", "b delivered", delivered)

	var order []string
	for _, r := range e.emu.Requests() {
		if r.Path != "/upload" {
			continue
		}
		who := "a"
		if r.Token == tokB {
			who = "b"
		}
		order = append(order, fmt.Sprintf("%s%d", who, r.Part))
	}
	if want := "[a1 b1 a2 a3 b2]"; fmt.Sprint(order) != want {
		t.Errorf("send order: got %v, want %s (first parts before later parts)", order, want)
	}
}

func TestRestartResumesWithoutASecondVideo(t *testing.T) {
	for _, tc := range []struct {
		name, owner string
	}{
		{"same owner takes its stale lease back", "test"},
		{"another owner waits for the lease to expire", "other"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			e := newEnv(t, forwarder.Config{LeaseDuration: time.Second})
			tok := e.emu.CreateToken(0)
			data := randomBytes(12, 17*MiB)
			// Part 2 hangs at api.video until the first forwarder is gone.
			hang := make(chan struct{})
			e.emu.InjectFault(func(r apivideotest.FaultRequest) apivideotest.Fault {
				select {
				case <-hang:
					if r.IsUpload() && r.Part == 2 {
						return apivideotest.DelayFault(time.Minute)
					}
				default:
				}
				return apivideotest.Fault{}
			})
			close(hang)
			e.addUpload("r", tok, data, int64(len(data)), nil)
			waitFor(t, "part 2 at api.video", func() bool {
				for _, r := range e.emu.Requests() {
					if r.Part == 2 {
						return true
					}
				}
				return false
			})
			e.stop()
			e.emu.ClearFaults()
			// A crashed process leaves its lease behind.
			if _, err := e.st.Update(t.Context(), "r", func(u *store.Upload) error {
				_, err := u.Claim(2, "test", time.Now().Add(time.Second), time.Now())
				return err
			}); err != nil {
				t.Fatal(err)
			}
			e.start(forwarder.Config{Owner: tc.owner, LeaseDuration: time.Second})
			u := e.waitUpload("r", "delivered", delivered)
			if v := e.onlyVideo(tok); v.SHA256 != sha(data) || v.ID != u.VideoID {
				t.Fatalf("video: identical %v, id %s, want the recorded %s", v.SHA256 == sha(data), v.ID, u.VideoID)
			}
		})
	}
}

func TestPartAlreadyAtAPIVideoCountsAsDelivered(t *testing.T) {
	e := newEnv(t, forwarder.Config{})
	tok := e.emu.CreateToken(0)
	data := randomBytes(13, 12*MiB)
	// api.video stores part 2 but the answer is lost: the retry collides,
	// and the forwarder, which had the part in flight, counts it delivered.
	var lost sync.Once
	e.emu.InjectFault(func(r apivideotest.FaultRequest) apivideotest.Fault {
		f := apivideotest.Fault{}
		if r.IsUpload() && r.Part == 2 {
			lost.Do(func() { f = apivideotest.LostAnswerFault() })
		}
		return f
	})
	e.addUpload("lost", tok, data, int64(len(data)), nil)
	e.waitUpload("lost", "delivered", delivered)
	v := e.onlyVideo(tok)
	if !v.Complete || v.SHA256 != sha(data) {
		t.Fatalf("video complete %v, identical %v", v.Complete, v.SHA256 == sha(data))
	}
	collided := false
	for _, r := range e.uploadRequests(tok) {
		if r.Part == 2 && r.Status == http.StatusBadRequest {
			collided = true
		}
	}
	if !collided {
		t.Error("the emulator saw no collision on part 2; the test did not exercise the lost answer")
	}
}

func TestTokenDeadlinePassedBeforePart1(t *testing.T) {
	e := newEnv(t, forwarder.Config{})
	tok := e.emu.CreateToken(0)
	e.addUpload("late", tok, randomBytes(14, 6*MiB), 3*MiB, func(u *store.Upload) {
		u.TokenDeadline = time.Now().Add(-time.Second)
	})
	u := e.waitUpload("late", "failed", func(u *store.Upload) bool { return u.State == store.StateFailed })
	if u.Error.Reason != store.ReasonDeadlineMissed {
		t.Errorf("reason: got %q, want %q", u.Error.Reason, store.ReasonDeadlineMissed)
	}
	if n := len(e.uploadRequests(tok)); n != 0 {
		t.Errorf("requests to api.video: got %d, want 0", n)
	}
}

func TestManagedUploadMintsItsToken(t *testing.T) {
	for _, tc := range []struct {
		name      string
		refusals  int
		wantState store.State
		wantMints int
	}{
		{"minted just before part 1", 0, store.StateDelivered, 1},
		{"a refused token is replaced once", 1, store.StateDelivered, 2},
		{"a second refusal fails the upload", 2, store.StateFailed, 2},
	} {
		t.Run(tc.name, func(t *testing.T) {
			reg := prometheus.NewRegistry()
			e := newEnv(t, forwarder.Config{})
			e.stop()
			e.start(forwarder.Config{
				Minter:     apivideo.New(e.emu.URL, apivideo.WithAPIKey(apivideotest.DefaultAPIKey)),
				TokenTTL:   time.Hour,
				Registerer: reg,
			})
			e.emu.FailNext(tc.refusals, apivideotest.StatusFault(http.StatusUnauthorized))
			data := randomBytes(20, 6*MiB)
			e.addUpload("m", "", data, int64(len(data)), func(u *store.Upload) { u.TokenManaged = true })
			u := e.waitUpload("m", string(tc.wantState), func(u *store.Upload) bool { return u.State == tc.wantState })
			if u.TokenMints != tc.wantMints {
				t.Errorf("tokens minted: got %d, want %d", u.TokenMints, tc.wantMints)
			}
			if got := metricValue(t, reg, "tusgate_tokens_minted_total"); got != float64(tc.wantMints) {
				t.Errorf("tusgate_tokens_minted_total: got %v, want %d", got, tc.wantMints)
			}
			if tc.wantState != store.StateDelivered {
				if u.Error == nil || u.Error.Reason != store.ReasonTokenRejected {
					t.Errorf("error: got %+v, want %s", u.Error, store.ReasonTokenRejected)
				}
				return
			}
			v := e.onlyVideo(u.Token.Reveal())
			if !v.Complete || v.SHA256 != sha(data) || !strings.HasPrefix(v.Token, "to") {
				t.Errorf("video: complete %v identical %v token %q…", v.Complete, v.SHA256 == sha(data), v.Token[:2])
			}
			if u.TokenDeadline.IsZero() {
				t.Error("minted token's deadline not recorded")
			}
		})
	}
}

func TestMetrics(t *testing.T) {
	reg := prometheus.NewRegistry()
	e := newEnv(t, forwarder.Config{})
	e.stop()
	var changedMu sync.Mutex
	changed := map[string]int{}
	e.start(forwarder.Config{Registerer: reg, Changed: func(id string) {
		changedMu.Lock()
		changed[id]++
		changedMu.Unlock()
	}})
	tok := e.emu.CreateToken(0)
	e.emu.FailNext(1, apivideotest.StatusFault(http.StatusServiceUnavailable))
	e.addUpload("ok", tok, randomBytes(21, 11*MiB), 11*MiB, func(u *store.Upload) {
		u.TokenDeadline = time.Now().Add(time.Hour)
	})
	e.addUpload("late", tok, randomBytes(22, 1*MiB), 1*MiB, func(u *store.Upload) {
		u.TokenDeadline = time.Now().Add(-time.Minute)
	})
	e.waitUpload("ok", "delivered", delivered)
	e.waitUpload("late", "failed", func(u *store.Upload) bool { return u.State == store.StateFailed })
	// The store says delivered before the forwarder's bookkeeping of that
	// last part (metrics, Changed) has run.
	waitFor(t, "the forwarder to account for the last part", func() bool {
		changedMu.Lock()
		defer changedMu.Unlock()
		return changed["ok"] == 1 && metricValue(t, reg, "tusgate_parts_delivered_total") == 3 &&
			metricValue(t, reg, "tusgate_forwarder_parts_in_flight") == 0
	})

	changedMu.Lock()
	if changed["ok"] != 1 || changed["late"] != 1 || len(changed) != 2 {
		t.Errorf("Changed calls: got %v, want one for the delivered and one for the failed upload", changed)
	}
	changedMu.Unlock()
	if got := metricValue(t, reg, "tusgate_parts_delivered_total"); got != 3 {
		t.Errorf("parts delivered: got %v, want 3", got)
	}
	if got := metricValue(t, reg, "tusgate_deadline_misses_total"); got != 1 {
		t.Errorf("deadline misses: got %v, want 1", got)
	}
	mfs, err := reg.Gather()
	if err != nil {
		t.Fatal(err)
	}
	for _, mf := range mfs {
		if mf.GetName() == "tusgate_first_part_deadline_margin_seconds" {
			h := mf.GetMetric()[0].GetHistogram()
			if h.GetSampleCount() != 1 || h.GetSampleSum() < 3500 || h.GetSampleSum() > 3600 {
				t.Errorf("deadline margin: got %d samples summing %vs, want 1 near 3600s", h.GetSampleCount(), h.GetSampleSum())
			}
		}
	}
	if got := metricValue(t, reg, "tusgate_forwarder_parts_in_flight"); got != 0 {
		t.Errorf("parts in flight after everything finished: got %v, want 0", got)
	}
	for _, tc := range []struct {
		name, label, value string
		want               float64
	}{
		{"tusgate_apivideo_responses_total", "status", "201", 3},
		{"tusgate_apivideo_responses_total", "status", "503", 1},
		{"tusgate_part_failures_total", "kind", "transient", 1},
	} {
		if got := labeledValue(t, reg, tc.name, tc.label, tc.value); got != tc.want {
			t.Errorf("%s{%s=%q}: got %v, want %v", tc.name, tc.label, tc.value, got, tc.want)
		}
	}
	var sends uint64
	for _, mf := range gather(t, reg) {
		if mf.GetName() == "tusgate_part_duration_seconds" {
			for _, m := range mf.GetMetric() {
				sends += m.GetHistogram().GetSampleCount()
			}
		}
	}
	if sends != 4 {
		t.Errorf("tusgate_part_duration_seconds samples: got %d, want 4 (3 accepted, 1 failed)", sends)
	}
}

func gather(t *testing.T, reg *prometheus.Registry) []*dto.MetricFamily {
	t.Helper()
	mfs, err := reg.Gather()
	if err != nil {
		t.Fatal(err)
	}
	return mfs
}

// labeledValue returns the counter of series name whose label is value.
func labeledValue(t *testing.T, reg *prometheus.Registry, name, label, value string) float64 {
	t.Helper()
	for _, mf := range gather(t, reg) {
		if mf.GetName() != name {
			continue
		}
		for _, m := range mf.GetMetric() {
			for _, lp := range m.GetLabel() {
				if lp.GetName() == label && lp.GetValue() == value {
					return m.GetCounter().GetValue()
				}
			}
		}
	}
	return 0
}

// metricValue returns the value of the one counter or gauge series name.
func metricValue(t *testing.T, reg *prometheus.Registry, name string) float64 {
	t.Helper()
	mfs, err := reg.Gather()
	if err != nil {
		t.Fatal(err)
	}
	for _, mf := range mfs {
		if mf.GetName() != name || len(mf.GetMetric()) != 1 {
			continue
		}
		m := mf.GetMetric()[0]
		if m.Counter != nil {
			return m.GetCounter().GetValue()
		}
		return m.GetGauge().GetValue()
	}
	t.Fatalf("metric %s: no single series registered", name)
	return 0
}

// flakyStore fails the next n Updates with store.ErrUnavailable.
type flakyStore struct {
	forwarder.Store
	failNext atomic.Int32
}

func (f *flakyStore) Update(ctx context.Context, id string, fn func(*store.Upload) error) (*store.Upload, error) {
	if f.failNext.Add(-1) >= 0 {
		return nil, fmt.Errorf("injected: %w", store.ErrUnavailable)
	}
	return f.Store.Update(ctx, id, fn)
}

func TestAcceptedPartIsRecordedThroughAStoreOutage(t *testing.T) {
	e := newEnv(t, forwarder.Config{})
	e.stop()
	flaky := &flakyStore{Store: e.st}
	// The store fails while api.video is accepting part 1: recording the
	// videoId must be retried, or part 1 would be sent again as a new video.
	e.emu.InjectFault(func(r apivideotest.FaultRequest) apivideotest.Fault {
		if r.IsUpload() && r.Part == 1 {
			flaky.failNext.Store(3)
		}
		return apivideotest.Fault{}
	})
	fwd := forwarder.New(forwarder.Config{Owner: "test", MinBackoff: time.Millisecond, MaxBackoff: 5 * time.Millisecond},
		flaky, e.src, apivideo.New(e.emu.URL))
	ctx, cancel := context.WithCancel(t.Context())
	done := make(chan struct{})
	go func() { defer close(done); _ = fwd.Run(ctx) }()
	t.Cleanup(func() { cancel(); <-done })
	e.fwd = fwd

	tok := e.emu.CreateToken(0)
	data := randomBytes(30, 7*MiB)
	e.addUpload("outage", tok, data, int64(len(data)), nil)
	e.waitUpload("outage", "delivered", delivered)
	if v := e.onlyVideo(tok); v.SHA256 != sha(data) {
		t.Fatal("video bytes differ from the source")
	}
	if n := flaky.failNext.Load(); n >= 0 {
		t.Fatalf("the injected store failures were not all hit (%d left)", n+1)
	}
}

func TestStalledUploadFailsWhenItsDeadlinePasses(t *testing.T) {
	e := newEnv(t, forwarder.Config{})
	tok := e.emu.CreateToken(0)
	deadline := time.Now().Add(300 * time.Millisecond)
	// 1 MiB in, then the client goes quiet: nothing notifies the forwarder again.
	e.addUpload("stalled", tok, randomBytes(31, 6*MiB), 1*MiB, func(u *store.Upload) { u.TokenDeadline = deadline })
	u := e.waitUpload("stalled", "failed", func(u *store.Upload) bool { return u.State == store.StateFailed })
	if u.Error.Reason != store.ReasonDeadlineMissed {
		t.Errorf("reason: got %q, want %q", u.Error.Reason, store.ReasonDeadlineMissed)
	}
	if late := u.UpdatedAt.Sub(deadline); late < 0 || late > 5*time.Second {
		t.Errorf("failed %v after the deadline, want within 5s (not at the next resync)", late)
	}
}
