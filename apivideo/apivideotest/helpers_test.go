package apivideotest_test

import (
	"bytes"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"io"
	"mime/multipart"
	"net/http"
	"net/url"
	"strings"
	"testing"
	"time"

	"github.com/tusgate/tusgate/apivideo/apivideotest"
)

const mib = int64(1 << 20)

// t0 is the start of every test clock.
var t0 = time.Date(2025, 3, 1, 12, 0, 0, 0, time.UTC)

// pattern yields n deterministic bytes that depend on seed, without
// holding them all in memory.
type pattern struct {
	block []byte
	off   int64
	n     int64
}

func newPattern(seed byte, n int64) *pattern {
	block := make([]byte, 65521) // prime, so parts do not line up with it
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

// patternSHA returns the hex SHA-256 of newPattern(seed, n).
func patternSHA(t *testing.T, seed byte, n int64) string {
	t.Helper()
	h := sha256.New()
	if _, err := io.Copy(h, newPattern(seed, n)); err != nil {
		t.Fatal(err)
	}
	return hex.EncodeToString(h.Sum(nil))
}

// chunk is a raw upload request.
type chunk struct {
	token        string // empty: no token parameter
	videoID      string // empty: no videoId field
	contentRange string // empty: no header
	fileName     string // default "clip.mp4"
	size         int64
	seed         byte
	files        int // number of file parts; 0 means 1, -1 means none
}

// answer is what the server answered to a chunk.
type answer struct {
	Status  int    `json:"-"`
	VideoID string `json:"videoId"`
	Title   string `json:"title"`
	Type    string `json:"type"`
	Problem int    `json:"status"`
	Assets  struct {
		Player string `json:"player"`
		HLS    string `json:"hls"`
	} `json:"assets"`
}

// body builds the multipart body of c, streaming the file bytes.
func (c chunk) body() (io.Reader, int64, string) {
	var (
		segs   []io.Reader
		length int64
		buf    bytes.Buffer
	)
	mw := multipart.NewWriter(&buf)
	flush := func() {
		b := bytes.Clone(buf.Bytes())
		segs = append(segs, bytes.NewReader(b))
		length += int64(len(b))
		buf.Reset()
	}
	if c.videoID != "" {
		_ = mw.WriteField("videoId", c.videoID)
	}
	name := c.fileName
	if name == "" {
		name = "clip.mp4"
	}
	files := c.files
	if files == 0 {
		files = 1
	}
	for range max(files, 0) {
		_, _ = mw.CreateFormFile("file", name)
		flush()
		segs = append(segs, newPattern(c.seed, c.size))
		length += c.size
	}
	if files < 0 {
		_ = mw.WriteField("title", "no file here")
	}
	_ = mw.Close()
	flush()
	return io.MultiReader(segs...), length, mw.FormDataContentType()
}

// send posts c to the server and decodes the answer. It checks what every
// answer must carry: rate-limit headers, JSON, and a well-formed problem on
// errors.
func send(t *testing.T, srv *apivideotest.Server, c chunk) answer {
	t.Helper()
	u := srv.URL + "/upload"
	if c.token != "" {
		u += "?token=" + url.QueryEscape(c.token)
	}
	body, n, contentType := c.body()
	req, err := http.NewRequestWithContext(t.Context(), http.MethodPost, u, body)
	if err != nil {
		t.Fatal(err)
	}
	req.ContentLength = n
	req.Header.Set("Content-Type", contentType)
	if c.contentRange != "" {
		req.Header.Set("Content-Range", c.contentRange)
	}
	resp, err := srv.Client().Do(req)
	if err != nil {
		t.Fatalf("POST /upload: %v", err)
	}
	defer resp.Body.Close()
	return decodeAnswer(t, resp)
}

func decodeAnswer(t *testing.T, resp *http.Response) answer {
	t.Helper()
	checkRateHeaders(t, resp)
	a := answer{Status: resp.StatusCode}
	data, err := io.ReadAll(resp.Body)
	if err != nil {
		t.Fatalf("reading answer: %v", err)
	}
	if resp.StatusCode == http.StatusNoContent {
		return a
	}
	if ct := resp.Header.Get("Content-Type"); ct != "application/json" {
		t.Errorf("Content-Type = %q, want application/json", ct)
	}
	if err := json.Unmarshal(data, &a); err != nil {
		t.Fatalf("answer %d is not JSON: %v: %s", resp.StatusCode, err, data)
	}
	if resp.StatusCode >= 400 {
		if !strings.HasPrefix(a.Type, "https://docs.api.video/reference/") || a.Title == "" || a.Problem != resp.StatusCode {
			t.Errorf("error body = %s, want a problem with type, title and status %d", data, resp.StatusCode)
		}
	}
	return a
}

func checkRateHeaders(t *testing.T, resp *http.Response) {
	t.Helper()
	for _, h := range []string{"X-RateLimit-Limit", "X-RateLimit-Remaining", "X-RateLimit-Retry-After"} {
		if resp.Header.Get(h) == "" {
			t.Errorf("answer %d lacks %s", resp.StatusCode, h)
		}
	}
}

// apiRequest sends a request to a token endpoint with Basic auth (key may
// be empty for none) and a JSON body (nil for none).
func apiRequest(t *testing.T, srv *apivideotest.Server, method, path, key string, body any) (*http.Response, []byte) {
	t.Helper()
	var r io.Reader
	if body != nil {
		b, err := json.Marshal(body)
		if err != nil {
			t.Fatal(err)
		}
		r = bytes.NewReader(b)
	}
	req, err := http.NewRequestWithContext(t.Context(), method, srv.URL+path, r)
	if err != nil {
		t.Fatal(err)
	}
	if key != "" {
		req.SetBasicAuth(key, "")
	}
	resp, err := srv.Client().Do(req)
	if err != nil {
		t.Fatalf("%s %s: %v", method, path, err)
	}
	defer resp.Body.Close()
	data, err := io.ReadAll(resp.Body)
	if err != nil {
		t.Fatal(err)
	}
	checkRateHeaders(t, resp)
	return resp, data
}
