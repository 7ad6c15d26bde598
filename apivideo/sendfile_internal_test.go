package apivideo

import (
	"errors"
	"io"
	"net"
	"os"
	"path/filepath"
	"sync/atomic"
	"testing"
	"time"

	"github.com/tusgate/tusgate/internal/testwait"
)

// section is a FileSection over a file of its own.
type section struct {
	*io.SectionReader
	f *os.File
}

func (s *section) FileSection() (*os.File, int64, int64) {
	_, base, size := s.Outer()
	pos, _ := s.Seek(0, io.SeekCurrent)
	return s.f, base + pos, size - pos
}

// TestDetachInterruptsBlockedSendfile sends a 64 MiB part to a peer that
// never reads, so the sendfile blocks on the full socket; detach must end
// it and return (nothing else would: no transport closes this
// connection), and the part must not be read afterwards.
func TestDetachInterruptsBlockedSendfile(t *testing.T) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	accepted := make(chan net.Conn, 1)
	go func() {
		c, err := ln.Accept()
		if err != nil {
			close(accepted)
			return
		}
		accepted <- c
	}()
	conn, err := net.Dial("tcp", ln.Addr().String())
	if err != nil {
		t.Fatal(err)
	}
	peer, ok := <-accepted
	if !ok {
		t.Fatal("accept failed")
	}
	defer peer.Close()
	var sent atomic.Int64
	sc := &sendfileConn{TCPConn: conn.(*net.TCPConn), sent: &sent}

	const size = 64 << 20
	path := filepath.Join(t.TempDir(), "part")
	f, err := os.Create(path)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	if err := f.Truncate(size); err != nil { // sparse: reads as zeros
		t.Fatal(err)
	}
	part := &partReader{r: &section{SectionReader: io.NewSectionReader(f, 0, size), f: f}, remaining: size}
	body := &partBody{head: []byte("head"), part: part, tail: []byte("tail")}
	done := make(chan error, 1)
	go func() {
		_, err := sc.ReadFrom(&io.LimitedReader{R: body, N: size + 8})
		done <- err
	}()
	testwait.For(t, 10*time.Second, "the sendfile to start", func() bool {
		part.sendMu.Lock()
		defer part.sendMu.Unlock()
		return part.sending != nil
	})

	detached := make(chan struct{})
	go func() {
		part.detach()
		close(detached)
	}()
	testwait.For(t, 10*time.Second, "detach to return", func() bool {
		select {
		case <-detached:
			return true
		default:
			return false
		}
	})
	err = <-done
	var src *sourceError
	if !errors.As(err, &src) || !errors.Is(err, errDetached) {
		t.Errorf("ReadFrom: got %v, want a sourceError for a detached part", err)
	}
	pos, err := f.Seek(0, io.SeekCurrent)
	if err != nil {
		t.Fatal(err)
	}
	if pos >= size || sent.Load() != pos {
		t.Errorf("file offset %d, counted %d sent with sendfile: want equal, below %d", pos, sent.Load(), int64(size))
	}
	if n, err := part.Read(make([]byte, 10)); n != 0 || !errors.Is(err, errDetached) {
		t.Errorf("Read after detach: %d, %v; want 0, errDetached", n, err)
	}

	// The peer gets exactly the head frame and what sendfile reported.
	sc.Close()
	got, err := io.Copy(io.Discard, peer)
	if err != nil {
		t.Fatal(err)
	}
	if want := int64(len("head")) + pos; got != want {
		t.Errorf("peer received %d bytes, want %d", got, want)
	}
}

// TestSendFileAfterDetach checks that a part detached before the transport
// gets to its body sends nothing.
func TestSendFileAfterDetach(t *testing.T) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	conn, err := net.Dial("tcp", ln.Addr().String())
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	var sent atomic.Int64
	sc := &sendfileConn{TCPConn: conn.(*net.TCPConn), sent: &sent}
	f, err := os.Create(filepath.Join(t.TempDir(), "part"))
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	if err := f.Truncate(1 << 20); err != nil {
		t.Fatal(err)
	}
	part := &partReader{r: &section{SectionReader: io.NewSectionReader(f, 0, 1<<20), f: f}, remaining: 1 << 20}
	part.detach()
	n, err := sc.ReadFrom(&partBody{part: part})
	if n != 0 || !errors.Is(err, errDetached) || sent.Load() != 0 {
		t.Errorf("ReadFrom after detach: %d bytes (%d by sendfile), %v; want nothing sent, errDetached", n, sent.Load(), err)
	}
}
