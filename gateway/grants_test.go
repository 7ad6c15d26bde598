package gateway_test

import (
	"encoding/json"
	"io"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/tusgate/tusgate/auth"
	"github.com/tusgate/tusgate/gateway"
	"github.com/tusgate/tusgate/internal/tusclient"
)

var grantSecret = []byte("0123456789abcdef0123456789abcdef-test-secret")

// grantHarness is a gateway that requires grants.
func grantHarness(t *testing.T, mod func(*gateway.Config)) *harness {
	t.Helper()
	v, err := auth.NewVerifier(grantSecret)
	if err != nil {
		t.Fatal(err)
	}
	return newHarness(t, func(c *gateway.Config) {
		c.Grants = v
		if mod != nil {
			mod(c)
		}
	})
}

// grantClient returns a tus client sending a grant for g (expiring an hour
// after the harness's clock unless set).
func (h *harness) grantClient(t *testing.T, g auth.Grant) (*tusclient.Client, string) {
	t.Helper()
	if g.ExpiresAt.IsZero() {
		g.ExpiresAt = h.now.Add(time.Hour)
	}
	raw, err := auth.Sign(grantSecret, g)
	if err != nil {
		t.Fatal(err)
	}
	return &tusclient.Client{Header: http.Header{"Authorization": {"Bearer " + raw}}}, raw
}

// The creation records the grant's subject and metadata; every later
// request needs a grant for that subject.
func TestGrantsOwnUploads(t *testing.T) {
	t.Parallel()
	h := grantHarness(t, nil)
	alice, aliceRaw := h.grantClient(t, auth.Grant{Subject: "alice", Metadata: map[string]string{"course": "c-7"}})
	bob, bobRaw := h.grantClient(t, auth.Grant{Subject: "bob"})

	// No grant, an expired grant, a forged grant: 401.
	if _, err := h.client.Create(t.Context(), h.endpoint, 10, map[string]string{"filename": "a.mp4"}); tusclient.StatusCode(err) != http.StatusUnauthorized ||
		!strings.Contains(err.Error(), "ERR_GRANT_REQUIRED") {
		t.Errorf("create without a grant: got %v, want 401 ERR_GRANT_REQUIRED", err)
	}
	expired, _ := h.grantClient(t, auth.Grant{Subject: "alice", ExpiresAt: h.now.Add(-time.Hour)})
	if _, err := expired.Create(t.Context(), h.endpoint, 10, nil); tusclient.StatusCode(err) != http.StatusUnauthorized ||
		!strings.Contains(err.Error(), "ERR_GRANT_EXPIRED") {
		t.Errorf("create with an expired grant: got %v, want 401 ERR_GRANT_EXPIRED", err)
	}
	forged := &tusclient.Client{Header: http.Header{"Authorization": {"Bearer " + aliceRaw[:len(aliceRaw)-2] + "xx"}}}
	if _, err := forged.Create(t.Context(), h.endpoint, 10, nil); tusclient.StatusCode(err) != http.StatusUnauthorized {
		t.Errorf("create with a forged grant: got %v, want 401", err)
	}

	u, err := alice.Create(t.Context(), h.endpoint, 10, map[string]string{"filename": "a.mp4", "course": "client-says", "lang": "fr"})
	if err != nil {
		t.Fatalf("create with alice's grant: %v", err)
	}
	id := idOf(u)
	rec := h.record(t, id)
	if rec.Owner != "alice" || rec.Metadata["course"] != "c-7" || rec.Metadata["lang"] != "fr" {
		t.Errorf("record: owner %q metadata %v, want alice, the grant's course and the client's lang", rec.Owner, rec.Metadata)
	}

	// Bob's grant cannot touch alice's upload.
	if _, err := bob.Head(t.Context(), u); tusclient.StatusCode(err) != http.StatusForbidden {
		t.Errorf("HEAD with bob's grant: got %v, want 403", err)
	}
	if _, err := bob.Patch(t.Context(), u, 0, strings.NewReader("0123456789"), 10, -1); tusclient.StatusCode(err) != http.StatusForbidden {
		t.Errorf("PATCH with bob's grant: got %v, want 403", err)
	}
	if err := bob.Delete(t.Context(), u); tusclient.StatusCode(err) != http.StatusForbidden {
		t.Errorf("DELETE with bob's grant: got %v, want 403", err)
	}
	if _, err := h.client.Head(t.Context(), u); tusclient.StatusCode(err) != http.StatusUnauthorized {
		t.Errorf("HEAD without a grant: got %v, want 401", err)
	}
	for _, tc := range []struct {
		name, path string
		header     map[string]string
		want       int
	}{
		{"status, no grant", "/uploads/" + id, nil, http.StatusUnauthorized},
		{"status, bob", "/uploads/" + id, map[string]string{"Authorization": "Bearer " + bobRaw}, http.StatusForbidden},
		{"status, alice", "/uploads/" + id, map[string]string{"Authorization": "Bearer " + aliceRaw}, http.StatusOK},
		{"status, alice in the query", "/uploads/" + id + "?access_token=" + aliceRaw, nil, http.StatusOK},
		{"status, bob in the query", "/uploads/" + id + "?access_token=" + bobRaw, nil, http.StatusForbidden},
		{"events, bob", "/uploads/" + id + "/events?access_token=" + bobRaw, nil, http.StatusForbidden},
		{"events, no grant", "/uploads/" + id + "/events", nil, http.StatusUnauthorized},
	} {
		resp, body := h.do(t, http.MethodGet, h.srv.URL+tc.path, tc.header, nil)
		if resp.StatusCode != tc.want {
			t.Errorf("%s: got %d %s, want %d", tc.name, resp.StatusCode, body, tc.want)
		}
		if strings.Contains(body, aliceRaw) || strings.Contains(body, bobRaw) {
			t.Errorf("%s: the response echoes a grant", tc.name)
		}
	}

	// Alice finishes her upload.
	if got, err := alice.Patch(t.Context(), u, 0, strings.NewReader("0123456789"), 10, -1); err != nil || got != 10 {
		t.Fatalf("PATCH with alice's grant: %d, %v", got, err)
	}
	if !h.record(t, id).Complete {
		t.Error("alice's upload not complete")
	}
	h.assertNoSecret(t, aliceRaw)
	h.assertNoSecret(t, bobRaw)
}

// A grant's max_size and file_types, and the gateway's allowed file types.
func TestGrantLimits(t *testing.T) {
	t.Parallel()
	h := grantHarness(t, nil)
	small, _ := h.grantClient(t, auth.Grant{Subject: "a", MaxSize: 1000})
	if _, err := small.Create(t.Context(), h.endpoint, 1001, map[string]string{"filename": "a.mp4"}); tusclient.StatusCode(err) != http.StatusRequestEntityTooLarge ||
		!strings.Contains(err.Error(), "larger than your upload grant allows (1000 bytes)") {
		t.Errorf("create beyond the grant's max size: got %v, want 413", err)
	}
	if _, err := small.Create(t.Context(), h.endpoint, 1000, map[string]string{"filename": "a.mp4"}); err != nil {
		t.Errorf("create at the grant's max size: %v", err)
	}
	if _, err := small.Create(t.Context(), h.endpoint, -1, map[string]string{"filename": "a.mp4"}); tusclient.StatusCode(err) != http.StatusBadRequest ||
		!strings.Contains(err.Error(), "ERR_LENGTH_REQUIRED") {
		t.Errorf("deferred length with a max-size grant: got %v, want 400 ERR_LENGTH_REQUIRED", err)
	}

	plain, _ := h.grantClient(t, auth.Grant{Subject: "a"})
	for _, tc := range []struct {
		client   *tusclient.Client
		filetype string
		want     int
	}{
		{plain, "video/mp4", http.StatusCreated},
		{plain, "VIDEO/QuickTime", http.StatusCreated},
		{plain, "", http.StatusCreated},
		{plain, "application/pdf", http.StatusUnsupportedMediaType},
		{mustGrantClient(t, h, auth.Grant{Subject: "a", FileTypes: []string{"audio/"}}), "audio/mp4", http.StatusCreated},
		{mustGrantClient(t, h, auth.Grant{Subject: "a", FileTypes: []string{"audio/"}}), "video/mp4", http.StatusUnsupportedMediaType},
	} {
		meta := map[string]string{"filename": "f"}
		if tc.filetype != "" {
			meta["filetype"] = tc.filetype
		}
		_, err := tc.client.Create(t.Context(), h.endpoint, 10, meta)
		got := http.StatusCreated
		if err != nil {
			got = tusclient.StatusCode(err)
		}
		if got != tc.want {
			t.Errorf("filetype %q: got %d (%v), want %d", tc.filetype, got, err, tc.want)
		}
		if got == http.StatusUnsupportedMediaType && !strings.Contains(err.Error(), "is not allowed: allowed types start with") {
			t.Errorf("filetype %q refusal: %v", tc.filetype, err)
		}
	}
}

func mustGrantClient(t *testing.T, h *harness, g auth.Grant) *tusclient.Client {
	c, _ := h.grantClient(t, g)
	return c
}

// Without grants, the allowed file types still apply; "*" allows any.
func TestAllowedFileTypesWithoutGrants(t *testing.T) {
	t.Parallel()
	h := newHarness(t, nil)
	if _, err := h.client.Create(t.Context(), h.endpoint, 10, map[string]string{"filetype": "image/png"}); tusclient.StatusCode(err) != http.StatusUnsupportedMediaType {
		t.Errorf("image/png with the default types: got %v, want 415", err)
	}
	any := newHarness(t, func(c *gateway.Config) { c.AllowedFileTypes = []string{"*"} })
	if _, err := any.client.Create(t.Context(), any.endpoint, 10, map[string]string{"filetype": "image/png"}); err != nil {
		t.Errorf("image/png with *: %v", err)
	}
}

// The auth hook sees each creation and its refusals reach the client.
func TestAuthHook(t *testing.T) {
	t.Parallel()
	var mu sync.Mutex
	var seen []auth.HookRequest
	var answer func(w http.ResponseWriter)
	hook := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		body, _ := io.ReadAll(r.Body)
		var req auth.HookRequest
		_ = json.Unmarshal(body, &req)
		mu.Lock()
		seen = append(seen, req)
		a := answer
		mu.Unlock()
		a(w)
	}))
	t.Cleanup(hook.Close)
	setAnswer := func(a func(w http.ResponseWriter)) { mu.Lock(); answer = a; mu.Unlock() }
	hk, err := auth.NewHook(hook.URL, time.Second, nil)
	if err != nil {
		t.Fatal(err)
	}
	h := grantHarness(t, func(c *gateway.Config) { c.AuthHook = hk })
	alice, _ := h.grantClient(t, auth.Grant{Subject: "alice"})

	setAnswer(func(w http.ResponseWriter) { w.WriteHeader(http.StatusNoContent) })
	if _, err := alice.Create(t.Context(), h.endpoint, 10, map[string]string{"filename": "a.mp4", "filetype": "video/mp4"}); err != nil {
		t.Fatalf("create allowed by the hook: %v", err)
	}
	mu.Lock()
	if len(seen) != 1 || seen[0].Subject != "alice" || seen[0].Filename != "a.mp4" || seen[0].Size != 10 {
		t.Errorf("hook saw %+v", seen)
	}
	mu.Unlock()

	setAnswer(func(w http.ResponseWriter) {
		w.Header().Set("Content-Type", "application/json")
		w.WriteHeader(http.StatusForbidden)
		_, _ = w.Write([]byte(`{"message":"your plan allows 3 videos a day"}`))
	})
	_, err = alice.Create(t.Context(), h.endpoint, 10, map[string]string{"filename": "b.mp4"})
	if tusclient.StatusCode(err) != http.StatusForbidden || !strings.Contains(err.Error(), "your plan allows 3 videos a day") {
		t.Errorf("create refused by the hook: got %v, want 403 with the hook's message", err)
	}

	setAnswer(func(w http.ResponseWriter) { w.WriteHeader(http.StatusBadGateway) })
	_, err = alice.Create(t.Context(), h.endpoint, 10, map[string]string{"filename": "c.mp4"})
	var he *tusclient.HTTPError
	if tusclient.StatusCode(err) != http.StatusServiceUnavailable || !asHTTPError(err, &he) || he.Header.Get("Retry-After") == "" {
		t.Errorf("create while the hook fails: got %v, want 503 with Retry-After", err)
	}
	// Refused creations leave no upload behind.
	if ids, err := h.st.ListActive(t.Context()); err != nil || len(ids) != 1 {
		t.Errorf("active uploads after 1 allowed and 2 refused creations: %v, %v", ids, err)
	}
}

func asHTTPError(err error, target **tusclient.HTTPError) bool {
	e, ok := err.(*tusclient.HTTPError)
	if ok {
		*target = e
	}
	return ok
}

// A grant subject may hold MaxOpenUploadsPerSubject incomplete uploads at
// a time, whatever address it comes from; finishing one frees a slot.
func TestOpenUploadsPerSubject(t *testing.T) {
	t.Parallel()
	h := grantHarness(t, func(c *gateway.Config) { c.MaxOpenUploadsPerSubject = 2 })
	alice, _ := h.grantClient(t, auth.Grant{Subject: "alice"})
	bob, _ := h.grantClient(t, auth.Grant{Subject: "bob"})
	meta := map[string]string{"filename": "a.mp4"}
	first, err := alice.Create(t.Context(), h.endpoint, 3, meta)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := alice.Create(t.Context(), h.endpoint, 3, meta); err != nil {
		t.Fatal(err)
	}
	_, err = alice.Create(t.Context(), h.endpoint, 3, meta)
	if tusclient.StatusCode(err) != http.StatusTooManyRequests || !strings.Contains(err.Error(), "too many open uploads for this user: at most 2") {
		t.Fatalf("alice's third open upload: got %v, want 429 for this user", err)
	}
	if _, err := bob.Create(t.Context(), h.endpoint, 3, meta); err != nil {
		t.Errorf("bob, from the same address: %v", err)
	}
	if _, err := alice.Patch(t.Context(), first, 0, strings.NewReader("abc"), 3, -1); err != nil {
		t.Fatal(err)
	}
	if _, err := alice.Create(t.Context(), h.endpoint, 3, meta); err != nil {
		t.Errorf("alice after finishing one: %v", err)
	}
}
