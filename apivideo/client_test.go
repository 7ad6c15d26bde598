package apivideo_test

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"mime"
	"mime/multipart"
	"net"
	"net/http"
	"net/http/httptest"
	"net/url"
	"runtime"
	"strings"
	"testing"
	"time"

	"github.com/tusgate/tusgate/apivideo"
	"github.com/tusgate/tusgate/apivideo/apivideotest"
)

const mib = int64(1 << 20)

// pattern yields n deterministic bytes that depend on seed, without
// holding them all in memory.
type pattern struct {
	block []byte
	off   int64
	n     int64
}

func newPattern(seed byte, n int64) *pattern {
	block := make([]byte, 65521)
	for i := range block {
		block[i] = byte(i*7+i/251) ^ seed
	}
	return &pattern{block: block, n: n}
}

func (p *pattern) Read(b []byte) (int, error) {
	if p.off >= p.n {
		return 0, io.EOF
	}
	b = b[:min(int64(len(b)), p.n-p.off)]
	done := 0
	for done < len(b) {
		i := int((p.off + int64(done)) % int64(len(p.block)))
		done += copy(b[done:], p.block[i:])
	}
	p.off += int64(done)
	return done, nil
}

func sha(t *testing.T, r io.Reader) string {
	t.Helper()
	h := sha256.New()
	if _, err := io.Copy(h, r); err != nil {
		t.Fatal(err)
	}
	return hex.EncodeToString(h.Sum(nil))
}

func newEmulator(t *testing.T, opts ...apivideotest.Option) *apivideotest.Server {
	t.Helper()
	srv := apivideotest.NewServer(opts...)
	t.Cleanup(srv.Close)
	return srv
}

func TestUploadThreeParts(t *testing.T) {
	srv := newEmulator(t)
	token := srv.CreateToken(time.Hour)
	c := apivideo.New(srv.URL, apivideo.WithHTTPClient(srv.Client()), apivideo.WithVersion("1.2.3"))
	sizes := []int64{5 * mib, 5 * mib, 1000}

	var videoID string
	for k, size := range sizes {
		part := k + 1
		v, err := c.UploadPart(t.Context(), apivideo.PartRequest{
			Token: token, VideoID: videoID, FileName: "holiday.mp4",
			Part: part, TotalParts: len(sizes), Body: newPattern(byte(part), size), Size: size,
		})
		if err != nil {
			t.Fatalf("part %d: %v", part, err)
		}
		if videoID == "" {
			videoID = v.VideoID
		}
		if v.VideoID != videoID {
			t.Errorf("part %d: got video %s, want %s", part, v.VideoID, videoID)
		}
		if v.Title != "holiday.mp4" || v.Assets.Player != "https://embed.api.video/vod/"+videoID ||
			v.Assets.HLS != "https://cdn.api.video/vod/"+videoID+"/hls/manifest.m3u8" || v.CreatedAt.IsZero() {
			t.Errorf("part %d: video = %+v, want title, player and HLS URLs, createdAt", part, v)
		}
	}

	got, ok := srv.Video(videoID)
	if !ok || !got.Complete {
		t.Fatalf("video %s: found=%v complete=%v, want a complete video", videoID, ok, got.Complete)
	}
	want := sha(t, io.MultiReader(newPattern(1, sizes[0]), newPattern(2, sizes[1]), newPattern(3, sizes[2])))
	if got.SHA256 != want {
		t.Errorf("assembled SHA-256 = %s, want %s", got.SHA256, want)
	}
	if n := len(srv.Videos()); n != 1 {
		t.Errorf("got %d videos, want 1", n)
	}
	for i, r := range srv.Requests() {
		if wantCR := fmt.Sprintf("part %d/3", i+1); r.ContentRange != wantCR {
			t.Errorf("request %d: Content-Range %q, want %q", i+1, r.ContentRange, wantCR)
		}
		if wantID := map[bool]string{true: "", false: videoID}[i == 0]; r.VideoID != wantID {
			t.Errorf("request %d: videoId %q, want %q", i+1, r.VideoID, wantID)
		}
		if got := r.Header.Get("AV-Origin-Client"); got != "tusgate:1.2.3" {
			t.Errorf("request %d: AV-Origin-Client %q, want tusgate:1.2.3", i+1, got)
		}
	}
}

func TestUploadDeferredLength(t *testing.T) {
	srv := newEmulator(t)
	token := srv.CreateToken(time.Hour)
	c := apivideo.New(srv.URL, apivideo.WithHTTPClient(srv.Client()))
	parts := []apivideo.PartRequest{
		{Part: 1, Size: 5 * mib},
		{Part: 2, Size: 5 * mib},
		{Part: 3, TotalParts: 3, Size: 7},
	}
	var videoID string
	for _, p := range parts {
		p.Token, p.VideoID, p.Body = token, videoID, newPattern(byte(p.Part), p.Size)
		v, err := c.UploadPart(t.Context(), p)
		if err != nil {
			t.Fatalf("part %d: %v", p.Part, err)
		}
		videoID = v.VideoID
	}
	var got []string
	for _, r := range srv.Requests() {
		got = append(got, r.ContentRange)
	}
	if strings.Join(got, ",") != "part 1/*,part 2/*,part 3/3" {
		t.Errorf("Content-Ranges = %q, want part 1/*, part 2/*, part 3/3", got)
	}
	if v, _ := srv.Video(videoID); !v.Complete || v.Title != "video" {
		t.Errorf("video complete=%v title=%q, want complete and titled \"video\"", v.Complete, v.Title)
	}
}

// TestMultipartLayout checks the wire format with a plain server: videoId
// before the file, exact Content-Length, the headers.
func TestMultipartLayout(t *testing.T) {
	type seen struct {
		order         []string
		contentLength int64
		read          int64
		contentRange  string
		fileName      string
		videoID       string
		token         string
	}
	got := make(chan seen, 1)
	ts := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		s := seen{contentLength: r.ContentLength, contentRange: r.Header.Get("Content-Range"), token: r.URL.Query().Get("token")}
		counted := &countingReader{r: r.Body}
		_, params, _ := mime.ParseMediaType(r.Header.Get("Content-Type"))
		mr := multipart.NewReader(counted, params["boundary"])
		for {
			p, err := mr.NextPart()
			if err != nil {
				break
			}
			s.order = append(s.order, p.FormName())
			data, _ := io.ReadAll(p)
			switch p.FormName() {
			case "videoId":
				s.videoID = string(data)
			case "file":
				s.fileName = p.FileName()
			}
		}
		_, _ = io.Copy(io.Discard, counted)
		s.read = counted.n
		got <- s
		w.WriteHeader(http.StatusCreated)
		_, _ = io.WriteString(w, `{"videoId":"vi123"}`)
	}))
	defer ts.Close()

	c := apivideo.New(ts.URL)
	_, err := c.UploadPart(t.Context(), apivideo.PartRequest{
		Token: "to a&b", VideoID: "vi123", FileName: "a\r\nb.mp4", Part: 4, TotalParts: 9,
		Body: strings.NewReader("0123456789"), Size: 10,
	})
	if err != nil {
		t.Fatal(err)
	}
	s := <-got
	if strings.Join(s.order, ",") != "videoId,file" {
		t.Errorf("field order = %v, want videoId then file", s.order)
	}
	if s.contentLength != s.read || s.contentLength <= 10 {
		t.Errorf("Content-Length %d, body %d bytes: want equal", s.contentLength, s.read)
	}
	if s.contentRange != "part 4/9" || s.videoID != "vi123" || s.fileName != "ab.mp4" || s.token != "to a&b" {
		t.Errorf("got %+v, want part 4/9, videoId vi123, file ab.mp4, token \"to a&b\"", s)
	}
}

type countingReader struct {
	r io.Reader
	n int64
}

func (c *countingReader) Read(p []byte) (int, error) {
	n, err := c.r.Read(p)
	c.n += int64(n)
	return n, err
}

func TestErrorClassification(t *testing.T) {
	srv := newEmulator(t)
	token := srv.CreateToken(time.Hour)
	c := apivideo.New(srv.URL, apivideo.WithHTTPClient(srv.Client()))
	part := func(tok string) apivideo.PartRequest {
		return apivideo.PartRequest{Token: tok, Part: 1, TotalParts: 1, Body: strings.NewReader("abc"), Size: 3}
	}

	cases := []struct {
		name      string
		fault     *apivideotest.Fault
		token     string
		status    int // 0: no *Error expected
		title     string
		transient bool
		retry     time.Duration
		isRetry   bool
	}{
		{name: "401 is permanent", token: "toUnknown", status: 401, title: "The upload token is invalid or expired."},
		{name: "500 is transient", fault: &apivideotest.Fault{Status: 500}, status: 500, transient: true},
		{name: "503 is transient", fault: &apivideotest.Fault{Status: 503}, status: 503, transient: true},
		{name: "429 is transient with retry-after", fault: &apivideotest.Fault{Status: 429, RetryAfter: 7 * time.Second}, status: 429, transient: true, retry: 7 * time.Second, isRetry: true},
		{name: "other 4xx is permanent", fault: &apivideotest.Fault{Status: 403}, status: 403},
		{name: "cut connection is transient", fault: &apivideotest.Fault{Cut: true, CutAfter: 10}, transient: true},
		{name: "lost answer is transient", fault: &apivideotest.Fault{LoseAnswer: true}, transient: true},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			if tc.fault != nil {
				srv.FailNext(1, *tc.fault)
			}
			tok := token
			if tc.token != "" {
				tok = tc.token
			}
			_, err := c.UploadPart(t.Context(), part(tok))
			if err == nil {
				t.Fatal("got no error")
			}
			if got := apivideo.IsTransient(err); got != tc.transient {
				t.Errorf("IsTransient(%v) = %v, want %v", err, got, tc.transient)
			}
			retry, isRetry := apivideo.RetryAfter(err)
			if retry != tc.retry || isRetry != tc.isRetry {
				t.Errorf("RetryAfter = %v, %v; want %v, %v", retry, isRetry, tc.retry, tc.isRetry)
			}
			var apiErr *apivideo.Error
			switch {
			case tc.status == 0 && errors.As(err, &apiErr):
				t.Errorf("got *Error %v, want a transport error", apiErr)
			case tc.status != 0 && !errors.As(err, &apiErr):
				t.Errorf("got %v, want an *Error", err)
			case tc.status != 0 && apiErr.StatusCode != tc.status:
				t.Errorf("status = %d, want %d", apiErr.StatusCode, tc.status)
			case tc.title != "" && apiErr.Title != tc.title:
				t.Errorf("title = %q, want %q", apiErr.Title, tc.title)
			case tc.status != 0 && !strings.HasPrefix(apiErr.Type, "https://docs.api.video/reference/"):
				t.Errorf("type = %q, want a docs.api.video URL", apiErr.Type)
			}
			assertScrubbed(t, err, tok)
		})
	}
}

// assertScrubbed fails if secret appears in err's text, in any error of its
// chain, or in a *url.Error's URL.
func assertScrubbed(t *testing.T, err error, secret string) {
	t.Helper()
	var walk func(e error)
	walk = func(e error) {
		if e == nil {
			return
		}
		for _, s := range []string{e.Error(), fmt.Sprintf("%+v", e), fmt.Sprintf("%#v", e)} {
			if strings.Contains(s, secret) {
				t.Errorf("error %T %q reveals the token", e, s)
			}
		}
		switch u := e.(type) {
		case interface{ Unwrap() error }:
			walk(u.Unwrap())
		case interface{ Unwrap() []error }:
			for _, inner := range u.Unwrap() {
				walk(inner)
			}
		}
	}
	walk(err)
	var ue *url.Error
	if errors.As(err, &ue) && strings.Contains(ue.URL, secret) {
		t.Errorf("url.Error URL %q reveals the token", ue.URL)
	}
}

func TestTokenScrubbedFromNetworkErrors(t *testing.T) {
	const token = "toSecretSecretSecret123456"

	t.Run("closed port", func(t *testing.T) {
		ln, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			t.Fatal(err)
		}
		addr := ln.Addr().String()
		ln.Close()
		c := apivideo.New("http://" + addr)
		_, err = c.UploadPart(t.Context(), apivideo.PartRequest{Token: token, Part: 1, Body: strings.NewReader("x"), Size: 1})
		if err == nil {
			t.Fatal("got no error from a closed port")
		}
		assertScrubbed(t, err, token)
		if !strings.Contains(err.Error(), "REDACTED") {
			t.Errorf("error %q: want the token replaced by REDACTED", err)
		}
		if !apivideo.IsTransient(err) {
			t.Errorf("IsTransient(%v) = false, want true", err)
		}
		var netErr net.Error
		if !errors.As(err, &netErr) {
			t.Errorf("errors.As(%v, net.Error) = false, want true", err)
		}
	})

	t.Run("timeout", func(t *testing.T) {
		srv := newEmulator(t)
		srv.FailNext(1, apivideotest.DelayFault(time.Hour))
		c := apivideo.New(srv.URL, apivideo.WithHTTPClient(srv.Client()))
		ctx, cancel := context.WithTimeout(t.Context(), 100*time.Millisecond)
		defer cancel()
		_, err := c.UploadPart(ctx, apivideo.PartRequest{Token: token, Part: 1, Body: strings.NewReader("x"), Size: 1})
		if err == nil {
			t.Fatal("got no error")
		}
		assertScrubbed(t, err, token)
		if !errors.Is(err, context.DeadlineExceeded) {
			t.Errorf("errors.Is(%v, DeadlineExceeded) = false, want true", err)
		}
		var timeout interface{ Timeout() bool }
		if !errors.As(err, &timeout) || !timeout.Timeout() {
			t.Errorf("error %v: want Timeout() true", err)
		}
		if !apivideo.IsTransient(err) {
			t.Errorf("IsTransient(%v) = false, want true", err)
		}
	})

	t.Run("canceled", func(t *testing.T) {
		srv := newEmulator(t)
		c := apivideo.New(srv.URL, apivideo.WithHTTPClient(srv.Client()))
		ctx, cancel := context.WithCancel(t.Context())
		srv.InjectFault(func(apivideotest.FaultRequest) apivideotest.Fault {
			cancel() // the caller gives up while the server holds the request
			return apivideotest.DelayFault(time.Hour)
		})
		_, err := c.UploadPart(ctx, apivideo.PartRequest{Token: token, Part: 1, Body: strings.NewReader("x"), Size: 1})
		assertScrubbed(t, err, token)
		if !errors.Is(err, context.Canceled) || apivideo.IsTransient(err) {
			t.Errorf("got %v (transient %v), want a permanent context.Canceled", err, apivideo.IsTransient(err))
		}
	})
}

func TestShortOrFailingBody(t *testing.T) {
	srv := newEmulator(t)
	token := srv.CreateToken(time.Hour)
	c := apivideo.New(srv.URL, apivideo.WithHTTPClient(srv.Client()))

	_, err := c.UploadPart(t.Context(), apivideo.PartRequest{Token: token, Part: 1, TotalParts: 1, Body: strings.NewReader("short"), Size: 1000})
	if !errors.Is(err, apivideo.ErrShortBody) {
		t.Errorf("short body: got %v, want ErrShortBody", err)
	}
	if apivideo.IsTransient(err) {
		t.Errorf("IsTransient(short body) = true, want false")
	}

	boom := errors.New("disk on fire")
	_, err = c.UploadPart(t.Context(), apivideo.PartRequest{Token: token, Part: 1, TotalParts: 1,
		Body: io.MultiReader(strings.NewReader("abc"), &failingReader{err: boom}), Size: 1000})
	if !errors.Is(err, boom) || apivideo.IsTransient(err) {
		t.Errorf("failing body: got %v (transient %v), want the body's error, permanent", err, apivideo.IsTransient(err))
	}
	assertScrubbed(t, err, token)
	if n := len(srv.Videos()); n != 0 {
		t.Errorf("got %d videos, want 0: a short part must not be sent", n)
	}
}

type failingReader struct{ err error }

func (f *failingReader) Read([]byte) (int, error) { return 0, f.err }

func TestInvalidPartRequest(t *testing.T) {
	c := apivideo.New("http://127.0.0.1:1")
	for _, req := range []apivideo.PartRequest{
		{Part: 1, Body: strings.NewReader("x"), Size: 1},
		{Token: "to", Part: 0, Body: strings.NewReader("x"), Size: 1},
		{Token: "to", Part: 3, TotalParts: 2, Body: strings.NewReader("x"), Size: 1},
		{Token: "to", Part: 1, Size: 1},
		{Token: "to", Part: 1, Body: strings.NewReader("x"), Size: -1},
	} {
		if _, err := c.UploadPart(t.Context(), req); !errors.Is(err, apivideo.ErrInvalidRequest) || apivideo.IsTransient(err) {
			t.Errorf("UploadPart(%+v): got %v, want a permanent ErrInvalidRequest", req, err)
		}
	}
}

// TestUploadStreams sends a 64 MiB part generated on the fly and checks it
// arrives intact while the client allocates far less than the part.
func TestUploadStreams(t *testing.T) {
	srv := newEmulator(t, apivideotest.WithKeepBytes(false))
	token := srv.CreateToken(time.Hour)
	c := apivideo.New(srv.URL, apivideo.WithHTTPClient(srv.Client()))
	const size = 64 * mib
	body := newPattern(42, size)

	var before, after runtime.MemStats
	runtime.ReadMemStats(&before)
	v, err := c.UploadPart(t.Context(), apivideo.PartRequest{Token: token, Part: 1, TotalParts: 1, Body: body, Size: size})
	runtime.ReadMemStats(&after)
	if err != nil {
		t.Fatal(err)
	}
	got, _ := srv.Video(v.VideoID)
	if want := sha(t, newPattern(42, size)); len(got.Parts) != 1 || got.Parts[0].SHA256 != want || got.Size != size {
		t.Fatalf("video = %+v, want one part of %d bytes with SHA-256 %s", got, size, want)
	}
	// Both client and emulator run in this process; together they use a
	// few MiB of buffers. Buffering the part would cost 64 MiB.
	if alloc := after.TotalAlloc - before.TotalAlloc; alloc > uint64(16*mib) {
		t.Errorf("allocated %d MiB while sending a 64 MiB part, want < 16 MiB", alloc>>20)
	}
}

func TestUploadTokens(t *testing.T) {
	srv := newEmulator(t)
	c := apivideo.New(srv.URL, apivideo.WithHTTPClient(srv.Client()), apivideo.WithAPIKey(apivideotest.DefaultAPIKey))

	tok, err := c.CreateUploadToken(t.Context(), time.Hour)
	if err != nil {
		t.Fatal(err)
	}
	if tok.TTL != 3600 || tok.ExpiresAt == nil || !tok.ExpiresAt.Equal(tok.CreatedAt.Add(time.Hour)) || !strings.HasPrefix(tok.Token, "to") {
		t.Errorf("created %+v (token %q), want ttl 3600 expiring an hour after creation", tok, tok.Token)
	}
	for _, s := range []string{tok.String(), fmt.Sprintf("%v %+v %#v", tok, tok, tok), fmt.Sprintf("%v", *tok)} {
		if strings.Contains(s, tok.Token) {
			t.Errorf("formatted token %q reveals it", s)
		}
	}
	got, err := c.GetUploadToken(t.Context(), tok.Token)
	if err != nil || got.Token != tok.Token || got.TTL != 3600 {
		t.Errorf("GetUploadToken = %+v, %v; want the created token", got, err)
	}

	forever, err := c.CreateUploadToken(t.Context(), 0)
	if err != nil || forever.ExpiresAt != nil || forever.TTL != 0 {
		t.Errorf("CreateUploadToken(0) = %+v, %v; want no expiry", forever, err)
	}

	if err := c.DeleteUploadToken(t.Context(), tok.Token); err != nil {
		t.Fatal(err)
	}
	_, err = c.GetUploadToken(t.Context(), tok.Token)
	var apiErr *apivideo.Error
	if !errors.As(err, &apiErr) || apiErr.StatusCode != 404 || apivideo.IsTransient(err) {
		t.Errorf("GetUploadToken(deleted) = %v, want a permanent 404", err)
	}
	assertScrubbed(t, err, tok.Token)

	if _, err := apivideo.New(srv.URL).CreateUploadToken(t.Context(), time.Hour); !errors.Is(err, apivideo.ErrNoAPIKey) {
		t.Errorf("without a key: got %v, want ErrNoAPIKey", err)
	}
	bad := apivideo.New(srv.URL, apivideo.WithHTTPClient(srv.Client()), apivideo.WithAPIKey("wrong-key"))
	_, err = bad.CreateUploadToken(t.Context(), time.Hour)
	if !errors.As(err, &apiErr) || apiErr.StatusCode != 401 || apivideo.IsTransient(err) {
		t.Errorf("with a wrong key: got %v, want a permanent 401", err)
	}
	if strings.Contains(err.Error(), "wrong-key") {
		t.Errorf("error %q reveals the API key", err)
	}
}

func TestErrorFromNonJSONBody(t *testing.T) {
	ts := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		_, _ = io.Copy(io.Discard, r.Body)
		w.Header().Set("Retry-After", "3")
		w.WriteHeader(http.StatusBadGateway)
		_, _ = io.WriteString(w, "<html>bad gateway for "+r.URL.RawQuery+"</html>"+strings.Repeat("x", 10000))
	}))
	defer ts.Close()
	const token = "toLeakyLeakyLeaky"
	_, err := apivideo.New(ts.URL).UploadPart(t.Context(), apivideo.PartRequest{Token: token, Part: 1, Body: strings.NewReader("x"), Size: 1})
	var apiErr *apivideo.Error
	if !errors.As(err, &apiErr) || apiErr.StatusCode != 502 || !apivideo.IsTransient(err) {
		t.Fatalf("got %v, want a transient 502 *Error", err)
	}
	if len(apiErr.Body) > 4<<10 || !strings.HasPrefix(apiErr.Body, "<html>bad gateway") || apiErr.RetryAfter != 3*time.Second {
		t.Errorf("Body %d bytes %.30q, RetryAfter %v: want ≤ 4 KiB of the body and 3s", len(apiErr.Body), apiErr.Body, apiErr.RetryAfter)
	}
	assertScrubbed(t, err, token)
}
