package main

import (
	"bufio"
	"bytes"
	"crypto/rand"
	"io"
	"net/http"
	"os"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/tusgate/tusgate/apivideo/apivideotest"
	"github.com/tusgate/tusgate/internal/benchkit"
)

// startBareForTest runs the bare server in this process against emu and
// returns its base URL and data directory.
func startBareForTest(t *testing.T, emu *apivideotest.Server, partSize string) (string, string) {
	t.Helper()
	dir := t.TempDir()
	stdinR, stdinW := io.Pipe()
	stdoutR, stdoutW := io.Pipe()
	done := make(chan error, 1)
	go func() {
		done <- runBare(t.Context(), []string{"--dir", dir, "--apivideo-url", emu.URL, "--part-size", partSize}, stdinR, stdoutW, io.Discard)
	}()
	t.Cleanup(func() {
		_ = stdinW.Close() // EOF on stdin stops the server
		if err := <-done; err != nil {
			t.Errorf("bare server: %v", err)
		}
	})
	line, err := bufio.NewReader(stdoutR).ReadString('\n')
	if err != nil {
		t.Fatalf("ready line: %v", err)
	}
	go func() { _, _ = io.Copy(io.Discard, stdoutR) }()
	addr := benchkit.Ready(strings.TrimSpace(line))
	if addr == "" {
		t.Fatalf("ready line %q", line)
	}
	return "http://" + addr, dir
}

// The bare server stores what the client sends and delivers it to api.video
// in parts, the first ones while the upload is still arriving, and removes
// the file once delivered.
func TestBareStoresAndForwards(t *testing.T) {
	emu := apivideotest.NewServer(apivideotest.WithKeepBytes(true))
	t.Cleanup(emu.Close)
	base, dir := startBareForTest(t, emu, "5MiB")
	hc := &http.Client{Timeout: time.Minute}
	client := tusClient{hc: hc}

	data := make([]byte, 12<<20+7) // parts of 5, 5 and 2 MiB + 7 bytes
	_, _ = rand.Read(data)
	u, err := client.create(t.Context(), base+"/files/", int64(len(data)), map[string]string{"token": emu.CreateToken(0)})
	if err != nil {
		t.Fatal(err)
	}
	first := int64(6 << 20)
	if got, err := client.patch(t.Context(), u, 0, first, bytes.NewReader(data[:first])); err != nil || got != first {
		t.Fatalf("first PATCH: offset %d, %v", got, err)
	}
	// Part 1 goes out before the upload is complete.
	waitFor(t, func() bool {
		st, err := benchkit.FetchStatus(t.Context(), hc, base, u)
		return err == nil && st.Delivered == 5<<20
	})
	// A PATCH at the wrong offset is refused and changes nothing.
	if _, err := client.patch(t.Context(), u, 0, 10, bytes.NewReader(data[:10])); err == nil || !strings.Contains(err.Error(), "409") {
		t.Fatalf("PATCH at offset 0 of a 6 MiB upload: got %v, want 409 Conflict", err)
	}
	resp, err := hc.Head(u)
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if got := resp.Header.Get("Upload-Offset"); got != strconv.FormatInt(first, 10) {
		t.Fatalf("HEAD Upload-Offset: got %s, want %d", got, first)
	}
	rest := int64(len(data)) - first
	if got, err := client.patch(t.Context(), u, first, rest, bytes.NewReader(data[first:])); err != nil || got != int64(len(data)) {
		t.Fatalf("second PATCH: offset %d, %v", got, err)
	}

	var st benchkit.UploadStatus
	waitFor(t, func() bool {
		st, err = benchkit.FetchStatus(t.Context(), hc, base, u)
		return err == nil && st.State != "receiving"
	})
	if st.State != "delivered" || st.Delivered != int64(len(data)) {
		t.Fatalf("status: %+v, want delivered with %d bytes", st, len(data))
	}
	videos := emu.Videos()
	if len(videos) != 1 {
		t.Fatalf("videos at the emulator: got %d, want 1", len(videos))
	}
	v := videos[0]
	if !v.Complete || v.TotalParts != 3 || len(v.Parts) != 3 {
		t.Fatalf("video: complete %v, %d parts of %d declared; want complete, 3 of 3", v.Complete, len(v.Parts), v.TotalParts)
	}
	if !bytes.Equal(v.Bytes(), data) {
		t.Fatal("the delivered video differs from the uploaded bytes")
	}
	entries, err := os.ReadDir(dir)
	if err != nil {
		t.Fatal(err)
	}
	if len(entries) != 0 {
		t.Errorf("left in the data directory after delivery: %v", entries)
	}
}

// Creation without a token, or without a length, is refused.
func TestBareRefusesBadCreation(t *testing.T) {
	emu := apivideotest.NewServer()
	t.Cleanup(emu.Close)
	base, _ := startBareForTest(t, emu, "5MiB")
	client := tusClient{hc: &http.Client{Timeout: time.Minute}}
	if _, err := client.create(t.Context(), base+"/files/", 10, map[string]string{"name": "x"}); err == nil || !strings.Contains(err.Error(), "400") {
		t.Errorf("creation without a token: got %v, want 400", err)
	}
	if _, err := client.create(t.Context(), base+"/files/", 0, map[string]string{"token": "t"}); err == nil || !strings.Contains(err.Error(), "400") {
		t.Errorf("creation with Upload-Length 0: got %v, want 400", err)
	}
}

// waitFor polls cond until it holds, failing the test after 30 s.
func waitFor(t *testing.T, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(30 * time.Second)
	tick := time.NewTicker(5 * time.Millisecond)
	defer tick.Stop()
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatal("condition not met within 30 s")
		}
		<-tick.C
	}
}

// bare runs only the unpaced workloads: asking for others is an error
// that says why, before anything runs.
func TestBareRefusesPacedWorkloads(t *testing.T) {
	for _, wl := range []string{wlPaced, wlSlowClients} {
		_, err := parseConfig([]string{"tusgate-bench", "--work-dir", t.TempDir(), "--systems", "plain-tusd,bare", "--workloads", "one-patch," + wl}, io.Discard)
		if err == nil || !strings.Contains(err.Error(), "--systems bare: runs only the unpaced workloads") || !strings.Contains(err.Error(), "not "+wl) {
			t.Errorf("bare with %s: got %v, want the unpaced-only error", wl, err)
		}
	}
	cfg, err := parseConfig([]string{"tusgate-bench", "--work-dir", t.TempDir(), "--systems", "bare", "--workloads", "one-patch,small-patches,concurrent"}, io.Discard)
	if err != nil {
		t.Fatalf("bare with the unpaced workloads: %v", err)
	}
	if cfg.BarePartSize != 50<<20 {
		t.Errorf("--bare-part-size default: got %d, want 50 MiB (tusgate's --part-size default)", cfg.BarePartSize)
	}
	if def, err := parseConfig([]string{"tusgate-bench", "--work-dir", t.TempDir()}, io.Discard); err != nil || slices.Contains(def.Systems, sysBare) {
		t.Errorf("default systems: %v, %v; want bare only when named", def.Systems, err)
	}
}

// A body longer than the upload is refused with 413; a declared one before
// any byte is taken, one without Content-Length after the bytes that fit,
// which are kept.
func TestBareRefusesABodyPastTheEnd(t *testing.T) {
	emu := apivideotest.NewServer()
	t.Cleanup(emu.Close)
	base, _ := startBareForTest(t, emu, "5MiB")
	hc := &http.Client{Timeout: time.Minute}
	client := tusClient{hc: hc}
	u, err := client.create(t.Context(), base+"/files/", 10, map[string]string{"token": emu.CreateToken(0)})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := client.patch(t.Context(), u, 0, 11, strings.NewReader("0123456789X")); err == nil || !strings.Contains(err.Error(), "413") {
		t.Fatalf("PATCH of 11 bytes into 10: got %v, want 413", err)
	}
	offset := func() string {
		resp, err := hc.Head(u)
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
		return resp.Header.Get("Upload-Offset")
	}
	if got := offset(); got != "0" {
		t.Fatalf("offset after a refused declared body: %s, want 0", got)
	}
	// No Content-Length: the transport sends the body chunked.
	req, err := http.NewRequestWithContext(t.Context(), http.MethodPatch, u, io.MultiReader(strings.NewReader("0123456789X")))
	if err != nil {
		t.Fatal(err)
	}
	req.Header.Set("Tus-Resumable", "1.0.0")
	req.Header.Set("Content-Type", "application/offset+octet-stream")
	req.Header.Set("Upload-Offset", "0")
	resp, err := hc.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusRequestEntityTooLarge {
		t.Fatalf("chunked PATCH of 11 bytes into 10: %s, want 413", resp.Status)
	}
	if got := offset(); got != "10" {
		t.Errorf("offset after a chunked body past the end: %s, want the 10 bytes that fit kept", got)
	}
}
