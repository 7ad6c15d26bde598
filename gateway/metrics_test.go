package gateway_test

import (
	"bytes"
	"encoding/base64"
	"net/http"
	"strings"
	"testing"

	"github.com/prometheus/client_golang/prometheus"
	"go.uber.org/zap/zapcore"

	"github.com/tusgate/tusgate/gateway"
)

func TestMetrics(t *testing.T) {
	t.Parallel()
	reg := prometheus.NewRegistry()
	marker := prometheus.NewCounter(prometheus.CounterOpts{Name: "tusgate_test_marker_total", Help: "Registered by the test."})
	reg.MustRegister(marker)
	marker.Add(7)
	h := newHarness(t, func(c *gateway.Config) { c.Registerer, c.Gatherer = reg, reg })
	u, _ := h.create(t, 3, nil)
	if _, err := h.client.Patch(t.Context(), u, 0, strings.NewReader("abc"), 3, -1); err != nil {
		t.Fatal(err)
	}
	resp, body := h.do(t, http.MethodGet, h.srv.URL+"/metrics", nil, nil)
	if resp.StatusCode != http.StatusOK {
		t.Fatalf("GET /metrics: got %d, want 200", resp.StatusCode)
	}
	for _, want := range []string{
		"tusd_uploads_created 1",
		"tusd_uploads_finished 1",
		"tusd_bytes_received 3",
		`tusd_requests_total{method="POST"} 1`,
		"tusgate_test_marker_total 7",
		`tusgate_http_requests_total{code="201",method="POST",route="tus"} 1`,
		`tusgate_http_requests_total{code="204",method="PATCH",route="tus"} 1`,
		`tusgate_uploads_total{event="created"} 1`,
		`tusgate_uploads_total{event="received"} 1`,
		`tusgate_http_request_duration_seconds_count{method="PATCH",route="tus"} 1`,
	} {
		if !strings.Contains(body, want) {
			t.Errorf("GET /metrics: body lacks %q:\n%s", want, body)
		}
	}

	// A second gateway cannot register tusd's collector on the same registry.
	if _, err := gateway.New(gateway.Config{DataDir: t.TempDir(), Plan: testPlan, Registerer: reg}, h.st, h.n); err == nil || !strings.Contains(err.Error(), "register") {
		t.Errorf("New with tusd's collector already registered: got %v, want a registration error", err)
	}
}

func TestMetricsWithoutGatherer(t *testing.T) {
	t.Parallel()
	reg := prometheus.NewRegistry()
	h := newHarness(t, func(c *gateway.Config) { c.Registerer = reg })
	if resp, _ := h.do(t, http.MethodGet, h.srv.URL+"/metrics", nil, nil); resp.StatusCode != http.StatusNotFound {
		t.Errorf("GET /metrics without a Gatherer: got %d, want 404", resp.StatusCode)
	}
	// The collector is registered all the same.
	mfs, err := reg.Gather()
	if err != nil {
		t.Fatal(err)
	}
	var names []string
	for _, mf := range mfs {
		names = append(names, mf.GetName())
	}
	if !strings.Contains(strings.Join(names, " "), "tusd_uploads_created") {
		t.Errorf("registry metrics: got %v, want tusd_uploads_created", names)
	}
}

func TestTusdLogLevels(t *testing.T) {
	t.Parallel()
	tests := []struct {
		name    string
		verbose bool
		want    zapcore.Level
	}{
		{"quiet by default", false, zapcore.DebugLevel},
		{"verbose", true, zapcore.InfoLevel},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			h := newHarness(t, func(c *gateway.Config) { c.VerboseTusdLogs = tt.verbose })
			u, _ := h.create(t, 3, nil)
			if _, err := h.client.Patch(t.Context(), u, 0, bytes.NewReader([]byte("abc")), 3, -1); err != nil {
				t.Fatal(err)
			}
			seen := map[string]bool{}
			for _, e := range h.logs.FilterLoggerName("tusd").All() {
				seen[e.Message] = true
				if e.Level != tt.want {
					t.Errorf("tusd %s: got level %v, want %v", e.Message, e.Level, tt.want)
				}
			}
			for _, msg := range []string{"RequestIncoming", "ResponseOutgoing", "ChunkWriteStart", "UploadCreated"} {
				if !seen[msg] {
					t.Errorf("tusd logs: no %s, got %v", msg, seen)
				}
			}
		})
	}
}

// Every response carries a request id: the client's when sane, else a new
// one; the log lines of the request carry it too.
func TestRequestID(t *testing.T) {
	t.Parallel()
	h := newHarness(t, nil)
	resp, _ := h.do(t, http.MethodPost, h.endpoint, map[string]string{
		"Tus-Resumable": "1.0.0", "Upload-Length": "3", "X-Request-ID": "req-42.a_b:c",
		"Upload-Metadata": "filename " + base64.StdEncoding.EncodeToString([]byte("a.mp4")),
	}, nil)
	if resp.StatusCode != http.StatusCreated {
		t.Fatalf("POST: %d", resp.StatusCode)
	}
	if got := resp.Header.Get("X-Request-ID"); got != "req-42.a_b:c" {
		t.Errorf("echoed request id: got %q", got)
	}
	created := h.logs.FilterMessage("upload created").All()
	if len(created) != 1 || created[0].ContextMap()["requestId"] != "req-42.a_b:c" {
		t.Errorf("the creation's log line lacks the request id: %+v", created)
	}
	for _, bad := range []string{"has space", strings.Repeat("x", 65), "<script>"} {
		resp, _ := h.do(t, http.MethodGet, h.srv.URL+"/healthz", map[string]string{"X-Request-ID": bad}, nil)
		got := resp.Header.Get("X-Request-ID")
		if got == bad || len(got) != 16 {
			t.Errorf("request id %q: got %q, want a new 16-digit id", bad, got)
		}
	}
}
