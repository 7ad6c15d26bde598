// Package redisstore is the shared state store: a store.Store on Redis (a
// single node, Sentinel or Cluster, through go-redis's UniversalClient), so
// several gateway instances can share upload state.
//
// Keys, with P the prefix:
//
//	P:upload:{<id>}  the record, a JSON string. The hash tag keeps every key of
//	                 one upload in one Cluster slot.
//	P:active         a SET of the ids of non-terminal uploads.
//
// Every change of a record is atomic (SET NX for Create, WATCH + MULTI for
// Update). The active SET lives in another slot, so it cannot join that
// transaction: it is updated right after each record write and is only a hint
// for recovery. A crash between the two writes can leave it stale until the
// next write of that record re-syncs it; callers must check the state of each
// record they get from ListActive.
package redisstore

import (
	"context"
	crand "crypto/rand"
	"encoding/json"
	"errors"
	"fmt"
	"math/rand/v2"
	"net/url"
	"strings"
	"sync"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/tusgate/tusgate/store"
)

// DefaultPrefix is the key prefix used when none is given.
const DefaultPrefix = "tusgate"

// Bounds of Update's retries on write conflicts.
const (
	maxUpdateTries = 50
	baseBackoff    = time.Millisecond
	maxBackoff     = 20 * time.Millisecond
)

// Store is a store.Store on Redis. It is safe for concurrent use.
type Store struct {
	client redis.UniversalClient
	prefix string
	owned  bool // Close closes client

	mu      sync.Mutex
	dataset string // the dataset marker seen by the first successful Ping
}

var _ store.Store = (*Store)(nil)

// New returns a store that uses client and keys starting with prefix
// (DefaultPrefix when empty). Close leaves client open: its owner closes it.
func New(client redis.UniversalClient, prefix string) *Store {
	if prefix == "" {
		prefix = DefaultPrefix
	}
	return &Store{client: client, prefix: prefix}
}

// Open connects to the Redis server at rawURL (redis:// or rediss://, as
// redis.ParseURL reads them), pings it and returns a store whose Close closes
// the connection. Errors never contain the URL's password; an unreachable
// server gives an error wrapping store.ErrUnavailable.
func Open(ctx context.Context, rawURL, prefix string) (*Store, error) {
	opts, err := redis.ParseURL(rawURL)
	if err != nil {
		// The parse error may quote the URL: keep only its scrubbed text.
		return nil, fmt.Errorf("redis URL %s: %s", redactURL(rawURL), scrub(err.Error(), rawURL))
	}
	opts.ContextTimeoutEnabled = true
	client := redis.NewClient(opts)
	s := New(client, prefix)
	s.owned = true
	if err := s.Ping(ctx); err != nil {
		_ = client.Close()
		return nil, fmt.Errorf("connect to redis %s: %w", redactURL(rawURL), err)
	}
	return s, nil
}

// Close closes the client if Open created it.
func (s *Store) Close() error {
	if !s.owned {
		return nil
	}
	if err := s.client.Close(); err != nil {
		return fmt.Errorf("close redis client: %w", err)
	}
	return nil
}

func (s *Store) key(id string) string { return s.prefix + ":upload:{" + id + "}" }

func (s *Store) activeKey() string { return s.prefix + ":active" }

func (s *Store) datasetKey() string { return s.prefix + ":dataset" }

// checkDataset refuses new uploads on a Redis that lost the dataset this
// store adopted (see Ping): accepting them would hide the loss. Before the
// first successful Ping there is nothing to compare.
func (s *Store) checkDataset(ctx context.Context) error {
	s.mu.Lock()
	want := s.dataset
	s.mu.Unlock()
	if want == "" {
		return nil
	}
	got, err := s.client.Get(ctx, s.datasetKey()).Result()
	if err != nil && !errors.Is(err, redis.Nil) {
		return wrap(ctx, "read redis dataset marker", err)
	}
	if got != want {
		return s.datasetLost()
	}
	return nil
}

func (s *Store) datasetLost() error {
	return fmt.Errorf("redis dataset marker %s is gone or changed (Redis restarted without persistence, was flushed, or points elsewhere): every upload it tracked is lost; restart tusgate after fixing Redis persistence: %w",
		s.datasetKey(), errors.Join(store.ErrDatasetLost, store.ErrUnavailable))
}

// Ping reports whether Redis answers with the dataset this store started
// with. The first Ping creates (or adopts) a random marker key; if a later
// Ping finds it missing or changed, Redis lost its data — typically a restart
// without persistence — and Ping returns an error wrapping
// store.ErrDatasetLost and store.ErrUnavailable.
func (s *Store) Ping(ctx context.Context) error {
	if err := s.client.Ping(ctx).Err(); err != nil {
		return wrap(ctx, "ping redis", err)
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.dataset == "" {
		if err := s.client.SetNX(ctx, s.datasetKey(), crand.Text(), 0).Err(); err != nil {
			return wrap(ctx, "mark redis dataset", err)
		}
	}
	got, err := s.client.Get(ctx, s.datasetKey()).Result()
	switch {
	case errors.Is(err, redis.Nil):
		got = ""
	case err != nil:
		return wrap(ctx, "read redis dataset marker", err)
	}
	if s.dataset == "" {
		s.dataset = got
		return nil
	}
	if got != s.dataset {
		return s.datasetLost()
	}
	return nil
}

// Create stores a new record with SET NX; it returns store.ErrExists when the
// id is taken.
func (s *Store) Create(ctx context.Context, u *store.Upload) error {
	op := fmt.Sprintf("create upload %q", u.ID)
	data, err := json.Marshal(u)
	if err != nil {
		return fmt.Errorf("%s: encode: %w", op, err)
	}
	if err := ctx.Err(); err != nil {
		return fmt.Errorf("%s: %w", op, err)
	}
	if err := s.checkDataset(ctx); err != nil {
		return fmt.Errorf("%s: %w", op, err)
	}
	ok, err := s.client.SetNX(ctx, s.key(u.ID), data, 0).Result()
	if err != nil {
		return wrap(ctx, op, err)
	}
	if !ok {
		return fmt.Errorf("%s: %w", op, store.ErrExists)
	}
	return s.syncActive(ctx, op, u)
}

// Get returns a copy of the record, or store.ErrNotFound.
func (s *Store) Get(ctx context.Context, id string) (*store.Upload, error) {
	op := fmt.Sprintf("get upload %q", id)
	if err := ctx.Err(); err != nil {
		return nil, fmt.Errorf("%s: %w", op, err)
	}
	data, err := s.client.Get(ctx, s.key(id)).Bytes()
	if err != nil {
		return nil, wrap(ctx, op, err)
	}
	return decode(op, data)
}

// Update applies fn to the record under WATCH and saves it in MULTI/EXEC,
// calling fn again on a fresh copy when another writer got in first (at most
// 50 tries). If fn returns an error, nothing is saved and that error is
// returned as is.
func (s *Store) Update(ctx context.Context, id string, fn func(*store.Upload) error) (*store.Upload, error) {
	op := fmt.Sprintf("update upload %q", id)
	key := s.key(id)
	for try := range maxUpdateTries {
		if err := ctx.Err(); err != nil {
			return nil, fmt.Errorf("%s: %w", op, err)
		}
		var (
			u     *store.Upload
			fnErr error
		)
		err := s.client.Watch(ctx, func(tx *redis.Tx) error {
			data, err := tx.Get(ctx, key).Bytes()
			if err != nil {
				return err
			}
			if u, err = decode(op, data); err != nil {
				return err
			}
			if fnErr = fn(u); fnErr != nil {
				return fnErr
			}
			enc, err := json.Marshal(u)
			if err != nil {
				return fmt.Errorf("encode: %w", err)
			}
			_, err = tx.TxPipelined(ctx, func(p redis.Pipeliner) error {
				p.Set(ctx, key, enc, 0)
				return nil
			})
			return err
		}, key)
		switch {
		case fnErr != nil:
			return nil, fnErr
		case errors.Is(err, redis.TxFailedErr):
			if err := backoff(ctx, try); err != nil {
				return nil, fmt.Errorf("%s: %w", op, err)
			}
			continue
		case err != nil:
			return nil, wrap(ctx, op, err)
		}
		if err := s.syncActive(ctx, op, u); err != nil {
			return nil, err
		}
		return u, nil
	}
	return nil, fmt.Errorf("%s: %d write conflicts in a row: %w: %w", op, maxUpdateTries, store.ErrUnavailable, redis.TxFailedErr)
}

// ListActive returns the ids in the active SET (see the package doc).
func (s *Store) ListActive(ctx context.Context) ([]string, error) {
	if err := ctx.Err(); err != nil {
		return nil, fmt.Errorf("list active uploads: %w", err)
	}
	ids, err := s.client.SMembers(ctx, s.activeKey()).Result()
	if err != nil {
		return nil, wrap(ctx, "list active uploads", err)
	}
	return ids, nil
}

// Delete removes a record and its id from the active SET; deleting a missing
// record is not an error.
func (s *Store) Delete(ctx context.Context, id string) error {
	op := fmt.Sprintf("delete upload %q", id)
	if err := ctx.Err(); err != nil {
		return fmt.Errorf("%s: %w", op, err)
	}
	if err := s.client.Del(ctx, s.key(id)).Err(); err != nil {
		return wrap(ctx, op, err)
	}
	return wrap(ctx, op, s.client.SRem(ctx, s.activeKey(), id).Err())
}

// syncActive puts u's id in the active SET or takes it out, after a write.
func (s *Store) syncActive(ctx context.Context, op string, u *store.Upload) error {
	var err error
	if u.State.Terminal() {
		err = s.client.SRem(ctx, s.activeKey(), u.ID).Err()
	} else {
		err = s.client.SAdd(ctx, s.activeKey(), u.ID).Err()
	}
	return wrap(ctx, op+": update active index", err)
}

func decode(op string, data []byte) (*store.Upload, error) {
	var u store.Upload
	if err := json.Unmarshal(data, &u); err != nil {
		return nil, fmt.Errorf("%s: decode: %w", op, err)
	}
	return &u, nil
}

// backoff waits a random time, growing with try and capped, or until ctx ends.
func backoff(ctx context.Context, try int) error {
	ceiling := min(baseBackoff<<min(try, 10), maxBackoff)
	timer := time.NewTimer(rand.N(ceiling) + 1)
	defer timer.Stop()
	select {
	case <-timer.C:
		return nil
	case <-ctx.Done():
		return ctx.Err()
	}
}

// wrap translates a go-redis error: redis.Nil becomes store.ErrNotFound, the
// caller's context errors stay as they are, Redis replies that reject the
// command itself (wrong type, syntax) are wrapped plainly, and everything else
// (network, pool, closed client, LOADING, READONLY, CLUSTERDOWN…) also wraps
// store.ErrUnavailable.
func wrap(ctx context.Context, op string, err error) error {
	var rerr redis.Error
	switch {
	case err == nil:
		return nil
	case errors.Is(err, redis.Nil):
		return fmt.Errorf("%s: %w", op, store.ErrNotFound)
	case ctx.Err() != nil && (errors.Is(err, context.Canceled) || errors.Is(err, context.DeadlineExceeded)):
		return fmt.Errorf("%s: %w", op, err)
	case errors.As(err, &rerr) && !transient(err):
		return fmt.Errorf("%s: %w", op, err)
	default:
		return fmt.Errorf("%s: %w: %w", op, store.ErrUnavailable, err)
	}
}

// transient reports whether a Redis error reply means the server cannot
// serve now but may later.
func transient(err error) bool {
	return redis.IsLoadingError(err) || redis.IsReadOnlyError(err) || redis.IsClusterDownError(err) ||
		redis.IsTryAgainError(err) || redis.IsMasterDownError(err) || redis.IsMaxClientsError(err) ||
		redis.IsNoReplicasError(err) || redis.IsOOMError(err)
}

// redactURL returns rawURL with its password replaced, or a placeholder
// when it does not parse.
func redactURL(rawURL string) string {
	u, err := url.Parse(rawURL)
	if err != nil {
		return "(unparsable URL)"
	}
	return u.Redacted()
}

// scrub removes the password of rawURL, raw and unescaped, from msg. It
// finds the password by hand so that it works on URLs url.Parse rejects.
func scrub(msg, rawURL string) string {
	rest := rawURL
	if _, after, ok := strings.Cut(rest, "://"); ok {
		rest = after
	}
	if i := strings.IndexAny(rest, "/?#"); i >= 0 {
		rest = rest[:i]
	}
	at := strings.LastIndex(rest, "@")
	if at < 0 {
		return msg
	}
	_, pw, ok := strings.Cut(rest[:at], ":")
	if !ok || pw == "" {
		return msg
	}
	msg = strings.ReplaceAll(msg, pw, "xxxxx")
	if dec, err := url.PathUnescape(pw); err == nil && dec != "" {
		msg = strings.ReplaceAll(msg, dec, "xxxxx")
	}
	return msg
}

// Client returns the Redis client the store uses, so other components of
// the same process (the distributed tusd locker) share its connections.
func (s *Store) Client() redis.UniversalClient { return s.client }
