package integration_test

import (
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/tusgate/tusgate/auth"
	"github.com/tusgate/tusgate/internal/tusclient"
)

// With --grant-secret, an upload needs a grant on every request: one user's
// upload is delivered, another user's grant is refused on it, and neither
// the secret nor a grant appears in the gateway's output.
func TestGrantsEndToEnd(t *testing.T) {
	t.Parallel()
	const secret = "integration-grant-secret-0123456789abcdef"
	emu := newEmulator(t)
	gw := startGateway(t, emu, gatewayOptions{Store: "embedded", Args: []string{"--grant-secret", secret}})
	sign := func(sub string) string {
		raw, err := auth.Sign([]byte(secret), auth.Grant{Subject: sub, ExpiresAt: time.Now().Add(time.Hour)})
		if err != nil {
			t.Fatal(err)
		}
		return raw
	}
	aliceGrant, bobGrant := sign("alice"), sign("bob")
	as := func(grant string) *tusclient.Client {
		return &tusclient.Client{HTTPClient: gw.HTTP, Header: http.Header{"Authorization": {"Bearer " + grant}}}
	}
	token := emu.CreateToken(time.Hour)
	data := testData(77, 7*mib)

	if _, err := gw.Tus.Create(t.Context(), gw.Endpoint, int64(len(data)), meta(token)); tusclient.StatusCode(err) != http.StatusUnauthorized {
		t.Fatalf("create without a grant: got %v, want 401", err)
	}
	u, err := as(aliceGrant).Create(t.Context(), gw.Endpoint, int64(len(data)), meta(token))
	if err != nil {
		t.Fatalf("create with alice's grant: %v", err)
	}
	if _, err := as(bobGrant).Head(t.Context(), u); tusclient.StatusCode(err) != http.StatusForbidden {
		t.Errorf("HEAD with bob's grant: got %v, want 403", err)
	}
	alice := &gatewayProc{URL: gw.URL, Endpoint: gw.Endpoint, Tus: as(aliceGrant), HTTP: gw.HTTP}
	patchRange(t, alice, u, data, 0, int64(len(data)), 2*mib)

	id := uploadID(t, u)
	req, err := http.NewRequestWithContext(t.Context(), http.MethodGet, gw.URL+"/uploads/"+id, nil)
	if err != nil {
		t.Fatal(err)
	}
	resp, err := gw.HTTP.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusUnauthorized {
		t.Errorf("status without a grant: got %d, want 401", resp.StatusCode)
	}
	waitFor(t, "alice's video delivered", func() bool {
		for _, v := range emu.Videos() {
			if v.Token == token && v.Complete {
				return true
			}
		}
		return false
	})
	out := gw.Output()
	for name, s := range map[string]string{"the grant secret": secret, "alice's grant": aliceGrant, "bob's grant": bobGrant, "the upload token": token} {
		if strings.Contains(out, s) {
			t.Errorf("the gateway's output contains %s", name)
		}
	}
}
