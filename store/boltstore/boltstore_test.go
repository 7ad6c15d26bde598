package boltstore_test

import (
	"errors"
	"path/filepath"
	"strings"
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
