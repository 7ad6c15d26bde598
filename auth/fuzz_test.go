package auth_test

import (
	"errors"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/tusgate/tusgate/auth"
)

// FuzzVerify checks that Verify never panics, refuses with an *auth.Error
// of a known kind whose message does not echo the input, and accepts only
// the exact tokens Sign produced with the secret.
func FuzzVerify(f *testing.F) {
	signed := map[string]bool{}
	grants := []auth.Grant{
		{Subject: "u", ExpiresAt: testNow.Add(time.Hour)},
		{Subject: "user-42", ExpiresAt: testNow.Add(10 * time.Minute), NotBefore: testNow, IssuedAt: testNow,
			MaxSize: 1 << 30, FileTypes: []string{"video/", "*"}, Metadata: map[string]string{"courseId": "c-7", "t": "Leçon"}},
		{Subject: "expired", ExpiresAt: testNow.Add(-time.Hour)},
		{Subject: "later", ExpiresAt: testNow.Add(2 * time.Hour), NotBefore: testNow.Add(time.Hour)},
	}
	for _, g := range grants {
		s := MustSign(f, testSecret, g)
		signed[s] = true
		f.Add(s, int64(0))
		f.Add(s, int64(3600))
		f.Add(MustSign(f, otherKey, g), int64(0))
	}
	for _, s := range []string{"", "a", "a.b", "a.b.c", "..", "eyJhbGciOiJub25lIn0.eyJzdWIiOiJ1IiwiZXhwIjo0MTAyNDQ0ODAwfQ.",
		"eyJhbGciOiJIUzI1NiJ9.eyJzdWIiOiJ1IiwiZXhwIjoxZTMwMH0.AAAA"} {
		f.Add(s, int64(0))
	}
	v := MustVerifier(f)
	f.Fuzz(func(t *testing.T, raw string, offset int64) {
		now := testNow.Add(time.Duration(offset%(1<<40)) * time.Second)
		g, err := v.Verify(raw, now)
		if err == nil {
			if !signed[raw] {
				t.Fatalf("Verify accepted %q (%+v), which Sign did not produce", raw, g)
			}
			if g == nil || g.Subject == "" || g.ExpiresAt.IsZero() {
				t.Fatalf("Verify accepted %q with grant %+v", raw, g)
			}
			return
		}
		if g != nil {
			t.Fatalf("Verify returned grant %+v with error %v", g, err)
		}
		var e *auth.Error
		if !errors.As(err, &e) {
			t.Fatalf("Verify: got %T %v, want *auth.Error", err, err)
		}
		known := false
		for _, k := range []error{auth.ErrNoGrant, auth.ErrInvalidGrant, auth.ErrExpiredGrant, auth.ErrGrantNotYetValid} {
			known = known || e.Kind == k
		}
		if !known || e.Message == "" {
			t.Fatalf("Verify: got kind %v message %q", e.Kind, e.Message)
		}
		if len(raw) >= 24 && strings.Contains(e.Message, raw) {
			t.Fatalf("Verify: message %q echoes the token", e.Message)
		}
	})
}

// FuzzFromRequest checks that FromRequest never panics, and returns either
// a refusal or a token that appears in the header and holds no space.
func FuzzFromRequest(f *testing.F) {
	for _, s := range []string{"Bearer a.b.c", "bearer x", "Basic x", "Bearer", "Bearer a b", "", " \t", "Bearer ==="} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, header string) {
		r := &http.Request{Header: http.Header{"Authorization": {header}}}
		tok, err := auth.FromRequest(r)
		if err != nil {
			if tok != "" {
				t.Fatalf("FromRequest(%q): got %q with error %v", header, tok, err)
			}
			var e *auth.Error
			if !errors.As(err, &e) {
				t.Fatalf("FromRequest(%q): got %T, want *auth.Error", header, err)
			}
			return
		}
		if tok == "" || !strings.Contains(header, tok) || strings.ContainsAny(tok, " \t,") {
			t.Fatalf("FromRequest(%q): got %q", header, tok)
		}
	})
}
