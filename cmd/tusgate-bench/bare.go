package main

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"flag"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"strconv"
	"sync"
	"syscall"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"
	"github.com/prometheus/client_golang/prometheus/promhttp"
	"github.com/tus/tusd/v2/pkg/handler"

	"github.com/tusgate/tusgate/apivideo"
	"github.com/tusgate/tusgate/internal/benchkit"
)

const (
	// bareCopyBuf is the bare server's read and write size.
	bareCopyBuf = 1 << 20
	// bareLowWater is the socket receive low-water mark (SO_RCVLOWAT) of
	// a PATCH's reads, as tusgate's largest; bareSlack is net/http's
	// server read buffer, whose bytes are no longer in the socket.
	bareMark  = 256 << 10
	bareSlack = 4 << 10
)

// serveBare is the serve-bare subcommand: a yardstick, not a gateway. It
// does only what any server that stores and forwards every byte must do:
// read each PATCH body from the socket with 1 MiB reads batched by a
// 256 KiB socket low-water mark (what tusgate does for a fast body; bare
// has no stall handling, so it serves unpaced clients only), write it to a
// file,
// and send each completed part of the file to api.video (tusgate's own
// client, so sendfile(2)), part after part while the upload arrives. It
// speaks just enough tus for the benchmark's client, and has no state
// store, locks, auth, limits, retries, hole punching or tusd. What it costs
// per byte is the machine's floor for storing and forwarding; what tusgate
// costs above it is the gateway's own. GET /uploads/{id} answers like
// tusgate's status endpoint, so the benchmark waits for delivery the same
// way.
func serveBare(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	return runBare(ctx, args, os.Stdin, stdout, stderr)
}

// runBare is serveBare with its standard input given: it serves until ctx
// ends or stdin reaches EOF.
func runBare(ctx context.Context, args []string, stdin io.Reader, stdout, stderr io.Writer) error {
	fs := flag.NewFlagSet(cmdServeBare, flag.ContinueOnError)
	fs.SetOutput(stderr)
	dir := fs.String("dir", "", "upload directory (created if missing)")
	listen := fs.String("listen", "127.0.0.1:0", "listen address")
	apiURL := fs.String("apivideo-url", "", "api.video base URL (the emulator)")
	partSize := int64(50 * mib)
	fs.Var(benchkit.SizeValue{P: &partSize, Max: maxSize}, "part-size", "size of each part sent to api.video")
	if err := fs.Parse(args); err != nil {
		return err
	}
	switch {
	case *dir == "":
		return errors.New("--dir is required")
	case *apiURL == "":
		return errors.New("--apivideo-url is required")
	}
	if err := os.MkdirAll(*dir, 0o755); err != nil {
		return fmt.Errorf("--dir: %w", err)
	}
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	s := &bareServer{ctx: ctx, dir: *dir, api: apivideo.New(*apiURL), partSize: partSize, log: stderr,
		uploads: map[string]*bareUpload{}}
	s.bufs.New = func() any { return new([bareCopyBuf]byte) }

	reg := prometheus.NewRegistry()
	reg.MustRegister(collectors.NewGoCollector(), collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}))
	mux := http.NewServeMux()
	mux.HandleFunc("POST /files/", s.create)
	mux.HandleFunc("HEAD /files/{id}", s.head)
	mux.HandleFunc("PATCH /files/{id}", s.patch)
	mux.HandleFunc("GET /uploads/{id}", s.status)
	mux.HandleFunc("GET /healthz", func(w http.ResponseWriter, r *http.Request) { _, _ = io.WriteString(w, "ok\n") })
	mux.Handle("GET /metrics", promhttp.HandlerFor(reg, promhttp.HandlerOpts{}))
	err := benchkit.ServeWith(ctx, *listen, mux, bareConnContext, stdin, stdout, func(addr string) string { return addr })
	cancel()
	s.forwarders.Wait()
	s.closeAll()
	return err
}

// bareServer is serve-bare's state: its uploads, in memory only.
type bareServer struct {
	ctx        context.Context // ends the forwarders
	dir        string
	api        *apivideo.Client
	partSize   int64
	log        io.Writer
	bufs       sync.Pool // *[bareCopyBuf]byte
	forwarders sync.WaitGroup

	mu      sync.Mutex
	uploads map[string]*bareUpload
}

// bareUpload is one upload. Its mutex guards the fields below it; cond
// signals every change of received, and the end of the upload's context.
type bareUpload struct {
	token, path string
	size        int64

	mu        sync.Mutex
	file      *os.File // written by PATCHes; nil once complete
	cond      *sync.Cond
	received  int64
	delivered int64
	patching  bool
	err       error // forwarding failed
}

func (s *bareServer) get(w http.ResponseWriter, r *http.Request) *bareUpload {
	s.mu.Lock()
	u := s.uploads[r.PathValue("id")]
	s.mu.Unlock()
	if u == nil {
		http.Error(w, "no such upload", http.StatusNotFound)
	}
	return u
}

func (s *bareServer) closeAll() {
	s.mu.Lock()
	defer s.mu.Unlock()
	for _, u := range s.uploads {
		u.mu.Lock()
		if u.file != nil {
			_ = u.file.Close()
		}
		u.mu.Unlock()
	}
}

// create is tus creation: Upload-Length, and the delegated token in the
// metadata key "token".
func (s *bareServer) create(w http.ResponseWriter, r *http.Request) {
	w.Header().Set("Tus-Resumable", "1.0.0")
	size, err := strconv.ParseInt(r.Header.Get("Upload-Length"), 10, 64)
	if err != nil || size < 1 {
		http.Error(w, "Upload-Length: want a positive integer", http.StatusBadRequest)
		return
	}
	token := handler.ParseMetadataHeader(r.Header.Get("Upload-Metadata"))["token"]
	if token == "" {
		http.Error(w, "Upload-Metadata: want a token", http.StatusBadRequest)
		return
	}
	var raw [16]byte
	_, _ = rand.Read(raw[:]) // never fails (crypto/rand)
	id := hex.EncodeToString(raw[:])
	path := filepath.Join(s.dir, id)
	f, err := os.OpenFile(path, os.O_WRONLY|os.O_CREATE|os.O_EXCL, 0o644)
	if err != nil {
		http.Error(w, "create the data file: "+err.Error(), http.StatusInternalServerError)
		return
	}
	u := &bareUpload{token: token, path: path, size: size, file: f}
	u.cond = sync.NewCond(&u.mu)
	s.mu.Lock()
	s.uploads[id] = u
	s.mu.Unlock()
	s.forwarders.Go(func() { s.forward(id, u) })
	w.Header().Set("Location", "/files/"+id)
	w.WriteHeader(http.StatusCreated)
}

func (s *bareServer) head(w http.ResponseWriter, r *http.Request) {
	u := s.get(w, r)
	if u == nil {
		return
	}
	u.mu.Lock()
	off := u.received
	u.mu.Unlock()
	w.Header().Set("Tus-Resumable", "1.0.0")
	w.Header().Set("Upload-Offset", strconv.FormatInt(off, 10))
	w.Header().Set("Upload-Length", strconv.FormatInt(u.size, 10))
	w.Header().Set("Cache-Control", "no-store")
	w.WriteHeader(http.StatusOK)
}

// patch appends the body at Upload-Offset, which must be the upload's
// offset, reading and writing 1 MiB at a time.
func (s *bareServer) patch(w http.ResponseWriter, r *http.Request) {
	w.Header().Set("Tus-Resumable", "1.0.0")
	u := s.get(w, r)
	if u == nil {
		return
	}
	if r.Header.Get("Content-Type") != "application/offset+octet-stream" {
		http.Error(w, "Content-Type: want application/offset+octet-stream", http.StatusUnsupportedMediaType)
		return
	}
	off, err := strconv.ParseInt(r.Header.Get("Upload-Offset"), 10, 64)
	u.mu.Lock()
	switch {
	case err != nil:
		u.mu.Unlock()
		http.Error(w, "Upload-Offset: want an integer", http.StatusBadRequest)
		return
	case u.patching || off != u.received:
		u.mu.Unlock()
		http.Error(w, "Upload-Offset does not match the upload's offset, or another PATCH is in progress", http.StatusConflict)
		return
	case r.ContentLength > u.size-off:
		u.mu.Unlock()
		http.Error(w, "the body goes past Upload-Length", http.StatusRequestEntityTooLarge)
		return
	}
	u.patching = true
	u.mu.Unlock()
	defer func() {
		u.mu.Lock()
		u.patching = false
		u.mu.Unlock()
	}()

	buf := s.bufs.Get().(*[bareCopyBuf]byte)
	defer s.bufs.Put(buf)
	lw := newBareLowWater(r)
	defer lw.set(1)
	remaining := r.ContentLength
	for {
		if remaining > 0 {
			lw.set(int(min(max(remaining-bareSlack, 1), bareMark)))
		}
		n, rerr := r.Body.Read(buf[:])
		remaining -= int64(n)
		// A body without Content-Length may still run past the upload's
		// end: keep what fits, then refuse the rest.
		tooLong := off+int64(n) > u.size
		if tooLong {
			n = int(u.size - off)
		}
		if n > 0 {
			if _, err := u.file.WriteAt(buf[:n], off); err != nil {
				http.Error(w, "write: "+err.Error(), http.StatusInternalServerError)
				return
			}
			off += int64(n)
			u.mu.Lock()
			u.received = off
			u.cond.Broadcast()
			u.mu.Unlock()
		}
		if tooLong {
			http.Error(w, "the body goes past Upload-Length", http.StatusRequestEntityTooLarge)
			return
		}
		if rerr == io.EOF {
			break
		}
		if rerr != nil {
			// The client went away: what arrived is kept, as tus wants.
			return
		}
	}
	if off == u.size {
		// Complete: the forwarder's reads are all that is left.
		var err error
		u.mu.Lock()
		if u.file != nil {
			err = u.file.Close()
			u.file = nil
		}
		u.mu.Unlock()
		if err != nil {
			http.Error(w, "close: "+err.Error(), http.StatusInternalServerError)
			return
		}
	}
	w.Header().Set("Upload-Offset", strconv.FormatInt(off, 10))
	w.WriteHeader(http.StatusNoContent)
}

// forward sends the upload to api.video part by part, each as soon as its
// bytes have arrived, until it is complete, the server stops or a part
// fails (no retries: the benchmark reports the failure).
func (s *bareServer) forward(id string, u *bareUpload) {
	stop := context.AfterFunc(s.ctx, func() {
		u.mu.Lock()
		u.cond.Broadcast()
		u.mu.Unlock()
	})
	defer stop()
	parts := int((u.size + s.partSize - 1) / s.partSize)
	videoID := ""
	for k := 1; k <= parts; k++ {
		start := int64(k-1) * s.partSize
		end := min(start+s.partSize, u.size)
		u.mu.Lock()
		for u.received < end && s.ctx.Err() == nil {
			u.cond.Wait()
		}
		u.mu.Unlock()
		if s.ctx.Err() != nil {
			return
		}
		v, err := s.sendPart(u, videoID, k, parts, start, end)
		if err == nil && k == parts {
			// Delivered: remove the file before saying so, so that freeing
			// its page cache counts, as tusgate's removal does.
			err = os.Remove(u.path)
		}
		u.mu.Lock()
		if err != nil {
			u.err = err
		} else {
			u.delivered = end
		}
		u.mu.Unlock()
		if err != nil {
			fmt.Fprintf(s.log, "bare: upload %s: %v\n", id, err)
			return
		}
		videoID = v.VideoID
	}
}

// sendPart sends bytes [start, end) of the upload's file as part k of
// parts, from a file of its own so that sendfile(2) may move its offset.
func (s *bareServer) sendPart(u *bareUpload, videoID string, k, parts int, start, end int64) (*apivideo.Video, error) {
	f, err := os.Open(u.path)
	if err != nil {
		return nil, err
	}
	defer f.Close()
	return s.api.UploadPart(s.ctx, apivideo.PartRequest{
		Token: u.token, VideoID: videoID, Part: k, TotalParts: parts,
		Body: &bareSection{SectionReader: io.NewSectionReader(f, start, end-start), f: f}, Size: end - start,
	})
}

// bareSection is a byte range of a file read with pread(2); it is an
// apivideo.FileSection, so the part goes out with sendfile(2).
type bareSection struct {
	*io.SectionReader
	f *os.File
}

func (s *bareSection) FileSection() (f *os.File, offset, remaining int64) {
	_, base, size := s.Outer()
	pos, _ := s.Seek(0, io.SeekCurrent) // cannot fail
	return s.f, base + pos, max(size-pos, 0)
}

// bareConnKey is the context key of a request's connection.
type bareConnKey struct{}

// bareConnContext records each TCP connection for the low-water mark.
func bareConnContext(ctx context.Context, c net.Conn) context.Context {
	if tc, ok := c.(*net.TCPConn); ok {
		if rc, err := tc.SyscallConn(); err == nil {
			return context.WithValue(ctx, bareConnKey{}, rc)
		}
	}
	return ctx
}

// bareLowWater sets a request's socket low-water mark.
type bareLowWater struct {
	rc  syscall.RawConn // nil: not a TCP connection, or the option failed
	cur int
}

func newBareLowWater(r *http.Request) *bareLowWater {
	rc, _ := r.Context().Value(bareConnKey{}).(syscall.RawConn)
	return &bareLowWater{rc: rc, cur: 1}
}

// set makes v the mark, unless it is already.
func (l *bareLowWater) set(v int) {
	if l.rc == nil || v == l.cur {
		return
	}
	var serr error
	if err := l.rc.Control(func(fd uintptr) {
		serr = syscall.SetsockoptInt(int(fd), syscall.SOL_SOCKET, syscall.SO_RCVLOWAT, v)
	}); err != nil || serr != nil {
		l.rc = nil // read unbatched from now on
		return
	}
	l.cur = v
}

// status answers like tusgate's GET /uploads/{id}, with the fields the
// benchmark reads.
func (s *bareServer) status(w http.ResponseWriter, r *http.Request) {
	u := s.get(w, r)
	if u == nil {
		return
	}
	u.mu.Lock()
	st := benchkit.UploadStatus{State: "receiving", Received: u.received, Delivered: u.delivered}
	switch {
	case u.err != nil:
		st.State = "failed"
		st.Error = &benchkit.StatusError{Reason: "forwarding", Message: u.err.Error()}
	case u.delivered == u.size:
		st.State = "delivered"
	}
	u.mu.Unlock()
	benchkit.ReplyJSON(w, st)
}
