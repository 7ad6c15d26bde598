package store_test

import (
	"encoding/json"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/tusgate/tusgate/store"
)

func hooked(size, received int64) *store.Upload {
	u := newUpload(size, received)
	u.Complete = false
	u.EnableWebhooks(now)
	return u
}

func types(u *store.Upload) []store.EventType {
	var ts []store.EventType
	for _, e := range u.Outbox {
		ts = append(ts, e.Type)
	}
	return ts
}

// TestTransitionsQueueEvents runs each life of an upload and checks the
// events its transitions queue, with and without webhooks.
func TestTransitionsQueueEvents(t *testing.T) {
	assets := store.Assets{Player: "https://embed.api.video/vod/vi1", MP4: "https://vod.api.video/vod/vi1/mp4/source.mp4"}
	tests := []struct {
		name string
		run  func(t *testing.T, u *store.Upload)
		want []store.EventType
	}{
		{"created", func(*testing.T, *store.Upload) {}, []store.EventType{store.EventUploadCreated}},
		{"received in two steps", func(t *testing.T, u *store.Upload) {
			mustNil(t, "RecordReceived", u.RecordReceived(5*mib, false, now))
			mustNil(t, "RecordReceived", u.RecordReceived(12*mib, true, now))
			mustNil(t, "RecordReceived again", u.RecordReceived(12*mib, true, now))
		}, []store.EventType{store.EventUploadCreated, store.EventUploadReceived}},
		{"delivered", func(t *testing.T, u *store.Upload) {
			mustNil(t, "RecordReceived", u.RecordReceived(12*mib, true, now))
			for k := 1; k <= 3; k++ {
				mustNil(t, "Deliver", u.Deliver(k, "vi1", assets, now))
			}
		}, []store.EventType{store.EventUploadCreated, store.EventUploadReceived, store.EventVideoDelivered}},
		{"failed then terminated", func(t *testing.T, u *store.Upload) {
			mustNil(t, "Fail", u.Fail(store.ReasonDeadlineMissed, "late", now))
			wantConflict(t, "Fail again", u.Fail(store.ReasonDeadlineMissed, "late", now))
			mustNil(t, "Terminate", u.Terminate(now))
			wantConflict(t, "Terminate again", u.Terminate(now))
		}, []store.EventType{store.EventUploadCreated, store.EventUploadFailed, store.EventUploadTerminated}},
		{"enable twice", func(t *testing.T, u *store.Upload) {
			if u.Webhooks {
				u.EnableWebhooks(now)
			}
		}, []store.EventType{store.EventUploadCreated}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			u := hooked(12*mib, 0)
			tt.run(t, u)
			if got := types(u); !slices.Equal(got, tt.want) {
				t.Errorf("outbox = %v, want %v", got, tt.want)
			}
			if !u.Active() {
				t.Errorf("Active() = false with %d pending events, want true", len(u.Outbox))
			}
			ids := map[string]bool{}
			for _, e := range u.Outbox {
				if !strings.HasPrefix(e.ID, "evt_") || len(e.ID) != 30 || ids[e.ID] {
					t.Errorf("event id %q: want a fresh evt_ + 26 characters", e.ID)
				}
				ids[e.ID] = true
			}

			plain := newUpload(12*mib, 0)
			plain.Complete = false
			tt.run(t, plain)
			if len(plain.Outbox) != 0 {
				t.Errorf("without webhooks the outbox holds %v, want nothing", types(plain))
			}
		})
	}
}

// TestEventSnapshots checks what each event records of the upload.
func TestEventSnapshots(t *testing.T) {
	assets := store.Assets{Player: "p", HLS: "h", Thumbnail: "t", MP4: "m"}
	u := hooked(12*mib, 0)
	if e := u.Outbox[0]; e.State != store.StateReceiving || e.Size != 12*mib || e.Received != 0 || !e.CreatedAt.Equal(now) {
		t.Errorf("upload.created = %+v; want receiving, size %d, nothing received, at %v", e, 12*mib, now)
	}
	at := now.Add(time.Minute)
	mustNil(t, "RecordReceived", u.RecordReceived(12*mib, true, at))
	if e := u.Outbox[1]; e.Received != 12*mib || !e.CreatedAt.Equal(at) {
		t.Errorf("upload.received = %+v; want %d received at %v", e, 12*mib, at)
	}
	mustNil(t, "Deliver 1", u.Deliver(1, "vi1", store.Assets{}, at))
	mustNil(t, "Deliver 2", u.Deliver(2, "", store.Assets{}, at))
	mustNil(t, "Deliver 3", u.Deliver(3, "", assets, at))
	if e := u.Outbox[2]; e.Type != store.EventVideoDelivered || e.State != store.StateDelivered || e.VideoID != "vi1" ||
		e.Assets != assets || e.DeliveredBytes != 12*mib {
		t.Errorf("video.delivered = %+v; want delivered, vi1, the assets, %d bytes", e, 12*mib)
	}

	f := hooked(1, 0)
	mustNil(t, "Fail", f.Fail(store.ReasonTokenRejected, "401 from api.video", at))
	if e := f.Outbox[1]; e.Type != store.EventUploadFailed || e.State != store.StateFailed ||
		e.Error != (store.Failure{Reason: store.ReasonTokenRejected, Message: "401 from api.video"}) {
		t.Errorf("upload.failed = %+v; want failed with the reason", e)
	}
	d := hooked(0, 0)
	d.SizeDeferred = true
	mustNil(t, "Terminate", d.Terminate(at))
	if e := d.Outbox[1]; e.Type != store.EventUploadTerminated || e.State != store.StateTerminated {
		t.Errorf("upload.terminated = %+v", e)
	}
}

func TestActive(t *testing.T) {
	for _, tt := range []struct {
		state   store.State
		pending bool
		want    bool
	}{
		{store.StateReceiving, false, true},
		{store.StateForwarding, false, true},
		{store.StateDelivered, false, false},
		{store.StateDelivered, true, true},
		{store.StateFailed, true, true},
		{store.StateTerminated, false, false},
	} {
		u := &store.Upload{State: tt.state}
		if tt.pending {
			u.Outbox = []store.Event{{ID: "e"}}
		}
		if got := u.Active(); got != tt.want {
			t.Errorf("%s, pending %t: Active() = %t, want %t", tt.state, tt.pending, got, tt.want)
		}
	}
}

// TestEventDelivery walks the delivery bookkeeping: in order, leases,
// retries, release, ack and drop.
func TestEventDelivery(t *testing.T) {
	u := hooked(1, 0)
	mustNil(t, "RecordReceived", u.RecordReceived(1, true, now))
	first, second := u.Outbox[0].ID, u.Outbox[1].ID

	ev, _, ok := u.NextEvent("a", now)
	if !ok || ev.ID != first {
		t.Fatalf("NextEvent = %s, %t; want the oldest event %s", ev.ID, ok, first)
	}
	wantConflict(t, "ClaimEvent of the second event", u.ClaimEvent(second, "a", now.Add(time.Minute), now))
	wantConflict(t, "ClaimEvent of an unknown event", u.ClaimEvent("evt_nope", "a", now.Add(time.Minute), now))
	until := now.Add(time.Minute)
	mustNil(t, "ClaimEvent", u.ClaimEvent(first, "a", until, now))
	if _, at, ok := u.NextEvent("b", now); ok || !at.Equal(until) {
		t.Errorf("NextEvent for b while a holds the lease: ok %t, at %v; want false, %v", ok, at, until)
	}
	wantConflict(t, "ClaimEvent by b", u.ClaimEvent(first, "b", until, now))
	if ev, _, ok := u.NextEvent("a", now); !ok || ev.ID != first {
		t.Errorf("NextEvent for the lease's owner = %s, %t; want %s (a restarted owner takes its lease back)", ev.ID, ok, first)
	}
	wantConflict(t, "RetryEvent by b", u.RetryEvent(first, "b", now, "x"))
	wantConflict(t, "ReleaseEvent by b", u.ReleaseEvent(first, "b"))

	next := now.Add(30 * time.Second)
	mustNil(t, "RetryEvent", u.RetryEvent(first, "a", next, "HTTP 500"))
	e := u.Outbox[0]
	if e.Attempts != 1 || !e.NextAttempt.Equal(next) || e.LastError != "HTTP 500" || e.Lease != (store.Lease{}) {
		t.Errorf("after RetryEvent: %+v", e)
	}
	if _, at, ok := u.NextEvent("b", now); ok || !at.Equal(next) {
		t.Errorf("NextEvent before the retry time: ok %t, at %v; want false, %v", ok, at, next)
	}
	// The later event waits behind the first: events go out in order.
	if _, _, ok := u.NextEvent("b", now); ok {
		t.Errorf("NextEvent skipped the first event")
	}
	mustNil(t, "ClaimEvent by b when due", u.ClaimEvent(first, "b", next.Add(time.Minute), next))
	mustNil(t, "ReleaseEvent", u.ReleaseEvent(first, "b"))
	if e := u.Outbox[0]; e.Attempts != 1 || e.Lease != (store.Lease{}) {
		t.Errorf("after ReleaseEvent: %+v; want 1 attempt (not counted), no lease", e)
	}
	// An expired lease of another owner can be taken over.
	mustNil(t, "ClaimEvent", u.ClaimEvent(first, "a", next.Add(time.Second), next))
	mustNil(t, "ClaimEvent over an expired lease", u.ClaimEvent(first, "b", next.Add(time.Minute), next.Add(time.Second)))

	mustNil(t, "AckEvent", u.AckEvent(first))
	wantConflict(t, "AckEvent again", u.AckEvent(first))
	if ev, _, ok := u.NextEvent("a", next); !ok || ev.ID != second {
		t.Errorf("NextEvent after the ack = %s, %t; want %s", ev.ID, ok, second)
	}
	mustNil(t, "DropEvent", u.DropEvent(second))
	wantConflict(t, "DropEvent again", u.DropEvent(second))
	if u.Outbox != nil {
		t.Errorf("outbox = %+v, want nil", u.Outbox)
	}
	if _, at, ok := u.NextEvent("a", next); ok || !at.IsZero() {
		t.Errorf("NextEvent on an empty outbox: ok %t, at %v; want false, zero", ok, at)
	}
}

func TestCloneOutbox(t *testing.T) {
	u := hooked(1, 0)
	c := u.Clone()
	c.Outbox[0].Attempts = 9
	if u.Outbox[0].Attempts != 0 {
		t.Errorf("mutating a clone's outbox changed the original")
	}
}

// TestOutboxJSONCompatible checks that records without webhooks encode as
// before, and that records written before the outbox existed decode.
func TestOutboxJSONCompatible(t *testing.T) {
	data, err := json.Marshal(newUpload(1, 1))
	mustNil(t, "Marshal", err)
	for _, key := range []string{`"webhooks"`, `"outbox"`} {
		if strings.Contains(string(data), key) {
			t.Errorf("record without webhooks encodes %s: %s", key, data)
		}
	}
	old := `{"id":"u1","state":"failed","size":1,"received":1,"plan":{"first":5242880,"size":5242880},"deliveredBytes":0,"completionWindow":0,"createdAt":"2025-03-14T12:00:00Z","updatedAt":"2025-03-14T12:00:00Z"}`
	var u store.Upload
	mustNil(t, "Unmarshal", json.Unmarshal([]byte(old), &u))
	if u.Webhooks || u.Outbox != nil || u.Active() {
		t.Errorf("old failed record: webhooks %t, outbox %v, active %t; want false, nil, false", u.Webhooks, u.Outbox, u.Active())
	}
	h := hooked(1, 0)
	data, err = json.Marshal(h)
	mustNil(t, "Marshal", err)
	var back store.Upload
	mustNil(t, "Unmarshal", json.Unmarshal(data, &back))
	if !back.Webhooks || len(back.Outbox) != 1 || back.Outbox[0].ID != h.Outbox[0].ID {
		t.Errorf("round trip of a record with webhooks: %+v", back)
	}
}
