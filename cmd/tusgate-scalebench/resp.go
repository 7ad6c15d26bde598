package main

import (
	"bufio"
	"errors"
	"fmt"
	"io"
	"net"
	"strconv"
	"strings"
	"time"
)

// respConn is a minimal Redis connection for the benchmark's own commands
// (PING, INFO). It sends nothing but the commands it is asked to, so the
// benchmark knows exactly how many of the server's processed commands are
// its own (go-redis would add HELLO and CLIENT SETINFO on every connect).
type respConn struct {
	conn net.Conn
	r    *bufio.Reader
}

// dialRESP connects to the Redis server at addr.
func dialRESP(addr string) (*respConn, error) {
	conn, err := net.DialTimeout("tcp", addr, 5*time.Second)
	if err != nil {
		return nil, fmt.Errorf("connect to redis %s: %w", addr, err)
	}
	return &respConn{conn: conn, r: bufio.NewReader(conn)}, nil
}

// Close closes the connection.
func (c *respConn) Close() error { return c.conn.Close() }

// do sends one command and returns its reply: a simple or bulk string, or
// an integer as text. A Redis error reply is returned as an error.
func (c *respConn) do(args ...string) (string, error) {
	var b strings.Builder
	fmt.Fprintf(&b, "*%d\r\n", len(args))
	for _, a := range args {
		fmt.Fprintf(&b, "$%d\r\n%s\r\n", len(a), a)
	}
	if err := c.conn.SetDeadline(time.Now().Add(10 * time.Second)); err != nil {
		return "", err
	}
	if _, err := io.WriteString(c.conn, b.String()); err != nil {
		return "", fmt.Errorf("redis %s: %w", args[0], err)
	}
	line, err := c.r.ReadString('\n')
	if err != nil {
		return "", fmt.Errorf("redis %s: %w", args[0], err)
	}
	line = strings.TrimRight(line, "\r\n")
	if line == "" {
		return "", fmt.Errorf("redis %s: empty reply", args[0])
	}
	switch line[0] {
	case '+', ':':
		return line[1:], nil
	case '-':
		return "", fmt.Errorf("redis %s: %s", args[0], line[1:])
	case '$':
		n, err := strconv.Atoi(line[1:])
		if err != nil || n < 0 {
			return "", fmt.Errorf("redis %s: bulk reply %q", args[0], line)
		}
		buf := make([]byte, n+2)
		if _, err := io.ReadFull(c.r, buf); err != nil {
			return "", fmt.Errorf("redis %s: %w", args[0], err)
		}
		return string(buf[:n]), nil
	default:
		return "", fmt.Errorf("redis %s: unexpected reply %q", args[0], line)
	}
}

// commandCounts reads INFO all (one command: Redis 7.0 has no multi-section
// INFO before 7.0) and returns total_commands_processed and the calls of
// each command (cmdstat_<name>, lower case, subcommands as "config|get").
// Redis counts a command once it has run, so the INFO that reads the
// counters is not in them; the next read includes it.
func (c *respConn) commandCounts() (int64, map[string]int64, error) {
	info, err := c.do("INFO", "all")
	if err != nil {
		return 0, nil, err
	}
	total := int64(-1)
	calls := map[string]int64{}
	for line := range strings.SplitSeq(info, "\n") {
		line = strings.TrimSpace(line)
		if v, ok := strings.CutPrefix(line, "total_commands_processed:"); ok {
			if total, err = strconv.ParseInt(v, 10, 64); err != nil {
				return 0, nil, fmt.Errorf("redis INFO: total_commands_processed %q: %w", v, err)
			}
			continue
		}
		name, stats, ok := strings.Cut(line, ":")
		name, isCmd := strings.CutPrefix(name, "cmdstat_")
		if !ok || !isCmd {
			continue
		}
		// calls=N,usec=…
		v, _, _ := strings.Cut(strings.TrimPrefix(stats, "calls="), ",")
		n, err := strconv.ParseInt(v, 10, 64)
		if err != nil {
			return 0, nil, fmt.Errorf("redis INFO: %s %q: %w", line, v, err)
		}
		calls[name] = n
	}
	if total < 0 {
		return 0, nil, errors.New("redis INFO: no total_commands_processed")
	}
	return total, calls, nil
}
