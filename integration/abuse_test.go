package integration_test

import (
	"bytes"
	"errors"
	"io"
	"net"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/tusgate/tusgate/internal/tusclient"
)

// A client that trickles its request headers is disconnected after
// --header-timeout, freeing the connection.
func TestSlowHeadersDisconnected(t *testing.T) {
	t.Parallel()
	emu := newEmulator(t)
	gw := startGateway(t, emu, gatewayOptions{Store: "embedded", Args: []string{"--header-timeout", "1s"}})
	conn, err := net.Dial("tcp", strings.TrimPrefix(gw.URL, "http://"))
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	start := time.Now()
	if _, err := conn.Write([]byte("POST /files/ HTTP/1.1\r\nHost: x\r\nTus-Resumable: 1.0.0\r\n")); err != nil {
		t.Fatal(err)
	}
	// The headers never end; the server must close the connection.
	if err := conn.SetReadDeadline(time.Now().Add(10 * time.Second)); err != nil {
		t.Fatal(err)
	}
	_, err = io.ReadAll(conn)
	took := time.Since(start)
	var ne net.Error
	if errors.As(err, &ne) && ne.Timeout() {
		t.Fatalf("the connection was still open after %v (header timeout 1s)", took)
	}
	if took < 900*time.Millisecond || took > 5*time.Second {
		t.Errorf("connection closed after %v, want about 1s", took)
	}
}

// A PATCH whose body runs past the declared Upload-Length gets 413 and the
// gateway keeps no byte beyond the length; the upload completes with the
// right bytes afterwards.
func TestBodyBeyondDeclaredLength(t *testing.T) {
	t.Parallel()
	emu := newEmulator(t)
	gw := startGateway(t, emu, gatewayOptions{Store: "embedded"})
	token := emu.CreateToken(time.Hour)
	data := testData(80, 2*mib)
	u := create(t, gw, int64(len(data)), meta(token))
	long := append(bytes.Clone(data), testData(81, mib)...)
	_, err := gw.Tus.Patch(t.Context(), u, 0, bytes.NewReader(long), int64(len(long)), -1)
	if code := tusclient.StatusCode(err); code != http.StatusRequestEntityTooLarge {
		t.Fatalf("PATCH beyond the length: got %d (%v), want 413", code, err)
	}
	info, err := gw.Tus.Head(t.Context(), u)
	if err != nil {
		t.Fatal(err)
	}
	if info.Offset > int64(len(data)) {
		t.Fatalf("offset after the oversized PATCH: %d, beyond the declared %d", info.Offset, len(data))
	}
	patchRange(t, gw, u, data, info.Offset, int64(len(data)), mib)
	st, _ := waitDelivered(t, gw, uploadID(t, u))
	checkDelivered(t, emu, token, data, st)
}
