package auth_test

import (
	"crypto/hmac"
	"crypto/rand"
	"crypto/rsa"
	"crypto/sha256"
	"encoding/base64"
	"encoding/json"
	"errors"
	"net/http"
	"reflect"
	"strings"
	"testing"
	"time"

	"github.com/golang-jwt/jwt/v5"

	"github.com/tusgate/tusgate/auth"
)

var (
	testSecret = []byte("test-grant-secret-0123456789abcdef")
	otherKey   = []byte("another-secret-0123456789abcdefghij")
	// testNow is the verification time of the tests.
	testNow = time.Date(2026, 3, 1, 12, 0, 0, 0, time.UTC)
)

// MustSign signs g with secret.
func MustSign(tb testing.TB, secret []byte, g auth.Grant) string {
	tb.Helper()
	s, err := auth.Sign(secret, g)
	if err != nil {
		tb.Fatalf("Sign: %v", err)
	}
	return s
}

// MustVerifier returns a Verifier of testSecret.
func MustVerifier(tb testing.TB, opts ...auth.Option) *auth.Verifier {
	tb.Helper()
	v, err := auth.NewVerifier(testSecret, opts...)
	if err != nil {
		tb.Fatalf("NewVerifier: %v", err)
	}
	return v
}

// b64 is base64url without padding, as in JWTs.
func b64(b []byte) string { return base64.RawURLEncoding.EncodeToString(b) }

// craft builds a JWT from a raw header and claims, its signature
// HMAC-SHA256(key) over them whatever the header says (nil key: no
// signature).
func craft(tb testing.TB, header, claims any, key []byte) string {
	tb.Helper()
	h, err := json.Marshal(header)
	if err != nil {
		tb.Fatal(err)
	}
	c, err := json.Marshal(claims)
	if err != nil {
		tb.Fatal(err)
	}
	in := b64(h) + "." + b64(c)
	if key == nil {
		return in + "."
	}
	m := hmac.New(sha256.New, key)
	m.Write([]byte(in))
	return in + "." + b64(m.Sum(nil))
}

// signWith signs claims with a jwt-go method and key, as another
// platform's (mis)configured JWT library would.
func signWith(tb testing.TB, method jwt.SigningMethod, claims jwt.MapClaims, key any) string {
	tb.Helper()
	s, err := jwt.NewWithClaims(method, claims).SignedString(key)
	if err != nil {
		tb.Fatalf("SignedString(%s): %v", method.Alg(), err)
	}
	return s
}

func minimal(now time.Time) auth.Grant {
	return auth.Grant{Subject: "user-42", ExpiresAt: now.Add(10 * time.Minute)}
}

func TestVerify(t *testing.T) {
	hs256 := map[string]string{"alg": "HS256", "typ": "JWT"}
	exp := testNow.Add(10 * time.Minute).Unix()
	rsaKey, err := rsa.GenerateKey(rand.Reader, 2048)
	if err != nil {
		t.Fatal(err)
	}
	valid := MustSign(t, testSecret, minimal(testNow))
	parts := strings.Split(valid, ".")
	// The last base64url character of a 32-byte signature carries 2 bits
	// of it and 4 zero bits: setting one of those gives another string for
	// the same bytes, which only strict decoding refuses.
	last := parts[2][len(parts[2])-1]
	nonCanonical := parts[0] + "." + parts[1] + "." + parts[2][:len(parts[2])-1] + string(base64URLAlphabet[strings.IndexByte(base64URLAlphabet, last)^1])
	bigMeta := map[string]string{}
	for i := range 9 {
		bigMeta[string(rune('a'+i))] = strings.Repeat("x", 1000)
	}
	big := minimal(testNow)
	big.Metadata = bigMeta
	manyTypes := make([]string, auth.MaxFileTypes+1)
	for i := range manyTypes {
		manyTypes[i] = "video/"
	}
	manyMeta := map[string]string{}
	for i := range auth.MaxMetadataEntries + 1 {
		manyMeta[strings.Repeat("k", i+1)] = "v"
	}

	tests := []struct {
		name string
		raw  string
		opts []auth.Option
		want *auth.Grant // nil: an error of kind wantErr
		// wantErr is the error kind; wantMsg a part of its message.
		wantErr error
		wantMsg string
	}{
		{
			name: "full grant round trip",
			raw: MustSign(t, testSecret, auth.Grant{
				Subject: "user-42", ExpiresAt: testNow.Add(15 * time.Minute),
				NotBefore: testNow.Add(-time.Minute), IssuedAt: testNow.Add(-time.Minute),
				MaxSize: 2 << 30, FileTypes: []string{"video/", "audio/mp4"},
				Metadata: map[string]string{"courseId": "c-7", "title": "Leçon 1 — intro"},
			}),
			want: &auth.Grant{
				Subject: "user-42", ExpiresAt: testNow.Add(15 * time.Minute),
				NotBefore: testNow.Add(-time.Minute), IssuedAt: testNow.Add(-time.Minute),
				MaxSize: 2 << 30, FileTypes: []string{"video/", "audio/mp4"},
				Metadata: map[string]string{"courseId": "c-7", "title": "Leçon 1 — intro"},
			},
		},
		{
			name: "minimal grant",
			raw:  valid,
			want: &auth.Grant{Subject: "user-42", ExpiresAt: testNow.Add(10 * time.Minute)},
		},
		{
			name: "sub-second expiry truncated to seconds",
			raw:  MustSign(t, testSecret, auth.Grant{Subject: "u", ExpiresAt: testNow.Add(time.Minute + 900*time.Millisecond)}),
			want: &auth.Grant{Subject: "u", ExpiresAt: testNow.Add(time.Minute)},
		},
		{
			name: "signed by another library with unknown claims (iss, aud, jti, kid)",
			raw: func() string {
				tok := jwt.NewWithClaims(jwt.SigningMethodHS256, jwt.MapClaims{
					"sub": "u-1", "exp": exp, "iss": "platform", "aud": []string{"tusgate"}, "jti": "x", "custom": 3,
				})
				tok.Header["kid"] = "k1"
				s, err := tok.SignedString(testSecret)
				if err != nil {
					t.Fatal(err)
				}
				return s
			}(),
			want: &auth.Grant{Subject: "u-1", ExpiresAt: time.Unix(exp, 0).UTC()},
		},
		{
			name: "expired within the leeway",
			raw:  MustSign(t, testSecret, auth.Grant{Subject: "u", ExpiresAt: testNow.Add(-29 * time.Second)}),
			want: &auth.Grant{Subject: "u", ExpiresAt: testNow.Add(-29 * time.Second)},
		},
		{
			name:    "expired beyond the leeway",
			raw:     MustSign(t, testSecret, auth.Grant{Subject: "u", ExpiresAt: testNow.Add(-31 * time.Second)}),
			wantErr: auth.ErrExpiredGrant,
			wantMsg: "expired at 2026-03-01T11:59:29Z",
		},
		{
			name:    "expired by a second without leeway",
			raw:     MustSign(t, testSecret, auth.Grant{Subject: "u", ExpiresAt: testNow.Add(-time.Second)}),
			opts:    []auth.Option{auth.WithLeeway(0)},
			wantErr: auth.ErrExpiredGrant,
		},
		{
			name:    "expiring exactly now without leeway",
			raw:     MustSign(t, testSecret, auth.Grant{Subject: "u", ExpiresAt: testNow}),
			opts:    []auth.Option{auth.WithLeeway(0)},
			wantErr: auth.ErrExpiredGrant,
		},
		{
			name: "nbf within the leeway",
			raw:  MustSign(t, testSecret, auth.Grant{Subject: "u", ExpiresAt: testNow.Add(time.Hour), NotBefore: testNow.Add(29 * time.Second)}),
			want: &auth.Grant{Subject: "u", ExpiresAt: testNow.Add(time.Hour), NotBefore: testNow.Add(29 * time.Second)},
		},
		{
			name:    "not yet valid (nbf)",
			raw:     MustSign(t, testSecret, auth.Grant{Subject: "u", ExpiresAt: testNow.Add(time.Hour), NotBefore: testNow.Add(31 * time.Second)}),
			wantErr: auth.ErrGrantNotYetValid,
			wantMsg: "not valid before 2026-03-01T12:00:31Z",
		},
		{
			name:    "issued in the future (iat)",
			raw:     MustSign(t, testSecret, auth.Grant{Subject: "u", ExpiresAt: testNow.Add(time.Hour), IssuedAt: testNow.Add(time.Minute)}),
			wantErr: auth.ErrGrantNotYetValid,
			wantMsg: "issued in the future",
		},
		{
			name:    "wrong secret",
			raw:     MustSign(t, otherKey, minimal(testNow)),
			wantErr: auth.ErrInvalidGrant,
			wantMsg: "signature does not match",
		},
		{
			name:    "wrong secret and expired: the signature is checked first",
			raw:     MustSign(t, otherKey, auth.Grant{Subject: "u", ExpiresAt: testNow.Add(-time.Hour)}),
			wantErr: auth.ErrInvalidGrant,
			wantMsg: "signature does not match",
		},
		{
			name:    "tampered claims",
			raw:     parts[0] + "." + b64([]byte(`{"sub":"admin","exp":`+jsonInt(exp)+`}`)) + "." + parts[2],
			wantErr: auth.ErrInvalidGrant,
			wantMsg: "signature does not match",
		},
		{
			name:    "alg none without signature",
			raw:     signWith(t, jwt.SigningMethodNone, jwt.MapClaims{"sub": "u", "exp": exp}, jwt.UnsafeAllowNoneSignatureType),
			wantErr: auth.ErrInvalidGrant,
			wantMsg: "only HS256",
		},
		{
			name:    "alg none with a valid HS256 signature",
			raw:     craft(t, map[string]string{"alg": "none"}, map[string]any{"sub": "u", "exp": exp}, testSecret),
			wantErr: auth.ErrInvalidGrant,
		},
		{
			name:    "no alg",
			raw:     craft(t, map[string]string{"typ": "JWT"}, map[string]any{"sub": "u", "exp": exp}, testSecret),
			wantErr: auth.ErrInvalidGrant,
			wantMsg: "must be signed with HS256",
		},
		{
			name:    "lower-case hs256",
			raw:     craft(t, map[string]string{"alg": "hs256"}, map[string]any{"sub": "u", "exp": exp}, testSecret),
			wantErr: auth.ErrInvalidGrant,
		},
		{
			name:    "RS256 header over an HMAC signature with the secret",
			raw:     craft(t, map[string]string{"alg": "RS256"}, map[string]any{"sub": "u", "exp": exp}, testSecret),
			wantErr: auth.ErrInvalidGrant,
			wantMsg: "signed with RS256",
		},
		{
			name:    "RS256 signed with an RSA key",
			raw:     signWith(t, jwt.SigningMethodRS256, jwt.MapClaims{"sub": "u", "exp": exp}, rsaKey),
			wantErr: auth.ErrInvalidGrant,
			wantMsg: "signed with RS256",
		},
		{
			name:    "HS384 with the secret",
			raw:     signWith(t, jwt.SigningMethodHS384, jwt.MapClaims{"sub": "u", "exp": exp}, testSecret),
			wantErr: auth.ErrInvalidGrant,
			wantMsg: "signed with HS384",
		},
		{
			name:    "HS512 with the secret",
			raw:     signWith(t, jwt.SigningMethodHS512, jwt.MapClaims{"sub": "u", "exp": exp}, testSecret),
			wantErr: auth.ErrInvalidGrant,
			wantMsg: "signed with HS512",
		},
		{
			name:    "crit header",
			raw:     craft(t, map[string]any{"alg": "HS256", "crit": []string{"exp"}}, map[string]any{"sub": "u", "exp": exp}, testSecret),
			wantErr: auth.ErrInvalidGrant,
			wantMsg: "crit",
		},
		{
			name:    "missing sub",
			raw:     craft(t, hs256, map[string]any{"exp": exp}, testSecret),
			wantErr: auth.ErrInvalidGrant,
			wantMsg: "`sub` claim",
		},
		{
			name:    "empty sub",
			raw:     craft(t, hs256, map[string]any{"sub": "", "exp": exp}, testSecret),
			wantErr: auth.ErrInvalidGrant,
			wantMsg: "`sub` claim",
		},
		{
			name:    "numeric sub",
			raw:     craft(t, hs256, map[string]any{"sub": 42, "exp": exp}, testSecret),
			wantErr: auth.ErrInvalidGrant,
			wantMsg: "not a well-formed JWT",
		},
		{
			name:    "sub with a control character",
			raw:     craft(t, hs256, map[string]any{"sub": "u\n1", "exp": exp}, testSecret),
			wantErr: auth.ErrInvalidGrant,
			wantMsg: "`sub` must be valid UTF-8",
		},
		{
			name:    "sub too long",
			raw:     craft(t, hs256, map[string]any{"sub": strings.Repeat("u", auth.MaxSubjectLength+1), "exp": exp}, testSecret),
			wantErr: auth.ErrInvalidGrant,
			wantMsg: "`sub` is longer",
		},
		{
			name:    "missing exp",
			raw:     craft(t, hs256, map[string]any{"sub": "u"}, testSecret),
			wantErr: auth.ErrInvalidGrant,
			wantMsg: "`exp` claim is required",
		},
		{
			name:    "null exp",
			raw:     craft(t, hs256, map[string]any{"sub": "u", "exp": nil}, testSecret),
			wantErr: auth.ErrInvalidGrant,
			wantMsg: "`exp` claim is required",
		},
		{
			name:    "string exp",
			raw:     craft(t, hs256, map[string]any{"sub": "u", "exp": "tomorrow"}, testSecret),
			wantErr: auth.ErrInvalidGrant,
		},
		{
			name:    "negative max_size",
			raw:     craft(t, hs256, map[string]any{"sub": "u", "exp": exp, "max_size": -1}, testSecret),
			wantErr: auth.ErrInvalidGrant,
			wantMsg: "`max_size` is negative",
		},
		{
			name:    "fractional max_size",
			raw:     craft(t, hs256, map[string]any{"sub": "u", "exp": exp, "max_size": 1.5}, testSecret),
			wantErr: auth.ErrInvalidGrant,
		},
		{
			name:    "file_types entry with a space",
			raw:     craft(t, hs256, map[string]any{"sub": "u", "exp": exp, "file_types": []string{"video/", "video /"}}, testSecret),
			wantErr: auth.ErrInvalidGrant,
			wantMsg: "`file_types` entry 2",
		},
		{
			name:    "file_types empty entry",
			raw:     craft(t, hs256, map[string]any{"sub": "u", "exp": exp, "file_types": []string{""}}, testSecret),
			wantErr: auth.ErrInvalidGrant,
			wantMsg: "`file_types` entry 1",
		},
		{
			name:    "too many file_types",
			raw:     craft(t, hs256, map[string]any{"sub": "u", "exp": exp, "file_types": manyTypes}, testSecret),
			wantErr: auth.ErrInvalidGrant,
			wantMsg: "`file_types` has 33 entries",
		},
		{
			name: "empty file_types and metadata mean none",
			raw:  craft(t, hs256, map[string]any{"sub": "u", "exp": exp, "file_types": []string{}, "metadata": map[string]string{}}, testSecret),
			want: &auth.Grant{Subject: "u", ExpiresAt: time.Unix(exp, 0).UTC()},
		},
		{
			name:    "too many metadata entries",
			raw:     craft(t, hs256, map[string]any{"sub": "u", "exp": exp, "metadata": manyMeta}, testSecret),
			wantErr: auth.ErrInvalidGrant,
			wantMsg: "`metadata` has 33 entries",
		},
		{
			name:    "metadata key with a comma",
			raw:     craft(t, hs256, map[string]any{"sub": "u", "exp": exp, "metadata": map[string]string{"a,b": "v"}}, testSecret),
			wantErr: auth.ErrInvalidGrant,
			wantMsg: "`metadata` keys",
		},
		{
			name:    "metadata key too long",
			raw:     craft(t, hs256, map[string]any{"sub": "u", "exp": exp, "metadata": map[string]string{strings.Repeat("k", 65): "v"}}, testSecret),
			wantErr: auth.ErrInvalidGrant,
			wantMsg: "`metadata` keys",
		},
		{
			name:    "metadata value too long",
			raw:     craft(t, hs256, map[string]any{"sub": "u", "exp": exp, "metadata": map[string]string{"k": strings.Repeat("v", 1025)}}, testSecret),
			wantErr: auth.ErrInvalidGrant,
			wantMsg: `value of "k" is longer than 1024 bytes`,
		},
		{
			name:    "metadata value with a control character",
			raw:     craft(t, hs256, map[string]any{"sub": "u", "exp": exp, "metadata": map[string]string{"k": "a\x00b"}}, testSecret),
			wantErr: auth.ErrInvalidGrant,
			wantMsg: "without control characters",
		},
		{
			name:    "metadata not an object",
			raw:     craft(t, hs256, map[string]any{"sub": "u", "exp": exp, "metadata": []string{"a"}}, testSecret),
			wantErr: auth.ErrInvalidGrant,
		},
		{
			name:    "oversize token",
			raw:     MustSign(t, testSecret, big),
			wantErr: auth.ErrInvalidGrant,
			wantMsg: "more than the 8192 bytes allowed",
		},
		{
			name: "the same token with a larger limit",
			raw:  MustSign(t, testSecret, big),
			opts: []auth.Option{auth.WithMaxTokenLength(16 << 10)},
			want: &auth.Grant{Subject: "user-42", ExpiresAt: testNow.Add(10 * time.Minute), Metadata: bigMeta},
		},
		{name: "empty", raw: "", wantErr: auth.ErrNoGrant},
		{name: "one segment", raw: "abc", wantErr: auth.ErrInvalidGrant, wantMsg: "not a well-formed JWT"},
		{name: "two segments", raw: parts[0] + "." + parts[1], wantErr: auth.ErrInvalidGrant, wantMsg: "not a well-formed JWT"},
		{name: "four segments", raw: valid + ".x", wantErr: auth.ErrInvalidGrant, wantMsg: "not a well-formed JWT"},
		{name: "header not base64", raw: "!!!." + parts[1] + "." + parts[2], wantErr: auth.ErrInvalidGrant},
		{name: "header not JSON", raw: b64([]byte("hello")) + "." + parts[1] + "." + parts[2], wantErr: auth.ErrInvalidGrant},
		{name: "claims not JSON", raw: parts[0] + "." + b64([]byte("[1,2")) + "." + parts[2], wantErr: auth.ErrInvalidGrant},
		{name: "padded signature", raw: valid + "=", wantErr: auth.ErrInvalidGrant},
		{name: "non-canonical base64 signature", raw: nonCanonical, wantErr: auth.ErrInvalidGrant},
		{name: "with Bearer prefix", raw: "Bearer " + valid, wantErr: auth.ErrInvalidGrant},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			v := MustVerifier(t, tt.opts...)
			got, err := v.Verify(tt.raw, testNow)
			if tt.want != nil {
				if err != nil {
					t.Fatalf("Verify: got error %v, want %+v", err, tt.want)
				}
				if !reflect.DeepEqual(got, tt.want) {
					t.Errorf("Verify: got %+v, want %+v", got, tt.want)
				}
				return
			}
			if err == nil {
				t.Fatalf("Verify: got %+v, want an error of kind %v", got, tt.wantErr)
			}
			checkRefusal(t, err, tt.wantErr, tt.wantMsg, tt.raw)
		})
	}
}

const base64URLAlphabet = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_"

func jsonInt(n int64) string {
	b, _ := json.Marshal(n)
	return string(b)
}

// checkRefusal checks that err is an *auth.Error of kind want, whose
// message holds msg and does not echo the token raw.
func checkRefusal(t *testing.T, err, want error, msg, raw string) {
	t.Helper()
	var e *auth.Error
	if !errors.As(err, &e) {
		t.Fatalf("got error %T %v, want *auth.Error", err, err)
	}
	if !errors.Is(err, want) {
		t.Errorf("got error kind %v (%q), want %v", e.Kind, err, want)
	}
	if !strings.Contains(err.Error(), msg) {
		t.Errorf("got message %q, want it to contain %q", err, msg)
	}
	if len(raw) >= 16 && strings.Contains(err.Error(), raw) {
		t.Errorf("message %q echoes the token", err)
	}
	if len(raw) >= 16 {
		// Not even a segment of it.
		for _, p := range strings.Split(raw, ".") {
			if len(p) >= 16 && strings.Contains(err.Error(), p) {
				t.Errorf("message %q echoes a segment of the token", err)
			}
		}
	}
}

// TestVerifyGoldenToken checks a grant made without golang-jwt (Python's
// hmac and base64, see the comment) verifies: the format is plain JWT.
func TestVerifyGoldenToken(t *testing.T) {
	// python3: header {"alg":"HS256","typ":"JWT"}, claims
	// {"sub":"user-42","iat":1767225600,"exp":4102444800,"max_size":2147483648,
	//  "file_types":["video/"],"metadata":{"courseId":"c-7"},"iss":"platform.example"},
	// HMAC-SHA256 with the secret below, base64url without padding.
	const token = "eyJhbGciOiJIUzI1NiIsInR5cCI6IkpXVCJ9.eyJzdWIiOiJ1c2VyLTQyIiwiaWF0IjoxNzY3MjI1NjAwLCJleHAiOjQxMDI0NDQ4MDAsIm1heF9zaXplIjoyMTQ3NDgzNjQ4LCJmaWxlX3R5cGVzIjpbInZpZGVvLyJdLCJtZXRhZGF0YSI6eyJjb3Vyc2VJZCI6ImMtNyJ9LCJpc3MiOiJwbGF0Zm9ybS5leGFtcGxlIn0.3Vp8gHp0V7xUqHN62q4TUgvSKxQDJUEZzdfpJ13gPhw"
	v, err := auth.NewVerifier([]byte("platform-shared-secret-0123456789abcdef"))
	if err != nil {
		t.Fatal(err)
	}
	got, err := v.Verify(token, testNow)
	if err != nil {
		t.Fatalf("Verify: %v", err)
	}
	want := &auth.Grant{
		Subject: "user-42", ExpiresAt: time.Unix(4102444800, 0).UTC(), IssuedAt: time.Unix(1767225600, 0).UTC(),
		MaxSize: 2147483648, FileTypes: []string{"video/"}, Metadata: map[string]string{"courseId": "c-7"},
	}
	if !reflect.DeepEqual(got, want) {
		t.Errorf("got %+v, want %+v", got, want)
	}
}

// TestSignClaimNames pins the claim names of the contract with platforms.
func TestSignClaimNames(t *testing.T) {
	raw := MustSign(t, testSecret, auth.Grant{
		Subject: "user-42", ExpiresAt: testNow.Add(time.Hour), NotBefore: testNow, IssuedAt: testNow.Add(-time.Second),
		MaxSize: 1000, FileTypes: []string{"video/"}, Metadata: map[string]string{"k": "v"},
	})
	parts := strings.Split(raw, ".")
	if len(parts) != 3 {
		t.Fatalf("got %d segments, want 3", len(parts))
	}
	var header, claims map[string]any
	for i, dst := range []*map[string]any{&header, &claims} {
		b, err := base64.RawURLEncoding.DecodeString(parts[i])
		if err != nil {
			t.Fatal(err)
		}
		if err := json.Unmarshal(b, dst); err != nil {
			t.Fatal(err)
		}
	}
	if header["alg"] != "HS256" {
		t.Errorf("got alg %v, want HS256", header["alg"])
	}
	want := map[string]any{
		"sub": "user-42", "exp": float64(testNow.Add(time.Hour).Unix()), "nbf": float64(testNow.Unix()),
		"iat": float64(testNow.Unix() - 1), "max_size": float64(1000), "file_types": []any{"video/"},
		"metadata": map[string]any{"k": "v"},
	}
	if !reflect.DeepEqual(claims, want) {
		t.Errorf("got claims %v, want %v", claims, want)
	}
	// Optional claims are left out when zero.
	raw = MustSign(t, testSecret, minimal(testNow))
	b, err := base64.RawURLEncoding.DecodeString(strings.Split(raw, ".")[1])
	if err != nil {
		t.Fatal(err)
	}
	claims = nil
	if err := json.Unmarshal(b, &claims); err != nil {
		t.Fatal(err)
	}
	if len(claims) != 2 {
		t.Errorf("got claims %v, want only sub and exp", claims)
	}
}

func TestSignRefuses(t *testing.T) {
	tests := []struct {
		name   string
		secret []byte
		g      auth.Grant
		want   string
	}{
		{"short secret", testSecret[:31], minimal(testNow), "at least 32 bytes"},
		{"no subject", testSecret, auth.Grant{ExpiresAt: testNow}, "`sub`"},
		{"no expiry", testSecret, auth.Grant{Subject: "u"}, "`exp`"},
		{"negative max size", testSecret, auth.Grant{Subject: "u", ExpiresAt: testNow, MaxSize: -1}, "max_size"},
		{"bad metadata key", testSecret, auth.Grant{Subject: "u", ExpiresAt: testNow, Metadata: map[string]string{"a b": ""}}, "metadata"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			s, err := auth.Sign(tt.secret, tt.g)
			if err == nil {
				t.Fatalf("Sign: got %q, want an error", s)
			}
			if !strings.Contains(err.Error(), tt.want) {
				t.Errorf("Sign: got %q, want it to contain %q", err, tt.want)
			}
		})
	}
}

func TestNewVerifier(t *testing.T) {
	tests := []struct {
		name    string
		secret  []byte
		opts    []auth.Option
		wantErr string
	}{
		{"32-byte secret", testSecret[:32], nil, ""},
		{"31-byte secret", testSecret[:31], nil, "31 bytes long: it must be at least 32 bytes"},
		{"no secret", nil, nil, "at least 32 bytes"},
		{"negative leeway", testSecret, []auth.Option{auth.WithLeeway(-time.Second)}, "negative"},
		{"tiny max length", testSecret, []auth.Option{auth.WithMaxTokenLength(100)}, "below 256"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			_, err := auth.NewVerifier(tt.secret, tt.opts...)
			switch {
			case tt.wantErr == "" && err != nil:
				t.Errorf("NewVerifier: got %v, want no error", err)
			case tt.wantErr != "" && (err == nil || !strings.Contains(err.Error(), tt.wantErr)):
				t.Errorf("NewVerifier: got %v, want an error containing %q", err, tt.wantErr)
			}
		})
	}
}

// TestVerifierCopiesSecret: changing the caller's slice afterwards changes
// nothing.
func TestVerifierCopiesSecret(t *testing.T) {
	secret := append([]byte(nil), testSecret...)
	v, err := auth.NewVerifier(secret)
	if err != nil {
		t.Fatal(err)
	}
	for i := range secret {
		secret[i] = 'x'
	}
	if _, err := v.Verify(MustSign(t, testSecret, minimal(testNow)), testNow); err != nil {
		t.Errorf("Verify after the caller changed its secret slice: %v", err)
	}
}

func TestFromRequest(t *testing.T) {
	const tok = "eyJhbGciOiJIUzI1NiJ9.eyJzdWIiOiJ1In0.c2ln"
	tests := []struct {
		name    string
		headers []string // Authorization values
		want    string
		wantErr error
	}{
		{name: "missing", wantErr: auth.ErrNoGrant},
		{name: "empty", headers: []string{""}, wantErr: auth.ErrNoGrant},
		{name: "blank", headers: []string{"   "}, wantErr: auth.ErrNoGrant},
		{name: "bearer", headers: []string{"Bearer " + tok}, want: tok},
		{name: "lower-case bearer", headers: []string{"bearer " + tok}, want: tok},
		{name: "upper-case bearer", headers: []string{"BEARER " + tok}, want: tok},
		{name: "extra spaces and tab", headers: []string{"  Bearer \t " + tok + "  "}, want: tok},
		{name: "b64token padding", headers: []string{"Bearer abc=="}, want: "abc=="},
		{name: "basic", headers: []string{"Basic dXNlcjpwYXNzd29yZA=="}, wantErr: auth.ErrInvalidGrant},
		{name: "token without scheme", headers: []string{tok}, wantErr: auth.ErrInvalidGrant},
		{name: "Bearer alone", headers: []string{"Bearer"}, wantErr: auth.ErrInvalidGrant},
		{name: "two tokens", headers: []string{"Bearer " + tok + " " + tok}, wantErr: auth.ErrInvalidGrant},
		{name: "two headers", headers: []string{"Bearer " + tok, "Bearer " + tok}, wantErr: auth.ErrInvalidGrant},
		{name: "comma-joined tokens", headers: []string{"Bearer " + tok + "," + tok}, wantErr: auth.ErrInvalidGrant},
		{name: "only padding", headers: []string{"Bearer ==="}, wantErr: auth.ErrInvalidGrant},
		{name: "padding inside", headers: []string{"Bearer ab=c"}, wantErr: auth.ErrInvalidGrant},
		{name: "non-ASCII", headers: []string{"Bearer tøken"}, wantErr: auth.ErrInvalidGrant},
		{name: "Bearer= prefix", headers: []string{"Bearer=" + tok}, wantErr: auth.ErrInvalidGrant},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			r, err := http.NewRequestWithContext(t.Context(), http.MethodPost, "http://127.0.0.1/files/", nil)
			if err != nil {
				t.Fatal(err)
			}
			for _, h := range tt.headers {
				r.Header.Add("Authorization", h)
			}
			got, err := auth.FromRequest(r)
			if tt.wantErr == nil {
				if err != nil || got != tt.want {
					t.Errorf("FromRequest: got %q, %v; want %q", got, err, tt.want)
				}
				return
			}
			if err == nil {
				t.Fatalf("FromRequest: got %q, want an error of kind %v", got, tt.wantErr)
			}
			checkRefusal(t, err, tt.wantErr, "", tok)
			if got != "" {
				t.Errorf("FromRequest: got %q with an error, want \"\"", got)
			}
		})
	}
}

func TestAllowsFileType(t *testing.T) {
	video := []string{"video/"}
	tests := []struct {
		name     string
		grant    *auth.Grant
		defaults []string
		ft       string
		want     bool
	}{
		{"no grant, default video/ allows video/mp4", nil, video, "video/mp4", true},
		{"case-insensitive type", nil, video, "VIDEO/MP4", true},
		{"case-insensitive prefix", nil, []string{"Video/"}, "video/webm", true},
		{"spaces trimmed", nil, video, " video/webm ", true},
		{"parameters kept", nil, video, "video/mp4; codecs=avc1", true},
		{"image refused", nil, video, "image/png", false},
		{"missing filetype refused", nil, video, "", false},
		{"prefix must be a prefix", nil, video, "application/video/x", false},
		{"prefix without slash matches more", nil, []string{"video"}, "videogame/x", true},
		{"no defaults allows all", nil, nil, "application/pdf", true},
		{"no defaults allows none sent", nil, nil, "", true},
		{"grant without types uses defaults", &auth.Grant{}, video, "audio/mpeg", false},
		{"grant types override defaults (allow)", &auth.Grant{FileTypes: []string{"audio/"}}, video, "audio/mpeg", true},
		{"grant types override defaults (refuse)", &auth.Grant{FileTypes: []string{"audio/"}}, video, "video/mp4", false},
		{"exact type", &auth.Grant{FileTypes: []string{"video/mp4"}}, nil, "video/mp4", true},
		{"exact type refuses a sibling", &auth.Grant{FileTypes: []string{"video/mp4"}}, nil, "video/webm", false},
		{"second entry", &auth.Grant{FileTypes: []string{"audio/", "video/"}}, nil, "video/ogg", true},
		{"star allows anything", &auth.Grant{FileTypes: []string{"*"}}, video, "application/zip", true},
		{"star allows none sent", &auth.Grant{FileTypes: []string{"*"}}, video, "", true},
		{"star in defaults", nil, []string{"*"}, "", true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if got := tt.grant.AllowsFileType(tt.ft, tt.defaults); got != tt.want {
				t.Errorf("AllowsFileType(%q, %q) with %+v: got %v, want %v", tt.ft, tt.defaults, tt.grant, got, tt.want)
			}
		})
	}
}

func TestAllowsSize(t *testing.T) {
	tests := []struct {
		name  string
		grant *auth.Grant
		n     int64
		want  bool
	}{
		{"no grant", nil, 1 << 40, true},
		{"no per-grant limit", &auth.Grant{}, 1 << 40, true},
		{"at the limit", &auth.Grant{MaxSize: 100}, 100, true},
		{"below the limit", &auth.Grant{MaxSize: 100}, 1, true},
		{"above the limit", &auth.Grant{MaxSize: 100}, 101, false},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if got := tt.grant.AllowsSize(tt.n); got != tt.want {
				t.Errorf("AllowsSize(%d) with %+v: got %v, want %v", tt.n, tt.grant, got, tt.want)
			}
		})
	}
}

func TestEffectiveFileTypes(t *testing.T) {
	defaults := []string{"video/"}
	if got := (*auth.Grant)(nil).EffectiveFileTypes(defaults); !reflect.DeepEqual(got, defaults) {
		t.Errorf("nil grant: got %q, want %q", got, defaults)
	}
	g := &auth.Grant{FileTypes: []string{"audio/"}}
	if got := g.EffectiveFileTypes(defaults); !reflect.DeepEqual(got, g.FileTypes) {
		t.Errorf("grant with types: got %q, want %q", got, g.FileTypes)
	}
}
