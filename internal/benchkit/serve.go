package benchkit

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"strings"
	"sync"
	"time"
)

// readyPrefix starts the line Serve prints once it listens.
const readyPrefix = "listening "

// pollInterval is how often WaitOK polls.
const pollInterval = 20 * time.Millisecond

// Serve serves h on the address listen until ctx ends or stdin reaches EOF
// (the benchmark that started this process is gone; see ProcSpec.Stdin).
// Once it listens it prints its ready line to stdout: "listening " and
// announce(addr), which Ready finds in the parent. It returns nil when ctx
// ends or stdin closes, and the error of a server that fails.
func Serve(ctx context.Context, listen string, h http.Handler, stdin io.Reader, stdout io.Writer, announce func(addr string) string) error {
	return ServeWith(ctx, listen, h, nil, stdin, stdout, announce)
}

// ServeWith is Serve with the server's ConnContext (nil: none).
func ServeWith(ctx context.Context, listen string, h http.Handler, connContext func(context.Context, net.Conn) context.Context, stdin io.Reader, stdout io.Writer, announce func(addr string) string) error {
	ln, err := net.Listen("tcp", listen)
	if err != nil {
		return fmt.Errorf("--listen %s: %w", listen, err)
	}
	srv := &http.Server{Handler: h, ConnContext: connContext, ReadHeaderTimeout: 30 * time.Second, IdleTimeout: 2 * time.Minute}
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	var wg sync.WaitGroup
	serveErr := make(chan error, 1)
	wg.Go(func() { serveErr <- srv.Serve(ln) })
	// The stdin watcher is not waited for: it blocks in a read that only
	// the process's exit (or the end of stdin) ends, and it only cancels
	// ctx.
	go func() {
		_, _ = io.Copy(io.Discard, stdin)
		cancel()
	}()
	fmt.Fprintf(stdout, "%s%s\n", readyPrefix, announce(ln.Addr().String()))
	select {
	case <-ctx.Done():
		_ = srv.Close()
		wg.Wait()
		return nil
	case err := <-serveErr:
		return fmt.Errorf("serve: %w", err)
	}
}

// Ready is a ProcSpec.Ready for a child that runs Serve: it returns what
// follows "listening " on the ready line, and "" for other lines.
func Ready(line string) string {
	rest, ok := strings.CutPrefix(line, readyPrefix)
	if !ok {
		return ""
	}
	return rest
}

// ReplyJSON writes v as a JSON response.
func ReplyJSON(w http.ResponseWriter, v any) {
	w.Header().Set("Content-Type", "application/json")
	_ = json.NewEncoder(w).Encode(v) // a failed write means the client is gone
}

// WaitOK polls method url every 20 ms until it answers 200 OK, p exits
// (the error then holds the end of its output), or StartTimeout passes.
// p may be nil.
func WaitOK(ctx context.Context, hc *http.Client, method, url string, p *Proc) error {
	ctx, cancel := context.WithTimeout(ctx, StartTimeout)
	defer cancel()
	tick := time.NewTicker(pollInterval)
	defer tick.Stop()
	var last string
	for {
		req, err := http.NewRequestWithContext(ctx, method, url, nil)
		if err != nil {
			return err
		}
		resp, err := hc.Do(req)
		if err == nil {
			last = resp.Status
			DrainClose(resp.Body)
			if resp.StatusCode == http.StatusOK {
				return nil
			}
		} else {
			last = err.Error()
		}
		if p != nil {
			if dead, tail := p.Exited(); dead {
				return errors.New(tail)
			}
		}
		select {
		case <-tick.C:
		case <-ctx.Done():
			err := fmt.Errorf("%s %s: not 200 OK (last: %s): %w", method, url, last, ctx.Err())
			if p != nil {
				err = fmt.Errorf("%w\n%s", err, p.Tail())
			}
			return err
		}
	}
}

// DrainClose reads up to 64 KiB of what is left of a response body, so
// that its connection can be reused, and closes it.
func DrainClose(r io.ReadCloser) {
	_, _ = io.Copy(io.Discard, io.LimitReader(r, 64<<10))
	_ = r.Close()
}

// ReadSome returns the first KiB of r with surrounding space trimmed, for
// error messages.
func ReadSome(r io.Reader) string {
	b, _ := io.ReadAll(io.LimitReader(r, 1<<10))
	return strings.TrimSpace(string(b))
}
