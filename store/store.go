// Package store holds tusgate's domain: the upload record, its states and the
// transitions between them, the api.video part plan, and the Store contract that
// every state-store implementation (embedded, Redis) satisfies.
//
// The package knows nothing of HTTP or tusd. Transitions are pure methods on
// *Upload; implementations only have to run them atomically (Store.Update).
//
// When a record has Webhooks set, its transitions also queue the webhook
// events they cause (Event) in its Outbox, in the same write: package webhook
// delivers them and removes them with AckEvent. A record stays Active, and so
// listed by Store.ListActive, while its outbox holds events.
package store

import (
	"context"
	"errors"
	"time"
)

// Sentinel errors returned by Store implementations and transitions.
var (
	// ErrNotFound means no upload with that id exists.
	ErrNotFound = errors.New("upload not found")
	// ErrExists means Create was called for an id that is already stored.
	ErrExists = errors.New("upload already exists")
	// ErrConflict means a transition is not allowed in the record's current
	// state (a part already delivered, leased by another owner, a terminal
	// upload, …). It is not an infrastructure failure.
	ErrConflict = errors.New("transition not allowed")
	// ErrUnavailable wraps failures of the backing service (Redis down, disk
	// error): the caller may retry later.
	ErrUnavailable = errors.New("state store unavailable")
	// ErrDatasetLost means the backing service came back without the data it
	// held (e.g. Redis restarted without persistence): every upload it
	// tracked is gone. An operator error; readiness fails until it is fixed.
	ErrDatasetLost = errors.New("state store lost its data")
)

// Store persists upload records. Implementations must make Update atomic: two
// concurrent Updates of one id never both apply on the same prior version.
type Store interface {
	// Create stores a new record. It returns ErrExists when the id is taken.
	Create(ctx context.Context, u *Upload) error
	// Get returns a copy of the record, or ErrNotFound.
	Get(ctx context.Context, id string) (*Upload, error)
	// Update loads the record, applies fn to it and saves the result
	// atomically, retrying fn on write conflicts. If fn returns an error,
	// nothing is saved and that error is returned (wrapped errors preserved).
	// It returns the saved record, or ErrNotFound.
	Update(ctx context.Context, id string, fn func(*Upload) error) (*Upload, error)
	// ListActive returns, in no particular order, the ids of every upload
	// that is Active: not in a terminal state (receiving or forwarding), or
	// terminal with webhook events still in its outbox. Callers check the
	// state of each record they load.
	ListActive(ctx context.Context) ([]string, error)
	// Delete removes a record. Deleting a missing record is not an error.
	Delete(ctx context.Context, id string) error
	// Ping reports whether the backing service answers.
	Ping(ctx context.Context) error
	// Close releases the store's resources.
	Close() error
}

// Clock returns the current time; injected so tests control time.
type Clock func() time.Time
