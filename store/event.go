package store

import (
	"crypto/rand"
	"fmt"
	"slices"
	"strings"
	"time"
)

// EventType names a webhook event.
type EventType string

// The webhook events an upload queues in its outbox (Upload.Outbox) when its
// record has Webhooks set. Each is queued at most once per upload.
const (
	// EventUploadCreated: the upload was created (Upload.EnableWebhooks).
	EventUploadCreated EventType = "upload.created"
	// EventUploadReceived: every byte of the upload is in the data store.
	EventUploadReceived EventType = "upload.received"
	// EventVideoDelivered: api.video accepted the last part; the event
	// carries the video id and its asset URLs.
	EventVideoDelivered EventType = "video.delivered"
	// EventUploadFailed: the upload failed; the event carries the reason.
	EventUploadFailed EventType = "upload.failed"
	// EventUploadTerminated: the client deleted the upload (tus DELETE).
	EventUploadTerminated EventType = "upload.terminated"
)

// Event is a webhook event waiting in an upload's outbox. It is queued by the
// transition that causes it, in the same atomic write, so neither can be saved
// without the other; it leaves the outbox once the platform acknowledged it
// (AckEvent) or a dispatcher gave up on it (DropEvent).
//
// Besides its identity, an event holds a snapshot of the upload's mutable
// fields at the moment it happened; the immutable ones (filename, filetype,
// metadata, creation time) are read from the record when it is sent.
type Event struct {
	// ID is unique (random, 128 bits) and stays the same across retries, so
	// receivers de-duplicate on it.
	ID        string    `json:"id"`
	Type      EventType `json:"type"`
	CreatedAt time.Time `json:"createdAt"`

	// The upload as it was when the event happened.
	State          State   `json:"state"`
	Size           int64   `json:"size,omitempty"`
	SizeDeferred   bool    `json:"sizeDeferred,omitempty"`
	Received       int64   `json:"received,omitempty"`
	DeliveredBytes int64   `json:"deliveredBytes,omitempty"`
	VideoID        string  `json:"videoId,omitempty"`
	Assets         Assets  `json:"assets,omitzero"`
	Error          Failure `json:"error,omitzero"`

	// Delivery bookkeeping.

	// Attempts counts the failed deliveries so far.
	Attempts int `json:"attempts,omitempty"`
	// NextAttempt is when the event may be sent again; zero: at once.
	NextAttempt time.Time `json:"nextAttempt,omitzero"`
	// LastError says why the last delivery failed (never a secret).
	LastError string `json:"lastError,omitempty"`
	// Lease is set while a dispatcher sends the event.
	Lease Lease `json:"lease,omitzero"`
}

// newEventID returns a random event id: "evt_" and 26 base32 characters.
func newEventID() string { return "evt_" + strings.ToLower(rand.Text()) }

// Active reports whether the record belongs in Store.ListActive: its state is
// not terminal, or it still holds webhook events to deliver.
func (u *Upload) Active() bool { return !u.State.Terminal() || len(u.Outbox) > 0 }

// EnableWebhooks turns on webhook events for the upload and queues
// upload.created. The gateway calls it on a new record, after setting its
// fields and before Store.Create, so the record and its first event are
// stored together. Calling it again does nothing.
func (u *Upload) EnableWebhooks(now time.Time) {
	if u.Webhooks {
		return
	}
	u.Webhooks = true
	u.queue(EventUploadCreated, now)
}

// queue appends an event of type t, with a snapshot of u, to the outbox when
// webhooks are on.
func (u *Upload) queue(t EventType, now time.Time) {
	if !u.Webhooks {
		return
	}
	ev := Event{
		ID:             newEventID(),
		Type:           t,
		CreatedAt:      now,
		State:          u.State,
		Size:           u.Size,
		SizeDeferred:   u.SizeDeferred,
		Received:       u.Received,
		DeliveredBytes: u.DeliveredBytes,
		VideoID:        u.VideoID,
		Assets:         u.Assets,
	}
	if u.Error != nil {
		ev.Error = *u.Error
	}
	u.Outbox = append(u.Outbox, ev)
}

// NextEvent returns the event a dispatcher acting as owner should send next:
// the oldest in the outbox (events of one upload go out in order), if it is
// due at now and no other owner holds a live lease on it. When it is not
// sendable yet, ok is false and at says when to look again (zero: the outbox
// is empty).
func (u *Upload) NextEvent(owner string, now time.Time) (ev Event, at time.Time, ok bool) {
	if len(u.Outbox) == 0 {
		return Event{}, time.Time{}, false
	}
	ev = u.Outbox[0]
	if ev.Lease.Owner != "" && ev.Lease.Owner != owner && now.Before(ev.Lease.Until) {
		return Event{}, ev.Lease.Until, false
	}
	if now.Before(ev.NextAttempt) {
		return Event{}, ev.NextAttempt, false
	}
	return ev, now, true
}

// event returns the index of the event id in the outbox, or an ErrConflict.
func (u *Upload) event(op, id string) (int, error) {
	i := slices.IndexFunc(u.Outbox, func(e Event) bool { return e.ID == id })
	if i < 0 {
		return -1, fmt.Errorf("%s event %s: not in the outbox: %w", op, id, ErrConflict)
	}
	return i, nil
}

// ClaimEvent puts a lease on event id for owner until until, before it is
// sent, so that other dispatchers leave it alone meanwhile. It returns
// ErrConflict when the event is not the one NextEvent gives owner at now
// (gone, not first, not due, or leased by another owner).
func (u *Upload) ClaimEvent(id, owner string, until, now time.Time) error {
	ev, _, ok := u.NextEvent(owner, now)
	if !ok || ev.ID != id {
		return fmt.Errorf("claim event %s: not due or held by another dispatcher: %w", id, ErrConflict)
	}
	u.Outbox[0].Lease = Lease{Owner: owner, Until: until}
	return nil
}

// AckEvent removes event id from the outbox: the platform acknowledged it.
// It returns ErrConflict when the event is no longer there (another
// dispatcher acknowledged or dropped it).
func (u *Upload) AckEvent(id string) error { return u.removeEvent("ack", id) }

// DropEvent removes event id from the outbox without delivering it (a
// dispatcher gave up). It returns ErrConflict when the event is gone.
func (u *Upload) DropEvent(id string) error { return u.removeEvent("drop", id) }

func (u *Upload) removeEvent(op, id string) error {
	i, err := u.event(op, id)
	if err != nil {
		return err
	}
	u.Outbox = slices.Delete(u.Outbox, i, i+1)
	if len(u.Outbox) == 0 {
		u.Outbox = nil
	}
	return nil
}

// RetryEvent records a failed delivery of event id by owner: one more
// attempt, the error (msg must hold no secret) and the time of the next try;
// the lease is released. It returns ErrConflict when the event is gone or
// another owner holds it now.
func (u *Upload) RetryEvent(id, owner string, next time.Time, msg string) error {
	i, err := u.event("retry", id)
	if err != nil {
		return err
	}
	ev := &u.Outbox[i]
	if ev.Lease.Owner != "" && ev.Lease.Owner != owner {
		return fmt.Errorf("retry event %s: held by another dispatcher: %w", id, ErrConflict)
	}
	ev.Attempts++
	ev.NextAttempt = next
	ev.LastError = msg
	ev.Lease = Lease{}
	return nil
}

// ReleaseEvent gives up owner's lease on event id without counting an attempt
// (the dispatcher stopped before it knew the outcome). It returns ErrConflict
// when the event is gone or owner does not hold it.
func (u *Upload) ReleaseEvent(id, owner string) error {
	i, err := u.event("release", id)
	if err != nil {
		return err
	}
	if u.Outbox[i].Lease.Owner != owner {
		return fmt.Errorf("release event %s: not held by %s: %w", id, owner, ErrConflict)
	}
	u.Outbox[i].Lease = Lease{}
	return nil
}
