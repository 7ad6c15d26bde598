package redislock_test

import (
	"bufio"
	"context"
	"crypto/rand"
	"fmt"
	"net"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"
)

// privateRedis is a redis-server of its own for one test, on a Unix socket:
// nothing else talks to it, so the commands it sees are the test's.
type privateRedis struct {
	sock   string
	cmd    *exec.Cmd
	exited chan struct{}
}

// startPrivateRedis starts a redis-server without persistence on a Unix
// socket in a temporary directory; it is killed when t ends. It skips t
// when redis-server is not on PATH.
func startPrivateRedis(t testing.TB) *privateRedis {
	t.Helper()
	if _, err := exec.LookPath("redis-server"); err != nil {
		t.Skipf("redis-server not on PATH: %v", err)
	}
	dir := t.TempDir()
	cmd := exec.Command("redis-server",
		"--port", "0",
		"--unixsocket", filepath.Join(dir, "redis.sock"),
		"--dir", dir,
		"--save", "",
		"--appendonly", "no",
		"--logfile", filepath.Join(dir, "redis.log"),
	)
	dieWithParent(cmd)
	if err := cmd.Start(); err != nil {
		t.Fatalf("start redis-server: %v", err)
	}
	exited := make(chan struct{})
	go func() { // owned by the cleanup below, which waits for it
		_ = cmd.Wait()
		close(exited)
	}()
	r := &privateRedis{sock: filepath.Join(dir, "redis.sock"), cmd: cmd, exited: exited}
	// After t.TempDir: the process is gone before its directory is removed.
	t.Cleanup(r.kill)
	client := r.client(t)
	waitFor(t, 10*time.Second, "the private redis-server to answer PING", func() bool {
		select {
		case <-exited:
			t.Fatalf("redis-server exited at start")
		default:
		}
		ctx, cancel := context.WithTimeout(t.Context(), time.Second)
		defer cancel()
		return client.Ping(ctx).Err() == nil
	})
	return r
}

// kill kills the server and waits for its end.
func (r *privateRedis) kill() {
	_ = r.cmd.Process.Kill()
	<-r.exited
}

// client returns a new client of r, closed when t ends.
func (r *privateRedis) client(t testing.TB) *redis.Client {
	t.Helper()
	client := redis.NewClient(&redis.Options{Network: "unix", Addr: r.sock, ContextTimeoutEnabled: true})
	t.Cleanup(func() { _ = client.Close() })
	return client
}

// monitor counts the commands that clients send to a private Redis, seen
// through MONITOR; commands that scripts run inside EVAL/EVALSHA are not
// counted.
type monitor struct {
	t      testing.TB
	conn   net.Conn
	rd     *bufio.Reader
	marker *redis.Client
}

// monitor starts watching r. Only commands sent after it returns count.
func (r *privateRedis) monitor(t testing.TB) *monitor {
	t.Helper()
	conn, err := net.Dial("unix", r.sock)
	if err != nil {
		t.Fatalf("dial redis for MONITOR: %v", err)
	}
	t.Cleanup(func() { _ = conn.Close() })
	m := &monitor{t: t, conn: conn, rd: bufio.NewReader(conn), marker: r.client(t)}
	if _, err := fmt.Fprint(conn, "MONITOR\r\n"); err != nil {
		t.Fatalf("MONITOR: %v", err)
	}
	if line := m.readLine(); line != "+OK" {
		t.Fatalf("MONITOR: got %q, want +OK", line)
	}
	m.count() // the marker client's connection set-up does not count
	return m
}

// count returns the number of commands clients sent since the last count
// (or since monitor started). It sends a marker command and reads up to it:
// Redis shows commands in the order it runs them.
func (m *monitor) count() int {
	m.t.Helper()
	marker := rand.Text()
	if err := m.marker.Echo(m.t.Context(), marker).Err(); err != nil {
		m.t.Fatalf("ECHO marker: %v", err)
	}
	n := 0
	for {
		line := m.readLine()
		switch {
		case strings.Contains(line, marker):
			return n
		case strings.Contains(line, " lua]"), !strings.HasPrefix(line, "+"):
			// A command run by a script, or not a command line.
		default:
			n++
		}
	}
}

// readLine reads one line of the MONITOR stream, without its CRLF.
func (m *monitor) readLine() string {
	m.t.Helper()
	if err := m.conn.SetReadDeadline(time.Now().Add(10 * time.Second)); err != nil {
		m.t.Fatalf("MONITOR: %v", err)
	}
	line, err := m.rd.ReadString('\n')
	if err != nil {
		m.t.Fatalf("read MONITOR: %v", err)
	}
	return strings.TrimRight(line, "\r\n")
}
