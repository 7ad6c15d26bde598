package redisstore_test

import (
	"context"
	"errors"
	"net"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/tusgate/tusgate/internal/redistest"

	"github.com/tusgate/tusgate/store"
	"github.com/tusgate/tusgate/store/redisstore"
	"github.com/tusgate/tusgate/store/storetest"
)

func newClient(t *testing.T) *redis.Client { return redistest.Client(t) }

func newPrefix(t *testing.T, client *redis.Client) string { return redistest.Prefix(t, client) }

func redisAddr() string { return redistest.Addr() }

func TestConformance(t *testing.T) {
	client := newClient(t)
	storetest.Run(t, func(t *testing.T) store.Store {
		return redisstore.New(client, newPrefix(t, client))
	})
}

func TestKeys(t *testing.T) {
	client := newClient(t)
	prefix := newPrefix(t, client)
	s := redisstore.New(client, prefix)
	if err := s.Create(t.Context(), &store.Upload{ID: "abc", State: store.StateReceiving}); err != nil {
		t.Fatalf("Create: %v", err)
	}
	for _, key := range []string{prefix + ":upload:{abc}", prefix + ":active"} {
		if n, err := client.Exists(t.Context(), key).Result(); err != nil || n != 1 {
			t.Errorf("EXISTS %s = %d, %v; want 1", key, n, err)
		}
	}
}

func TestOpen(t *testing.T) {
	client := newClient(t)
	prefix := newPrefix(t, client)
	s, err := redisstore.Open(t.Context(), "redis://"+redisAddr()+"/0", prefix)
	if err != nil {
		t.Fatalf("Open: %v", err)
	}
	if err := s.Create(t.Context(), &store.Upload{ID: "opened"}); err != nil {
		t.Fatalf("Create: %v", err)
	}
	if err := s.Close(); err != nil {
		t.Fatalf("Close: %v", err)
	}
	if err := s.Ping(t.Context()); !errors.Is(err, store.ErrUnavailable) {
		t.Errorf("Ping after Close: got %v, want ErrUnavailable (Close must close the client Open made)", err)
	}
	// A store made with New leaves its client open.
	if err := redisstore.New(client, prefix).Close(); err != nil {
		t.Fatalf("Close: %v", err)
	}
	if err := client.Ping(t.Context()).Err(); err != nil {
		t.Errorf("client after New(...).Close(): %v, want it still open", err)
	}
}

// closedAddr returns a 127.0.0.1 address nothing listens on.
func closedAddr(t *testing.T) string {
	t.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatalf("listen: %v", err)
	}
	addr := l.Addr().String()
	if err := l.Close(); err != nil {
		t.Fatalf("close listener: %v", err)
	}
	return addr
}

func TestUnreachable(t *testing.T) {
	addr := closedAddr(t)
	// No retries here; Open below shows the default retries stay bounded too.
	client := redis.NewClient(&redis.Options{Addr: addr, ContextTimeoutEnabled: true, MaxRetries: -1, DialerRetries: 1})
	t.Cleanup(func() { _ = client.Close() })
	s := redisstore.New(client, "")
	calls := []struct {
		name string
		call func(context.Context) error
	}{
		{"Ping", s.Ping},
		{"Get", func(ctx context.Context) error { _, err := s.Get(ctx, "x"); return err }},
		{"Update", func(ctx context.Context) error {
			_, err := s.Update(ctx, "x", func(*store.Upload) error { return nil })
			return err
		}},
		{"Open", func(ctx context.Context) error {
			_, err := redisstore.Open(ctx, "redis://:hunter2pw@"+addr+"/0", "")
			if err != nil && strings.Contains(err.Error(), "hunter2pw") {
				t.Errorf("Open error %q contains the password", err)
			}
			return err
		}},
	}
	for _, c := range calls {
		t.Run(c.name, func(t *testing.T) {
			start := time.Now()
			err := c.call(t.Context())
			if !errors.Is(err, store.ErrUnavailable) {
				t.Errorf("got %v, want ErrUnavailable", err)
			}
			if d := time.Since(start); d > 5*time.Second {
				t.Errorf("took %v, want a quick failure", d)
			}
		})
	}
}

func TestOpenBadURLHidesPassword(t *testing.T) {
	const pw = "s3cretPassw0rd"
	tests := []string{
		"redis://user:" + pw + "@127.0.0.1:notaport/0",
		"redis://:" + pw + "@127.0.0.1:6379/notadb",
		"redis://:" + pw + "@127.0.0.1:6379/0/extra",
		"redis://:" + pw + "@127.0.0.1:6379/0?nosuchoption=1",
		"http://:" + pw + "@127.0.0.1:6379",
		"redis://:" + pw + "%zz@127.0.0.1:6379",
		"redis://:" + pw + "@[::1:6379",
		"redis://:" + pw + "@127.0.0.1:6379/0\x7f",
	}
	for _, raw := range tests {
		t.Run("", func(t *testing.T) {
			s, err := redisstore.Open(t.Context(), raw, "")
			if err == nil {
				s.Close()
				t.Fatalf("Open succeeded, want an error")
			}
			if strings.Contains(err.Error(), pw) || strings.Contains(err.Error(), "s3cret") {
				t.Errorf("error %q contains the password", err)
			}
		})
	}
}

func TestPingDetectsLostDataset(t *testing.T) {
	client := newClient(t)
	prefix := newPrefix(t, client)
	s := redisstore.New(client, prefix)
	if err := s.Ping(t.Context()); err != nil {
		t.Fatalf("first ping: %v", err)
	}
	if err := s.Ping(t.Context()); err != nil {
		t.Fatalf("second ping: %v", err)
	}
	// A second store on the same dataset adopts the marker.
	if err := redisstore.New(client, prefix).Ping(t.Context()); err != nil {
		t.Fatalf("ping of a second store: %v", err)
	}
	// What a Redis restart without persistence looks like to the store.
	if err := client.Del(t.Context(), prefix+":dataset").Err(); err != nil {
		t.Fatal(err)
	}
	err := s.Ping(t.Context())
	if !errors.Is(err, store.ErrDatasetLost) || !errors.Is(err, store.ErrUnavailable) {
		t.Fatalf("ping after the dataset vanished: got %v, want ErrDatasetLost and ErrUnavailable", err)
	}
	if !strings.Contains(err.Error(), "persistence") {
		t.Errorf("error %q does not tell the operator why", err)
	}
	// New uploads are refused rather than tracked on a dataset that lost
	// the others.
	err = s.Create(t.Context(), storetest.FullUpload("after-loss"))
	if !errors.Is(err, store.ErrDatasetLost) || !errors.Is(err, store.ErrUnavailable) {
		t.Fatalf("create after the dataset vanished: got %v, want ErrDatasetLost and ErrUnavailable", err)
	}
}

// sremGate is a go-redis hook that holds SREM commands, once armed, until
// released: it lets a test run another writer between a record write and
// the update of the active SET that follows it.
type sremGate struct {
	armed   chan struct{} // closed: hold the next SREM
	reached chan struct{} // closed by the held SREM
	release chan struct{} // closed by the test
}

func (g *sremGate) DialHook(next redis.DialHook) redis.DialHook { return next }

func (g *sremGate) ProcessPipelineHook(next redis.ProcessPipelineHook) redis.ProcessPipelineHook {
	return next
}

func (g *sremGate) ProcessHook(next redis.ProcessHook) redis.ProcessHook {
	return func(ctx context.Context, cmd redis.Cmder) error {
		select {
		case <-g.armed:
			if strings.EqualFold(cmd.Name(), "srem") {
				close(g.reached)
				select {
				case <-g.release:
				case <-ctx.Done():
					return ctx.Err()
				}
			}
		default:
		}
		return next(ctx, cmd)
	}
}

// TestActiveIndexRace replays the one interleaving that could drop a record
// with a pending webhook event from the active SET: the acknowledgement of a
// failed upload's last event is saved, the upload is terminated (queuing
// upload.terminated; SADD) by another instance, and only then does the
// acknowledgement's SREM run. The store must notice and put the id back.
func TestActiveIndexRace(t *testing.T) {
	gated := newClient(t)
	prefix := newPrefix(t, gated)
	gate := &sremGate{armed: make(chan struct{}), reached: make(chan struct{}), release: make(chan struct{})}
	gated.AddHook(gate)
	a := redisstore.New(gated, prefix)
	b := redisstore.New(newClient(t), prefix)

	now := time.Now()
	u := &store.Upload{ID: "raced", State: store.StateReceiving}
	u.EnableWebhooks(now)
	if err := u.Fail(store.ReasonTokenRejected, "401", now); err != nil {
		t.Fatal(err)
	}
	if err := a.Create(t.Context(), u); err != nil {
		t.Fatalf("Create: %v", err)
	}
	close(gate.armed)
	done := make(chan error, 1)
	go func() {
		_, err := a.Update(t.Context(), "raced", func(u *store.Upload) error {
			u.Outbox = nil // every event acknowledged
			return nil
		})
		done <- err
	}()
	select {
	case <-gate.reached:
	case err := <-done:
		t.Fatalf("Update returned (%v) without removing the id from the active SET", err)
	}
	if _, err := b.Update(t.Context(), "raced", func(u *store.Upload) error { return u.Terminate(now) }); err != nil {
		t.Fatalf("Terminate: %v", err)
	}
	close(gate.release)
	if err := <-done; err != nil {
		t.Fatalf("Update: %v", err)
	}
	ids, err := b.ListActive(t.Context())
	if err != nil {
		t.Fatalf("ListActive: %v", err)
	}
	if !slices.Contains(ids, "raced") {
		t.Errorf("ListActive = %v: the terminated upload with a pending upload.terminated event is missing", ids)
	}
}

// TestOutboxSurvivesNewStore checks that a pending event, and the listing of
// its terminal record, survive a new process (a new client and store on the
// same keys).
func TestOutboxSurvivesNewStore(t *testing.T) {
	prefix := newPrefix(t, newClient(t))
	client := newClient(t)
	first := redisstore.New(client, prefix)
	now := time.Now()
	u := &store.Upload{ID: "kept", State: store.StateReceiving}
	u.EnableWebhooks(now)
	if err := first.Create(t.Context(), u); err != nil {
		t.Fatalf("Create: %v", err)
	}
	if _, err := first.Update(t.Context(), "kept", func(u *store.Upload) error {
		return u.Fail(store.ReasonDataLost, "gone", now)
	}); err != nil {
		t.Fatalf("Fail: %v", err)
	}
	if err := client.Close(); err != nil {
		t.Fatal(err)
	}
	second := redisstore.New(newClient(t), prefix)
	ids, err := second.ListActive(t.Context())
	if err != nil || !slices.Equal(ids, []string{"kept"}) {
		t.Fatalf("ListActive in the new store = %v, %v; want [kept]", ids, err)
	}
	got, err := second.Get(t.Context(), "kept")
	if err != nil {
		t.Fatalf("Get: %v", err)
	}
	if len(got.Outbox) != 2 || got.Outbox[0].ID != u.Outbox[0].ID || got.Outbox[1].Type != store.EventUploadFailed {
		t.Errorf("outbox in the new store = %+v; want upload.created (same id), upload.failed", got.Outbox)
	}
}
