package benchkit_test

import (
	"fmt"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"

	"github.com/tusgate/tusgate/internal/benchkit"
)

func TestTusgateListening(t *testing.T) {
	for line, want := range map[string]string{
		`{"level":"info","msg":"listening","addr":"127.0.0.1:4321"}`: "127.0.0.1:4321",
		`{"level":"info","msg":"starting","addr":"127.0.0.1:4321"}`:  "",
		`listening 127.0.0.1:1`: "",
		``:                      "",
	} {
		if got := benchkit.TusgateListening(line); got != want {
			t.Errorf("TusgateListening(%q): got %q, want %q", line, got, want)
		}
	}
}

func TestFetchStatus(t *testing.T) {
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		switch r.URL.EscapedPath() {
		case "/uploads/abc":
			fmt.Fprint(w, `{"state":"failed","received":10,"delivered":5,"videoId":"vi1","error":{"reason":"deadline_missed","message":"late"}}`)
		case "/uploads/a%20b":
			fmt.Fprint(w, `{"state":"delivered"}`)
		default:
			http.Error(w, "  no such upload  ", http.StatusNotFound)
		}
	}))
	defer srv.Close()
	hc := srv.Client()

	want := benchkit.UploadStatus{State: "failed", Received: 10, Delivered: 5, VideoID: "vi1",
		Error: &benchkit.StatusError{Reason: "deadline_missed", Message: "late"}}
	for _, upload := range []string{"http://127.0.0.1:1/files/abc", "/files/abc", "abc"} {
		got, err := benchkit.FetchStatus(t.Context(), hc, srv.URL, upload)
		if err != nil {
			t.Fatalf("FetchStatus(%q): %v", upload, err)
		}
		if got.State != want.State || got.Received != want.Received || got.Delivered != want.Delivered ||
			got.VideoID != want.VideoID || got.Error == nil || *got.Error != *want.Error {
			t.Errorf("FetchStatus(%q): got %+v, want %+v", upload, got, want)
		}
	}
	if got, err := benchkit.FetchStatus(t.Context(), hc, srv.URL, "/files/a b"); err != nil || got.State != "delivered" {
		t.Errorf("id with a space: got %+v, %v; want it escaped and delivered", got, err)
	}
	_, err := benchkit.FetchStatus(t.Context(), hc, srv.URL, "/files/gone")
	if err == nil || err.Error() != "upload status gone: 404 Not Found: no such upload" {
		t.Errorf("unknown upload: got %v, want the status and the trimmed body", err)
	}
}

func TestScrapeMetrics(t *testing.T) {
	const page = `# HELP tusd_requests_total Total number of requests served by tusd per method.
# TYPE tusd_requests_total counter
tusd_requests_total{method="HEAD"} 4
tusd_requests_total{method="PATCH"} 12
tusd_bytes_received 1.2582912e+07
go_memstats_heap_inuse_bytes 4.5e+06
broken_total x
`
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.URL.Path != "/metrics" {
			http.NotFound(w, r)
			return
		}
		fmt.Fprint(w, page)
	}))
	defer srv.Close()
	hc := srv.Client()

	got, err := benchkit.ScrapeMetrics(t.Context(), hc, srv.URL+"/metrics", `tusd_requests_total{method="PATCH"}`, "tusd_bytes_received")
	if err != nil {
		t.Fatal(err)
	}
	if got[`tusd_requests_total{method="PATCH"}`] != 12 || got["tusd_bytes_received"] != 12582912 || len(got) != 2 {
		t.Errorf("got %v, want the PATCH count 12 and 12582912 bytes only", got)
	}

	for _, tt := range []struct {
		name, url, series, wantErr string
	}{
		{"missing series", "/metrics", "tusd_requests_total", "scrape metrics: no tusd_requests_total"},
		{"not a number", "/metrics", "broken_total", `scrape metrics: broken_total "x"`},
		{"not found", "/nope", "x", "scrape metrics: 404 Not Found"},
	} {
		t.Run(tt.name, func(t *testing.T) {
			_, err := benchkit.ScrapeMetrics(t.Context(), hc, srv.URL+tt.url, tt.series)
			if err == nil || !strings.Contains(err.Error(), tt.wantErr) {
				t.Errorf("got %v, want an error containing %q", err, tt.wantErr)
			}
		})
	}
}
