package gateway_test

import (
	"bytes"
	"errors"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/tusgate/tusgate/gateway"
	"github.com/tusgate/tusgate/internal/tusclient"
	"github.com/tusgate/tusgate/store"
)

// deliverAll records every part of upload id as accepted by api.video.
func (h *harness) deliverAll(t *testing.T, id string) {
	t.Helper()
	now := h.now
	if _, err := h.st.Update(t.Context(), id, func(u *store.Upload) error {
		for k := 1; k <= u.TotalParts(); k++ {
			if _, err := u.Claim(k, "test", now.Add(time.Minute), now); err != nil {
				return err
			}
			if err := u.Deliver(k, "vi1", store.Assets{}, now); err != nil {
				return err
			}
		}
		return nil
	}); err != nil {
		t.Fatalf("deliver %s: %v", id, err)
	}
}

// Once delivered, an upload's bytes go; HEAD still reports it complete (a
// client resuming it must not upload it again) and PATCH gets 409.
func TestPurgeDelivered(t *testing.T) {
	t.Parallel()
	h := newHarness(t, nil)
	const size = 7 * MiB
	data := randomData(size)
	u, id := h.create(t, size, map[string]string{"filename": "a.mp4"})
	if _, err := h.client.Patch(t.Context(), u, 0, bytes.NewReader(data), size, -1); err != nil {
		t.Fatal(err)
	}
	// Not delivered yet: nothing is removed.
	if err := h.gw.PurgeDelivered(t.Context(), id); err != nil {
		t.Fatal(err)
	}
	if n, err := h.gw.Source().Offset(t.Context(), id); err != nil || n != size {
		t.Fatalf("bytes before delivery: %d, %v", n, err)
	}
	h.deliverAll(t, id)
	if err := h.gw.PurgeDelivered(t.Context(), id); err != nil {
		t.Fatalf("purge: %v", err)
	}
	if _, err := h.gw.Source().Offset(t.Context(), id); !errors.Is(err, store.ErrNotFound) {
		t.Fatalf("bytes after purge: got %v, want them gone", err)
	}
	info, err := h.client.Head(t.Context(), u)
	if err != nil || info.Offset != size || info.Length != size {
		t.Fatalf("HEAD after purge: %+v, %v; want offset and length %d", info, err, size)
	}
	_, err = h.client.Patch(t.Context(), u, size, strings.NewReader("x"), 1, -1)
	if tusclient.StatusCode(err) != http.StatusConflict || !strings.Contains(err.Error(), "ERR_UPLOAD_COMPLETE") {
		t.Errorf("PATCH after delivery: got %v, want 409 ERR_UPLOAD_COMPLETE", err)
	}
	if code, m, _ := h.status(t, id); code != http.StatusOK || m["state"] != "delivered" {
		t.Errorf("status after purge: %d %v", code, m["state"])
	}
}

// KeepDelivered keeps the bytes.
func TestKeepDelivered(t *testing.T) {
	t.Parallel()
	h := newHarness(t, func(c *gateway.Config) { c.KeepDelivered = true })
	u, id := h.create(t, 3, map[string]string{"filename": "a.mp4"})
	if _, err := h.client.Patch(t.Context(), u, 0, strings.NewReader("abc"), 3, -1); err != nil {
		t.Fatal(err)
	}
	h.deliverAll(t, id)
	if err := h.gw.PurgeDelivered(t.Context(), id); err != nil {
		t.Fatal(err)
	}
	if n, err := h.gw.Source().Offset(t.Context(), id); err != nil || n != 3 {
		t.Errorf("bytes with KeepDelivered: %d, %v", n, err)
	}
}

// The orphan sweep removes the bytes no live upload needs: delivered and
// terminated uploads at once, failed ones and bytes without a record once
// the upload expiry has passed; an upload still receiving stays.
func TestSweepOrphans(t *testing.T) {
	t.Parallel()
	h := newHarness(t, func(c *gateway.Config) { c.UploadExpiry = time.Hour })
	h.now = time.Now().UTC() // file times are real: the clock must be too
	upload := func() (string, string) {
		u, id := h.create(t, 3, map[string]string{"filename": "a.mp4"})
		if _, err := h.client.Patch(t.Context(), u, 0, strings.NewReader("ab"), 2, -1); err != nil {
			t.Fatal(err)
		}
		return u, id
	}
	_, delivered := upload()
	if _, err := h.client.Patch(t.Context(), h.endpoint+delivered, 2, strings.NewReader("c"), 1, -1); err != nil {
		t.Fatal(err)
	}
	h.deliverAll(t, delivered) // as if the process died before PurgeDelivered
	_, terminated := upload()
	if _, err := h.st.Update(t.Context(), terminated, func(u *store.Upload) error { return u.Terminate(h.now) }); err != nil {
		t.Fatal(err)
	}
	_, failed := upload()
	if _, err := h.st.Update(t.Context(), failed, func(u *store.Upload) error { return u.Fail(store.ReasonDeadlineMissed, "late", h.now) }); err != nil {
		t.Fatal(err)
	}
	_, noRecord := upload()
	if err := h.st.Delete(t.Context(), noRecord); err != nil {
		t.Fatal(err)
	}
	_, receiving := upload()

	has := func(id string) bool {
		_, err := h.gw.Source().Offset(t.Context(), id)
		return err == nil
	}
	if n, err := h.gw.SweepOrphans(t.Context()); err != nil || n != 2 {
		t.Fatalf("first sweep: removed %d, %v; want the delivered and the terminated upload", n, err)
	}
	for id, want := range map[string]bool{delivered: false, terminated: false, failed: true, noRecord: true, receiving: true} {
		if has(id) != want {
			t.Errorf("after the first sweep, upload %s has bytes %v, want %v", id, !want, want)
		}
	}
	h.now = h.now.Add(time.Hour + time.Minute)
	if n, err := h.gw.SweepOrphans(t.Context()); err != nil || n != 2 {
		t.Fatalf("sweep after the upload expiry: removed %d, %v; want the failed upload and the one without a record", n, err)
	}
	if has(failed) || has(noRecord) || !has(receiving) {
		t.Errorf("after the second sweep: failed %v, no record %v, receiving %v; want false, false, true", has(failed), has(noRecord), has(receiving))
	}
}
