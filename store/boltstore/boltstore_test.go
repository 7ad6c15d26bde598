package boltstore_test

import (
	"errors"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/tusgate/tusgate/store"
	"github.com/tusgate/tusgate/store/boltstore"
	"github.com/tusgate/tusgate/store/storetest"
)

func mustOpen(t *testing.T, path string) *boltstore.Store {
	t.Helper()
	s, err := boltstore.Open(path)
	if err != nil {
		t.Fatalf("Open(%s): %v", path, err)
	}
	return s
}

func TestConformance(t *testing.T) {
	storetest.Run(t, func(t *testing.T) store.Store {
		s := mustOpen(t, filepath.Join(t.TempDir(), "state", "tusgate.db"))
		t.Cleanup(func() {
			if err := s.Close(); err != nil {
				t.Errorf("Close: %v", err)
			}
		})
		return s
	})
}

func TestReopen(t *testing.T) {
	path := filepath.Join(t.TempDir(), "tusgate.db")
	s := mustOpen(t, path)
	want := storetest.FullUpload("kept")
	if err := s.Create(t.Context(), want); err != nil {
		t.Fatalf("Create: %v", err)
	}
	if err := s.Close(); err != nil {
		t.Fatalf("Close: %v", err)
	}
	if _, err := s.Get(t.Context(), "kept"); !errors.Is(err, store.ErrUnavailable) {
		t.Errorf("Get after Close: got %v, want ErrUnavailable", err)
	}

	s = mustOpen(t, path)
	defer s.Close()
	got, err := s.Get(t.Context(), "kept")
	if err != nil {
		t.Fatalf("Get after reopen: %v", err)
	}
	if got.VideoID != want.VideoID || got.Token.Reveal() != want.Token.Reveal() || !got.UpdatedAt.Equal(want.UpdatedAt) {
		t.Errorf("after reopen got video %q, updated %v; want %q, %v", got.VideoID, got.UpdatedAt, want.VideoID, want.UpdatedAt)
	}
	ids, err := s.ListActive(t.Context())
	if err != nil {
		t.Fatalf("ListActive: %v", err)
	}
	if len(ids) != 1 || ids[0] != "kept" {
		t.Errorf("ListActive after reopen = %v, want [kept]", ids)
	}
	if len(got.Outbox) != len(want.Outbox) || got.Outbox[0].ID != want.Outbox[0].ID {
		t.Errorf("outbox after reopen = %+v, want %+v", got.Outbox, want.Outbox)
	}
}

// TestReopenKeepsPendingEvents checks that a terminal upload whose webhook
// events are not delivered yet is still listed after a restart.
func TestReopenKeepsPendingEvents(t *testing.T) {
	path := filepath.Join(t.TempDir(), "tusgate.db")
	s := mustOpen(t, path)
	now := time.Now()
	u := &store.Upload{ID: "pending", State: store.StateReceiving}
	u.EnableWebhooks(now)
	if err := s.Create(t.Context(), u); err != nil {
		t.Fatalf("Create: %v", err)
	}
	if _, err := s.Update(t.Context(), "pending", func(u *store.Upload) error {
		return u.Fail(store.ReasonDataLost, "gone", now)
	}); err != nil {
		t.Fatalf("Fail: %v", err)
	}
	if err := s.Close(); err != nil {
		t.Fatalf("Close: %v", err)
	}
	s = mustOpen(t, path)
	defer s.Close()
	ids, err := s.ListActive(t.Context())
	if err != nil || len(ids) != 1 || ids[0] != "pending" {
		t.Fatalf("ListActive after reopen = %v, %v; want [pending]", ids, err)
	}
	got, err := s.Get(t.Context(), "pending")
	if err != nil {
		t.Fatalf("Get: %v", err)
	}
	if len(got.Outbox) != 2 || got.Outbox[0].ID != u.Outbox[0].ID || got.Outbox[1].Type != store.EventUploadFailed {
		t.Errorf("outbox after reopen = %+v; want upload.created (same id), upload.failed", got.Outbox)
	}
}

func TestOpenLocked(t *testing.T) {
	path := filepath.Join(t.TempDir(), "tusgate.db")
	s := mustOpen(t, path)
	defer s.Close()

	start := time.Now()
	second, err := boltstore.Open(path)
	elapsed := time.Since(start)
	if err == nil {
		second.Close()
		t.Fatalf("second Open of %s succeeded, want an error", path)
	}
	if !strings.Contains(err.Error(), path) || !strings.Contains(err.Error(), "locked") {
		t.Errorf("error %q: want it to name %s and say it is locked", err, path)
	}
	if elapsed > 5*time.Second {
		t.Errorf("second Open took %v, want about 1s", elapsed)
	}
}

// Concurrent writes share transactions (one commit, one pair of fdatasyncs,
// for many), each is applied, and one whose fn fails returns its error
// without undoing the others.
func TestConcurrentWritesShareCommits(t *testing.T) {
	s := mustOpen(t, filepath.Join(t.TempDir(), "tusgate.db"))
	t.Cleanup(func() { _ = s.Close() })
	const n = 40
	ids := make([]string, n)
	for i := range ids {
		ids[i] = "u" + strconv.Itoa(i)
		if err := s.Create(t.Context(), storetest.FullUpload(ids[i])); err != nil {
			t.Fatalf("Create: %v", err)
		}
	}

	// One after another: a commit each.
	before := s.CommittedTxID()
	for _, id := range ids {
		if _, err := s.Update(t.Context(), id, func(u *store.Upload) error { u.Attempts++; return nil }); err != nil {
			t.Fatalf("Update: %v", err)
		}
	}
	if got := s.CommittedTxID() - before; got != n {
		t.Fatalf("sequential updates: %d commits, want %d", got, n)
	}

	// All at once: far fewer commits; the odd ones fail and change nothing.
	errBad := errors.New("refused by fn")
	start := make(chan struct{})
	errs := make([]error, n)
	var wg sync.WaitGroup
	before = s.CommittedTxID()
	for i, id := range ids {
		wg.Go(func() {
			<-start
			_, errs[i] = s.Update(t.Context(), id, func(u *store.Upload) error {
				u.Attempts++
				if i%2 == 1 {
					return errBad
				}
				return nil
			})
		})
	}
	close(start)
	wg.Wait()
	if got := s.CommittedTxID() - before; got > n/4 {
		t.Errorf("concurrent updates: %d commits for %d writes, want at most %d", got, n/2, n/4)
	}
	for i, id := range ids {
		base := storetest.FullUpload(id).Attempts
		want, wantErr := base+2, error(nil)
		if i%2 == 1 {
			want, wantErr = base+1, errBad
		}
		if !errors.Is(errs[i], wantErr) {
			t.Errorf("Update %s: got %v, want %v", id, errs[i], wantErr)
		}
		u, err := s.Get(t.Context(), id)
		if err != nil {
			t.Fatalf("Get %s: %v", id, err)
		}
		if u.Attempts != want {
			t.Errorf("%s: Attempts %d, want %d", id, u.Attempts, want)
		}
	}
}

// A write whose fn panics panics in its caller's goroutine, as without
// shared transactions, and the writes batched with it are still saved.
func TestPanickingWriteSparesItsBatch(t *testing.T) {
	s := mustOpen(t, filepath.Join(t.TempDir(), "tusgate.db"))
	t.Cleanup(func() { _ = s.Close() })
	const n = 10
	for i := range n {
		if err := s.Create(t.Context(), storetest.FullUpload("u"+strconv.Itoa(i))); err != nil {
			t.Fatalf("Create: %v", err)
		}
	}
	start := make(chan struct{})
	recovered := make([]any, n)
	var wg sync.WaitGroup
	for i := range n {
		wg.Go(func() {
			defer func() { recovered[i] = recover() }()
			<-start
			_, _ = s.Update(t.Context(), "u"+strconv.Itoa(i), func(u *store.Upload) error {
				if i == 3 {
					panic("boom")
				}
				u.Attempts += 10
				return nil
			})
		})
	}
	close(start)
	wg.Wait()
	for i := range n {
		id := "u" + strconv.Itoa(i)
		u, err := s.Get(t.Context(), id)
		if err != nil {
			t.Fatalf("Get %s: %v", id, err)
		}
		base := storetest.FullUpload(id).Attempts
		switch {
		case i == 3 && (recovered[i] != "boom" || u.Attempts != base):
			t.Errorf("%s: recovered %v, Attempts %d; want the panic in the caller and nothing saved", id, recovered[i], u.Attempts)
		case i != 3 && (recovered[i] != nil || u.Attempts != base+10):
			t.Errorf("%s: recovered %v, Attempts %d; want no panic and %d", id, recovered[i], u.Attempts, base+10)
		}
	}
}
