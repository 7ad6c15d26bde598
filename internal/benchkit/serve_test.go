package benchkit_test

import (
	"bufio"
	"context"
	"errors"
	"io"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/tusgate/tusgate/internal/benchkit"
)

// serving runs benchkit.Serve with h in a goroutine and returns the text
// after "listening " on its ready line, the writer whose closing is the
// end of its stdin, and its result.
func serving(t *testing.T, ctx context.Context, h http.Handler, announce func(string) string) (string, *io.PipeWriter, <-chan error) {
	t.Helper()
	stdinR, stdinW := io.Pipe()
	stdoutR, stdoutW := io.Pipe()
	done := make(chan error, 1)
	go func() { done <- benchkit.Serve(ctx, "127.0.0.1:0", h, stdinR, stdoutW, announce) }()
	line, err := bufio.NewReader(stdoutR).ReadString('\n')
	if err != nil {
		t.Fatalf("read the ready line: %v", err)
	}
	rest := benchkit.Ready(strings.TrimSuffix(line, "\n"))
	if rest == "" {
		t.Fatalf("ready line %q: Ready found nothing", line)
	}
	return rest, stdinW, done
}

func waitDone(t *testing.T, done <-chan error) error {
	t.Helper()
	select {
	case err := <-done:
		return err
	case <-time.After(10 * time.Second):
		t.Fatal("Serve did not return")
		return nil
	}
}

func TestServeUntilStdinCloses(t *testing.T) {
	h := http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		benchkit.ReplyJSON(w, map[string]string{"path": r.URL.Path})
	})
	addr, stdin, done := serving(t, t.Context(), h, func(addr string) string { return "extra " + addr })
	extra, addr, ok := strings.Cut(addr, " ")
	if !ok || extra != "extra" {
		t.Fatalf("ready line: got %q, want the announced text then the address", extra+" "+addr)
	}
	resp, err := http.Get("http://" + addr + "/hello")
	if err != nil {
		t.Fatal(err)
	}
	body := benchkit.ReadSome(resp.Body)
	resp.Body.Close()
	if ct := resp.Header.Get("Content-Type"); ct != "application/json" || body != `{"path":"/hello"}` {
		t.Errorf("response: got %s %q, want application/json {\"path\":\"/hello\"}", ct, body)
	}
	stdin.Close()
	if err := waitDone(t, done); err != nil {
		t.Errorf("Serve after stdin closed: got %v, want nil", err)
	}
}

func TestServeUntilCanceled(t *testing.T) {
	ctx, cancel := context.WithCancel(t.Context())
	_, stdin, done := serving(t, ctx, http.NotFoundHandler(), func(addr string) string { return addr })
	defer stdin.Close()
	cancel()
	if err := waitDone(t, done); err != nil {
		t.Errorf("Serve after cancel: got %v, want nil", err)
	}
}

func TestServeBadListen(t *testing.T) {
	err := benchkit.Serve(t.Context(), "not an address", http.NotFoundHandler(), strings.NewReader(""), io.Discard, func(a string) string { return a })
	if err == nil || !strings.Contains(err.Error(), "--listen not an address") {
		t.Errorf("got %v, want a --listen error", err)
	}
}

func TestReady(t *testing.T) {
	for line, want := range map[string]string{
		"listening 127.0.0.1:5":          "127.0.0.1:5",
		"listening http://a:1 127.0.0.1": "http://a:1 127.0.0.1",
		"starting":                       "",
		"not listening 1":                "",
	} {
		if got := benchkit.Ready(line); got != want {
			t.Errorf("Ready(%q): got %q, want %q", line, got, want)
		}
	}
}

func TestWaitOK(t *testing.T) {
	var calls atomic.Int32
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.Method != http.MethodHead {
			t.Errorf("method: got %s, want HEAD", r.Method)
		}
		if calls.Add(1) < 3 {
			w.WriteHeader(http.StatusServiceUnavailable)
		}
	}))
	defer srv.Close()
	if err := benchkit.WaitOK(t.Context(), srv.Client(), http.MethodHead, srv.URL, nil); err != nil {
		t.Fatal(err)
	}
	if got := calls.Load(); got != 3 {
		t.Errorf("requests: got %d, want 3 (two 503s, then 200)", got)
	}
}

func TestWaitOKGivesUp(t *testing.T) {
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.WriteHeader(http.StatusServiceUnavailable)
	}))
	defer srv.Close()

	t.Run("deadline", func(t *testing.T) {
		ctx, cancel := context.WithTimeout(t.Context(), 100*time.Millisecond)
		defer cancel()
		err := benchkit.WaitOK(ctx, srv.Client(), http.MethodGet, srv.URL, nil)
		// The last answer is the 503, or the request the deadline cut.
		if !errors.Is(err, context.DeadlineExceeded) || !strings.Contains(err.Error(), srv.URL+": not 200 OK (last: ") {
			t.Errorf("got %v, want a deadline error with the last answer", err)
		}
	})
	t.Run("process exited", func(t *testing.T) {
		p, _, err := startShell(t, t.Context(), "echo ready 1; echo gave up")
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(p.Kill)
		err = benchkit.WaitOK(t.Context(), srv.Client(), http.MethodGet, srv.URL, p)
		if err == nil || !strings.Contains(err.Error(), "child exited") || !strings.Contains(err.Error(), "gave up") {
			t.Errorf("got %v, want the process's exit and output", err)
		}
	})
}
