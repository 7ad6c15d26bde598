// Package redisstore is the shared state store: a store.Store on Redis (a
// single node, Sentinel or Cluster, through go-redis's UniversalClient), so
// several gateway instances can share upload state. Open connects to a single
// node, OpenCluster to a Redis Cluster.
//
// Keys, with P the prefix:
//
//	P:upload:{<id>}   the record, a JSON string. The hash tag keeps every key
//	                  of one upload in one Cluster slot.
//	P:active          a SET of the ids of active uploads (non-terminal, or
//	                  holding webhook events: store.Upload.Active).
//	P:dataset         the dataset marker: a random value (see Store.Ping).
//	P:dataset:{m…}    on a Cluster only, 16 more markers whose hash tags put
//	                  them in the slots 0, 1024, 2048, …, 15360.
//
// Every change of a record is atomic (SET NX for Create, WATCH + MULTI for
// Update). The active SET lives in another slot, so it cannot join that
// transaction: it is updated right after each record write and is only a hint
// for recovery. A crash between the two writes can leave it stale until the
// next write of that record re-syncs it; callers must check the state of each
// record they get from ListActive.
//
// # Redis Cluster
//
// Every transaction touches one key (the record), so no command or
// transaction ever spans two slots; the active SET and the markers are
// written and read by commands of their own. go-redis follows MOVED and ASK
// redirections and retries CLUSTERDOWN and TRYAGAIN a few times; an Update
// whose transaction still meets a redirection (its slot migrating: WATCH
// cannot follow ASK) is retried like a write conflict, so it completes once
// the migration does. What remains — a master down, the cluster down, a
// redirection that outlived the retries — is returned wrapping
// store.ErrUnavailable, so callers retry later.
//
// A command on the slots of a master whose port refuses connections fails
// within about two seconds (go-redis redials and retries a few times); one on
// a master that hangs is bounded by the client's timeouts and the caller's
// context. Uploads on the other masters can still be read, but Create needs
// every marker's master, and Create, Update and Delete also need the master
// of P:active (an Update then returns an error although its record was saved:
// the next write re-syncs the SET). Soon after, the cluster declares the
// master failed (cluster-node-timeout) and, with the default
// cluster-require-full-coverage, stops serving every slot: every call then
// fails with CLUSTERDOWN, which is store.ErrUnavailable too.
//
// Loss detection: Ping and Create compare every marker with the value the
// store adopted at its first successful Ping. On a Cluster, a master that
// restarts empty (no persistence and no replica to fail over to), or that is
// flushed, loses the markers in its slots, so the loss is detected as long as
// that master serves at least one of the 16 marker slots: with slots split
// evenly that holds for up to 16 masters. A master serving none of them (more
// than 16 masters, or an uneven resharding) can lose its records unnoticed.
// Markers move with their slots when slots are resharded, and a replica that
// takes over has them, so neither is mistaken for a loss. As on a single node,
// a loss while no gateway instance is running is not detected: a store
// adopts the markers it finds (creating the missing ones) at its first Ping.
// Set maxmemory-policy noeviction: an evicted record is not detected either.
package redisstore

import (
	"context"
	crand "crypto/rand"
	"encoding/json"
	"errors"
	"fmt"
	"math/rand/v2"
	"net/url"
	"slices"
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

// markerTags are hash tags of the slots 0, 1024, 2048, …, 15360 (CRC16 of
// the tag modulo 16384), in that order: on a Redis Cluster the store keeps a
// dataset marker in each (see the package doc).
var markerTags = [...]string{
	"m3433", "m46910", "m15229", "m27900", "m1708", "m13947", "m12660", "m41994",
	"m33898", "m3655", "m2972", "m3298", "m853", "m21008", "m19109", "m12406",
}

// Store is a store.Store on Redis. It is safe for concurrent use.
type Store struct {
	client  redis.UniversalClient
	cluster *redis.ClusterClient // client, when it is a Cluster client
	prefix  string
	owned   bool     // Close closes client
	markers []string // keys of the dataset markers

	mu      sync.Mutex
	dataset []string // the markers' values seen by the first successful Ping; nil before
}

var _ store.Store = (*Store)(nil)

// New returns a store that uses client and keys starting with prefix
// (DefaultPrefix when empty). Close leaves client open: its owner closes it.
func New(client redis.UniversalClient, prefix string) *Store {
	if prefix == "" {
		prefix = DefaultPrefix
	}
	s := &Store{client: client, prefix: prefix}
	s.markers = []string{s.datasetKey()}
	if cc, ok := client.(*redis.ClusterClient); ok {
		s.cluster = cc
		for _, tag := range markerTags {
			s.markers = append(s.markers, s.datasetKey()+":{"+tag+"}")
		}
	}
	return s
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
	return open(ctx, redis.NewClient(opts), rawURL, prefix)
}

// OpenCluster connects to the Redis Cluster at rawURL, as
// redis.ParseClusterURL reads it: redis:// or rediss://, one node in the
// host part and optionally more in addr parameters
// (redis://user:pass@10.0.0.1:6379?addr=10.0.0.2:6379&addr=10.0.0.3:6379;
// one reachable node is enough to discover the others). It pings every
// master and returns a store whose Close closes the client. Errors never
// contain the URL's password; an unreachable cluster gives an error wrapping
// store.ErrUnavailable, a server that is not in cluster mode a plain error
// ("cluster support disabled").
func OpenCluster(ctx context.Context, rawURL, prefix string) (*Store, error) {
	opts, err := redis.ParseClusterURL(rawURL)
	if err != nil {
		return nil, fmt.Errorf("redis cluster URL %s: %s", redactURL(rawURL), scrub(err.Error(), rawURL))
	}
	opts.ContextTimeoutEnabled = true
	return open(ctx, redis.NewClusterClient(opts), rawURL, prefix)
}

// open makes a store that owns client and pings it.
func open(ctx context.Context, client redis.UniversalClient, rawURL, prefix string) (*Store, error) {
	s := New(client, prefix)
	s.owned = true
	if s.cluster == nil {
		// A Cluster node answers a single-node client only for its own
		// slots, and MOVED for the others: refuse it now rather than
		// fail on two uploads in three. An error (not a Cluster node, or
		// CLUSTER not allowed) leaves the decision to Ping.
		if info, err := client.ClusterInfo(ctx).Result(); err == nil && strings.Contains(info, "cluster_state:") {
			_ = client.Close()
			return nil, fmt.Errorf("connect to redis %s: the server is a Redis Cluster node: use a cluster URL (OpenCluster)", redactURL(rawURL))
		}
	}
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
	if want == nil {
		return nil
	}
	got, err := s.readMarkers(ctx)
	if err != nil {
		return wrap(ctx, "read redis dataset markers", err)
	}
	return s.compareMarkers(want, got)
}

// readMarkers returns the value of each marker, "" for a missing one.
func (s *Store) readMarkers(ctx context.Context) ([]string, error) {
	cmds, err := s.client.Pipelined(ctx, func(p redis.Pipeliner) error {
		for _, key := range s.markers {
			p.Get(ctx, key)
		}
		return nil
	})
	if err != nil && !errors.Is(err, redis.Nil) {
		return nil, err
	}
	got := make([]string, len(cmds))
	for i, cmd := range cmds {
		v, err := cmd.(*redis.StringCmd).Result()
		switch {
		case errors.Is(err, redis.Nil):
		case err != nil:
			return nil, err
		default:
			got[i] = v
		}
	}
	if len(got) != len(s.markers) {
		return nil, fmt.Errorf("read %d dataset markers, got %d replies", len(s.markers), len(got))
	}
	return got, nil
}

// compareMarkers returns the dataset-lost error unless got equals want.
func (s *Store) compareMarkers(want, got []string) error {
	var lost []string
	for i, key := range s.markers {
		if got[i] != want[i] {
			lost = append(lost, key)
		}
	}
	if len(lost) == 0 {
		return nil
	}
	where := "Redis"
	if s.cluster != nil {
		where = "a Redis Cluster master"
	}
	return fmt.Errorf("redis dataset marker %s is gone or changed (%s restarted without persistence, was flushed, or points elsewhere): every upload it tracked is lost; restart tusgate after fixing Redis persistence: %w",
		strings.Join(lost, ", "), where, errors.Join(store.ErrDatasetLost, store.ErrUnavailable))
}

// ping checks that Redis answers: on a Cluster, every master.
func (s *Store) ping(ctx context.Context) error {
	if s.cluster != nil {
		return s.cluster.ForEachMaster(ctx, func(ctx context.Context, node *redis.Client) error {
			if err := node.Ping(ctx).Err(); err != nil {
				return fmt.Errorf("master %s: %w", node.Options().Addr, err)
			}
			return nil
		})
	}
	return s.client.Ping(ctx).Err()
}

// Ping reports whether Redis (every master of a Cluster) answers with the
// dataset this store started with. The first Ping creates (or adopts) random
// marker keys (see the package doc); if a later Ping finds one missing or
// changed, Redis lost its data — typically a restart without persistence —
// and Ping returns an error wrapping store.ErrDatasetLost and
// store.ErrUnavailable.
func (s *Store) Ping(ctx context.Context) error {
	if err := s.ping(ctx); err != nil {
		return wrap(ctx, "ping redis", err)
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.dataset == nil {
		fresh := crand.Text()
		_, err := s.client.Pipelined(ctx, func(p redis.Pipeliner) error {
			for _, key := range s.markers {
				p.SetNX(ctx, key, fresh, 0)
			}
			return nil
		})
		if err != nil {
			return wrap(ctx, "mark redis dataset", err)
		}
	}
	got, err := s.readMarkers(ctx)
	if err != nil {
		return wrap(ctx, "read redis dataset markers", err)
	}
	if s.dataset == nil {
		if i := slices.Index(got, ""); i >= 0 {
			return fmt.Errorf("redis dataset marker %s vanished right after it was set: %w", s.markers[i], store.ErrUnavailable)
		}
		s.dataset = got
		return nil
	}
	return s.compareMarkers(s.dataset, got)
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
// calling fn again on a fresh copy when another writer got in first or when
// the record's Cluster slot moved under the transaction (at most 50 tries in
// all). If fn returns an error, nothing is saved and that error is returned
// as is.
func (s *Store) Update(ctx context.Context, id string, fn func(*store.Upload) error) (*store.Upload, error) {
	op := fmt.Sprintf("update upload %q", id)
	key := s.key(id)
	var lastErr error // of the last try that met a conflict
	for try := range maxUpdateTries {
		if err := ctx.Err(); err != nil {
			return nil, fmt.Errorf("%s: %w", op, err)
		}
		var (
			u     *store.Upload
			fnErr error
			saved bool
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
			saved = err == nil
			return err
		}, key)
		if err == nil && !saved {
			// go-redis' ClusterClient.Watch (v9.23.0) returns nil when it
			// runs out of redirections: the transaction never ran.
			err = errNotRun
		}
		switch {
		case fnErr != nil:
			return nil, fnErr
		case errors.Is(err, redis.TxFailedErr) || moving(err):
			lastErr = err
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
	return nil, fmt.Errorf("%s: %d write conflicts or slot moves in a row: %w: %w", op, maxUpdateTries, store.ErrUnavailable, lastErr)
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

// syncActive puts u's id in the active SET or takes it out, after a write
// (store.Upload.Active). After taking it out, it reads the record again and
// puts the id back if a concurrent write made it active meanwhile (a
// terminal upload that queued a webhook event, e.g. upload.terminated after
// upload.failed): that writer's SADD may have come before this SREM.
func (s *Store) syncActive(ctx context.Context, op string, u *store.Upload) error {
	op += ": update active index"
	if u.Active() {
		return wrap(ctx, op, s.client.SAdd(ctx, s.activeKey(), u.ID).Err())
	}
	if err := s.client.SRem(ctx, s.activeKey(), u.ID).Err(); err != nil {
		return wrap(ctx, op, err)
	}
	data, err := s.client.Get(ctx, s.key(u.ID)).Bytes()
	if errors.Is(err, redis.Nil) {
		return nil
	}
	if err != nil {
		return wrap(ctx, op, err)
	}
	now, err := decode(op, data)
	if err != nil {
		return err
	}
	if now.Active() {
		return wrap(ctx, op, s.client.SAdd(ctx, s.activeKey(), u.ID).Err())
	}
	return nil
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
// command itself (wrong type, syntax, CROSSSLOT) are wrapped plainly, and
// everything else (network, pool, closed client, LOADING, READONLY,
// CLUSTERDOWN, TRYAGAIN, a MOVED or ASK that go-redis' redirections did not
// resolve…) also wraps store.ErrUnavailable.
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
		redis.IsMasterDownError(err) || redis.IsMaxClientsError(err) ||
		redis.IsNoReplicasError(err) || redis.IsOOMError(err) || moving(err)
}

// errNotRun stands for a transaction that go-redis gave up on without an
// error (see Update).
var errNotRun = errors.New("transaction not run: the slot kept moving (MOVED/ASK)")

// moving reports whether err says that the key's slot is moving or has
// moved between Cluster nodes (MOVED, ASK, TRYAGAIN): the same command
// works once the client follows the new layout.
func moving(err error) bool {
	_, moved := redis.IsMovedError(err)
	_, ask := redis.IsAskError(err)
	return moved || ask || redis.IsTryAgainError(err) || errors.Is(err, errNotRun)
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
