package apivideotest_test

import (
	"context"
	"encoding/json"
	"fmt"
	"net/http"
	"regexp"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/tusgate/tusgate/apivideo/apivideotest"
)

func newServer(t *testing.T, opts ...apivideotest.Option) (*apivideotest.Server, *apivideotest.Clock) {
	t.Helper()
	clock := apivideotest.NewClock(t0)
	srv := apivideotest.NewServer(append([]apivideotest.Option{apivideotest.WithClock(clock.Now)}, opts...)...)
	t.Cleanup(srv.Close)
	return srv, clock
}

func TestVideoRecordsBytesAndAnswer(t *testing.T) {
	srv, clock := newServer(t)
	token := srv.CreateToken(time.Hour)
	sizes := []int64{5 * mib, 5 * mib, 1234}

	first := send(t, srv, chunk{token: token, contentRange: "part 1/3", size: sizes[0], seed: 1, fileName: "holiday.mp4"})
	if first.Status != http.StatusCreated {
		t.Fatalf("part 1: got %d %s, want 201", first.Status, first.Title)
	}
	if !regexp.MustCompile(`^vi[A-Za-z0-9]{22}$`).MatchString(first.VideoID) {
		t.Errorf("videoId = %q, want vi + 22 alphanumerics", first.VideoID)
	}
	if want := "https://embed.api.video/vod/" + first.VideoID; first.Assets.Player != want {
		t.Errorf("player = %q, want %q", first.Assets.Player, want)
	}
	if want := "https://cdn.api.video/vod/" + first.VideoID + "/hls/manifest.m3u8"; first.Assets.HLS != want {
		t.Errorf("hls = %q, want %q", first.Assets.HLS, want)
	}
	if first.Title != "holiday.mp4" {
		t.Errorf("title = %q, want holiday.mp4", first.Title)
	}
	// Parts 3 then 2, a minute apart.
	for _, k := range []int{3, 2} {
		clock.Advance(time.Minute)
		a := send(t, srv, chunk{token: token, videoID: first.VideoID, contentRange: fmt.Sprintf("part %d/3", k), size: sizes[k-1], seed: byte(k)})
		if a.Status != http.StatusCreated || a.VideoID != first.VideoID {
			t.Fatalf("part %d: got %d %q video %s, want 201 video %s", k, a.Status, a.Title, a.VideoID, first.VideoID)
		}
		if v, _ := srv.Video(first.VideoID); k == 3 && !v.CompletedAt.IsZero() {
			t.Errorf("after part 3 of 3, 2 missing: CompletedAt = %v, want zero", v.CompletedAt)
		}
	}

	v, ok := srv.Video(first.VideoID)
	if !ok {
		t.Fatal("video not found")
	}
	if !v.Complete || v.Token != token || v.Title != "holiday.mp4" || v.Form != "part" || v.TotalParts != 3 {
		t.Errorf("video = %+v, want complete part-form video of 3 parts titled holiday.mp4", v)
	}
	if want := t0.Add(2 * time.Minute); !v.CompletedAt.Equal(want) {
		t.Errorf("CompletedAt = %v, want %v (when part 2, the last missing, was accepted)", v.CompletedAt, want)
	}
	var gotOrder []int
	for i, p := range v.Parts {
		gotOrder = append(gotOrder, p.Number)
		if want := patternSHA(t, byte(p.Number), sizes[p.Number-1]); p.SHA256 != want || p.Size != sizes[p.Number-1] {
			t.Errorf("part %d: got size %d sha %s, want %d %s", p.Number, p.Size, p.SHA256, sizes[p.Number-1], want)
		}
		if want := t0.Add(time.Duration(i) * time.Minute); !p.Time.Equal(want) {
			t.Errorf("part %d arrived at %v, want %v", p.Number, p.Time, want)
		}
	}
	if fmt.Sprint(gotOrder) != "[1 3 2]" {
		t.Errorf("arrival order = %v, want [1 3 2]", gotOrder)
	}
	var whole []byte
	for k := range 3 {
		part := make([]byte, sizes[k])
		if _, err := newPattern(byte(k+1), sizes[k]).Read(part); err != nil {
			t.Fatal(err)
		}
		whole = append(whole, part...)
	}
	if got := v.Bytes(); string(got) != string(whole) {
		t.Errorf("Bytes() = %d bytes differing from the %d sent", len(got), len(whole))
	}
	if v.SHA256 == "" {
		t.Error("SHA256 of the complete video is empty")
	}

	reqs := srv.Requests()
	if len(reqs) != 3 {
		t.Fatalf("got %d requests, want 3", len(reqs))
	}
	if r := reqs[1]; r.ContentRange != "part 3/3" || r.Part != 3 || r.VideoID != first.VideoID || r.Token != token ||
		r.Status != 201 || !r.Accepted || r.Size != sizes[2] || !r.Time.Equal(t0.Add(time.Minute)) {
		t.Errorf("request 2 = %+v, want the accepted part 3/3 at t0+1m", r)
	}

	// A part sent again to the complete video does not move CompletedAt.
	clock.Advance(time.Minute)
	send(t, srv, chunk{token: token, videoID: first.VideoID, contentRange: "part 2/3", size: sizes[1], seed: 2})
	if v, _ := srv.Video(first.VideoID); !v.CompletedAt.Equal(t0.Add(2 * time.Minute)) {
		t.Errorf("a part sent again moved CompletedAt to %v", v.CompletedAt)
	}
}

func TestKeepBytesOff(t *testing.T) {
	srv, _ := newServer(t, apivideotest.WithKeepBytes(false))
	token := srv.CreateToken(0)
	a := send(t, srv, chunk{token: token, contentRange: "part 1/1", size: 3 * mib, seed: 9})
	if a.Status != http.StatusCreated {
		t.Fatalf("got %d %s, want 201", a.Status, a.Title)
	}
	v, _ := srv.Video(a.VideoID)
	if !v.Complete || v.Bytes() != nil || v.SHA256 != "" {
		t.Errorf("got complete=%v bytes=%d sha=%q, want complete, no bytes, no sha", v.Complete, len(v.Bytes()), v.SHA256)
	}
	if want := patternSHA(t, 9, 3*mib); len(v.Parts) != 1 || v.Parts[0].SHA256 != want {
		t.Errorf("parts = %+v, want one with sha %s", v.Parts, want)
	}
}

func TestConcurrentParts(t *testing.T) {
	srv, _ := newServer(t)
	token := srv.CreateToken(time.Hour)
	const n = 6
	first := send(t, srv, chunk{token: token, contentRange: fmt.Sprintf("part 1/%d", n), size: 5 * mib, seed: 1})
	if first.Status != http.StatusCreated {
		t.Fatalf("part 1: got %d, want 201", first.Status)
	}
	var wg sync.WaitGroup
	statuses := make([]int, n+1)
	for k := 2; k <= n; k++ {
		wg.Go(func() {
			a := send(t, srv, chunk{token: token, videoID: first.VideoID, contentRange: fmt.Sprintf("part %d/%d", k, n), size: 5 * mib, seed: byte(k)})
			statuses[k] = a.Status
		})
	}
	wg.Wait()
	for k := 2; k <= n; k++ {
		if statuses[k] != http.StatusCreated {
			t.Errorf("part %d: got %d, want 201", k, statuses[k])
		}
	}
	v, _ := srv.Video(first.VideoID)
	if !v.Complete || len(v.Parts) != n {
		t.Errorf("got complete=%v with %d parts, want complete with %d", v.Complete, len(v.Parts), n)
	}
	if len(srv.Videos()) != 1 {
		t.Errorf("got %d videos, want 1", len(srv.Videos()))
	}
}

func TestRateLimit(t *testing.T) {
	srv, clock := newServer(t, apivideotest.WithRateLimit(2, time.Minute))
	token := srv.CreateToken(0)
	small := chunk{token: token, contentRange: "part 1/1", size: 10}
	for i := range 2 {
		if a := send(t, srv, small); a.Status != http.StatusCreated {
			t.Fatalf("upload %d: got %d, want 201", i+1, a.Status)
		}
	}
	clock.Advance(20 * time.Second)
	body, n, ct := small.body()
	req, _ := http.NewRequestWithContext(t.Context(), http.MethodPost, srv.URL+"/upload?token="+token, body)
	req.ContentLength = n
	req.Header.Set("Content-Type", ct)
	req.Header.Set("Content-Range", "part 1/1")
	resp, err := srv.Client().Do(req)
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusTooManyRequests {
		t.Fatalf("third upload: got %d, want 429", resp.StatusCode)
	}
	if got := resp.Header.Get("X-RateLimit-Retry-After"); got != "40" {
		t.Errorf("X-RateLimit-Retry-After = %q, want 40", got)
	}
	if got := resp.Header.Get("X-RateLimit-Remaining"); got != "0" {
		t.Errorf("X-RateLimit-Remaining = %q, want 0", got)
	}
	if got := resp.Header.Get("X-RateLimit-Limit"); got != "2" {
		t.Errorf("X-RateLimit-Limit = %q, want 2", got)
	}
	clock.Advance(40 * time.Second)
	if a := send(t, srv, small); a.Status != http.StatusCreated {
		t.Fatalf("after the window: got %d, want 201", a.Status)
	}
	if got := len(srv.Videos()); got != 3 {
		t.Errorf("got %d videos, want 3 (the 429 stored nothing)", got)
	}
}

func TestFaults(t *testing.T) {
	t.Run("queued statuses then success", func(t *testing.T) {
		srv, _ := newServer(t)
		token := srv.CreateToken(0)
		srv.FailNext(2, apivideotest.StatusFault(503))
		srv.FailNext(1, apivideotest.RateLimitFault(7*time.Second))
		c := chunk{token: token, contentRange: "part 1/1", size: 10}
		for i, want := range []int{503, 503, 429, 201} {
			if a := send(t, srv, c); a.Status != want {
				t.Errorf("upload %d: got %d, want %d", i+1, a.Status, want)
			}
		}
		reqs := srv.Requests()
		if !reqs[0].Fault || reqs[3].Fault {
			t.Errorf("Fault flags = %v, %v; want true, false", reqs[0].Fault, reqs[3].Fault)
		}
		if got := len(srv.Videos()); got != 1 {
			t.Errorf("got %d videos, want 1", got)
		}
	})
	t.Run("429 carries the retry-after", func(t *testing.T) {
		srv, _ := newServer(t)
		srv.FailNext(1, apivideotest.RateLimitFault(1500*time.Millisecond))
		body, n, ct := chunk{size: 1}.body()
		req, _ := http.NewRequestWithContext(t.Context(), http.MethodPost, srv.URL+"/upload?token=x", body)
		req.ContentLength = n
		req.Header.Set("Content-Type", ct)
		resp, err := srv.Client().Do(req)
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
		if resp.StatusCode != 429 || resp.Header.Get("X-RateLimit-Retry-After") != "2" {
			t.Errorf("got %d retry-after %q, want 429 and 2", resp.StatusCode, resp.Header.Get("X-RateLimit-Retry-After"))
		}
	})
	t.Run("cut after some bytes", func(t *testing.T) {
		srv, _ := newServer(t)
		token := srv.CreateToken(0)
		srv.FailNext(1, apivideotest.CutFault(64<<10))
		err := sendErr(t, srv, chunk{token: token, contentRange: "part 1/1", size: 5 * mib})
		if err == nil {
			t.Fatal("got an answer, want the connection cut")
		}
		if got := len(srv.Videos()); got != 0 {
			t.Errorf("got %d videos, want 0", got)
		}
		if r := srv.Requests()[0]; !r.Cut || r.Accepted {
			t.Errorf("request = %+v, want cut and not accepted", r)
		}
	})
	t.Run("lost answer stores the chunk", func(t *testing.T) {
		srv, _ := newServer(t)
		token := srv.CreateToken(0)
		first := send(t, srv, chunk{token: token, contentRange: "part 1/*", size: 5 * mib})
		srv.FailNext(1, apivideotest.LostAnswerFault())
		c := chunk{token: token, videoID: first.VideoID, contentRange: "part 2/2", size: 10}
		if err := sendErr(t, srv, c); err == nil {
			t.Fatal("got an answer, want the connection cut")
		}
		v, _ := srv.Video(first.VideoID)
		if !v.Complete {
			t.Error("video incomplete, want part 2 stored despite the lost answer")
		}
		if a := send(t, srv, c); a.Status != 400 || !strings.Contains(a.Title, "collides") {
			t.Errorf("retry: got %d %q, want 400 collision", a.Status, a.Title)
		}
	})
	t.Run("hook sees the part", func(t *testing.T) {
		srv, _ := newServer(t)
		token := srv.CreateToken(0)
		srv.InjectFault(func(r apivideotest.FaultRequest) apivideotest.Fault {
			if r.IsUpload() && r.Part == 2 {
				return apivideotest.StatusFault(500)
			}
			return apivideotest.Fault{}
		})
		first := send(t, srv, chunk{token: token, contentRange: "part 1/*", size: 5 * mib})
		if first.Status != 201 {
			t.Fatalf("part 1: got %d, want 201", first.Status)
		}
		if a := send(t, srv, chunk{token: token, videoID: first.VideoID, contentRange: "part 2/2", size: 1}); a.Status != 500 {
			t.Errorf("part 2: got %d, want 500", a.Status)
		}
		srv.InjectFault(nil)
		if a := send(t, srv, chunk{token: token, videoID: first.VideoID, contentRange: "part 2/2", size: 1}); a.Status != 201 {
			t.Errorf("part 2 after removing the hook: got %d, want 201", a.Status)
		}
	})
	t.Run("random faults are reproducible", func(t *testing.T) {
		pattern := func() string {
			srv, _ := newServer(t)
			token := srv.CreateToken(0)
			srv.FailRandomly(0.5, 42, apivideotest.StatusFault(502))
			var b strings.Builder
			for range 20 {
				b.WriteString(strconv.Itoa(send(t, srv, chunk{token: token, contentRange: "part 1/1", size: 1}).Status) + " ")
			}
			return b.String()
		}
		p1, p2 := pattern(), pattern()
		if p1 != p2 {
			t.Errorf("same seed, different outcomes:\n%s\n%s", p1, p2)
		}
		if !strings.Contains(p1, "502") || !strings.Contains(p1, "201") {
			t.Errorf("outcomes %s: want a mix of 502 and 201", p1)
		}
	})
	t.Run("delay until the client gives up", func(t *testing.T) {
		srv, _ := newServer(t)
		srv.FailNext(1, apivideotest.DelayFault(time.Hour))
		ctx, cancel := context.WithTimeout(t.Context(), 50*time.Millisecond)
		defer cancel()
		body, n, ct := chunk{size: 1}.body()
		req, _ := http.NewRequestWithContext(ctx, http.MethodPost, srv.URL+"/upload?token=x", body)
		req.ContentLength = n
		req.Header.Set("Content-Type", ct)
		start := time.Now()
		_, err := srv.Client().Do(req)
		if err == nil || time.Since(start) > time.Minute {
			t.Fatalf("got err %v after %v, want a timeout", err, time.Since(start))
		}
	})
}

// sendErr sends c and returns the transport error (nil if it got an
// answer).
func sendErr(t *testing.T, srv *apivideotest.Server, c chunk) error {
	t.Helper()
	body, n, ct := c.body()
	req, err := http.NewRequestWithContext(t.Context(), http.MethodPost, srv.URL+"/upload?token="+c.token, body)
	if err != nil {
		t.Fatal(err)
	}
	req.ContentLength = n
	req.Header.Set("Content-Type", ct)
	if c.contentRange != "" {
		req.Header.Set("Content-Range", c.contentRange)
	}
	resp, err := srv.Client().Do(req)
	if err != nil {
		return err
	}
	resp.Body.Close()
	return nil
}

func TestUploadTokenEndpoints(t *testing.T) {
	srv, clock := newServer(t)
	key := apivideotest.DefaultAPIKey

	resp, data := apiRequest(t, srv, http.MethodPost, "/upload-tokens", key, map[string]int{"ttl": 3600})
	if resp.StatusCode != http.StatusOK {
		t.Fatalf("create: got %d %s, want 200", resp.StatusCode, data)
	}
	var tok struct {
		Token     string  `json:"token"`
		TTL       int     `json:"ttl"`
		CreatedAt string  `json:"createdAt"`
		ExpiresAt *string `json:"expiresAt"`
	}
	if err := json.Unmarshal(data, &tok); err != nil {
		t.Fatal(err)
	}
	if !regexp.MustCompile(`^to[A-Za-z0-9]{22}$`).MatchString(tok.Token) || tok.TTL != 3600 ||
		tok.CreatedAt != "2025-03-01T12:00:00+00:00" || tok.ExpiresAt == nil || *tok.ExpiresAt != "2025-03-01T13:00:00+00:00" {
		t.Errorf("token = %s, want to+22, ttl 3600, createdAt 12:00, expiresAt 13:00", data)
	}

	resp, data = apiRequest(t, srv, http.MethodPost, "/upload-tokens", key, map[string]int{})
	if resp.StatusCode != http.StatusOK || strings.Contains(string(data), "expiresAt") {
		t.Errorf("create ttl 0: got %d %s, want 200 without expiresAt", resp.StatusCode, data)
	}
	for _, bad := range []any{map[string]int{"ttl": -1}, map[string]int64{"ttl": 2147483648}} {
		if resp, data := apiRequest(t, srv, http.MethodPost, "/upload-tokens", key, bad); resp.StatusCode != http.StatusBadRequest {
			t.Errorf("create %v: got %d %s, want 400", bad, resp.StatusCode, data)
		}
	}

	if resp, _ := apiRequest(t, srv, http.MethodGet, "/upload-tokens/"+tok.Token, key, nil); resp.StatusCode != http.StatusOK {
		t.Errorf("get: got %d, want 200", resp.StatusCode)
	}
	if resp, _ := apiRequest(t, srv, http.MethodGet, "/upload-tokens/toNope", key, nil); resp.StatusCode != http.StatusNotFound {
		t.Errorf("get unknown: got %d, want 404", resp.StatusCode)
	}

	// List: two active tokens plus three made by the helper, pages of 2.
	for range 3 {
		srv.CreateToken(time.Minute)
	}
	resp, data = apiRequest(t, srv, http.MethodGet, "/upload-tokens?pageSize=2&currentPage=3", key, nil)
	var list struct {
		Data       []struct{ Token string } `json:"data"`
		Pagination struct {
			CurrentPage, PageSize, PagesTotal, ItemsTotal, CurrentPageItems int
		} `json:"pagination"`
	}
	if err := json.Unmarshal(data, &list); err != nil || resp.StatusCode != 200 {
		t.Fatalf("list: got %d %s (%v)", resp.StatusCode, data, err)
	}
	if p := list.Pagination; len(list.Data) != 1 || p.ItemsTotal != 5 || p.PagesTotal != 3 || p.CurrentPage != 3 || p.PageSize != 2 || p.CurrentPageItems != 1 {
		t.Errorf("list page 3 = %s, want 1 of 5 items on 3 pages", data)
	}
	clock.Advance(2 * time.Minute) // the helper's tokens expire
	_, data = apiRequest(t, srv, http.MethodGet, "/upload-tokens", key, nil)
	if err := json.Unmarshal(data, &list); err != nil || list.Pagination.ItemsTotal != 2 {
		t.Errorf("list after expiry = %s, want 2 active tokens", data)
	}
	if resp, _ := apiRequest(t, srv, http.MethodGet, "/upload-tokens?pageSize=101", key, nil); resp.StatusCode != 400 {
		t.Errorf("pageSize 101: got %d, want 400", resp.StatusCode)
	}

	if resp, _ := apiRequest(t, srv, http.MethodDelete, "/upload-tokens/"+tok.Token, key, nil); resp.StatusCode != http.StatusNoContent {
		t.Errorf("delete: got %d, want 204", resp.StatusCode)
	}
	if resp, _ := apiRequest(t, srv, http.MethodDelete, "/upload-tokens/"+tok.Token, key, nil); resp.StatusCode != http.StatusNotFound {
		t.Errorf("delete again: got %d, want 404", resp.StatusCode)
	}
	if a := send(t, srv, chunk{token: tok.Token, contentRange: "part 1/1", size: 1}); a.Status != http.StatusUnauthorized {
		t.Errorf("upload with deleted token: got %d, want 401", a.Status)
	}
}

func TestAuth(t *testing.T) {
	srv, clock := newServer(t, apivideotest.WithAPIKeys("key-1"))
	for _, key := range []string{"", "wrong"} {
		if resp, _ := apiRequest(t, srv, http.MethodPost, "/upload-tokens", key, nil); resp.StatusCode != http.StatusUnauthorized {
			t.Errorf("create with key %q: got %d, want 401", key, resp.StatusCode)
		}
	}
	if resp, _ := apiRequest(t, srv, http.MethodPost, "/upload-tokens", "key-1", nil); resp.StatusCode != http.StatusOK {
		t.Errorf("create with Basic key-1: got %d, want 200", resp.StatusCode)
	}

	if resp, _ := apiRequest(t, srv, http.MethodPost, "/auth/api-key", "", map[string]string{"apiKey": "wrong"}); resp.StatusCode != http.StatusBadRequest {
		t.Errorf("auth with a wrong key: got %d, want 400", resp.StatusCode)
	}
	resp, data := apiRequest(t, srv, http.MethodPost, "/auth/api-key", "", map[string]string{"apiKey": "key-1"})
	var auth struct {
		TokenType    string `json:"token_type"`
		ExpiresIn    int    `json:"expires_in"`
		AccessToken  string `json:"access_token"`
		RefreshToken string `json:"refresh_token"`
	}
	if err := json.Unmarshal(data, &auth); err != nil || resp.StatusCode != 200 || auth.TokenType != "Bearer" || auth.ExpiresIn != 3600 || auth.AccessToken == "" || auth.RefreshToken == "" {
		t.Fatalf("auth: got %d %s, want 200 with bearer tokens", resp.StatusCode, data)
	}
	bearer := func(access string) int {
		req, _ := http.NewRequestWithContext(t.Context(), http.MethodGet, srv.URL+"/upload-tokens", nil)
		req.Header.Set("Authorization", "Bearer "+access)
		resp, err := srv.Client().Do(req)
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
		return resp.StatusCode
	}
	if got := bearer(auth.AccessToken); got != 200 {
		t.Errorf("bearer: got %d, want 200", got)
	}
	clock.Advance(time.Hour)
	if got := bearer(auth.AccessToken); got != 401 {
		t.Errorf("expired bearer: got %d, want 401", got)
	}
	resp, data = apiRequest(t, srv, http.MethodPost, "/auth/refresh", "", map[string]string{"refreshToken": auth.RefreshToken})
	var renewed struct {
		AccessToken string `json:"access_token"`
	}
	if err := json.Unmarshal(data, &renewed); err != nil || resp.StatusCode != 200 {
		t.Fatalf("refresh: got %d %s", resp.StatusCode, data)
	}
	if got := bearer(renewed.AccessToken); got != 200 {
		t.Errorf("refreshed bearer: got %d, want 200", got)
	}
	if resp, _ := apiRequest(t, srv, http.MethodPost, "/auth/refresh", "", map[string]string{"refreshToken": auth.RefreshToken}); resp.StatusCode != 400 {
		t.Errorf("reused refresh token: got %d, want 400", resp.StatusCode)
	}
}

func TestRoutes(t *testing.T) {
	srv, _ := newServer(t)
	for _, tc := range []struct {
		method, path string
		want         int
	}{
		{http.MethodGet, "/upload", http.StatusMethodNotAllowed},
		{http.MethodGet, "/nope", http.StatusNotFound},
		{http.MethodPut, "/upload-tokens", http.StatusMethodNotAllowed},
	} {
		resp, data := apiRequest(t, srv, tc.method, tc.path, apivideotest.DefaultAPIKey, nil)
		if resp.StatusCode != tc.want || !strings.Contains(string(data), "docs.api.video/reference/") {
			t.Errorf("%s %s: got %d %s, want %d with a JSON problem", tc.method, tc.path, resp.StatusCode, data, tc.want)
		}
	}
}

func TestHashingOff(t *testing.T) {
	srv, _ := newServer(t, apivideotest.WithHashing(false))
	token := srv.CreateToken(0)
	a := send(t, srv, chunk{token: token, contentRange: "part 1/2", size: 5 * mib, seed: 4})
	if a.Status != http.StatusCreated {
		t.Fatalf("part 1: got %d %s, want 201", a.Status, a.Title)
	}
	b := send(t, srv, chunk{token: token, videoID: a.VideoID, contentRange: "part 2/2", size: 1000, seed: 5})
	if b.Status != http.StatusCreated {
		t.Fatalf("part 2: got %d %s, want 201", b.Status, b.Title)
	}
	v, _ := srv.Video(a.VideoID)
	if !v.Complete || v.Size != 5*mib+1000 || v.SHA256 != "" || v.Bytes() != nil {
		t.Errorf("got complete=%v size=%d sha=%q bytes=%d, want complete, %d bytes, no sha, no bytes kept",
			v.Complete, v.Size, v.SHA256, len(v.Bytes()), 5*mib+1000)
	}
	for _, p := range v.Parts {
		if p.SHA256 != "" {
			t.Errorf("part %d: SHA256 %q, want none", p.Number, p.SHA256)
		}
	}
	if len(v.Parts) != 2 || v.Parts[0].Size != 5*mib || v.Parts[1].Size != 1000 {
		t.Errorf("parts = %+v, want 5 MiB and 1000 bytes", v.Parts)
	}
}
