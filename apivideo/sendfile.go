package apivideo

import (
	"context"
	"io"
	"math"
	"net"
	"os"
	"sync/atomic"
	"syscall"
)

// FileSection is an optional interface of [PartRequest.Body]: a byte range
// of a regular file that the Body owns (tusgate's disk store implements
// it). Over plain HTTP, UploadPart sends such a part with sendfile(2), from
// the page cache to the socket, instead of copying it through the process.
// Over https (api.video itself) the bytes are encrypted in the process, so
// the Body is read like any io.Reader.
type FileSection interface {
	// FileSection returns the file the Body reads, the offset in it of the
	// Body's next byte and how many bytes the Body has left. The caller may
	// move the file's offset: the file is the Body's own.
	FileSection() (f *os.File, offset, remaining int64)
	// Seek moves the Body on; UploadPart calls Seek(n, io.SeekCurrent)
	// after sending n bytes of the file.
	Seek(offset int64, whence int) (int64, error)
}

// partBody is the multipart body of a part: the head frame, the part, the
// tail frame. It reads like io.MultiReader of the three, and a sendfileConn
// recognises it to send the part's file section with sendfile(2).
type partBody struct {
	head, tail []byte // what is left to send of each frame
	part       *partReader
	partDone   bool
}

func (b *partBody) Read(p []byte) (int, error) {
	if len(b.head) > 0 {
		n := copy(p, b.head)
		b.head = b.head[n:]
		return n, nil
	}
	if !b.partDone {
		n, err := b.part.Read(p)
		if err == io.EOF {
			b.partDone, err = true, nil
		}
		if n > 0 || err != nil {
			return n, err
		}
	}
	if len(b.tail) > 0 {
		n := copy(p, b.tail)
		b.tail = b.tail[n:]
		return n, nil
	}
	return 0, io.EOF
}

// Close does nothing: UploadPart detaches the part when it returns, and the
// caller closes its own Body. (Being an io.ReadCloser keeps net/http from
// wrapping the body, so the connection sees a *partBody.)
func (b *partBody) Close() error { return nil }

// sendsFile reports whether the part's bytes come from a FileSection.
func (b *partBody) sendsFile() bool {
	_, ok := b.part.r.(FileSection)
	return ok
}

// writeTo writes at most limit bytes of the body to c: the frames with
// write(2), the part with sendfile(2).
func (b *partBody) writeTo(c *sendfileConn, limit int64) (int64, error) {
	var n int64
	writeFrame := func(frame *[]byte) error {
		k := min(int64(len(*frame)), limit-n)
		m, err := c.TCPConn.Write((*frame)[:k])
		*frame = (*frame)[m:]
		n += int64(m)
		return err
	}
	if err := writeFrame(&b.head); err != nil || len(b.head) > 0 {
		return n, err
	}
	if !b.partDone {
		m, err := b.part.sendFile(c, limit-n)
		n += m
		if err != io.EOF { // failed, or limit reached within the part
			return n, err
		}
		b.partDone = true
	}
	return n, writeFrame(&b.tail)
}

// sendfileConn is a plain TCP connection to api.video whose ReadFrom sends
// a part's file section with sendfile(2). net/http hands the request body
// to it: after the headers are flushed, the transport copies the body
// (wrapped in an *io.LimitedReader of Content-Length bytes) into its
// bufio.Writer, whose ReadFrom passes it, its buffer being empty, to the
// connection's ReadFrom.
type sendfileConn struct {
	*net.TCPConn
	sent *atomic.Int64 // part bytes sent with sendfile(2)
}

// ReadFrom sends a part body with sendfile(2) when its part is a
// FileSection, and anything else as *net.TCPConn does.
func (c *sendfileConn) ReadFrom(r io.Reader) (int64, error) {
	src, limit := r, int64(math.MaxInt64)
	lr, limited := r.(*io.LimitedReader)
	if limited {
		src, limit = lr.R, lr.N
	}
	body, ok := src.(*partBody)
	if !ok || !body.sendsFile() {
		return c.TCPConn.ReadFrom(r)
	}
	n, err := body.writeTo(c, limit)
	if limited {
		lr.N -= n
	}
	return n, err
}

// sendFile sends the part's next bytes, at most limit, from its
// FileSection to c with sendfile(2). Like Read, it returns io.EOF once the
// whole part is sent and a *sourceError when the section ends early or
// the part was detached.
func (p *partReader) sendFile(c *sendfileConn, limit int64) (int64, error) {
	p.mu.Lock()
	defer p.mu.Unlock()
	if err := p.ready(); err != nil {
		return 0, err
	}
	section := p.r.(FileSection)
	f, off, left := section.FileSection()
	want := min(p.remaining, limit)
	if _, err := f.Seek(off, io.SeekStart); err != nil {
		return 0, &sourceError{err: err}
	}
	if !p.startSend(c.TCPConn) {
		return 0, &sourceError{err: errDetached}
	}
	src := &fileReader{f: f}
	// TCPConn.ReadFrom uses sendfile(2) for a syscall.Conn source (the
	// kernel reads from the file's offset and moves it), and falls back to
	// reading the source when the kernel refuses.
	n, err := c.TCPConn.ReadFrom(&io.LimitedReader{R: src, N: min(want, max(left, 0))})
	aborted := p.endSend()
	c.sent.Add(n - src.read)
	p.remaining -= n
	if n > 0 {
		if _, serr := section.Seek(n, io.SeekCurrent); serr != nil && err == nil {
			err = &sourceError{err: serr}
		}
	}
	switch {
	case aborted:
		return n, &sourceError{err: errDetached}
	case err != nil:
		return n, err
	case p.remaining == 0:
		return n, io.EOF
	case n < want:
		return n, p.shortError()
	}
	return n, nil
}

// startSend records that a sendfile to c begins, unless the part is being
// detached.
func (p *partReader) startSend(c *net.TCPConn) bool {
	p.sendMu.Lock()
	defer p.sendMu.Unlock()
	if p.aborted {
		return false
	}
	p.sending = c
	return true
}

// endSend records that the sendfile ended, and reports whether detach
// began meanwhile (it may have set a write deadline on the connection: the
// write must then fail, so the connection is not reused).
func (p *partReader) endSend() (aborted bool) {
	p.sendMu.Lock()
	defer p.sendMu.Unlock()
	p.sending = nil
	return p.aborted
}

// fileReader shows net's sendfile the file (through SyscallConn) and
// counts the bytes read from it by the fallback copy.
type fileReader struct {
	f    *os.File
	read int64
}

func (r *fileReader) Read(b []byte) (int, error) {
	n, err := r.f.Read(b)
	r.read += int64(n)
	return n, err
}

func (r *fileReader) SyscallConn() (syscall.RawConn, error) { return r.f.SyscallConn() }

// dialSendfile wraps dial so that plain TCP connections are sendfileConns
// counting into sent. Only plain HTTP uses the sendfile path: for https
// the transport runs TLS over the dialed connection and writes ciphertext
// through Write, so part bodies take the ordinary path (read into a buffer,
// encrypted, written).
func dialSendfile(dial func(ctx context.Context, network, addr string) (net.Conn, error), sent *atomic.Int64) func(ctx context.Context, network, addr string) (net.Conn, error) {
	return func(ctx context.Context, network, addr string) (net.Conn, error) {
		conn, err := dial(ctx, network, addr)
		if tc, ok := conn.(*net.TCPConn); ok && err == nil {
			return &sendfileConn{TCPConn: tc, sent: sent}, nil
		}
		return conn, err
	}
}

var (
	_ io.ReaderFrom = (*sendfileConn)(nil)
	_ io.ReadCloser = (*partBody)(nil)
	_ syscall.Conn  = (*fileReader)(nil)
)
