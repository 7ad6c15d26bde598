// Package boltstore is the embedded state store: a store.Store kept in one
// bbolt file, for a single gateway instance that must survive restarts.
//
// Records are JSON documents in the "uploads" bucket keyed by upload id; the
// "active" bucket holds the ids of active uploads (store.Upload.Active:
// non-terminal, or holding webhook events) and is written in the same
// transaction as the record, so it is always exact.
package boltstore

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"time"

	bolt "go.etcd.io/bbolt"
	berrors "go.etcd.io/bbolt/errors"

	"github.com/tusgate/tusgate/store"
)

var (
	uploadsBucket = []byte("uploads")
	activeBucket  = []byte("active")
)

// lockTimeout bounds the wait for the file lock held by another process.
const lockTimeout = time.Second

// Store is a store.Store backed by a bbolt file. It is safe for concurrent use.
type Store struct {
	db   *bolt.DB
	path string
	w    *groupCommit
}

var _ store.Store = (*Store)(nil)

// Open opens (creating it and its parent directory if needed) the store file
// at path. If another process holds the file, Open fails after about a second
// with an error naming the path.
func Open(path string) (*Store, error) {
	if err := os.MkdirAll(filepath.Dir(path), 0o750); err != nil {
		return nil, fmt.Errorf("open state store: %w", err)
	}
	db, err := bolt.Open(path, 0o600, &bolt.Options{Timeout: lockTimeout})
	if errors.Is(err, berrors.ErrTimeout) {
		return nil, fmt.Errorf("open state store %s: the file is locked by another process (is another tusgate using the same data directory?): %w", path, err)
	}
	if err != nil {
		return nil, fmt.Errorf("open state store %s: %w", path, err)
	}
	err = db.Update(func(tx *bolt.Tx) error {
		for _, name := range [][]byte{uploadsBucket, activeBucket} {
			if _, err := tx.CreateBucketIfNotExists(name); err != nil {
				return err
			}
		}
		return nil
	})
	if err != nil {
		_ = db.Close()
		return nil, fmt.Errorf("open state store %s: create buckets: %w", path, err)
	}
	return &Store{db: db, path: path, w: &groupCommit{db: db}}, nil
}

// Path returns the file the store lives in.
func (s *Store) Path() string { return s.path }

// Close closes the file. Calls after Close fail with store.ErrUnavailable.
func (s *Store) Close() error {
	if err := s.db.Close(); err != nil {
		return fmt.Errorf("close state store %s: %w", s.path, err)
	}
	return nil
}

// Ping reports whether the file is open.
func (s *Store) Ping(ctx context.Context) error {
	if err := ctx.Err(); err != nil {
		return fmt.Errorf("ping state store: %w", err)
	}
	return s.view("ping state store", func(*bolt.Tx) error { return nil })
}

// Create stores a new record; it returns store.ErrExists when the id is taken.
func (s *Store) Create(ctx context.Context, u *store.Upload) error {
	op := fmt.Sprintf("create upload %q", u.ID)
	if err := ctx.Err(); err != nil {
		return fmt.Errorf("%s: %w", op, err)
	}
	data, err := json.Marshal(u)
	if err != nil {
		return fmt.Errorf("%s: encode: %w", op, err)
	}
	return s.update(op, func(tx *bolt.Tx) error {
		if tx.Bucket(uploadsBucket).Get([]byte(u.ID)) != nil {
			return store.ErrExists
		}
		return put(tx, u.ID, data, u.Active())
	})
}

// Get returns a copy of the record, or store.ErrNotFound.
func (s *Store) Get(ctx context.Context, id string) (*store.Upload, error) {
	op := fmt.Sprintf("get upload %q", id)
	if err := ctx.Err(); err != nil {
		return nil, fmt.Errorf("%s: %w", op, err)
	}
	var u *store.Upload
	err := s.view(op, func(tx *bolt.Tx) error {
		var err error
		u, err = load(tx, id)
		return err
	})
	return u, err
}

// Update applies fn to the record in a bbolt write transaction (shared with
// concurrent writes, see groupCommit; fn may run more than once). If fn
// returns an error, nothing is saved and that error is returned as is.
func (s *Store) Update(ctx context.Context, id string, fn func(*store.Upload) error) (*store.Upload, error) {
	op := fmt.Sprintf("update upload %q", id)
	if err := ctx.Err(); err != nil {
		return nil, fmt.Errorf("%s: %w", op, err)
	}
	var (
		u     *store.Upload
		fnErr error
	)
	err := s.update(op, func(tx *bolt.Tx) error {
		var err error
		if u, err = load(tx, id); err != nil {
			return err
		}
		if fnErr = fn(u); fnErr != nil {
			return fnErr
		}
		if err := ctx.Err(); err != nil {
			return err
		}
		data, err := json.Marshal(u)
		if err != nil {
			return fmt.Errorf("encode: %w", err)
		}
		return put(tx, id, data, u.Active())
	})
	if fnErr != nil {
		return nil, fnErr
	}
	if err != nil {
		return nil, err
	}
	return u, nil
}

// ListActive returns the ids of every active upload: receiving or
// forwarding, or holding webhook events.
func (s *Store) ListActive(ctx context.Context) ([]string, error) {
	if err := ctx.Err(); err != nil {
		return nil, fmt.Errorf("list active uploads: %w", err)
	}
	var ids []string
	err := s.view("list active uploads", func(tx *bolt.Tx) error {
		return tx.Bucket(activeBucket).ForEach(func(k, _ []byte) error {
			ids = append(ids, string(k))
			return nil
		})
	})
	return ids, err
}

// Delete removes a record; deleting a missing record is not an error.
func (s *Store) Delete(ctx context.Context, id string) error {
	op := fmt.Sprintf("delete upload %q", id)
	if err := ctx.Err(); err != nil {
		return fmt.Errorf("%s: %w", op, err)
	}
	return s.update(op, func(tx *bolt.Tx) error {
		if err := tx.Bucket(uploadsBucket).Delete([]byte(id)); err != nil {
			return err
		}
		return tx.Bucket(activeBucket).Delete([]byte(id))
	})
}

func load(tx *bolt.Tx, id string) (*store.Upload, error) {
	data := tx.Bucket(uploadsBucket).Get([]byte(id))
	if data == nil {
		return nil, store.ErrNotFound
	}
	var u store.Upload
	if err := json.Unmarshal(data, &u); err != nil {
		return nil, fmt.Errorf("decode: %w", err)
	}
	return &u, nil
}

// put writes the record and keeps the active index in step with it.
func put(tx *bolt.Tx, id string, data []byte, active bool) error {
	if err := tx.Bucket(uploadsBucket).Put([]byte(id), data); err != nil {
		return err
	}
	if !active {
		return tx.Bucket(activeBucket).Delete([]byte(id))
	}
	return tx.Bucket(activeBucket).Put([]byte(id), nil)
}

func (s *Store) view(op string, fn func(*bolt.Tx) error) error {
	return s.wrap(op, s.db.View(fn))
}

// update runs fn in a write transaction, possibly shared with other
// writes (see groupCommit): fn may run more than once, as store.Store's
// Update allows, and must leave nothing behind but what it writes to tx.
func (s *Store) update(op string, fn func(*bolt.Tx) error) error {
	return s.wrap(op, s.w.do(fn))
}

// wrap adds the operation to err and marks bbolt's own failures (closed
// database, disk errors) as store.ErrUnavailable. Domain and context errors
// keep their identity.
func (s *Store) wrap(op string, err error) error {
	switch {
	case err == nil:
		return nil
	case errors.Is(err, store.ErrNotFound), errors.Is(err, store.ErrExists),
		errors.Is(err, context.Canceled), errors.Is(err, context.DeadlineExceeded):
		return fmt.Errorf("%s: %w", op, err)
	default:
		return fmt.Errorf("%s in %s: %w: %w", op, s.path, store.ErrUnavailable, err)
	}
}
