package apivideotest_test

import (
	"fmt"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/tusgate/tusgate/apivideo/apivideotest"
)

// Special values of step fields.
const (
	noToken      = "<none>"
	otherToken   = "<other>"
	unknownToken = "toUnknown0000000000000000"
	newVideo     = "<new>"
	unknownVideo = "viUnknown0000000000000000"
)

// env is the world one rule case runs in.
type env struct {
	srv     *apivideotest.Server
	clock   *apivideotest.Clock
	token   string // the case's token (ttl from the case)
	other   string // another valid token
	videoID string // the video started by the first accepted chunk
}

// step is one upload of a case; its fields default to the case's token
// and video.
type step struct {
	before  func(t *testing.T, e *env)
	token   string // "" = e.token; noToken, otherToken, or a literal
	videoID string // "" = e.videoID; newVideo = none; or a literal
	cr      string
	size    int64
	files   int
	want    int
	title   string // substring of the problem title
}

func TestUploadRules(t *testing.T) {
	five := 5 * mib
	ok := func(cr string, size int64) step { return step{cr: cr, size: size, want: http.StatusCreated} }
	advance := func(d time.Duration) func(*testing.T, *env) {
		return func(_ *testing.T, e *env) { e.clock.Advance(d) }
	}
	revoke := func(_ *testing.T, e *env) { e.srv.RevokeToken(e.token) }

	cases := []struct {
		name  string
		ttl   time.Duration // of e.token; 0 = 1h
		opts  []apivideotest.Option
		steps []step
		check func(t *testing.T, e *env)
	}{
		// Tokens.
		{name: "missing token", steps: []step{{token: noToken, cr: "part 1/1", size: 10, want: 401, title: "The upload token is missing."}}},
		{name: "unknown token", steps: []step{{token: unknownToken, cr: "part 1/1", size: 10, want: 401, title: "The upload token is invalid or expired."}}},
		{name: "expired token", steps: []step{{before: advance(time.Hour), cr: "part 1/1", size: 10, want: 401, title: "invalid or expired"}}},
		{name: "token valid until its last second", steps: []step{{before: advance(time.Hour - time.Second), cr: "part 1/1", size: 10, want: 201}}},
		{name: "deleted token", steps: []step{{before: revoke, cr: "part 1/1", size: 10, want: 401, title: "invalid or expired"}}},
		{name: "token deleted through the API", steps: []step{{
			before: func(t *testing.T, e *env) {
				resp, _ := apiRequest(t, e.srv, http.MethodDelete, "/upload-tokens/"+e.token, apivideotest.DefaultAPIKey, nil)
				if resp.StatusCode != http.StatusNoContent {
					t.Fatalf("DELETE token: got %d, want 204", resp.StatusCode)
				}
			},
			cr: "part 1/1", size: 10, want: 401, title: "invalid or expired",
		}}},
		{name: "later chunk accepted after the token expired", steps: []step{
			ok("part 1/*", five),
			{before: advance(2 * time.Hour), cr: "part 2/2", size: 10, want: 201},
		}, check: wantComplete},
		{name: "later chunk accepted after the token was deleted", steps: []step{
			ok("part 1/*", five),
			{before: revoke, cr: "part 2/2", size: 10, want: 201},
		}, check: wantComplete},
		{name: "a new video needs a valid token", steps: []step{
			ok("part 1/*", five),
			{before: advance(2 * time.Hour), videoID: newVideo, cr: "part 1/1", size: 10, want: 401},
		}},
		{name: "completion window closed, token expired", steps: []step{
			ok("part 1/*", five),
			{before: advance(24 * time.Hour), cr: "part 2/2", size: 10, want: 401},
		}},
		{name: "completion window closed, token still valid", ttl: -1, steps: []step{
			ok("part 1/*", five),
			{before: advance(24 * time.Hour), cr: "part 2/2", size: 10, want: 400, title: "window"},
		}},
		{name: "completion window is configurable", opts: []apivideotest.Option{apivideotest.WithCompletionWindow(3 * time.Hour)}, steps: []step{
			ok("part 1/*", five),
			{before: advance(3*time.Hour - time.Second), cr: "part 2/*", size: five, want: 201},
			{before: advance(time.Second), cr: "part 3/3", size: 10, want: 401},
		}},

		// videoId continuity.
		{name: "unknown videoId", steps: []step{{videoID: unknownVideo, cr: "part 2/2", size: 10, want: 404}}},
		{name: "videoId of another token's video", steps: []step{
			ok("part 1/*", five),
			{token: otherToken, cr: "part 2/2", size: 10, want: 404},
		}},
		{name: "unknown videoId with an invalid token", steps: []step{{token: unknownToken, videoID: unknownVideo, cr: "part 2/2", size: 10, want: 401}}},
		{name: "chunk without videoId starts a new video", steps: []step{
			ok("part 1/2", five),
			{videoID: newVideo, cr: "part 2/2", size: 10, want: 201},
		}, check: func(t *testing.T, e *env) {
			vs := e.srv.Videos()
			if len(vs) != 2 {
				t.Fatalf("got %d videos, want 2", len(vs))
			}
			for _, v := range vs {
				if v.Complete {
					t.Errorf("video %s complete, want incomplete (each has one part of two)", v.ID)
				}
			}
		}},

		// Content-Range syntax.
		{name: "malformed Content-Range", steps: malformed()},
		{name: "part zero", steps: []step{{cr: "part 0/3", size: five, want: 400, title: "greater than 0"}}},
		{name: "total parts zero", steps: []step{{cr: "part 1/0", size: five, want: 400, title: "greater than 0"}}},
		{name: "part above 10000", steps: []step{{cr: "part 10001/*", size: five, want: 400, title: "maximum number of parts"}}},
		{name: "total parts above 10000", steps: []step{{cr: "part 1/10001", size: five, want: 400, title: "maximum number of parts"}}},
		{name: "part above its total", steps: []step{{cr: "part 4/3", size: five, want: 400, title: "higher than"}}},

		// Part form.
		{name: "three parts in order", steps: []step{ok("part 1/3", five), ok("part 2/3", five), ok("part 3/3", 10)}, check: wantComplete},
		{name: "deferred total: part k/* then part N/N", steps: []step{ok("part 1/*", five), ok("part 2/*", five), ok("part 3/3", 1)}, check: wantComplete},
		{name: "parts in any order", steps: []step{ok("part 3/3", 10), ok("part 1/*", five), ok("part 2/*", five)}, check: wantComplete},
		{name: "not complete before the last part", steps: []step{ok("part 1/*", five), ok("part 2/*", five)}, check: wantIncomplete},
		{name: "not complete with a gap", steps: []step{ok("part 1/3", five), ok("part 3/3", 10)}, check: wantIncomplete},
		{name: "duplicate part", steps: []step{ok("part 1/*", five), {cr: "part 1/*", size: five, want: 400, title: "collides"}}},
		{name: "duplicate last part", steps: []step{ok("part 1/2", five), ok("part 2/2", 10), {cr: "part 2/2", size: 10, want: 400, title: "collides"}}},
		{name: "small part with unknown total", steps: []step{{cr: "part 1/*", size: five - 1, want: 400, title: "too small"}}},
		{name: "small part before the last", steps: []step{{cr: "part 1/3", size: five - 1, want: 400, title: "too small"}}},
		{name: "small last part", steps: []step{ok("part 1/1", 1)}, check: wantComplete},
		{name: "part above 200 MiB", opts: []apivideotest.Option{apivideotest.WithKeepBytes(false)}, steps: []step{{cr: "part 1/*", size: apivideotest.MaxPartSize + 1, want: 400, title: "too large"}}},
		{name: "part of 200 MiB", opts: []apivideotest.Option{apivideotest.WithKeepBytes(false)}, steps: []step{ok("part 1/1", apivideotest.MaxPartSize)}},
		{name: "different total", steps: []step{ok("part 1/3", five), {cr: "part 2/4", size: five, want: 400, title: "must be the same"}}},
		{name: "part above the known total", steps: []step{ok("part 1/2", five), {cr: "part 3/*", size: five, want: 400, title: "higher than"}}},
		{name: "total lower than a part sent", steps: []step{ok("part 1/*", five), ok("part 3/*", five), {cr: "part 2/2", size: 10, want: 400, title: "lower than or equal"}}},
		{name: "video above 30 GiB (limit lowered)", opts: []apivideotest.Option{apivideotest.WithMaxVideoSize(12 * mib)}, steps: []step{
			ok("part 1/*", five), ok("part 2/*", five), {cr: "part 3/3", size: 3 * mib, want: 400, title: "too large"},
		}},

		// Bytes form.
		{name: "bytes in two chunks", steps: []step{ok(rangeOf(0, five, five+10), five), ok(rangeOf(five, 10, five+10), 10)}, check: wantComplete},
		{name: "bytes out of order", steps: []step{ok(rangeOf(five, 10, five+10), 10), ok(rangeOf(0, five, five+10), five)}, check: wantComplete},
		{name: "bytes length differs from range", steps: []step{{cr: "bytes 0-99/100", size: 50, want: 400, title: "different than the range length"}}},
		{name: "bytes overlap", steps: []step{ok(rangeOf(0, five, 3*five), five), {cr: rangeOf(five-1, five, 3*five), size: five, want: 400, title: "overlaps"}}},
		{name: "bytes same range twice", steps: []step{ok(rangeOf(0, five, 3*five), five), {cr: rangeOf(0, five, 3*five), size: five, want: 400, title: "overlaps"}}},
		{name: "bytes to beyond total", steps: []step{{cr: "bytes 0-10/10", size: 11, want: 400, title: "higher than the \"total_bytes\""}}},
		{name: "bytes from above to", steps: []step{{cr: "bytes 5-4/10", size: 1, want: 400, title: "from_byte"}}},
		{name: "bytes total zero", steps: []step{{cr: "bytes 0-0/0", size: 1, want: 400, title: "greater than 0"}}},
		{name: "bytes total above 30 GiB", steps: []step{{cr: fmt.Sprintf("bytes 0-%d/%d", five-1, apivideotest.MaxVideoSize+1), size: five, want: 400, title: "maximum allowed limit"}}},
		{name: "bytes total changes", steps: []step{ok(rangeOf(0, five, 2*five), five), {cr: rangeOf(five, five, 2*five+1), size: five, want: 400, title: "must be the same"}}},
		{name: "bytes small chunk before the last", steps: []step{{cr: "bytes 0-99/200", size: 100, want: 400, title: "too small"}}},
		{name: "bytes small last chunk", steps: []step{ok(rangeOf(0, five, five+1), five), ok(rangeOf(five, 1, five+1), 1)}, check: wantComplete},
		{name: "bytes chunk above 200 MiB", steps: []step{{cr: fmt.Sprintf("bytes 0-%d/%d", apivideotest.MaxPartSize, 2*apivideotest.MaxPartSize), size: 10, want: 400, title: "too large"}}},
		{name: "bytes chunk count above 10000 (limit lowered)", opts: []apivideotest.Option{apivideotest.WithMaxParts(2)}, steps: []step{
			ok(rangeOf(0, five, 3*five), five), ok(rangeOf(five, five, 3*five), five),
			{cr: rangeOf(2*five, five, 3*five), size: five, want: 400, title: "too many"},
		}},

		// Never mix forms.
		{name: "part then bytes", steps: []step{ok("part 1/*", five), {cr: rangeOf(five, five, 2*five), size: five, want: 400, title: "started with \"part\""}}},
		{name: "bytes then part", steps: []step{ok(rangeOf(0, five, 2*five), five), {cr: "part 2/2", size: five, want: 400, title: "started with \"bytes\""}}},
		{name: "whole upload into a chunked video", steps: []step{ok("part 1/*", five), {size: 10, want: 400, title: "already been initiated"}}},
		{name: "chunk into a whole upload", steps: []step{ok("", 10), {cr: "part 2/2", size: 10, want: 400, title: "already been uploaded"}}},

		// Whole uploads and the file part.
		{name: "whole upload", steps: []step{ok("", 1000)}, check: wantComplete},
		{name: "whole upload above 200 MiB", opts: []apivideotest.Option{apivideotest.WithKeepBytes(false)}, steps: []step{{size: apivideotest.MaxPartSize + 1, want: 400, title: "too large"}}},
		{name: "empty file", steps: []step{{cr: "part 1/1", size: 0, want: 400, title: "empty"}}},
		{name: "no file", steps: []step{{cr: "part 1/1", size: 10, files: -1, want: 400, title: "no uploaded file"}}},
		{name: "two files", steps: []step{{cr: "part 1/1", size: 10, files: 2, want: 400, title: "more than one"}}},
	}

	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			clock := apivideotest.NewClock(t0)
			opts := append([]apivideotest.Option{apivideotest.WithClock(clock.Now)}, tc.opts...)
			srv := apivideotest.NewServer(opts...)
			t.Cleanup(srv.Close)
			ttl := tc.ttl
			switch ttl {
			case 0:
				ttl = time.Hour
			case -1:
				ttl = 0 // never expires
			}
			e := &env{srv: srv, clock: clock, token: srv.CreateToken(ttl), other: srv.CreateToken(0)}
			for i, st := range tc.steps {
				if st.before != nil {
					st.before(t, e)
				}
				c := chunk{token: e.token, videoID: e.videoID, contentRange: st.cr, size: st.size, files: st.files, seed: byte(i)}
				switch st.token {
				case "":
				case noToken:
					c.token = ""
				case otherToken:
					c.token = e.other
				default:
					c.token = st.token
				}
				switch st.videoID {
				case "":
				case newVideo:
					c.videoID = ""
				default:
					c.videoID = st.videoID
				}
				a := send(t, srv, c)
				if a.Status != st.want {
					t.Fatalf("step %d (%q, %d bytes): got %d %q, want %d", i+1, st.cr, st.size, a.Status, a.Title, st.want)
				}
				if st.title != "" && !strings.Contains(a.Title, st.title) {
					t.Errorf("step %d: got title %q, want it to contain %q", i+1, a.Title, st.title)
				}
				if a.Status == http.StatusCreated {
					if a.VideoID == "" {
						t.Fatalf("step %d: 201 without videoId", i+1)
					}
					if e.videoID == "" {
						e.videoID = a.VideoID
					}
				}
			}
			if tc.check != nil {
				tc.check(t, e)
			}
		})
	}
}

// malformed returns one step per malformed Content-Range.
func malformed() []step {
	var steps []step
	for _, h := range []string{
		"part", "part 1", "part 1/", "part /3", "part a/3", "part -1/3", "part +1/3", "part 1/3x", "part 1/ 3",
		"Part 1/3", "part  1/3", "parts 1/3", "part 1/3/4", "part 1.5/3",
		"bytes 0-9", "bytes 0-9/*", "bytes -9/10", "bytes 0-/10", "bytes 0 9/10", "bytes=0-9/10", "items 1/2",
		"part 99999999999999999999/*",
	} {
		steps = append(steps, step{cr: h, size: 10, want: 400, title: "malformed"})
	}
	return steps
}

// rangeOf returns "bytes from-to/total" for size bytes at from.
func rangeOf(from, size, total int64) string {
	return fmt.Sprintf("bytes %d-%d/%d", from, from+size-1, total)
}

func wantComplete(t *testing.T, e *env) {
	t.Helper()
	v, ok := e.srv.Video(e.videoID)
	if !ok {
		t.Fatalf("video %s not found", e.videoID)
	}
	if !v.Complete {
		t.Errorf("video %s: got incomplete, want complete (parts %+v)", v.ID, v.Parts)
	}
	if len(e.srv.Videos()) != 1 {
		t.Errorf("got %d videos, want 1", len(e.srv.Videos()))
	}
}

func wantIncomplete(t *testing.T, e *env) {
	t.Helper()
	v, ok := e.srv.Video(e.videoID)
	if !ok {
		t.Fatalf("video %s not found", e.videoID)
	}
	if v.Complete {
		t.Errorf("video %s: got complete, want incomplete", v.ID)
	}
}
