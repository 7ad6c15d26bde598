package apivideo_test

import (
	"bufio"
	"bytes"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"io"
	"mime"
	"mime/multipart"
	"net"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"runtime"
	"strconv"
	"testing"
	"time"

	"github.com/tus/tusd/v2/pkg/handler"

	"github.com/tusgate/tusgate/apivideo"
	"github.com/tusgate/tusgate/apivideo/apivideotest"
	"github.com/tusgate/tusgate/gateway"
)

// writePatternFile writes n pattern bytes made from seed to a new file and
// returns its path.
func writePatternFile(tb testing.TB, seed byte, n int64) string {
	tb.Helper()
	path := filepath.Join(tb.TempDir(), "data-"+strconv.Itoa(int(seed)))
	f, err := os.Create(path)
	if err != nil {
		tb.Fatal(err)
	}
	if _, err := io.Copy(f, newPattern(seed, n)); err != nil {
		tb.Fatal(err)
	}
	if err := f.Close(); err != nil {
		tb.Fatal(err)
	}
	return path
}

// fileRange is an apivideo.FileSection over a file of its own, as the
// gateway's disk store hands them out.
type fileRange struct {
	*io.SectionReader
	f *os.File
}

// openRange opens bytes [off, off+n) of the file at path; n may run past
// the file's end. The test closes it at the end.
func openRange(tb testing.TB, path string, off, n int64) *fileRange {
	tb.Helper()
	f, err := os.Open(path)
	if err != nil {
		tb.Fatal(err)
	}
	tb.Cleanup(func() { f.Close() })
	return &fileRange{SectionReader: io.NewSectionReader(f, off, n), f: f}
}

func (r *fileRange) FileSection() (*os.File, int64, int64) {
	_, base, size := r.Outer()
	pos, _ := r.Seek(0, io.SeekCurrent)
	return r.f, base + pos, size - pos
}

var _ apivideo.FileSection = (*fileRange)(nil)

// fileSum is the hex SHA-256 of bytes [off, off+n) of the file at path.
func fileSum(tb testing.TB, path string, off, n int64) string {
	tb.Helper()
	f, err := os.Open(path)
	if err != nil {
		tb.Fatal(err)
	}
	defer f.Close()
	h := sha256.New()
	if m, err := io.Copy(h, io.NewSectionReader(f, off, n)); err != nil || m != n {
		tb.Fatalf("hashing %s [%d, +%d): %d bytes, %v", path, off, n, m, err)
	}
	return hex.EncodeToString(h.Sum(nil))
}

// TestUploadPartSendsFileSections sends three parts of a file, the last
// one from a Body already read into, and checks that the bytes arrive
// intact and that sendfile(2) carried them.
func TestUploadPartSendsFileSections(t *testing.T) {
	srv := newEmulator(t)
	token := srv.CreateToken(time.Hour)
	c := apivideo.New(srv.URL)
	size := 13*mib + 17
	path := writePatternFile(t, 7, size)

	type span struct{ off, n int64 }
	parts := []span{{0, 5 * mib}, {5 * mib, 5 * mib}, {10 * mib, size - 10*mib}}
	const skipped = 1000 // the third Body has been read this far already
	var videoID string
	var sent int64
	for k, p := range parts {
		body := openRange(t, path, p.off, p.n)
		size := p.n
		if k == 2 {
			if _, err := io.CopyN(io.Discard, body, skipped); err != nil {
				t.Fatal(err)
			}
			size -= skipped
		}
		v, err := c.UploadPart(t.Context(), apivideo.PartRequest{
			Token: token, VideoID: videoID, FileName: "file.mp4",
			Part: k + 1, TotalParts: len(parts), Body: body, Size: size,
		})
		if err != nil {
			t.Fatalf("part %d: %v", k+1, err)
		}
		videoID = v.VideoID
		sent += size
	}

	got, _ := srv.Video(videoID)
	if !got.Complete || len(got.Parts) != 3 {
		t.Fatalf("video = %+v, want 3 parts, complete", got)
	}
	for k, p := range parts {
		off, n := p.off, p.n
		if k == 2 {
			off, n = off+skipped, n-skipped
		}
		if want := fileSum(t, path, off, n); got.Parts[k].SHA256 != want || got.Parts[k].Size != n {
			t.Errorf("part %d: %d bytes, SHA-256 %s; want %d bytes, %s", k+1, got.Parts[k].Size, got.Parts[k].SHA256, n, want)
		}
	}
	byFile := apivideo.SentByFile(c)
	t.Logf("%d of %d part bytes went with sendfile", byFile, sent)
	if byFile < sent*9/10 || byFile > sent {
		t.Errorf("sendfile sent %d of %d part bytes, want ≥ 90%%", byFile, sent)
	}
}

// TestUploadPartFromGatewayDiskRange sends a range handed out by the
// gateway's disk store: it is a FileSection, and its bytes go with
// sendfile(2).
func TestUploadPartFromGatewayDiskRange(t *testing.T) {
	be, err := gateway.NewDiskBackend(t.TempDir())
	if err != nil {
		t.Fatal(err)
	}
	const size = 12 * mib
	up, err := be.NewUpload(t.Context(), handler.FileInfo{Size: size})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := up.WriteChunk(t.Context(), 0, newPattern(9, size)); err != nil {
		t.Fatal(err)
	}
	info, err := up.GetInfo(t.Context())
	if err != nil {
		t.Fatal(err)
	}
	const off, n = 3 * mib, 6 * mib
	body, err := be.OpenRange(t.Context(), info.ID, off, n)
	if err != nil {
		t.Fatal(err)
	}
	defer body.Close()
	if _, ok := body.(apivideo.FileSection); !ok {
		t.Fatalf("OpenRange returned a %T, want an apivideo.FileSection", body)
	}

	srv := newEmulator(t)
	c := apivideo.New(srv.URL)
	v, err := c.UploadPart(t.Context(), apivideo.PartRequest{
		Token: srv.CreateToken(time.Hour), Part: 1, TotalParts: 1, Body: body, Size: n,
	})
	if err != nil {
		t.Fatal(err)
	}
	got, _ := srv.Video(v.VideoID)
	data, _ := io.ReadAll(newPattern(9, size))
	want := sha(t, bytes.NewReader(data[off:off+n]))
	if got.SHA256 != want {
		t.Errorf("SHA-256 %s, want %s", got.SHA256, want)
	}
	if byFile := apivideo.SentByFile(c); byFile < n*9/10 {
		t.Errorf("sendfile sent %d of %d bytes, want ≥ 90%%", byFile, n)
	}
}

// TestUploadPartShortFileSection checks that a file section ending before
// the part's Size fails with ErrShortBody, a permanent error, stores
// nothing, and leaves the client able to send the next part.
func TestUploadPartShortFileSection(t *testing.T) {
	const size = 24 * mib
	path := writePatternFile(t, 3, 20*mib)
	cases := []struct {
		name string
		body func(t *testing.T) *fileRange
	}{
		{"section shorter than Size", func(t *testing.T) *fileRange { return openRange(t, path, 0, 18*mib) }},
		{"file shorter than section", func(t *testing.T) *fileRange { return openRange(t, path, 0, size) }},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			srv := newEmulator(t)
			token := srv.CreateToken(time.Hour)
			c := apivideo.New(srv.URL)
			_, err := c.UploadPart(t.Context(), apivideo.PartRequest{
				Token: token, Part: 1, TotalParts: 1, Body: tc.body(t), Size: size,
			})
			if !errors.Is(err, apivideo.ErrShortBody) || apivideo.IsTransient(err) {
				t.Fatalf("got %v (transient %v), want a permanent ErrShortBody", err, apivideo.IsTransient(err))
			}
			assertScrubbed(t, err, token)
			if n := len(srv.Videos()); n != 0 {
				t.Errorf("got %d videos, want 0: a short part must not be sent", n)
			}
			if byFile := apivideo.SentByFile(c); byFile < 10*mib {
				t.Errorf("sendfile sent %d bytes, want the section's bytes sent with it", byFile)
			}

			v, err := c.UploadPart(t.Context(), apivideo.PartRequest{
				Token: token, Part: 1, TotalParts: 1, Body: openRange(t, path, 0, 20*mib), Size: 20 * mib,
			})
			if err != nil {
				t.Fatalf("next upload: %v", err)
			}
			if got, _ := srv.Video(v.VideoID); got.SHA256 != fileSum(t, path, 0, 20*mib) {
				t.Errorf("next upload arrived with SHA-256 %s, want the file's", got.SHA256)
			}
		})
	}
}

// TestUploadPartEarlyAnswerStopsReading has a server answer 401 after the
// headers, without reading the 64 MiB body nor closing the connection:
// UploadPart returns the answer, and the file is not read after that.
func TestUploadPartEarlyAnswerStopsReading(t *testing.T) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	type peer struct {
		conn net.Conn
		br   *bufio.Reader
	}
	accepted := make(chan peer, 1)
	go func() {
		conn, err := ln.Accept()
		if err != nil {
			close(accepted)
			return
		}
		br := bufio.NewReader(conn)
		if _, err := http.ReadRequest(br); err != nil {
			conn.Close()
			close(accepted)
			return
		}
		const answer = `{"type":"https://docs.api.video/reference/authentication-invalid-upload-token","title":"The upload token is invalid or expired.","status":401}`
		_, _ = io.WriteString(conn, "HTTP/1.1 401 Unauthorized\r\nContent-Type: application/json\r\nContent-Length: "+
			strconv.Itoa(len(answer))+"\r\n\r\n"+answer)
		accepted <- peer{conn, br}
	}()

	const size = 64 * mib
	path := writePatternFile(t, 5, size)
	body := openRange(t, path, 0, size)
	c := apivideo.New("http://" + ln.Addr().String())
	_, err = c.UploadPart(t.Context(), apivideo.PartRequest{Token: "toEarly", Part: 1, TotalParts: 1, Body: body, Size: size})
	var apiErr *apivideo.Error
	if !errors.As(err, &apiErr) || apiErr.StatusCode != http.StatusUnauthorized {
		t.Fatalf("got %v, want the 401 answer", err)
	}
	pos, err := body.f.Seek(0, io.SeekCurrent)
	if err != nil {
		t.Fatal(err)
	}
	if pos >= size {
		t.Fatalf("the whole part was sent before the answer (file offset %d): the test needs a bigger part", pos)
	}

	// Now read everything the client sent, until its connection closes:
	// had a sendfile still been running, the file's offset would move on.
	p, ok := <-accepted
	if !ok {
		t.Fatal("the server did not get the request")
	}
	defer p.conn.Close()
	_ = p.conn.SetReadDeadline(time.Now().Add(time.Minute))
	if _, err := io.Copy(io.Discard, p.br); err != nil {
		t.Fatalf("reading until the client closes its connection: %v", err)
	}
	after, err := body.f.Seek(0, io.SeekCurrent)
	if err != nil {
		t.Fatal(err)
	}
	if after != pos {
		t.Errorf("file offset moved from %d to %d after UploadPart returned", pos, after)
	}
	t.Logf("%d of %d bytes sent before the answer", pos, int64(size))
}

// TestUploadPartOverTLS sends a FileSection to an https server: the bytes
// arrive intact, and none went with sendfile (TLS encrypts in the process).
func TestUploadPartOverTLS(t *testing.T) {
	sums := make(chan string, 1)
	ts := httptest.NewTLSServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		_, params, _ := mime.ParseMediaType(r.Header.Get("Content-Type"))
		mr := multipart.NewReader(r.Body, params["boundary"])
		for {
			p, err := mr.NextPart()
			if err != nil {
				break
			}
			if p.FormName() == "file" {
				h := sha256.New()
				_, _ = io.Copy(h, p)
				sums <- hex.EncodeToString(h.Sum(nil))
			}
		}
		w.WriteHeader(http.StatusCreated)
		_, _ = io.WriteString(w, `{"videoId":"vi123"}`)
	}))
	defer ts.Close()

	const size = 6 * mib
	path := writePatternFile(t, 11, size)
	c := apivideo.New(ts.URL)
	apivideo.TrustCert(c, ts.Certificate())
	if _, err := c.UploadPart(t.Context(), apivideo.PartRequest{
		Token: "toTLS", Part: 1, TotalParts: 1, Body: openRange(t, path, 0, size), Size: size,
	}); err != nil {
		t.Fatal(err)
	}
	if got, want := <-sums, fileSum(t, path, 0, size); got != want {
		t.Errorf("server got SHA-256 %s, want %s", got, want)
	}
	if byFile := apivideo.SentByFile(c); byFile != 0 {
		t.Errorf("sendfile sent %d bytes over TLS, want 0", byFile)
	}
}

// TestUploadPartOtherBodiesOverPlainHTTP sends bodies that are not
// FileSections through the sendfile-capable transport: they arrive intact
// by the ordinary path.
func TestUploadPartOtherBodiesOverPlainHTTP(t *testing.T) {
	const size = 6 * mib
	path := writePatternFile(t, 13, size)
	cases := []struct {
		name string
		body func() io.Reader
		want string
	}{
		{"generated", func() io.Reader { return newPattern(13, size) }, fileSum(t, path, 0, size)},
		{"file section hidden", func() io.Reader { return struct{ io.Reader }{openRange(t, path, 0, size)} }, fileSum(t, path, 0, size)},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			srv := newEmulator(t)
			c := apivideo.New(srv.URL)
			v, err := c.UploadPart(t.Context(), apivideo.PartRequest{
				Token: srv.CreateToken(time.Hour), Part: 1, TotalParts: 1, Body: tc.body(), Size: size,
			})
			if err != nil {
				t.Fatal(err)
			}
			if got, _ := srv.Video(v.VideoID); got.SHA256 != tc.want {
				t.Errorf("SHA-256 %s, want %s", got.SHA256, tc.want)
			}
			if byFile := apivideo.SentByFile(c); byFile != 0 {
				t.Errorf("sendfile sent %d bytes, want 0", byFile)
			}
		})
	}
}

// TestUploadPartFileMemoryFlat checks that a 200 MiB part sent from a file
// allocates no more than a 5 MiB one.
func TestUploadPartFileMemoryFlat(t *testing.T) {
	if testing.Short() {
		t.Skip("writes a 200 MiB file")
	}
	srv := newEmulator(t, apivideotest.WithKeepBytes(false))
	token := srv.CreateToken(time.Hour)
	c := apivideo.New(srv.URL)
	path := writePatternFile(t, 17, apivideotest.MaxPartSize)
	send := func(n int64) uint64 {
		t.Helper()
		body := openRange(t, path, 0, n)
		var before, after runtime.MemStats
		runtime.ReadMemStats(&before)
		v, err := c.UploadPart(t.Context(), apivideo.PartRequest{Token: token, Part: 1, TotalParts: 1, Body: body, Size: n})
		runtime.ReadMemStats(&after)
		if err != nil {
			t.Fatal(err)
		}
		if got, _ := srv.Video(v.VideoID); got.Size != n {
			t.Fatalf("video holds %d bytes, want %d", got.Size, n)
		}
		return after.TotalAlloc - before.TotalAlloc
	}
	send(5 * mib) // opens the connection
	small, large := send(5*mib), send(apivideotest.MaxPartSize)
	t.Logf("allocated %d KiB for 5 MiB, %d KiB for 200 MiB (client and emulator)", small>>10, large>>10)
	if large > small+uint64(mib) {
		t.Errorf("allocated %d KiB for a 200 MiB part, %d KiB for a 5 MiB one: want no more", large>>10, small>>10)
	}
}
