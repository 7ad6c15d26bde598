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
