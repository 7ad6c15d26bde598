package integration_test

import (
	"io"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/tusgate/tusgate/apivideo/apivideotest"
	"github.com/tusgate/tusgate/auth"
	"github.com/tusgate/tusgate/internal/tusclient"
)

// A full run with every secret configured — the api.video API key
// (managed mode: minted tokens), the grant secret and a grant, the auth
// hook secret, the webhook secret and a password in the webhook URL —
// leaves none of them in the gateway's output, its metrics, the status
// JSON or the HEAD response.
func TestNoSecretInAnyOutput(t *testing.T) {
	t.Parallel()
	const (
		grantSecret   = "sweep-grant-secret-0123456789abcdefghij"
		hookSecret    = "sweep-hook-secret-0123456789abcdefghijk"
		webhookSecret = "sweep-webhook-secret-0123456789abcdefgh"
		webhookPass   = "sweep-webhook-password-42"
	)
	var hooked, delivered atomic.Int32
	platform := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		_, _ = io.Copy(io.Discard, r.Body)
		switch r.URL.Path {
		case "/authorize":
			hooked.Add(1)
		case "/hooks":
			if _, pass, ok := r.BasicAuth(); !ok || pass != webhookPass {
				w.WriteHeader(http.StatusUnauthorized)
				return
			}
			delivered.Add(1)
		}
		w.WriteHeader(http.StatusNoContent)
	}))
	t.Cleanup(platform.Close)
	webhookURL := strings.Replace(platform.URL, "http://", "http://tusgate:"+webhookPass+"@", 1) + "/hooks"

	emu := newEmulator(t)
	gw := startGateway(t, emu, gatewayOptions{Store: "embedded", Args: []string{
		"--apivideo-api-key", apivideotest.DefaultAPIKey,
		"--grant-secret", grantSecret,
		"--auth-hook-url", platform.URL + "/authorize", "--auth-hook-secret", hookSecret,
		"--webhook-url", webhookURL, "--webhook-secret", webhookSecret,
	}})
	grant, err := auth.Sign([]byte(grantSecret), auth.Grant{Subject: "user-1", ExpiresAt: time.Now().Add(time.Hour)})
	if err != nil {
		t.Fatal(err)
	}
	client := &tusclient.Client{HTTPClient: gw.HTTP, Header: http.Header{"Authorization": {"Bearer " + grant}}}
	data := testData(79, 6*mib)
	u, err := client.Create(t.Context(), gw.Endpoint, int64(len(data)), map[string]string{"filename": "a.mp4", "filetype": "video/mp4"})
	if err != nil {
		t.Fatalf("create: %v", err)
	}
	as := &gatewayProc{URL: gw.URL, Endpoint: gw.Endpoint, Tus: client, HTTP: gw.HTTP}
	patchRange(t, as, u, data, 0, int64(len(data)), 2*mib)
	head, err := client.Head(t.Context(), u)
	if err != nil {
		t.Fatal(err)
	}
	id := uploadID(t, u)
	waitFor(t, "the video and three webhooks", func() bool {
		vs := emu.Videos()
		return len(vs) == 1 && vs[0].Complete && delivered.Load() >= 3
	})
	if hooked.Load() != 1 {
		t.Errorf("auth hook calls: got %d, want 1", hooked.Load())
	}
	minted := emu.Videos()[0].Token

	get := func(path string) string {
		req, err := http.NewRequestWithContext(t.Context(), http.MethodGet, gw.URL+path, nil)
		if err != nil {
			t.Fatal(err)
		}
		req.Header.Set("Authorization", "Bearer "+grant)
		resp, err := gw.HTTP.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		defer resp.Body.Close()
		b, _ := io.ReadAll(resp.Body)
		if resp.StatusCode != http.StatusOK {
			t.Fatalf("GET %s: %d %s", path, resp.StatusCode, b)
		}
		return string(b)
	}
	outputs := map[string]string{
		"gateway output": gw.Output(),
		"metrics":        get("/metrics"),
		"status JSON":    get("/uploads/" + id),
		"HEAD response":  head.Header.Clone().Get("Upload-Metadata") + strings.Join(flatten(head.Header), "\n"),
	}
	secrets := map[string]string{
		"the API key":          apivideotest.DefaultAPIKey,
		"the grant secret":     grantSecret,
		"the grant":            grant,
		"the hook secret":      hookSecret,
		"the webhook secret":   webhookSecret,
		"the webhook password": webhookPass,
		"the minted token":     minted,
	}
	for where, text := range outputs {
		for what, secret := range secrets {
			if strings.Contains(text, secret) {
				t.Errorf("%s contains %s", where, what)
			}
		}
	}
}

func flatten(h http.Header) []string {
	var out []string
	for k, vs := range h {
		for _, v := range vs {
			out = append(out, k+": "+v)
		}
	}
	return out
}
