package auth_test

import (
	"context"
	"encoding/json"
	"errors"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"reflect"
	"strings"
	"sync/atomic"
	"testing"
	"time"
	"unicode"
	"unicode/utf8"

	"github.com/tusgate/tusgate/auth"
)

var hookSecret = []byte("hook-secret-0123456789abcdef-0123456789")

// hookServer is a platform's hook endpoint on 127.0.0.1 that answers with
// respond and records what it received.
type hookServer struct {
	*httptest.Server
	calls  atomic.Int32
	header atomic.Pointer[http.Header]
	body   atomic.Pointer[[]byte]
}

func newHookServer(t *testing.T, respond http.HandlerFunc) *hookServer {
	t.Helper()
	s := &hookServer{}
	s.Server = httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		s.calls.Add(1)
		b, _ := io.ReadAll(r.Body)
		h := r.Header.Clone()
		s.header.Store(&h)
		s.body.Store(&b)
		if r.Method != http.MethodPost {
			http.Error(w, "want POST", http.StatusMethodNotAllowed)
			return
		}
		respond(w, r)
	}))
	t.Cleanup(s.Close)
	return s
}

func MustHook(tb testing.TB, url string, timeout time.Duration, opts ...auth.HookOption) *auth.Hook {
	tb.Helper()
	h, err := auth.NewHook(url, timeout, nil, opts...)
	if err != nil {
		tb.Fatalf("NewHook: %v", err)
	}
	return h
}

func status(code int, body string, header ...string) http.HandlerFunc {
	return func(w http.ResponseWriter, r *http.Request) {
		for i := 0; i+1 < len(header); i += 2 {
			w.Header().Set(header[i], header[i+1])
		}
		w.WriteHeader(code)
		_, _ = io.WriteString(w, body)
	}
}

var sampleRequest = auth.HookRequest{
	Subject: "user-42", Size: 1 << 20, Filename: "talk.mp4", Filetype: "video/mp4",
	Metadata: map[string]string{"courseId": "c-7"}, ClientMetadata: map[string]string{"title": "My talk"},
	ClientAddress: "203.0.113.7", Host: "upload.example.com",
}

func TestHookDecisions(t *testing.T) {
	longMsg := strings.Repeat("é", 300)
	huge := `{"message":"` + strings.Repeat("x", 1<<20) + `"}`
	tests := []struct {
		name    string
		respond http.HandlerFunc
		// want: nil for allow; else the *DeniedError expected, or wantUnavailable.
		want            *auth.DeniedError
		wantUnavailable string // a part of the error's text
	}{
		{name: "200 allows", respond: status(200, `{"ok":true}`)},
		{name: "204 allows", respond: status(204, "")},
		{
			name:    "403 with a message",
			respond: status(403, `{"message":"Your plan allows 3 videos a month."}`, "Content-Type", "application/json"),
			want:    &auth.DeniedError{Status: 403, Message: "Your plan allows 3 videos a month."},
		},
		{
			name:    "413 passed through",
			respond: status(413, `{"message":"too big for your plan"}`),
			want:    &auth.DeniedError{Status: 413, Message: "too big for your plan"},
		},
		{name: "400 passed through", respond: status(400, `{}`), want: &auth.DeniedError{Status: 400, Message: "the platform refused this upload"}},
		{name: "401 passed through", respond: status(401, ``), want: &auth.DeniedError{Status: 401, Message: "the platform refused this upload"}},
		{name: "415 passed through", respond: status(415, `{"message":"no GIFs"}`), want: &auth.DeniedError{Status: 415, Message: "no GIFs"}},
		{name: "422 passed through", respond: status(422, `{"message":"bad title"}`), want: &auth.DeniedError{Status: 422, Message: "bad title"}},
		{
			name:    "429 with Retry-After",
			respond: status(429, `{"message":"slow down"}`, "Retry-After", "30"),
			want:    &auth.DeniedError{Status: 429, Message: "slow down", RetryAfter: 30 * time.Second},
		},
		{
			name:    "429 with a huge Retry-After capped at a day",
			respond: status(429, ``, "Retry-After", "99999999999999999"),
			want:    &auth.DeniedError{Status: 429, Message: "the platform refused this upload", RetryAfter: 24 * time.Hour},
		},
		{
			name:    "429 with an HTTP-date Retry-After ignored",
			respond: status(429, ``, "Retry-After", "Wed, 21 Oct 2015 07:28:00 GMT"),
			want:    &auth.DeniedError{Status: 429, Message: "the platform refused this upload"},
		},
		{name: "418 becomes 403", respond: status(418, `{"message":"teapot"}`), want: &auth.DeniedError{Status: 403, Message: "teapot"}},
		{name: "404 becomes 403", respond: status(404, `not found`), want: &auth.DeniedError{Status: 403, Message: "the platform refused this upload"}},
		{name: "non-JSON body", respond: status(403, `<html>nope</html>`), want: &auth.DeniedError{Status: 403, Message: "the platform refused this upload"}},
		{name: "message not a string", respond: status(403, `{"message":42}`), want: &auth.DeniedError{Status: 403, Message: "the platform refused this upload"}},
		{name: "blank message", respond: status(403, `{"message":" \n\t "}`), want: &auth.DeniedError{Status: 403, Message: "the platform refused this upload"}},
		{
			name:    "message sanitized",
			respond: status(403, `{"message":"line one\r\nline\u0000two \u001b[31m\tred\u202e"}`),
			want:    &auth.DeniedError{Status: 403, Message: "line one line two [31m red"},
		},
		{
			name:    "long message cut at 200 characters",
			respond: status(403, `{"message":"`+longMsg+`"}`),
			want:    &auth.DeniedError{Status: 403, Message: strings.Repeat("é", 199) + "…"},
		},
		{name: "huge body", respond: status(403, huge), want: &auth.DeniedError{Status: 403, Message: "the platform refused this upload"}},
		{name: "500 is an outage", respond: status(500, `{"message":"boom"}`), wantUnavailable: "answered 500"},
		{name: "502 is an outage", respond: status(502, ``), wantUnavailable: "answered 502"},
		{name: "201 is an outage", respond: status(201, ``), wantUnavailable: "answered 201"},
		{name: "302 is an outage", respond: status(302, ``, "Location", "/elsewhere"), wantUnavailable: "redirects are not followed"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			srv := newHookServer(t, tt.respond)
			err := MustHook(t, srv.URL+"/hooks/pre-create", 5*time.Second).Check(t.Context(), sampleRequest)
			if n := srv.calls.Load(); n != 1 {
				t.Errorf("hook called %d times, want 1", n)
			}
			switch {
			case tt.want == nil && tt.wantUnavailable == "":
				if err != nil {
					t.Errorf("Check: got %v, want nil (allowed)", err)
				}
			case tt.want != nil:
				var d *auth.DeniedError
				if !errors.As(err, &d) || !errors.Is(err, auth.ErrHookDenied) {
					t.Fatalf("Check: got %T %v, want *auth.DeniedError", err, err)
				}
				if !reflect.DeepEqual(d, tt.want) {
					t.Errorf("Check: got %+v, want %+v", d, tt.want)
				}
				if errors.Is(err, auth.ErrHookUnavailable) {
					t.Errorf("Check: a refusal %v also matches ErrHookUnavailable", err)
				}
			default:
				if !errors.Is(err, auth.ErrHookUnavailable) {
					t.Fatalf("Check: got %v, want ErrHookUnavailable", err)
				}
				if !strings.Contains(err.Error(), tt.wantUnavailable) {
					t.Errorf("Check: got %q, want it to contain %q", err, tt.wantUnavailable)
				}
				if errors.Is(err, auth.ErrHookDenied) {
					t.Errorf("Check: an outage %v also matches ErrHookDenied", err)
				}
			}
		})
	}
}

// TestHookMessagesPrintable checks sanitized messages hold only printable
// characters and at most 200 of them, whatever the hook sends.
func TestHookMessagesPrintable(t *testing.T) {
	msgs := []string{
		"\x00\x01\x02 a \x7f b \u0085 c \u2028 d \u00a0 e",
		string([]byte{0xff, 0xfe, 'o', 'k'}),
		strings.Repeat("ab ", 500),
		strings.Repeat("\u200b", 10) + "zero width",
	}
	for _, m := range msgs {
		b, err := json.Marshal(map[string]string{"message": m})
		if err != nil {
			t.Fatal(err)
		}
		srv := newHookServer(t, status(403, string(b)))
		err = MustHook(t, srv.URL, 5*time.Second).Check(t.Context(), sampleRequest)
		var d *auth.DeniedError
		if !errors.As(err, &d) {
			t.Fatalf("Check: got %v, want *auth.DeniedError", err)
		}
		if n := utf8.RuneCountInString(d.Message); n == 0 || n > auth.MaxHookMessageLength {
			t.Errorf("message %q: %d characters, want 1..%d", d.Message, n, auth.MaxHookMessageLength)
		}
		for _, r := range d.Message {
			if !unicode.IsPrint(r) || r == utf8.RuneError {
				t.Errorf("message %q holds %U, want printable characters only", d.Message, r)
			}
		}
		if d.Message != strings.TrimSpace(d.Message) || strings.Contains(d.Message, "  ") {
			t.Errorf("message %q: want trimmed, single spaces", d.Message)
		}
	}
}

// TestHookRequestContract pins the JSON the hook receives, and its headers.
func TestHookRequestContract(t *testing.T) {
	srv := newHookServer(t, status(204, ""))
	before := time.Now().UTC().Truncate(time.Second)
	if err := MustHook(t, srv.URL, 5*time.Second).Check(t.Context(), sampleRequest); err != nil {
		t.Fatalf("Check: %v", err)
	}
	after := time.Now().UTC()
	h := *srv.header.Load()
	if ct := h.Get("Content-Type"); ct != "application/json" {
		t.Errorf("got Content-Type %q, want application/json", ct)
	}
	if sig := h.Get(auth.SignatureHeader); sig != "" {
		t.Errorf("got %s %q without a secret, want none", auth.SignatureHeader, sig)
	}
	if a := h.Get("Authorization"); a != "" {
		t.Errorf("got Authorization %q, want none", a)
	}
	var got map[string]any
	if err := json.Unmarshal(*srv.body.Load(), &got); err != nil {
		t.Fatalf("body %q: %v", *srv.body.Load(), err)
	}
	sentAt, err := time.Parse(time.RFC3339, got["sentAt"].(string))
	if err != nil || sentAt.Before(before) || sentAt.After(after) {
		t.Errorf("got sentAt %v (%v), want an RFC 3339 time between %v and %v", got["sentAt"], err, before, after)
	}
	delete(got, "sentAt")
	want := map[string]any{
		"event": "pre-create", "subject": "user-42", "size": float64(1 << 20), "sizeDeferred": false,
		"filename": "talk.mp4", "filetype": "video/mp4",
		"metadata": map[string]any{"courseId": "c-7"}, "clientMetadata": map[string]any{"title": "My talk"},
		"clientAddress": "203.0.113.7", "host": "upload.example.com",
	}
	if !reflect.DeepEqual(got, want) {
		t.Errorf("got body %v, want %v", got, want)
	}

	// A deferred-length creation without a grant.
	if err := MustHook(t, srv.URL, 5*time.Second).Check(t.Context(), auth.HookRequest{SizeDeferred: true}); err != nil {
		t.Fatalf("Check: %v", err)
	}
	got = nil
	if err := json.Unmarshal(*srv.body.Load(), &got); err != nil {
		t.Fatal(err)
	}
	if got["sizeDeferred"] != true || got["size"] != float64(0) || got["subject"] != "" {
		t.Errorf("got body %v, want sizeDeferred true, size 0, subject \"\"", got)
	}
	for _, k := range []string{"metadata", "clientMetadata"} {
		if m, ok := got[k].(map[string]any); !ok || len(m) != 0 {
			t.Errorf("got %s %#v without metadata, want {}", k, got[k])
		}
	}
}

// TestHookSignature checks the signature header verifies over the exact
// body received, and only with the secret.
func TestHookSignature(t *testing.T) {
	srv := newHookServer(t, status(204, ""))
	if err := MustHook(t, srv.URL, 5*time.Second, auth.WithHookSecret(hookSecret)).Check(t.Context(), sampleRequest); err != nil {
		t.Fatalf("Check: %v", err)
	}
	body := *srv.body.Load()
	sig := srv.header.Load().Get(auth.SignatureHeader)
	if len(sig) != 64 {
		t.Fatalf("got %s %q, want 64 hex digits", auth.SignatureHeader, sig)
	}
	if sig != auth.BodySignature(hookSecret, body) {
		t.Errorf("got signature %s, want BodySignature of the body", sig)
	}
	tests := []struct {
		name   string
		secret []byte
		body   []byte
		sig    string
		want   bool
	}{
		{"as sent", hookSecret, body, sig, true},
		{"upper-case hex", hookSecret, body, strings.ToUpper(sig), true},
		{"other secret", otherKey, body, sig, false},
		{"tampered body", hookSecret, append([]byte(" "), body...), sig, false},
		{"truncated signature", hookSecret, body, sig[:62], false},
		{"not hex", hookSecret, body, "zz" + sig[2:], false},
		{"empty", hookSecret, body, "", false},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if got := auth.VerifyBodySignature(tt.secret, tt.body, tt.sig); got != tt.want {
				t.Errorf("VerifyBodySignature: got %v, want %v", got, tt.want)
			}
		})
	}
}

// TestBodySignatureVector pins the scheme to HMAC-SHA256 in lower-case hex
// (RFC 4231 test case 2).
func TestBodySignatureVector(t *testing.T) {
	const want = "5bdcc146bf60754e6a042426089575c75a003f089d2739839dec58b964ec3843"
	if got := auth.BodySignature([]byte("Jefe"), []byte("what do ya want for nothing?")); got != want {
		t.Errorf("got %s, want %s", got, want)
	}
}

// TestHookRedirectNotFollowed: a 3xx fails closed, and its target is never
// called, even with a caller's client that follows redirects.
func TestHookRedirectNotFollowed(t *testing.T) {
	target := newHookServer(t, status(204, ""))
	redirect := newHookServer(t, func(w http.ResponseWriter, r *http.Request) {
		http.Redirect(w, r, target.URL, http.StatusTemporaryRedirect)
	})
	client := &http.Client{}
	h, err := auth.NewHook(redirect.URL, 5*time.Second, client)
	if err != nil {
		t.Fatal(err)
	}
	err = h.Check(t.Context(), sampleRequest)
	if !errors.Is(err, auth.ErrHookUnavailable) {
		t.Errorf("Check: got %v, want ErrHookUnavailable", err)
	}
	if n := target.calls.Load(); n != 0 {
		t.Errorf("redirect target called %d times, want 0", n)
	}
	if client.CheckRedirect != nil {
		t.Error("NewHook changed the caller's client")
	}
}

func TestHookTimeout(t *testing.T) {
	release := make(chan struct{})
	t.Cleanup(func() { close(release) })
	srv := newHookServer(t, func(w http.ResponseWriter, r *http.Request) {
		select {
		case <-r.Context().Done():
		case <-release:
		}
	})
	start := time.Now()
	err := MustHook(t, srv.URL, 200*time.Millisecond).Check(t.Context(), sampleRequest)
	took := time.Since(start)
	if !errors.Is(err, auth.ErrHookUnavailable) || !strings.Contains(err.Error(), "no answer within 200ms") {
		t.Errorf("Check: got %v, want ErrHookUnavailable after 200ms", err)
	}
	if took < 200*time.Millisecond || took > 5*time.Second {
		t.Errorf("Check took %v, want about 200ms", took)
	}
}

// TestHookSlowDenyBody: a refusal whose body never ends is still a
// refusal once the timeout cuts the body off.
func TestHookSlowDenyBody(t *testing.T) {
	release := make(chan struct{})
	t.Cleanup(func() { close(release) })
	srv := newHookServer(t, func(w http.ResponseWriter, r *http.Request) {
		w.WriteHeader(http.StatusForbidden)
		_, _ = io.WriteString(w, `{"message":"no`)
		w.(http.Flusher).Flush()
		select {
		case <-r.Context().Done():
		case <-release:
		}
	})
	err := MustHook(t, srv.URL, 200*time.Millisecond).Check(t.Context(), sampleRequest)
	want := &auth.DeniedError{Status: 403, Message: "the platform refused this upload"}
	var d *auth.DeniedError
	if !errors.As(err, &d) || !reflect.DeepEqual(d, want) {
		t.Errorf("Check: got %v, want %+v", err, want)
	}
}

// TestHookUnreachable: a refused connection fails closed, and the error
// holds neither the URL's credentials nor its path and query.
func TestHookUnreachable(t *testing.T) {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addr := l.Addr().String()
	if err := l.Close(); err != nil {
		t.Fatal(err)
	}
	h := MustHook(t, "http://user:PASSWORD@"+addr+"/hook/SECRETPATH?key=SECRETKEY", 5*time.Second)
	err = h.Check(t.Context(), sampleRequest)
	if !errors.Is(err, auth.ErrHookUnavailable) {
		t.Fatalf("Check: got %v, want ErrHookUnavailable", err)
	}
	for _, s := range []string{"PASSWORD", "SECRETPATH", "SECRETKEY"} {
		if strings.Contains(err.Error(), s) {
			t.Errorf("Check: error %q leaks %s", err, s)
		}
	}
	if !strings.Contains(err.Error(), addr) {
		t.Errorf("Check: error %q does not name the hook's host %s", err, addr)
	}
}

func TestHookCallerCancel(t *testing.T) {
	srv := newHookServer(t, status(204, ""))
	ctx, cancel := context.WithCancel(t.Context())
	cancel()
	err := MustHook(t, srv.URL, 5*time.Second).Check(ctx, sampleRequest)
	if !errors.Is(err, auth.ErrHookUnavailable) || !errors.Is(err, context.Canceled) {
		t.Errorf("Check with a canceled context: got %v, want ErrHookUnavailable and context.Canceled", err)
	}
}

func TestNilHookAllows(t *testing.T) {
	var h *auth.Hook
	if err := h.Check(t.Context(), sampleRequest); err != nil {
		t.Errorf("nil Hook: got %v, want nil", err)
	}
}

func TestNewHook(t *testing.T) {
	tests := []struct {
		name    string
		url     string
		timeout time.Duration
		opts    []auth.HookOption
		wantErr string
	}{
		{name: "https", url: "https://platform.example/hook"},
		{name: "http with default timeout", url: "http://127.0.0.1:9/hook"},
		{name: "relative", url: "/hook", wantErr: "absolute http or https URL"},
		{name: "empty", url: "", wantErr: "absolute http or https URL"},
		{name: "ftp", url: "ftp://platform.example/hook", wantErr: "absolute http or https URL"},
		{name: "no host", url: "http:///hook", wantErr: "absolute http or https URL"},
		{name: "unparsable, secret not echoed", url: "http://platform.example/%zzSECRET", wantErr: "absolute http or https URL"},
		{name: "negative timeout", url: "https://platform.example/hook", timeout: -time.Second, wantErr: "negative"},
		{name: "short secret", url: "https://platform.example/hook", opts: []auth.HookOption{auth.WithHookSecret([]byte("short"))}, wantErr: "at least 32 bytes"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			_, err := auth.NewHook(tt.url, tt.timeout, nil, tt.opts...)
			switch {
			case tt.wantErr == "" && err != nil:
				t.Errorf("NewHook: got %v, want no error", err)
			case tt.wantErr != "" && (err == nil || !strings.Contains(err.Error(), tt.wantErr)):
				t.Errorf("NewHook: got %v, want an error containing %q", err, tt.wantErr)
			case err != nil && strings.Contains(err.Error(), "SECRET"):
				t.Errorf("NewHook: error %q echoes the URL", err)
			}
		})
	}
}
