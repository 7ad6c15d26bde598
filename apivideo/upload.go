package apivideo

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"mime/multipart"
	"net"
	"net/http"
	"net/url"
	"strconv"
	"strings"
	"sync"
	"time"
)

// PartRequest is one chunk of a delegated-token upload.
type PartRequest struct {
	// Token is the delegated upload token. It is a secret: it never
	// appears in the errors UploadPart returns.
	Token string
	// VideoID is the id returned by part 1; empty for part 1 itself (a
	// chunk without it starts a new video).
	VideoID string
	// FileName becomes the video's title (default "video").
	FileName string
	// Part is the part number, from 1.
	Part int
	// TotalParts is the number of parts, or 0 while unknown: the chunk is
	// then sent as "part N/*". Send the last part of a deferred upload
	// with TotalParts = Part ("part N/N").
	TotalParts int
	// Body yields the part's bytes; exactly Size bytes are read from it.
	// UploadPart never reads it after returning (it waits for a Read in
	// progress, so Read must not block indefinitely). A Body that is a
	// [FileSection] is sent with sendfile(2) over plain HTTP.
	Body io.Reader
	// Size is the part's length in bytes.
	Size int64
}

// ContentRange returns the Content-Range header value of the part:
// "part k/N", or "part k/*" while the total is unknown.
func (r PartRequest) ContentRange() string {
	total := "*"
	if r.TotalParts > 0 {
		total = strconv.Itoa(r.TotalParts)
	}
	return "part " + strconv.Itoa(r.Part) + "/" + total
}

func (r PartRequest) validate() error {
	switch {
	case r.Token == "":
		return fmt.Errorf("%w: empty token", ErrInvalidRequest)
	case r.Part < 1:
		return fmt.Errorf("%w: part number %d, want ≥ 1", ErrInvalidRequest, r.Part)
	case r.TotalParts < 0, r.TotalParts > 0 && r.TotalParts < r.Part:
		return fmt.Errorf("%w: part %d of %d", ErrInvalidRequest, r.Part, r.TotalParts)
	case r.Size < 0:
		return fmt.Errorf("%w: negative size %d", ErrInvalidRequest, r.Size)
	case r.Body == nil && r.Size > 0:
		return fmt.Errorf("%w: nil body", ErrInvalidRequest)
	}
	return nil
}

// UploadPart sends one part (POST /upload?token=…, multipart/form-data with
// the videoId field before the file) and returns the video api.video
// answered with. The body is streamed: memory use does not grow with Size.
//
// Errors are an *Error when api.video answered with a non-2xx status;
// otherwise the request failed in transit (see [IsTransient]), or Body
// failed or ended early ([ErrShortBody]).
func (c *Client) UploadPart(ctx context.Context, req PartRequest) (*Video, error) {
	op := fmt.Sprintf("apivideo: upload part %d", req.Part)
	if err := req.validate(); err != nil {
		return nil, fmt.Errorf("%s: %w", op, err)
	}
	red := newRedactor(req.Token)

	name := req.FileName
	if name == "" {
		name = "video"
	}
	head, tail, contentType, err := multipartFrame(req.VideoID, name)
	if err != nil {
		return nil, fmt.Errorf("%s: %w", op, err)
	}
	part := &partReader{r: req.Body, remaining: req.Size}
	// Whatever happens, stop the transport from reading req.Body once we
	// return (it may keep writing the body after an early answer).
	defer part.detach()

	u := c.baseURL + "/upload?token=" + url.QueryEscape(req.Token)
	hreq, err := http.NewRequestWithContext(ctx, http.MethodPost, u, &partBody{head: head, part: part, tail: tail})
	if err != nil {
		return nil, red.wrap(op, err)
	}
	hreq.ContentLength = int64(len(head)) + req.Size + int64(len(tail))
	hreq.Header.Set("Content-Type", contentType)
	hreq.Header.Set("Content-Range", req.ContentRange())
	c.setHeaders(hreq)

	var v Video
	if err := c.do(hreq, red, &v); err != nil {
		return nil, fmt.Errorf("%s: %w", op, err)
	}
	if v.VideoID == "" {
		// The part may have been stored, but without the id the rest of
		// the video cannot follow: the caller treats this like a lost answer.
		return nil, fmt.Errorf("%s: %w", op, ErrNoVideoID)
	}
	return &v, nil
}

// multipartFrame returns the bytes that go before and after the file's
// content in the multipart body.
func multipartFrame(videoID, fileName string) (head, tail []byte, contentType string, err error) {
	var buf bytes.Buffer
	mw := multipart.NewWriter(&buf)
	if videoID != "" {
		if err := mw.WriteField("videoId", videoID); err != nil {
			return nil, nil, "", fmt.Errorf("writing videoId field: %w", err)
		}
	}
	if _, err := mw.CreateFormFile("file", sanitizeFileName(fileName)); err != nil {
		return nil, nil, "", fmt.Errorf("writing file part header: %w", err)
	}
	head = bytes.Clone(buf.Bytes())
	buf.Reset()
	if err := mw.Close(); err != nil {
		return nil, nil, "", fmt.Errorf("writing multipart trailer: %w", err)
	}
	return head, bytes.Clone(buf.Bytes()), mw.FormDataContentType(), nil
}

// sanitizeFileName drops control characters, which could break the part's
// headers.
func sanitizeFileName(name string) string {
	return strings.Map(func(r rune) rune {
		if r < 0x20 || r == 0x7f {
			return -1
		}
		return r
	}, name)
}

// partReader yields exactly remaining bytes of r, fails if r ends early, and
// can be detached: after detach returns, r is never read again, neither by
// Read nor by a sendfile (see sendFile).
type partReader struct {
	mu        sync.Mutex // held while r is read, by Read or sendFile
	r         io.Reader
	remaining int64
	detached  bool

	// sendMu guards aborted and sending; it is never held while blocking,
	// so detach can interrupt a sendfile that holds mu.
	sendMu  sync.Mutex
	aborted bool         // detach has begun
	sending *net.TCPConn // the connection a sendfile writes to, if any
}

// ready returns why the part gives no more bytes, or nil: a *sourceError
// once detached, io.EOF once it was read whole. p.mu is held.
func (p *partReader) ready() error {
	if p.detached {
		return &sourceError{err: errDetached}
	}
	if p.remaining <= 0 {
		return io.EOF
	}
	return nil
}

func (p *partReader) Read(b []byte) (int, error) {
	p.mu.Lock()
	defer p.mu.Unlock()
	if err := p.ready(); err != nil {
		return 0, err
	}
	if int64(len(b)) > p.remaining {
		b = b[:p.remaining]
	}
	n, err := p.r.Read(b)
	p.remaining -= int64(n)
	switch {
	case err == io.EOF && p.remaining > 0:
		return n, p.shortError()
	case err == io.EOF:
		return n, io.EOF
	case err != nil:
		return n, &sourceError{err: err}
	}
	return n, nil
}

func (p *partReader) shortError() error {
	return &sourceError{err: fmt.Errorf("%w: %d bytes missing", ErrShortBody, p.remaining)}
}

// detach waits for a Read or sendfile in progress and makes later ones
// fail. A sendfile blocked on a full socket would hold mu until the
// connection closes, so detach ends it with a write deadline in the past:
// the request is over by then, and its connection, whose body is cut,
// cannot be reused (sendFile fails the write, so the transport closes it).
func (p *partReader) detach() {
	p.sendMu.Lock()
	p.aborted = true
	if p.sending != nil {
		_ = p.sending.SetWriteDeadline(time.Unix(1, 0))
	}
	p.sendMu.Unlock()

	p.mu.Lock()
	p.detached = true
	p.mu.Unlock()
}

var errDetached = errors.New("body read after the request ended")

// sourceError marks a failure of the part's Body (not of the network).
type sourceError struct{ err error }

func (e *sourceError) Error() string { return "reading part body: " + e.err.Error() }
func (e *sourceError) Unwrap() error { return e.err }
