package gateway_test

import (
	"bytes"
	"errors"
	"io"
	"maps"
	"net/http"
	"net/http/httptest"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"testing"

	"github.com/tus/tusd/v2/pkg/handler"

	"github.com/tusgate/tusgate/gateway"
	"github.com/tusgate/tusgate/store/boltstore"
)

// metadataMessage is the shape of every refusal of parseMetadata: the
// entry's position, maybe its key (quoted), then a fixed text.
var metadataMessage = regexp.MustCompile(`^Upload-Metadata entry ([0-9]+)(?: \(key ("(?:[^"\\]|\\.)*")\))?(: .*| is empty)$`)

// metadataProblems are the fixed texts a refusal may end with.
var metadataProblems = map[string]bool{
	" is empty": true,
	": the key must be printable ASCII without spaces or commas": true,
	": the key is longer than 64 bytes":                          true,
	": the key appears twice":                                    true,
	": expected `key` or `key base64value`":                      true,
	": the value is not valid standard base64":                   true,
}

// FuzzUploadMetadata feeds arbitrary headers to the gateway's strict
// Upload-Metadata parser: it never panics; what it accepts, tusd's own
// parser reads as the same map (and tusd's serialisation of that map parses
// back to it); what it refuses gets a 400 whose message is made only of the
// entry's position, its key and a fixed text, so never of a value.
func FuzzUploadMetadata(f *testing.F) {
	for _, s := range []string{
		"", " ", ",", " , ", "filename bW92aWUubXA0", "filename bW92aWUubXA0,filetype dmlkZW8vbXA0,token dG8xYWJj",
		"a", "a ", "a YQ==", "a YQ", "a YR==", "a Y\rQ==", "a YQ==,a Yg==", "a YQ== YQ==", "a not*base64",
		"a YQ==,,b Yg==", "fé YQ==", "a\tb YQ==", "\u0085a YQ==\u00a0", strings.Repeat("k", 65) + " YQ==",
		`"\ YQ==`, "a\x00 YQ==", "a =", "a ====", "token dG8xU2VjcmV0,tokenExpiresAt MjAzMC0wMS0wMlQwMzowNDowNVo=",
	} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, header string) {
		meta, err := gateway.ParseMetadata(header)
		if err == nil {
			if tusd := handler.ParseMetadataHeader(header); !maps.Equal(meta, tusd) {
				t.Fatalf("ParseMetadata(%q): got %q, tusd reads %q", header, meta, tusd)
			}
			again, err := gateway.ParseMetadata(handler.SerializeMetadataHeader(meta))
			if err != nil || !maps.Equal(again, meta) {
				t.Fatalf("ParseMetadata(SerializeMetadataHeader(%q)): got %q, %v, want the same map", meta, again, err)
			}
			return
		}
		e, ok := errors.AsType[handler.Error](err)
		if !ok || e.ErrorCode != "ERR_INVALID_METADATA" || e.HTTPResponse.StatusCode != http.StatusBadRequest {
			t.Fatalf("ParseMetadata(%q): got error %#v, want a 400 ERR_INVALID_METADATA handler.Error", header, err)
		}
		m := metadataMessage.FindStringSubmatch(e.Message)
		if m == nil || !metadataProblems[m[3]] {
			t.Fatalf("ParseMetadata(%q): message %q has an unexpected shape", header, e.Message)
		}
		entries := strings.Split(header, ",")
		n, err := strconv.Atoi(m[1])
		if err != nil || n < 1 || n > len(entries) {
			t.Fatalf("ParseMetadata(%q): message %q names entry %s of %d", header, e.Message, m[1], len(entries))
		}
		if m[2] != "" {
			key, _, _ := strings.Cut(strings.TrimSpace(entries[n-1]), " ")
			if got, err := strconv.Unquote(m[2]); err != nil || got != key {
				t.Fatalf("ParseMetadata(%q): message %q quotes %s, want entry %d's key %q", header, e.Message, m[2], n, key)
			}
		}
	})
}

// nopNotifier ignores notifications.
type nopNotifier struct{}

func (nopNotifier) Notify(string) {}

// newFuzzServer starts a gateway over a real embedded store in tb's temp
// dirs, with the per-client limits off (every request comes from
// 127.0.0.1) and a 64 KiB maximum size, and returns its tus endpoint.
func newFuzzServer(tb testing.TB) string {
	tb.Helper()
	st, err := boltstore.Open(filepath.Join(tb.TempDir(), "state.db"))
	if err != nil {
		tb.Fatal(err)
	}
	tb.Cleanup(func() { st.Close() })
	gw, err := gateway.New(gateway.Config{
		DataDir:                 filepath.Join(tb.TempDir(), "uploads"),
		Plan:                    testPlan,
		MaxSize:                 64 << 10,
		MaxOpenUploadsPerClient: -1,
		CreateRate:              -1,
	}, st, nopNotifier{})
	if err != nil {
		tb.Fatal(err)
	}
	srv := httptest.NewServer(gw.Handler())
	tb.Cleanup(srv.Close)
	return srv.URL + "/files/"
}

// validHeaderValue reports whether Go's HTTP client sends v as a header
// value (no control characters but tab).
func validHeaderValue(v string) bool {
	for i := 0; i < len(v); i++ {
		if c := v[i]; (c < ' ' && c != '\t') || c == 0x7f {
			return false
		}
	}
	return true
}

// FuzzUploadHeaders drives creation through the real handler with fuzzed
// Upload-Length, Upload-Defer-Length and Upload-Metadata (with or without a
// body: creation-with-upload), then a PATCH with a fuzzed Upload-Offset, a
// HEAD and a DELETE: the gateway never answers 5xx, only 2xx or 4xx, and
// the connection never breaks (a handler panic would).
func FuzzUploadHeaders(f *testing.F) {
	endpoint := newFuzzServer(f)
	client := &http.Client{}
	f.Cleanup(client.CloseIdleConnections)
	for _, s := range []struct {
		length, deferLength, metadata, offset string
		withBody                              bool
		body                                  []byte
	}{
		{"10", "", "filename YS5tcDQ=", "0", false, []byte("0123456789")},
		{"10", "", "", "0", true, []byte("0123")},
		{"4", "", "", "0", true, []byte("0123456789")},
		{"10", "", "", "3", false, []byte("abc")},
		{"", "1", "", "0", false, []byte("abc")},
		{"3", "1", "", "0", false, []byte("abc")},
		{"0", "", "", "0", false, nil},
		{"-1", "", "", "0", false, nil},
		{"65537", "", "", "0", false, nil},
		{"99999999999999999999", "", "", "0", false, nil},
		{"10", "", "a YQ==,a Yg==", "-1", false, []byte("x")},
		{"10", "", "token dG8xYWJj,tokenExpiresAt eWVzdGVyZGF5", "0", false, nil},
		{"10", "", "token dG8xYWJj,tokenExpiresAt MjAwMC0wMS0wMVQwMDowMDowMFo=", "0", false, nil},
		{"10", "", "", "abc", false, []byte("0123456789AB")},
		{" 10 ", "0", "filename", "+0", true, nil},
	} {
		f.Add(s.length, s.deferLength, s.metadata, s.offset, s.withBody, s.body)
	}
	f.Fuzz(func(t *testing.T, length, deferLength, metadata, offset string, withBody bool, body []byte) {
		for _, v := range []string{length, deferLength, metadata, offset} {
			if !validHeaderValue(v) {
				t.Skip("not a header value Go's client sends")
			}
		}
		if len(body) > 1024 {
			body = body[:1024]
		}
		do := func(method, u string, header map[string]string, body []byte) *http.Response {
			t.Helper()
			var rd io.Reader
			if body != nil {
				rd = bytes.NewReader(body)
			}
			req, err := http.NewRequestWithContext(t.Context(), method, u, rd)
			if err != nil {
				t.Fatal(err)
			}
			req.Header.Set("Tus-Resumable", "1.0.0")
			for k, v := range header {
				if v != "" {
					req.Header.Set(k, v)
				}
			}
			resp, err := client.Do(req)
			if err != nil {
				t.Fatalf("%s %s %q: %v", method, u, header, err)
			}
			_, _ = io.Copy(io.Discard, resp.Body)
			resp.Body.Close()
			if resp.StatusCode >= 500 || resp.StatusCode < 200 {
				t.Fatalf("%s %s %q: got %d, want 2xx or 4xx", method, u, header, resp.StatusCode)
			}
			return resp
		}
		create := map[string]string{"Upload-Length": length, "Upload-Defer-Length": deferLength, "Upload-Metadata": metadata}
		var createBody []byte
		if withBody {
			create["Content-Type"] = "application/offset+octet-stream"
			createBody = body
		}
		resp := do(http.MethodPost, endpoint, create, createBody)
		if resp.StatusCode != http.StatusCreated {
			return
		}
		u := resp.Header.Get("Location")
		if !strings.HasPrefix(u, endpoint) {
			t.Fatalf("POST: Location %q, want one under %s", u, endpoint)
		}
		patch := map[string]string{"Upload-Offset": offset, "Content-Type": "application/offset+octet-stream"}
		if deferLength != "" {
			patch["Upload-Length"] = length
		}
		do(http.MethodPatch, u, patch, body)
		do(http.MethodHead, u, nil, nil)
		do(http.MethodDelete, u, nil, nil)
	})
}
