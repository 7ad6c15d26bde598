package gateway_test

import (
	"bytes"
	"context"
	"io"
	"path/filepath"
	"sync"
	"testing"

	"github.com/tus/tusd/v2/pkg/handler"

	"github.com/tusgate/tusgate/gateway"
)

// commitOnReturn is a Backend whose WriteChunk makes bytes durable only when
// it returns, as S3 does: it reads all of src into memory, then writes it to
// the disk backend underneath. It records every WriteChunk call.
type commitOnReturn struct {
	gateway.Backend
	mu    sync.Mutex
	calls []writeCall
}

type writeCall struct{ offset, n int64 }

func (c *commitOnReturn) StreamsDurably() bool { return false }

func (c *commitOnReturn) NewUpload(ctx context.Context, info handler.FileInfo) (handler.Upload, error) {
	up, err := c.Backend.NewUpload(ctx, info)
	if err != nil {
		return nil, err
	}
	return &bufferedUpload{Upload: up, c: c}, nil
}

func (c *commitOnReturn) GetUpload(ctx context.Context, id string) (handler.Upload, error) {
	up, err := c.Backend.GetUpload(ctx, id)
	if err != nil {
		return nil, err
	}
	return &bufferedUpload{Upload: up, c: c}, nil
}

func (c *commitOnReturn) AsTerminatableUpload(up handler.Upload) handler.TerminatableUpload {
	return c.Backend.AsTerminatableUpload(up.(*bufferedUpload).Upload)
}

func (c *commitOnReturn) AsLengthDeclarableUpload(up handler.Upload) handler.LengthDeclarableUpload {
	return c.Backend.AsLengthDeclarableUpload(up.(*bufferedUpload).Upload)
}

func (c *commitOnReturn) Calls() []writeCall {
	c.mu.Lock()
	defer c.mu.Unlock()
	return append([]writeCall(nil), c.calls...)
}

type bufferedUpload struct {
	handler.Upload
	c *commitOnReturn
}

func (b *bufferedUpload) WriteChunk(ctx context.Context, offset int64, src io.Reader) (int64, error) {
	data, rerr := io.ReadAll(src)
	n, err := b.Upload.WriteChunk(ctx, offset, bytes.NewReader(data))
	b.c.mu.Lock()
	b.c.calls = append(b.c.calls, writeCall{offset, n})
	b.c.mu.Unlock()
	if err == nil {
		err = rerr
	}
	return n, err
}

func newCommitOnReturnHarness(t *testing.T) (*harness, *commitOnReturn) {
	t.Helper()
	disk, err := gateway.NewDiskBackend(filepath.Join(t.TempDir(), "uploads"))
	if err != nil {
		t.Fatal(err)
	}
	be := &commitOnReturn{Backend: disk}
	h := newHarness(t, func(c *gateway.Config) { c.Backend = be })
	return h, be
}

// A backend that commits on return gets at most one part per WriteChunk
// call and never an empty call, and each part boundary is recorded (and
// the part readable) while the client is still sending the PATCH.
func TestCommitOnReturnBackendGetsOnePartPerCall(t *testing.T) {
	h, be := newCommitOnReturnHarness(t)
	const size = 12 * MiB
	data := randomData(size)
	uploadURL, id := h.create(t, size, map[string]string{"filename": "a.mp4"})

	release := make(chan struct{})
	body := &gatedBody{ctx: t.Context(), r: bytes.NewReader(data), n: 7 * MiB, release: release}
	done := make(chan error, 1)
	go func() {
		_, err := h.client.Patch(t.Context(), uploadURL, 0, body, size, -1)
		done <- err
	}()
	waitFor(t, "part 1 recorded while the PATCH runs", func() bool { return h.record(t, id).Received >= 5*MiB })
	if got := h.record(t, id).Received; got != 5*MiB {
		t.Fatalf("received %d mid-PATCH, want exactly the first part (%d)", got, 5*MiB)
	}
	if got := h.readAll(t, id, 5*MiB); !bytes.Equal(got, data[:5*MiB]) {
		t.Fatal("part 1 read mid-PATCH differs from what was sent")
	}
	close(release)
	if err := <-done; err != nil {
		t.Fatalf("PATCH: %v", err)
	}
	rec := h.record(t, id)
	if !rec.Complete || rec.Received != size {
		t.Fatalf("record after PATCH: complete=%v received=%d, want complete %d", rec.Complete, rec.Received, size)
	}
	want := []writeCall{{0, 5 * MiB}, {5 * MiB, 5 * MiB}, {10 * MiB, 2 * MiB}}
	if got := be.Calls(); !equalCalls(got, want) {
		t.Fatalf("WriteChunk calls %v, want %v", got, want)
	}
	if got := h.readAll(t, id, size); !bytes.Equal(got, data) {
		t.Fatal("upload bytes differ from what was sent")
	}
}

// PATCHes that cut parts anywhere: calls still stop at part boundaries, and
// a PATCH with an empty body makes no call.
func TestCommitOnReturnBackendSmallPatches(t *testing.T) {
	h, be := newCommitOnReturnHarness(t)
	const size = 11 * MiB
	data := randomData(size)
	uploadURL, id := h.create(t, size, map[string]string{"filename": "a.mp4"})
	off := int64(0)
	for _, n := range []int64{3 * MiB, 0, 4 * MiB, 4 * MiB} {
		got, err := h.client.Patch(t.Context(), uploadURL, off, bytes.NewReader(data[off:off+n]), n, -1)
		if err != nil || got != off+n {
			t.Fatalf("PATCH at %d of %d bytes: offset %d, %v", off, n, got, err)
		}
		off += n
	}
	want := []writeCall{{0, 3 * MiB}, {3 * MiB, 2 * MiB}, {5 * MiB, 2 * MiB}, {7 * MiB, 3 * MiB}, {10 * MiB, 1 * MiB}}
	if got := be.Calls(); !equalCalls(got, want) {
		t.Fatalf("WriteChunk calls %v, want %v", got, want)
	}
	rec := h.record(t, id)
	if !rec.Complete || rec.Received != size {
		t.Fatalf("record: complete=%v received=%d", rec.Complete, rec.Received)
	}
	var boundaries []int64
	for _, n := range h.n.For(id) {
		boundaries = append(boundaries, n.Received)
	}
	for _, b := range []int64{5 * MiB, 10 * MiB} {
		found := false
		for _, r := range boundaries {
			found = found || (r >= b && r < b+3*MiB)
		}
		if !found {
			t.Errorf("no notification with the boundary at %d recorded (saw %v)", b, boundaries)
		}
	}
}

// A deferred-length upload: a part counts once a byte beyond it is in, and
// the PATCH declaring the length is cut at part boundaries too.
func TestCommitOnReturnBackendDeferredLength(t *testing.T) {
	h, be := newCommitOnReturnHarness(t)
	const size = 11 * MiB
	data := randomData(size)
	uploadURL, id := h.create(t, -1, map[string]string{"filename": "a.mp4"})
	if got, err := h.client.Patch(t.Context(), uploadURL, 0, bytes.NewReader(data[:7*MiB]), 7*MiB, -1); err != nil || got != 7*MiB {
		t.Fatalf("first PATCH: offset %d, %v", got, err)
	}
	if rec := h.record(t, id); rec.Received != 7*MiB || rec.Complete {
		t.Fatalf("after 7 MiB of a deferred upload: received %d complete %v, want 7 MiB recorded (part 1 proven not last)", rec.Received, rec.Complete)
	}
	if got, err := h.client.Patch(t.Context(), uploadURL, 7*MiB, bytes.NewReader(data[7*MiB:]), 4*MiB, size); err != nil || got != size {
		t.Fatalf("last PATCH: offset %d, %v", got, err)
	}
	want := []writeCall{{0, 5 * MiB}, {5 * MiB, 2 * MiB}, {7 * MiB, 3 * MiB}, {10 * MiB, 1 * MiB}}
	if got := be.Calls(); !equalCalls(got, want) {
		t.Fatalf("WriteChunk calls %v, want %v", got, want)
	}
	if rec := h.record(t, id); !rec.Complete || rec.Size != size {
		t.Fatalf("record: complete=%v size=%d", rec.Complete, rec.Size)
	}
	if got := h.readAll(t, id, size); !bytes.Equal(got, data) {
		t.Fatal("upload bytes differ from what was sent")
	}
}

func equalCalls(a, b []writeCall) bool {
	if len(a) != len(b) {
		return false
	}
	for i := range a {
		if a[i] != b[i] {
			return false
		}
	}
	return true
}

// gatedBody yields the first n bytes of r, then waits for release (or for
// ctx, the test's, to end).
type gatedBody struct {
	ctx     context.Context
	r       io.Reader
	n       int64
	release <-chan struct{}
}

func (g *gatedBody) Read(p []byte) (int, error) {
	if g.n <= 0 {
		select {
		case <-g.release:
		case <-g.ctx.Done():
			return 0, g.ctx.Err()
		}
		return g.r.Read(p)
	}
	p = p[:min(int64(len(p)), g.n)]
	n, err := g.r.Read(p)
	g.n -= int64(n)
	return n, err
}
