package main

import (
	"bytes"
	"context"
	"encoding/base64"
	"encoding/json"
	"net/http"
	"strings"
	"sync"
	"testing"
	"time"
)

// syncBuffer is a bytes.Buffer safe for the logger and the test to share.
type syncBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (s *syncBuffer) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.Write(p)
}

func (s *syncBuffer) String() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.String()
}

func noEnv(string) string { return "" }

func TestHelpExitsCleanly(t *testing.T) {
	var out bytes.Buffer
	if err := run(t.Context(), []string{"tusgate", "--help"}, noEnv, &out, &out); err != nil {
		t.Fatalf("run --help: %v", err)
	}
	for _, want := range []string{"--listen", "TUSGATE_LISTEN", "--part-size", "--redis-url"} {
		if !strings.Contains(out.String(), want) {
			t.Errorf("help does not mention %s", want)
		}
	}
}

func TestInvalidConfigNamesTheSetting(t *testing.T) {
	var out bytes.Buffer
	err := run(t.Context(), []string{"tusgate", "--part-size", "1MiB"}, noEnv, &out, &out)
	if err == nil || !strings.Contains(err.Error(), "--part-size 1MiB") || strings.Contains(err.Error(), "\n") {
		t.Fatalf("got %v, want one line naming --part-size 1MiB", err)
	}
}

// TestServesUntilCancelled starts the whole program in-process, checks its
// endpoints and that cancelling the context shuts it down cleanly.
func TestServesUntilCancelled(t *testing.T) {
	ctx, cancel := context.WithCancel(t.Context())
	defer cancel()
	var stderr syncBuffer
	env := map[string]string{"TUSGATE_DATA_DIR": t.TempDir(), "TUSGATE_LOG_FORMAT": "json"}
	done := make(chan error, 1)
	go func() {
		done <- run(ctx, []string{"tusgate", "--listen", "127.0.0.1:0", "--instance-id", "main-test"},
			func(k string) string { return env[k] }, &bytes.Buffer{}, &stderr)
	}()

	addr := waitListening(t, &stderr, done)
	for _, path := range []string{"/healthz", "/readyz", "/metrics"} {
		resp, err := http.Get("http://" + addr + path)
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
		if resp.StatusCode != http.StatusOK {
			t.Errorf("GET %s: got %d, want 200", path, resp.StatusCode)
		}
	}
	cancel()
	select {
	case err := <-done:
		if err != nil {
			t.Fatalf("run after cancel: %v", err)
		}
	case <-time.After(20 * time.Second):
		t.Fatal("run did not return after its context was cancelled")
	}
	if !strings.Contains(stderr.String(), `"msg":"stopped"`) {
		t.Errorf("no 'stopped' log line; logs:\n%s", stderr.String())
	}
}

// waitListening polls the JSON logs for the "listening" line and returns its address.
func waitListening(t *testing.T, logs *syncBuffer, done <-chan error) string {
	t.Helper()
	deadline := time.Now().Add(20 * time.Second)
	for time.Now().Before(deadline) {
		for _, line := range strings.Split(logs.String(), "\n") {
			var entry struct {
				Msg  string `json:"msg"`
				Addr string `json:"addr"`
			}
			if json.Unmarshal([]byte(line), &entry) == nil && entry.Msg == "listening" {
				return entry.Addr
			}
		}
		select {
		case err := <-done:
			t.Fatalf("run returned before listening: %v\n%s", err, logs.String())
		case <-time.After(10 * time.Millisecond):
		}
	}
	t.Fatalf("no listening line within 20s:\n%s", logs.String())
	return ""
}

// TestDemo runs `tusgate --demo` in-process: the page at / beside the tus
// endpoint, a token from /demo/token accepted by the gateway, the page's URL
// in the logs.
func TestDemo(t *testing.T) {
	ctx, cancel := context.WithCancel(t.Context())
	defer cancel()
	var stderr syncBuffer
	env := map[string]string{"TUSGATE_DATA_DIR": t.TempDir(), "TUSGATE_LOG_FORMAT": "json"}
	done := make(chan error, 1)
	go func() {
		done <- run(ctx, []string{"tusgate", "--demo", "--listen", "127.0.0.1:0", "--instance-id", "main-test"},
			func(k string) string { return env[k] }, &bytes.Buffer{}, &stderr)
	}()
	base := "http://" + waitListening(t, &stderr, done)

	resp, err := http.Get(base + "/")
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusOK || resp.Header.Get("Content-Type") != "text/html; charset=utf-8" {
		t.Errorf("GET /: got %d %q, want the demo page", resp.StatusCode, resp.Header.Get("Content-Type"))
	}
	resp, err = http.Post(base+"/demo/token", "", nil)
	if err != nil {
		t.Fatal(err)
	}
	var tok struct{ Token string }
	_ = json.NewDecoder(resp.Body).Decode(&tok)
	resp.Body.Close()
	req, _ := http.NewRequest(http.MethodPost, base+"/files/", nil)
	req.Header.Set("Tus-Resumable", "1.0.0")
	req.Header.Set("Upload-Length", "10")
	req.Header.Set("Upload-Metadata", "filename Y2xpcC5tcDQ=,token "+base64.StdEncoding.EncodeToString([]byte(tok.Token)))
	resp, err = http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusCreated {
		t.Errorf("creation with the demo's token: got %d, want 201", resp.StatusCode)
	}
	if !strings.Contains(stderr.String(), `"url":"`+base+`/"`) {
		t.Errorf("the logs do not give the page's URL %s/", base)
	}
	if strings.Contains(stderr.String(), tok.Token) {
		t.Error("the logs hold the demo's upload token")
	}
	cancel()
	if err := <-done; err != nil {
		t.Fatalf("run after cancel: %v", err)
	}
}
