package auth

import (
	"bytes"
	"context"
	"crypto/hmac"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"strconv"
	"strings"
	"time"
	"unicode"
	"unicode/utf8"
)

// The pre-create hook's wire details.
const (
	// SignatureHeader carries hex(HMAC-SHA256(secret, body)) on the hook's
	// requests when a hook secret is configured (see BodySignature).
	SignatureHeader = "X-Tusgate-Signature"
	// HookEvent is the "event" field of the pre-create hook's body.
	HookEvent = "pre-create"
	// DefaultHookTimeout bounds a hook call when NewHook is given 0.
	DefaultHookTimeout = 5 * time.Second
	// MaxHookMessageLength bounds the message of a refusal passed on to the
	// client, in characters.
	MaxHookMessageLength = 200
	// maxHookBody bounds what is read of a hook's response body.
	maxHookBody = 64 << 10
	// maxRetryAfter bounds the Retry-After passed on from a hook (1 day).
	maxRetryAfter = 24 * time.Hour
	// defaultHookMessage is a refusal's message when the hook sends none.
	defaultHookMessage = "the platform refused this upload"
)

// ErrHookDenied is matched (errors.Is) by the *DeniedError of a hook that
// refused the upload.
var ErrHookDenied = errors.New("upload denied by the auth hook")

// ErrHookUnavailable is wrapped by Check's error when the hook gave no
// decision (timeout, network error, 3xx, 5xx, an unexpected 2xx): the
// upload is refused (fail closed), and the client should retry later
// (503 with Retry-After).
var ErrHookUnavailable = errors.New("auth hook unavailable")

// DeniedError is a refusal by the hook, to pass on to the client.
type DeniedError struct {
	// Status is the HTTP status to answer: the hook's own for 400, 401,
	// 403, 413, 415, 422 and 429, else 403.
	Status int
	// Message is the hook's `message` (printable, at most
	// MaxHookMessageLength characters), or a default; a browser may show it.
	Message string
	// RetryAfter is the hook's Retry-After, when it sent one in seconds
	// (at most a day); zero otherwise.
	RetryAfter time.Duration
}

// Error returns Message.
func (e *DeniedError) Error() string { return e.Message }

// Unwrap returns ErrHookDenied.
func (e *DeniedError) Unwrap() error { return ErrHookDenied }

// HookRequest is what the hook is told about an upload about to be
// created. It is sent as JSON (field names below), with "event":
// "pre-create" and "sentAt" (RFC 3339) added. It never holds a grant or
// an api.video token.
type HookRequest struct {
	// Subject is the grant's sub; empty when grants are not required and
	// the client sent none.
	Subject string `json:"subject"`
	// Size is the upload's length in bytes; 0 when SizeDeferred.
	Size int64 `json:"size"`
	// SizeDeferred is set when the client declares the length later
	// (Upload-Defer-Length: 1).
	SizeDeferred bool `json:"sizeDeferred"`
	// Filename and Filetype are the client's `filename` and `filetype`
	// metadata (empty when not sent).
	Filename string `json:"filename"`
	Filetype string `json:"filetype"`
	// Metadata is the platform's metadata from the grant (sent as {} when
	// nil, like ClientMetadata).
	Metadata map[string]string `json:"metadata"`
	// ClientMetadata is the rest of the client's Upload-Metadata. The
	// caller must leave secrets (the api.video `token`) out.
	ClientMetadata map[string]string `json:"clientMetadata"`
	// ClientAddress is the client's IP address as the gateway sees it.
	ClientAddress string `json:"clientAddress"`
	// Host is the Host the client addressed the upload endpoint with.
	Host string `json:"host"`
}

// hookBody is the JSON body of a hook request.
type hookBody struct {
	Event  string `json:"event"`
	SentAt string `json:"sentAt"`
	HookRequest
}

// HookOption configures a Hook.
type HookOption func(*Hook) error

// WithHookSecret signs every hook request with secret (at least
// MinSecretLength bytes): SignatureHeader carries BodySignature(secret,
// body), so the platform can check the request comes from the gateway.
func WithHookSecret(secret []byte) HookOption {
	return func(h *Hook) error {
		if len(secret) < MinSecretLength {
			return fmt.Errorf("the auth hook secret is %d bytes long: it must be at least %d bytes", len(secret), MinSecretLength)
		}
		h.secret = append([]byte(nil), secret...)
		return nil
	}
}

// Hook asks the platform, over HTTP, whether an upload may be created.
// It is safe for concurrent use.
type Hook struct {
	url     string
	where   string // scheme://host of url, for errors (url may hold secrets)
	timeout time.Duration
	client  *http.Client
	secret  []byte
	now     func() time.Time
}

// NewHook returns a Hook that POSTs to rawURL (absolute http or https),
// each call bounded by timeout (0: DefaultHookTimeout). client is the
// HTTP client to use (nil: a new one with http.DefaultTransport); it is
// copied, and the copy never follows redirects (a 3xx is an outage, so a
// misconfigured URL fails closed). Errors never contain the URL, which may
// hold credentials.
func NewHook(rawURL string, timeout time.Duration, client *http.Client, opts ...HookOption) (*Hook, error) {
	u, err := url.Parse(rawURL)
	if err != nil || (u.Scheme != "http" && u.Scheme != "https") || u.Host == "" {
		return nil, errors.New("the auth hook URL must be an absolute http or https URL")
	}
	if timeout < 0 {
		return nil, fmt.Errorf("the auth hook timeout %v is negative", timeout)
	}
	if timeout == 0 {
		timeout = DefaultHookTimeout
	}
	var c http.Client
	if client != nil {
		c = *client
	}
	c.CheckRedirect = func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse }
	h := &Hook{
		url:     rawURL,
		where:   u.Scheme + "://" + u.Host,
		timeout: timeout,
		client:  &c,
		now:     time.Now,
	}
	for _, o := range opts {
		if err := o(h); err != nil {
			return nil, err
		}
	}
	return h, nil
}

// Check asks the hook about req. It returns nil when the hook answers 200
// or 204 (allow); a *DeniedError (errors.Is ErrHookDenied) when it answers
// 4xx; and an error wrapping ErrHookUnavailable on a timeout, a network
// error, a 3xx, a 5xx or another 2xx (fail closed). A nil Hook allows
// everything.
func (h *Hook) Check(ctx context.Context, req HookRequest) error {
	if h == nil {
		return nil
	}
	if req.Metadata == nil {
		req.Metadata = map[string]string{}
	}
	if req.ClientMetadata == nil {
		req.ClientMetadata = map[string]string{}
	}
	body, err := json.Marshal(hookBody{Event: HookEvent, SentAt: h.now().UTC().Format(time.RFC3339), HookRequest: req})
	if err != nil {
		return fmt.Errorf("%w: encode request: %w", ErrHookUnavailable, err)
	}
	parent := ctx
	ctx, cancel := context.WithTimeout(ctx, h.timeout)
	defer cancel()
	r, err := http.NewRequestWithContext(ctx, http.MethodPost, h.url, bytes.NewReader(body))
	if err != nil {
		return fmt.Errorf("%w: %s: build request", ErrHookUnavailable, h.where)
	}
	r.Header.Set("Content-Type", "application/json")
	r.Header.Set("Accept", "application/json")
	r.Header.Set("User-Agent", "tusgate-auth-hook")
	if h.secret != nil {
		r.Header.Set(SignatureHeader, BodySignature(h.secret, body))
	}
	resp, err := h.client.Do(r)
	if err != nil {
		return h.unavailable(parent, ctx, err)
	}
	defer resp.Body.Close()
	switch s := resp.StatusCode; {
	case s == http.StatusOK || s == http.StatusNoContent:
		_, _ = io.Copy(io.Discard, io.LimitReader(resp.Body, maxHookBody))
		return nil
	case s >= 400 && s <= 499:
		return denied(resp)
	case s >= 300 && s <= 399:
		return fmt.Errorf("%w: %s answered %d (redirects are not followed: fix --auth-hook-url)", ErrHookUnavailable, h.where, s)
	default:
		return fmt.Errorf("%w: %s answered %d", ErrHookUnavailable, h.where, s)
	}
}

// unavailable describes a failed round trip (ctx: the call's, parent:
// the caller's) without the URL.
func (h *Hook) unavailable(parent, ctx context.Context, err error) error {
	switch {
	case parent.Err() != nil:
		return fmt.Errorf("%w: %s: the request ended before the hook answered: %w", ErrHookUnavailable, h.where, parent.Err())
	case ctx.Err() != nil:
		return fmt.Errorf("%w: %s gave no answer within %v", ErrHookUnavailable, h.where, h.timeout)
	}
	if ue, ok := errors.AsType[*url.Error](err); ok {
		err = ue.Err // *url.Error's text holds the whole URL
	}
	return fmt.Errorf("%w: %s: %w", ErrHookUnavailable, h.where, err)
}

// denied builds the *DeniedError of a 4xx answer.
func denied(resp *http.Response) *DeniedError {
	e := &DeniedError{Status: http.StatusForbidden, Message: defaultHookMessage}
	switch resp.StatusCode {
	case http.StatusBadRequest, http.StatusUnauthorized, http.StatusForbidden, http.StatusRequestEntityTooLarge,
		http.StatusUnsupportedMediaType, http.StatusUnprocessableEntity, http.StatusTooManyRequests:
		e.Status = resp.StatusCode
	}
	if secs, err := strconv.ParseInt(strings.TrimSpace(resp.Header.Get("Retry-After")), 10, 64); err == nil && secs > 0 {
		e.RetryAfter = maxRetryAfter
		if secs < int64(maxRetryAfter/time.Second) {
			e.RetryAfter = time.Duration(secs) * time.Second
		}
	}
	// The body is read within the call's timeout; a body that cannot be
	// read or parsed leaves the default message: the refusal stands.
	b, _ := io.ReadAll(io.LimitReader(resp.Body, maxHookBody))
	var m struct {
		Message string `json:"message"`
	}
	if json.Unmarshal(b, &m) == nil {
		if msg := sanitize(m.Message, MaxHookMessageLength); msg != "" {
			e.Message = msg
		}
	}
	return e
}

// sanitize returns s as one line of printable text: runs of spaces,
// control and other non-printable characters and invalid UTF-8 become one
// space, and the result is trimmed and cut to at most n characters (the
// last one "…" when cut).
func sanitize(s string, n int) string {
	words := strings.FieldsFunc(s, func(r rune) bool {
		return r == utf8.RuneError || !unicode.IsPrint(r) || unicode.IsSpace(r)
	})
	out := strings.Join(words, " ")
	if r := []rune(out); len(r) > n {
		out = strings.TrimRight(string(r[:n-1]), " ") + "…"
	}
	return out
}

// BodySignature returns hex(HMAC-SHA256(secret, body)), the value of
// SignatureHeader on requests the gateway signs.
func BodySignature(secret, body []byte) string {
	m := hmac.New(sha256.New, secret)
	m.Write(body)
	return hex.EncodeToString(m.Sum(nil))
}

// VerifyBodySignature reports whether sig (a SignatureHeader value, hex,
// either case) is body's signature with secret, in constant time.
func VerifyBodySignature(secret, body []byte, sig string) bool {
	got, err := hex.DecodeString(strings.TrimSpace(sig))
	if err != nil {
		return false
	}
	m := hmac.New(sha256.New, secret)
	m.Write(body)
	return hmac.Equal(got, m.Sum(nil))
}
