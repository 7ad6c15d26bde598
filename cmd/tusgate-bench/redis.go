package main

import (
	"bytes"
	"context"
	"crypto/rand"
	"errors"
	"fmt"
	"io"
	"net"
	"net/url"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/redis/go-redis/v9"
)

const (
	// redisLockKey marks a Redis logical database as taken. It is the key
	// the integration tests claim databases with, so they leave the
	// benchmark's database alone (and the benchmark waits for theirs).
	redisLockKey = "tusgate-integration:lock"
	// redisLockTTL frees the database if the benchmark dies; it is renewed
	// before every run.
	redisLockTTL = 30 * time.Minute
	// redisClaimTimeout bounds the wait for a database another user holds.
	redisClaimTimeout = 2 * time.Minute
)

// redisDB is the benchmark's claim on one Redis logical database.
type redisDB struct {
	client *redis.Client
	token  string
	addr   string
	url    *url.URL
}

// claimRedis connects to rawURL's database and claims it (waiting while
// someone else holds it).
func claimRedis(ctx context.Context, rawURL string) (*redisDB, error) {
	opts, err := redis.ParseURL(rawURL)
	if err != nil {
		return nil, fmt.Errorf("--redis-url: %w", err)
	}
	u, err := url.Parse(rawURL)
	if err != nil {
		return nil, fmt.Errorf("--redis-url: %w", err)
	}
	client := redis.NewClient(opts)
	db := &redisDB{client: client, token: rand.Text(), addr: opts.Addr, url: u}
	ctx, cancel := context.WithTimeout(ctx, redisClaimTimeout)
	defer cancel()
	tick := time.NewTicker(200 * time.Millisecond)
	defer tick.Stop()
	for {
		ok, err := client.SetNX(ctx, redisLockKey, db.token, redisLockTTL).Result()
		if err != nil {
			_ = client.Close()
			return nil, fmt.Errorf("claim Redis database %d at %s: %w", opts.DB, opts.Addr, err)
		}
		if ok {
			return db, nil
		}
		select {
		case <-tick.C:
		case <-ctx.Done():
			_ = client.Close()
			return nil, fmt.Errorf("claim Redis database %d at %s: still held by another user (key %s): %w", opts.DB, opts.Addr, redisLockKey, ctx.Err())
		}
	}
}

// reset empties the database (FLUSHDB) and renews the claim, atomically.
func (d *redisDB) reset(ctx context.Context) error {
	err := d.client.Watch(ctx, func(tx *redis.Tx) error {
		owner, err := tx.Get(ctx, redisLockKey).Result()
		if err != nil && !errors.Is(err, redis.Nil) {
			return err
		}
		if owner != d.token {
			return errors.New("the database was claimed by someone else meanwhile")
		}
		_, err = tx.TxPipelined(ctx, func(p redis.Pipeliner) error {
			p.FlushDB(ctx)
			p.Set(ctx, redisLockKey, d.token, redisLockTTL)
			return nil
		})
		return err
	}, redisLockKey)
	if err != nil {
		return fmt.Errorf("flush Redis database: %w", err)
	}
	return nil
}

// release empties the database if it is still ours (which frees it) and
// closes the client.
func (d *redisDB) release(ctx context.Context) error {
	err := d.client.Watch(ctx, func(tx *redis.Tx) error {
		owner, err := tx.Get(ctx, redisLockKey).Result()
		if err != nil || owner != d.token {
			return nil // gone or not ours: nothing to free
		}
		_, err = tx.TxPipelined(ctx, func(p redis.Pipeliner) error {
			p.FlushDB(ctx)
			return nil
		})
		return err
	}, redisLockKey)
	return errors.Join(err, d.client.Close())
}

// serverCommands returns the server-wide total_commands_processed (every
// client and database of the server, the benchmark's own INFO included).
func (d *redisDB) serverCommands(ctx context.Context) (int64, error) {
	info, err := d.client.Info(ctx, "stats").Result()
	if err != nil {
		return 0, fmt.Errorf("redis INFO stats: %w", err)
	}
	for line := range strings.SplitSeq(info, "\n") {
		if v, ok := strings.CutPrefix(strings.TrimSpace(line), "total_commands_processed:"); ok {
			return strconv.ParseInt(v, 10, 64)
		}
	}
	return 0, errors.New("redis INFO stats: no total_commands_processed")
}

// proxiedURL is the database's URL with its host replaced by addr.
func (d *redisDB) proxiedURL(addr string) string {
	u := *d.url
	u.Host = addr
	return u.String()
}

// redisCounter is a TCP proxy to Redis that counts the commands passing
// through it, so the benchmark counts exactly one tusgate's commands while
// other programs use the same server.
type redisCounter struct {
	ln     net.Listener
	target string
	cmds   atomic.Int64

	mu     sync.Mutex
	conns  map[net.Conn]struct{}
	closed bool
	wg     sync.WaitGroup
}

// startRedisCounter listens on 127.0.0.1 and proxies to target.
func startRedisCounter(target string) (*redisCounter, error) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return nil, fmt.Errorf("redis counting proxy: %w", err)
	}
	c := &redisCounter{ln: ln, target: target, conns: map[net.Conn]struct{}{}}
	c.wg.Add(1)
	go c.accept()
	return c, nil
}

// Addr is the proxy's address.
func (c *redisCounter) Addr() string { return c.ln.Addr().String() }

// Commands is the number of commands proxied so far.
func (c *redisCounter) Commands() int64 { return c.cmds.Load() }

// Close stops the proxy, closes every connection and waits for its
// goroutines.
func (c *redisCounter) Close() {
	_ = c.ln.Close()
	c.mu.Lock()
	c.closed = true
	for conn := range c.conns {
		_ = conn.Close()
	}
	c.mu.Unlock()
	c.wg.Wait()
}

// track registers conn for Close; it reports false once closed.
func (c *redisCounter) track(conn net.Conn) bool {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.closed {
		_ = conn.Close()
		return false
	}
	c.conns[conn] = struct{}{}
	return true
}

func (c *redisCounter) accept() {
	defer c.wg.Done()
	for {
		conn, err := c.ln.Accept()
		if err != nil {
			return
		}
		if !c.track(conn) {
			return
		}
		c.wg.Add(1)
		go c.serve(conn)
	}
}

// serve proxies one client connection.
func (c *redisCounter) serve(client net.Conn) {
	defer c.wg.Done()
	defer client.Close()
	upstream, err := net.DialTimeout("tcp", c.target, 5*time.Second)
	if err != nil {
		return
	}
	if !c.track(upstream) {
		return
	}
	defer upstream.Close()
	done := make(chan struct{})
	go func() {
		defer close(done)
		_, _ = io.Copy(client, upstream)
		_ = client.Close()
	}()
	var rc respCounter
	buf := make([]byte, 32<<10)
	for {
		n, err := client.Read(buf)
		if n > 0 {
			c.cmds.Add(int64(rc.feed(buf[:n])))
			if _, werr := upstream.Write(buf[:n]); werr != nil {
				break
			}
		}
		if err != nil {
			break
		}
	}
	_ = upstream.Close()
	<-done
}

// respCounter counts the commands in a stream of RESP requests (arrays of
// bulk strings, as clients send them; an inline command counts as one).
type respCounter struct {
	line []byte // the header line read so far
	args int    // bulk strings left in the current command
	skip int64  // payload bytes (with CRLF) left in the current bulk string
}

// feed consumes b and returns the number of commands that started in it.
func (r *respCounter) feed(b []byte) int {
	cmds := 0
	for len(b) > 0 {
		if r.skip > 0 {
			n := min(r.skip, int64(len(b)))
			r.skip -= n
			b = b[n:]
			continue
		}
		i := bytes.IndexByte(b, '\n')
		if i < 0 {
			r.line = append(r.line, b...)
			return cmds
		}
		r.line = append(r.line, b[:i]...)
		b = b[i+1:]
		line := bytes.TrimSuffix(r.line, []byte("\r"))
		switch {
		case r.args > 0: // "$LEN"
			r.args--
			if len(line) > 1 && line[0] == '$' {
				if n, err := strconv.ParseInt(string(line[1:]), 10, 64); err == nil && n >= 0 {
					r.skip = n + 2
				}
			}
		case len(line) > 1 && line[0] == '*': // "*ARGS"
			if n, err := strconv.Atoi(string(line[1:])); err == nil && n > 0 {
				r.args = n
				cmds++
			}
		case len(bytes.TrimSpace(line)) > 0: // inline command
			cmds++
		}
		r.line = r.line[:0]
	}
	return cmds
}
