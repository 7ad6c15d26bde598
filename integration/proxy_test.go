package integration_test

import (
	"encoding/base64"
	"net/http"
	"strings"
	"testing"
	"time"
)

// Behind a TLS-terminating proxy (--behind-proxy) the upload URL a client
// gets names the proxy's scheme and host; without the flag the same headers
// are ignored (a client must not be able to steer Location).
func TestBehindProxyLocation(t *testing.T) {
	t.Parallel()
	emu := newEmulator(t)
	token := emu.CreateToken(time.Hour)
	post := func(t *testing.T, gw *gatewayProc) string {
		t.Helper()
		req, err := http.NewRequestWithContext(t.Context(), http.MethodPost, gw.Endpoint, nil)
		if err != nil {
			t.Fatal(err)
		}
		req.Header.Set("Tus-Resumable", "1.0.0")
		req.Header.Set("Upload-Length", "10")
		req.Header.Set("Upload-Metadata", "filename "+base64.StdEncoding.EncodeToString([]byte("a.mp4"))+",token "+base64.StdEncoding.EncodeToString([]byte(token)))
		req.Header.Set("X-Forwarded-Proto", "https")
		req.Header.Set("X-Forwarded-Host", "uploads.example.com")
		resp, err := gw.HTTP.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
		if resp.StatusCode != http.StatusCreated {
			t.Fatalf("POST: got %d, want 201", resp.StatusCode)
		}
		return resp.Header.Get("Location")
	}
	t.Run("behind proxy", func(t *testing.T) {
		gw := startGateway(t, emu, gatewayOptions{Store: "embedded", Args: []string{"--behind-proxy"}})
		if loc := post(t, gw); !strings.HasPrefix(loc, "https://uploads.example.com/files/") {
			t.Errorf("Location: got %q, want https://uploads.example.com/files/…", loc)
		}
	})
	t.Run("direct", func(t *testing.T) {
		gw := startGateway(t, emu, gatewayOptions{Store: "embedded"})
		if loc := post(t, gw); !strings.HasPrefix(loc, gw.Endpoint) {
			t.Errorf("Location: got %q, want it under %s (forwarded headers ignored)", loc, gw.Endpoint)
		}
	})
}
