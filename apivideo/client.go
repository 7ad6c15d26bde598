// Package apivideo is a small client for the parts of api.video's API that
// tusgate uses: delegated-token chunked uploads (POST /upload?token=…) and
// upload-token management. It imports only the standard library.
//
// Every error it returns has the upload token scrubbed from its text (Go's
// *url.Error would otherwise print the whole URL, token included), while
// errors.Is and errors.As still see the underlying network error. Classify
// errors with [IsTransient] and [RetryAfter].
//
// The package apivideotest beside it runs an emulator of api.video for tests.
package apivideo

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/url"
	"strings"
	"sync/atomic"
	"time"
)

// DefaultBaseURL is api.video's production host. The sandbox is
// https://sandbox.api.video.
const DefaultBaseURL = "https://ws.api.video"

// DefaultVersion is the version sent in the AV-Origin-Client header when
// none is given with [WithVersion].
const DefaultVersion = "dev"

// maxResponseBody caps how much of a successful answer is read (a Video or
// an UploadToken is a few KB).
const maxResponseBody = 1 << 20

// Client talks to api.video. It is safe for concurrent use. Build it with
// [New].
type Client struct {
	baseURL    string
	httpClient *http.Client
	origin     string // AV-Origin-Client header value
	apiKey     string
	sentByFile atomic.Int64 // part bytes sent with sendfile(2), for tests
}

// Option configures a Client.
type Option func(*Client)

// WithHTTPClient sets the HTTP client used for every request (default
// http.DefaultClient). Timeouts are best set per request through the
// context.
func WithHTTPClient(hc *http.Client) Option {
	return func(c *Client) {
		if hc != nil {
			c.httpClient = hc
		}
	}
}

// WithVersion sets the version announced in the AV-Origin-Client header
// (`tusgate:<version>`, default "dev").
func WithVersion(version string) Option {
	return func(c *Client) {
		if version != "" {
			c.origin = "tusgate:" + version
		}
	}
}

// WithAPIKey sets the api.video API key, needed only for the upload-token
// endpoints. It is sent with HTTP Basic authentication (the key as user
// name, an empty password) and never appears in errors.
func WithAPIKey(key string) Option {
	return func(c *Client) { c.apiKey = key }
}

// New returns a client for the api.video host at baseURL (for example
// [DefaultBaseURL] or an apivideotest server's URL).
func New(baseURL string, opts ...Option) *Client {
	c := &Client{baseURL: strings.TrimRight(baseURL, "/"), origin: "tusgate:" + DefaultVersion}
	c.httpClient = &http.Client{Transport: newTransport(&c.sentByFile)}
	for _, opt := range opts {
		opt(c)
	}
	return c
}

// newTransport returns the default transport for part uploads: Go's default
// settings, with room for a worker's idle connections per host, and plain
// TCP connections that send a part's file section with sendfile(2),
// counting those bytes into sentByFile (see [FileSection]; https keeps the
// ordinary path). The transport flushes the headers before a body of
// unknown kind and then hands the whole body to the connection's ReadFrom,
// which copies 32 KiB at a time for other bodies: the write buffer holds
// the headers and small in-memory bodies, never a part, so it keeps Go's
// default size (a larger one only held memory per connection).
func newTransport(sentByFile *atomic.Int64) *http.Transport {
	t := http.DefaultTransport.(*http.Transport).Clone()
	t.ReadBufferSize = 64 << 10
	t.MaxIdleConnsPerHost = 32
	dial := t.DialContext
	if dial == nil {
		dial = (&net.Dialer{Timeout: 30 * time.Second, KeepAlive: 30 * time.Second}).DialContext
	}
	t.DialContext = dialSendfile(dial, sentByFile)
	return t
}

// Video is the part of api.video's Video object that tusgate uses. It is
// returned by every accepted chunk.
type Video struct {
	// VideoID is the video's id ("vi" followed by 22 characters).
	VideoID string `json:"videoId"`
	// Title is the video's title: the uploaded file's name by default.
	Title string `json:"title"`
	// Description is the video's description.
	Description string `json:"description,omitempty"`
	// Public reports whether the video is public.
	Public bool `json:"public"`
	// CreatedAt is when the video was created.
	CreatedAt time.Time `json:"createdAt"`
	// UpdatedAt is when the video was last changed.
	UpdatedAt time.Time `json:"updatedAt"`
	// Source describes where the video's bytes came from.
	Source VideoSource `json:"source"`
	// Assets holds the URLs where the video can be watched.
	Assets Assets `json:"assets"`
}

// VideoSource is the origin of a video's bytes.
type VideoSource struct {
	// Type is "upload" for uploaded videos.
	Type string `json:"type,omitempty"`
	// URI is the API path of the video's source.
	URI string `json:"uri,omitempty"`
}

// Assets are the URLs of a video's player, stream and files.
type Assets struct {
	// Iframe is an HTML snippet embedding the player.
	Iframe string `json:"iframe,omitempty"`
	// Player is the URL of the hosted player.
	Player string `json:"player,omitempty"`
	// HLS is the URL of the HLS manifest.
	HLS string `json:"hls,omitempty"`
	// Thumbnail is the URL of the thumbnail image.
	Thumbnail string `json:"thumbnail,omitempty"`
	// MP4 is the URL of the MP4 file, when MP4 support is on.
	MP4 string `json:"mp4,omitempty"`
}

// UploadToken is a delegated upload token.
type UploadToken struct {
	// Token is the token itself ("to" followed by 22 characters). It is a
	// secret: String and GoString redact it.
	Token string `json:"token"`
	// TTL is the token's lifetime in seconds; 0 means it never expires.
	TTL int `json:"ttl"`
	// CreatedAt is when the token was created.
	CreatedAt time.Time `json:"createdAt"`
	// ExpiresAt is when the token expires; nil when it never does.
	ExpiresAt *time.Time `json:"expiresAt,omitempty"`
}

// String describes the token without revealing it.
func (t UploadToken) String() string {
	exp := "never"
	if t.ExpiresAt != nil {
		exp = t.ExpiresAt.Format(time.RFC3339)
	}
	return fmt.Sprintf("UploadToken{Token:REDACTED TTL:%d CreatedAt:%s ExpiresAt:%s}",
		t.TTL, t.CreatedAt.Format(time.RFC3339), exp)
}

// GoString is like String, so %#v does not reveal the token either.
func (t UploadToken) GoString() string { return t.String() }

// GetUploadToken fetches an upload token's details (GET
// /upload-tokens/{token}); it needs an API key. An unknown token yields an
// *Error with StatusCode 404.
func (c *Client) GetUploadToken(ctx context.Context, token string) (*UploadToken, error) {
	if token == "" {
		return nil, fmt.Errorf("apivideo: get upload token: %w: empty token", ErrInvalidRequest)
	}
	red := newRedactor(token)
	req, err := c.newAPIRequest(ctx, http.MethodGet, "/upload-tokens/"+url.PathEscape(token), nil)
	if err != nil {
		return nil, red.wrap("apivideo: get upload token", err)
	}
	var t UploadToken
	if err := c.do(req, red, &t); err != nil {
		return nil, fmt.Errorf("apivideo: get upload token: %w", err)
	}
	return &t, nil
}

// CreateUploadToken creates an upload token valid for ttl (POST
// /upload-tokens); ttl is rounded down to whole seconds and 0 means the
// token never expires. It needs an API key.
func (c *Client) CreateUploadToken(ctx context.Context, ttl time.Duration) (*UploadToken, error) {
	secs := int64(ttl / time.Second)
	if secs < 0 || secs > 2147483647 {
		return nil, fmt.Errorf("apivideo: create upload token: %w: ttl %s out of range", ErrInvalidRequest, ttl)
	}
	body, err := json.Marshal(struct {
		TTL int64 `json:"ttl"`
	}{secs})
	if err != nil {
		return nil, fmt.Errorf("apivideo: create upload token: %w", err)
	}
	req, err := c.newAPIRequest(ctx, http.MethodPost, "/upload-tokens", bytes.NewReader(body))
	if err != nil {
		return nil, fmt.Errorf("apivideo: create upload token: %w", err)
	}
	req.Header.Set("Content-Type", "application/json")
	var t UploadToken
	if err := c.do(req, redactor{}, &t); err != nil {
		return nil, fmt.Errorf("apivideo: create upload token: %w", err)
	}
	return &t, nil
}

// DeleteUploadToken deletes an upload token (DELETE /upload-tokens/{token});
// it stops working at once. It needs an API key. An unknown token yields an
// *Error with StatusCode 404.
func (c *Client) DeleteUploadToken(ctx context.Context, token string) error {
	if token == "" {
		return fmt.Errorf("apivideo: delete upload token: %w: empty token", ErrInvalidRequest)
	}
	red := newRedactor(token)
	req, err := c.newAPIRequest(ctx, http.MethodDelete, "/upload-tokens/"+url.PathEscape(token), nil)
	if err != nil {
		return red.wrap("apivideo: delete upload token", err)
	}
	if err := c.do(req, red, nil); err != nil {
		return fmt.Errorf("apivideo: delete upload token: %w", err)
	}
	return nil
}

// newAPIRequest builds a request to an endpoint that needs the API key.
func (c *Client) newAPIRequest(ctx context.Context, method, path string, body io.Reader) (*http.Request, error) {
	if c.apiKey == "" {
		return nil, ErrNoAPIKey
	}
	req, err := http.NewRequestWithContext(ctx, method, c.baseURL+path, body)
	if err != nil {
		return nil, fmt.Errorf("building request: %w", err)
	}
	req.SetBasicAuth(c.apiKey, "")
	c.setHeaders(req)
	return req, nil
}

func (c *Client) setHeaders(req *http.Request) {
	req.Header.Set("Accept", "application/json")
	req.Header.Set("AV-Origin-Client", c.origin)
}

// do sends req and decodes a 2xx JSON answer into out (nil: discard it).
// Every error it returns is scrubbed by red.
func (c *Client) do(req *http.Request, red redactor, out any) error {
	resp, err := c.httpClient.Do(req)
	if err != nil {
		return red.requestError(err)
	}
	defer resp.Body.Close()
	if resp.StatusCode < 200 || resp.StatusCode > 299 {
		return red.apiError(resp)
	}
	data, err := io.ReadAll(io.LimitReader(resp.Body, maxResponseBody))
	if err != nil {
		// The answer was cut: the request may or may not have been applied.
		return red.requestError(fmt.Errorf("reading %d answer: %w", resp.StatusCode, err))
	}
	if out == nil {
		return nil
	}
	if err := json.Unmarshal(data, out); err != nil {
		return red.wrap(fmt.Sprintf("decoding %d answer", resp.StatusCode), err)
	}
	return nil
}

// Sentinel errors.
var (
	// ErrNoVideoID is returned by UploadPart when api.video answered 2xx
	// without a videoId.
	ErrNoVideoID = errors.New("api.video's answer has no videoId")
	// ErrNoAPIKey is returned by the token endpoints when the client has no
	// API key.
	ErrNoAPIKey = errors.New("apivideo: no API key configured")
	// ErrInvalidRequest is returned (wrapped) when a request is invalid
	// before anything is sent.
	ErrInvalidRequest = errors.New("invalid request")
	// ErrShortBody is returned (wrapped) by UploadPart when the part's Body
	// ends before Size bytes; the part is not sent short.
	ErrShortBody = errors.New("part body shorter than its size")
)
