// Package tusclient is a small tus 1.0.0 client for tests: it creates uploads
// (with known, deferred or creation-with-upload lengths), reads their offset
// with HEAD and sends bytes with PATCH, resuming from the server's offset.
package tusclient

import (
	"bytes"
	"context"
	"encoding/base64"
	"errors"
	"fmt"
	"io"
	"net/http"
	"slices"
	"strconv"
	"strings"
)

// Deferred, passed as a size to Create, asks for a deferred-length upload
// (Upload-Defer-Length: 1); Upload then sends Upload-Length with the last PATCH.
const Deferred int64 = -1

// maxErrorBody is how much of an error response body HTTPError keeps.
const maxErrorBody = 4 << 10

// HTTPError is a response with an unexpected status.
type HTTPError struct {
	Method     string
	URL        string
	StatusCode int
	Header     http.Header
	// Body is the start of the response body (at most 4 KiB).
	Body string
}

// Error implements error.
func (e *HTTPError) Error() string {
	return fmt.Sprintf("tus %s %s: status %d: %s", e.Method, e.URL, e.StatusCode, strings.TrimSpace(e.Body))
}

// Info is what a HEAD request reports about an upload.
type Info struct {
	// Offset is the number of bytes the server holds.
	Offset int64
	// Length is the upload's size, or Deferred.
	Length int64
	// Metadata is the decoded Upload-Metadata header.
	Metadata map[string]string
	// Header is the whole response header.
	Header http.Header
}

// Client sends tus requests. The zero value uses http.DefaultClient.
type Client struct {
	// HTTPClient sends the requests; nil means http.DefaultClient.
	HTTPClient *http.Client
	// Header is added to every request (for example Origin or Authorization).
	Header http.Header
}

func (c *Client) httpClient() *http.Client {
	if c.HTTPClient != nil {
		return c.HTTPClient
	}
	return http.DefaultClient
}

func (c *Client) newRequest(ctx context.Context, method, u string, body io.Reader) (*http.Request, error) {
	req, err := http.NewRequestWithContext(ctx, method, u, body)
	if err != nil {
		return nil, fmt.Errorf("tus %s %s: %w", method, u, err)
	}
	for k, vs := range c.Header {
		for _, v := range vs {
			req.Header.Add(k, v)
		}
	}
	req.Header.Set("Tus-Resumable", "1.0.0")
	return req, nil
}

// do sends req and returns the response with its body read, or an
// *HTTPError when the status is not want.
func (c *Client) do(req *http.Request, want int) (*http.Response, error) {
	resp, err := c.httpClient().Do(req)
	if err != nil {
		return nil, fmt.Errorf("tus %s %s: %w", req.Method, req.URL, err)
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(io.LimitReader(resp.Body, maxErrorBody))
	if err != nil {
		return nil, fmt.Errorf("tus %s %s: read response: %w", req.Method, req.URL, err)
	}
	if resp.StatusCode != want {
		return nil, &HTTPError{Method: req.Method, URL: req.URL.String(), StatusCode: resp.StatusCode, Header: resp.Header, Body: string(body)}
	}
	return resp, nil
}

// EncodeMetadata encodes metadata as an Upload-Metadata header value, keys
// sorted; an empty value is sent as a bare key.
func EncodeMetadata(metadata map[string]string) string {
	keys := make([]string, 0, len(metadata))
	for k := range metadata {
		keys = append(keys, k)
	}
	slices.Sort(keys)
	parts := make([]string, 0, len(keys))
	for _, k := range keys {
		if metadata[k] == "" {
			parts = append(parts, k)
			continue
		}
		parts = append(parts, k+" "+base64.StdEncoding.EncodeToString([]byte(metadata[k])))
	}
	return strings.Join(parts, ",")
}

// DecodeMetadata decodes an Upload-Metadata header value.
func DecodeMetadata(h string) (map[string]string, error) {
	m := map[string]string{}
	if strings.TrimSpace(h) == "" {
		return m, nil
	}
	for entry := range strings.SplitSeq(h, ",") {
		key, val, _ := strings.Cut(strings.TrimSpace(entry), " ")
		dec, err := base64.StdEncoding.DecodeString(val)
		if err != nil {
			return nil, fmt.Errorf("decode Upload-Metadata key %q: %w", key, err)
		}
		m[key] = string(dec)
	}
	return m, nil
}

// Create creates an upload of size bytes (or Deferred) at endpoint and
// returns its absolute URL.
func (c *Client) Create(ctx context.Context, endpoint string, size int64, metadata map[string]string) (string, error) {
	u, _, err := c.create(ctx, endpoint, size, metadata, nil)
	return u, err
}

// CreateWithUpload creates an upload and sends data in the same request
// (creation-with-upload). It returns the upload's URL and the offset the
// server reports.
func (c *Client) CreateWithUpload(ctx context.Context, endpoint string, size int64, metadata map[string]string, data []byte) (string, int64, error) {
	return c.create(ctx, endpoint, size, metadata, data)
}

func (c *Client) create(ctx context.Context, endpoint string, size int64, metadata map[string]string, data []byte) (string, int64, error) {
	var body io.Reader
	if data != nil {
		body = bytes.NewReader(data)
	}
	req, err := c.newRequest(ctx, http.MethodPost, endpoint, body)
	if err != nil {
		return "", 0, err
	}
	if size == Deferred {
		req.Header.Set("Upload-Defer-Length", "1")
	} else {
		req.Header.Set("Upload-Length", strconv.FormatInt(size, 10))
	}
	if len(metadata) > 0 {
		req.Header.Set("Upload-Metadata", EncodeMetadata(metadata))
	}
	if data != nil {
		req.Header.Set("Content-Type", "application/offset+octet-stream")
	}
	resp, err := c.do(req, http.StatusCreated)
	if err != nil {
		return "", 0, err
	}
	loc := resp.Header.Get("Location")
	if loc == "" {
		return "", 0, fmt.Errorf("tus POST %s: no Location in the response", endpoint)
	}
	abs, err := req.URL.Parse(loc)
	if err != nil {
		return "", 0, fmt.Errorf("tus POST %s: bad Location %q: %w", endpoint, loc, err)
	}
	var off int64
	if data != nil {
		if off, err = parseOffset(resp); err != nil {
			return "", 0, fmt.Errorf("tus POST %s: %w", endpoint, err)
		}
	}
	return abs.String(), off, nil
}

// Head returns the server's view of an upload.
func (c *Client) Head(ctx context.Context, uploadURL string) (Info, error) {
	req, err := c.newRequest(ctx, http.MethodHead, uploadURL, nil)
	if err != nil {
		return Info{}, err
	}
	resp, err := c.do(req, http.StatusOK)
	if err != nil {
		return Info{}, err
	}
	info := Info{Length: Deferred, Header: resp.Header}
	if info.Offset, err = parseOffset(resp); err != nil {
		return Info{}, fmt.Errorf("tus HEAD %s: %w", uploadURL, err)
	}
	if l := resp.Header.Get("Upload-Length"); l != "" {
		if info.Length, err = strconv.ParseInt(l, 10, 64); err != nil {
			return Info{}, fmt.Errorf("tus HEAD %s: bad Upload-Length %q: %w", uploadURL, l, err)
		}
	} else if resp.Header.Get("Upload-Defer-Length") != "1" {
		return Info{}, fmt.Errorf("tus HEAD %s: neither Upload-Length nor Upload-Defer-Length", uploadURL)
	}
	if info.Metadata, err = DecodeMetadata(resp.Header.Get("Upload-Metadata")); err != nil {
		return Info{}, fmt.Errorf("tus HEAD %s: %w", uploadURL, err)
	}
	return info, nil
}

// Patch sends n bytes of body at offset (n < 0: unknown length, sent
// chunked). uploadLength ≥ 0 also declares the length of a deferred upload.
// It returns the new offset the server reports.
func (c *Client) Patch(ctx context.Context, uploadURL string, offset int64, body io.Reader, n, uploadLength int64) (int64, error) {
	req, err := c.newRequest(ctx, http.MethodPatch, uploadURL, body)
	if err != nil {
		return 0, err
	}
	if n >= 0 {
		req.ContentLength = n
		if n == 0 {
			req.Body = http.NoBody
		}
	}
	req.Header.Set("Content-Type", "application/offset+octet-stream")
	req.Header.Set("Upload-Offset", strconv.FormatInt(offset, 10))
	if uploadLength >= 0 {
		req.Header.Set("Upload-Length", strconv.FormatInt(uploadLength, 10))
	}
	resp, err := c.do(req, http.StatusNoContent)
	if err != nil {
		return 0, err
	}
	off, err := parseOffset(resp)
	if err != nil {
		return 0, fmt.Errorf("tus PATCH %s: %w", uploadURL, err)
	}
	return off, nil
}

// Upload sends the bytes of r (size bytes in all) that the server does not
// have yet, in PATCHes of at most chunkSize bytes, resuming from the offset a
// HEAD reports. For a deferred-length upload, the last PATCH declares size.
func (c *Client) Upload(ctx context.Context, uploadURL string, r io.ReaderAt, size, chunkSize int64) error {
	if chunkSize <= 0 {
		return fmt.Errorf("tus upload %s: chunk size %d: must be positive", uploadURL, chunkSize)
	}
	info, err := c.Head(ctx, uploadURL)
	if err != nil {
		return err
	}
	deferred := info.Length == Deferred
	if !deferred && info.Length != size {
		return fmt.Errorf("tus upload %s: server has length %d, want %d", uploadURL, info.Length, size)
	}
	off := info.Offset
	for off < size || deferred {
		n := min(chunkSize, size-off)
		declare := int64(-1)
		if deferred && off+n == size {
			declare = size
		}
		got, err := c.Patch(ctx, uploadURL, off, io.NewSectionReader(r, off, n), n, declare)
		if err != nil {
			return err
		}
		if got != off+n {
			return fmt.Errorf("tus upload %s: offset after PATCH: got %d, want %d", uploadURL, got, off+n)
		}
		off = got
		if declare >= 0 {
			deferred = false
		}
	}
	return nil
}

// Delete terminates an upload.
func (c *Client) Delete(ctx context.Context, uploadURL string) error {
	req, err := c.newRequest(ctx, http.MethodDelete, uploadURL, nil)
	if err != nil {
		return err
	}
	_, err = c.do(req, http.StatusNoContent)
	return err
}

// StatusCode returns the HTTP status of an *HTTPError in err's chain, or 0.
func StatusCode(err error) int {
	if he, ok := errors.AsType[*HTTPError](err); ok {
		return he.StatusCode
	}
	return 0
}

func parseOffset(resp *http.Response) (int64, error) {
	s := resp.Header.Get("Upload-Offset")
	off, err := strconv.ParseInt(s, 10, 64)
	if err != nil || off < 0 {
		return 0, fmt.Errorf("bad Upload-Offset %q", s)
	}
	return off, nil
}
