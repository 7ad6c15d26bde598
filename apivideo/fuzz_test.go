package apivideo_test

import (
	"bytes"
	"errors"
	"io"
	"net/http"
	"strconv"
	"strings"
	"testing"

	"github.com/tusgate/tusgate/apivideo"
)

// answer is a RoundTripper that answers every request with a fixed status,
// headers and body, without any network.
type answer struct {
	status int
	header http.Header
	body   []byte
}

func (a answer) RoundTrip(req *http.Request) (*http.Response, error) {
	if req.Body != nil {
		_, _ = io.Copy(io.Discard, req.Body)
		req.Body.Close()
	}
	return &http.Response{StatusCode: a.status, Header: a.header, Body: io.NopCloser(bytes.NewReader(a.body)), Request: req}, nil
}

const fuzzToken = "toSecretFuzzToken1234567"

// FuzzResponses feeds arbitrary api.video answers to the client: it never
// panics, never reports success without a videoId, classifies every error,
// and never lets the token into an error message.
func FuzzResponses(f *testing.F) {
	f.Add(201, "", []byte(`{"videoId":"vi123","assets":{"player":"p"}}`))
	f.Add(400, "", []byte(`{"type":"https://docs.api.video/reference/video-content-range-by-part-part-already-sent","title":"t","status":400}`))
	f.Add(429, "3", []byte(`{"title":"Too many requests","status":429}`))
	f.Add(500, "", []byte(`<html>`+fuzzToken+`</html>`))
	f.Add(201, "", []byte(`{"videoId":""}`))
	f.Add(201, "", []byte(`not json`))
	f.Add(401, "x", []byte(`{"title":"The upload token is invalid or expired.","detail":"`+fuzzToken+`"}`))
	f.Fuzz(func(t *testing.T, status int, retryAfter string, body []byte) {
		if status < 100 || status > 599 {
			t.Skip()
		}
		hc := &http.Client{Transport: answer{status: status, header: http.Header{"X-Ratelimit-Retry-After": {retryAfter}}, body: body}}
		c := apivideo.New("http://127.0.0.1:1", apivideo.WithHTTPClient(hc))
		v, err := c.UploadPart(t.Context(), apivideo.PartRequest{
			Token: fuzzToken, Part: 1, TotalParts: 1, Body: strings.NewReader("abc"), Size: 3, FileName: "a.mp4",
		})
		if err == nil {
			if status < 200 || status > 299 || v == nil || v.VideoID == "" {
				t.Fatalf("success for status %d with video %+v", status, v)
			}
			return
		}
		if strings.Contains(err.Error(), fuzzToken) {
			t.Fatalf("error leaks the token: %v", err)
		}
		var apiErr *apivideo.Error
		if errors.As(err, &apiErr) {
			if apiErr.StatusCode != status {
				t.Fatalf("error status %d, answered %d", apiErr.StatusCode, status)
			}
			if want := status >= 500 || status == 429; apivideo.IsTransient(err) != want {
				t.Fatalf("IsTransient(%d) = %v, want %v", status, !want, want)
			}
			if d, ok := apivideo.RetryAfter(err); ok && d < 0 {
				t.Fatalf("negative Retry-After %v from %q", d, retryAfter)
			}
		} else if status < 200 || status > 299 {
			t.Fatalf("non-2xx answer %s gave a non-API error: %v", strconv.Itoa(status), err)
		}
	})
}
