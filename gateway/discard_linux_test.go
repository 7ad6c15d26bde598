package gateway_test

import (
	"bytes"
	"context"
	"errors"
	"io"
	"os"
	"path/filepath"
	"syscall"
	"testing"
	"time"

	"github.com/tusgate/tusgate/gateway"
	"github.com/tusgate/tusgate/store"
)

// discarder is the forwarder's optional Source method, as the disk
// backend implements it.
type discarder interface {
	Discard(ctx context.Context, id string, offset, length int64) error
}

func TestDiscardFreesDeliveredBytesAndKeepsTheUpload(t *testing.T) {
	t.Parallel()
	h := newHarness(t, nil)
	d, ok := h.gw.Source().(discarder)
	if !ok {
		t.Fatalf("the disk backend (%T) does not implement Discard", h.gw.Source())
	}
	const size = 12 * MiB
	data := randomData(size)
	u, id := h.create(t, size, nil)
	if _, err := h.client.Patch(t.Context(), u, 0, bytes.NewReader(data[:7*MiB]), 7*MiB, -1); err != nil {
		t.Fatal(err)
	}
	path := filepath.Join(h.dataDir, id)
	// A modification time in the past, so that a Discard that touched it
	// could not go unseen within the clock's resolution.
	lastWrite := time.Now().Add(-time.Hour).Truncate(time.Second)
	if err := os.Chtimes(path, time.Time{}, lastWrite); err != nil {
		t.Fatal(err)
	}
	before := allocated(t, path)

	err := d.Discard(t.Context(), id, 0, 5*MiB)
	if errors.Is(err, syscall.EOPNOTSUPP) {
		t.Skipf("the file system of %s cannot punch holes: %v", h.dataDir, err)
	}
	if err != nil {
		t.Fatal(err)
	}
	if after := allocated(t, path); after > before-5*MiB {
		t.Errorf("disk blocks: %d bytes before, %d after discarding 5 MiB", before, after)
	}
	fi, err := os.Stat(path)
	if err != nil {
		t.Fatal(err)
	}
	if !fi.ModTime().Equal(lastWrite) {
		t.Errorf("modification time: got %v, want %v kept (it is the client's last write)", fi.ModTime(), lastWrite)
	}
	if got, err := h.gw.Source().Offset(t.Context(), id); err != nil || got != 7*MiB {
		t.Errorf("offset after Discard: got %d, %v, want %d", got, err, 7*MiB)
	}
	if got := readRange(t, h, id, 0, 5*MiB); !bytes.Equal(got, make([]byte, 5*MiB)) {
		t.Errorf("discarded range: want zeros")
	}
	if got := readRange(t, h, id, 5*MiB, 2*MiB); !bytes.Equal(got, data[5*MiB:7*MiB]) {
		t.Errorf("bytes after the discarded range differ")
	}

	// The client goes on where it was: HEAD still says 7 MiB.
	info, err := h.client.Head(t.Context(), u)
	if err != nil || info.Offset != 7*MiB {
		t.Fatalf("HEAD after Discard: offset %d, %v, want %d", info.Offset, err, 7*MiB)
	}
	if _, err := h.client.Patch(t.Context(), u, 7*MiB, bytes.NewReader(data[7*MiB:]), size-7*MiB, -1); err != nil {
		t.Fatal(err)
	}
	if got := readRange(t, h, id, 5*MiB, size-5*MiB); !bytes.Equal(got, data[5*MiB:]) {
		t.Errorf("bytes received after Discard differ")
	}
}

func TestDiscardRefusesWhatIsNotThere(t *testing.T) {
	t.Parallel()
	h := newHarness(t, nil)
	d := h.gw.Source().(discarder)
	u, id := h.create(t, 4*MiB, nil)
	if _, err := h.client.Patch(t.Context(), u, 0, bytes.NewReader(randomData(MiB)), MiB, -1); err != nil {
		t.Fatal(err)
	}
	tests := []struct {
		name        string
		id          string
		off, n      int64
		wantErr     error
		wantAnError bool
	}{
		{"past the received bytes", id, MiB / 2, MiB, gateway.ErrNotReceived, true},
		{"unknown upload", "nope", 0, 1, store.ErrNotFound, true},
		{"negative offset", id, -1, 1, nil, true},
		{"empty range", id, 0, 0, nil, true},
	}
	for _, tt := range tests {
		err := d.Discard(t.Context(), tt.id, tt.off, tt.n)
		if err == nil || (tt.wantErr != nil && !errors.Is(err, tt.wantErr)) {
			t.Errorf("%s: got %v, want an error wrapping %v", tt.name, err, tt.wantErr)
		}
	}
	if got := readRange(t, h, id, 0, MiB); bytes.Equal(got, make([]byte, MiB)) {
		t.Errorf("a refused Discard zeroed the bytes")
	}
}

// allocated returns the bytes of disk the file at path holds.
func allocated(t *testing.T, path string) int64 {
	t.Helper()
	var st syscall.Stat_t
	if err := syscall.Stat(path, &st); err != nil {
		t.Fatal(err)
	}
	return st.Blocks * 512
}

// readRange reads [off, off+n) of upload id through the forwarder's Source.
func readRange(t *testing.T, h *harness, id string, off, n int64) []byte {
	t.Helper()
	rc, err := h.gw.Source().OpenRange(t.Context(), id, off, n)
	if err != nil {
		t.Fatal(err)
	}
	defer rc.Close()
	b, err := io.ReadAll(rc)
	if err != nil {
		t.Fatal(err)
	}
	return b
}

// With KeepDelivered every byte stays: the forwarder finds no Discard.
func TestKeepDeliveredDiscardsNothing(t *testing.T) {
	t.Parallel()
	h := newHarness(t, func(c *gateway.Config) { c.KeepDelivered = true })
	if _, ok := h.gw.Source().(discarder); ok {
		t.Error("with KeepDelivered the Source implements Discard")
	}
	u, id := h.create(t, 3, nil)
	if _, err := h.client.Patch(t.Context(), u, 0, bytes.NewReader([]byte("abc")), 3, -1); err != nil {
		t.Fatal(err)
	}
	if got := readRange(t, h, id, 0, 3); string(got) != "abc" {
		t.Errorf("Source with KeepDelivered reads %q, want abc", got)
	}
}
