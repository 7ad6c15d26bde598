package gateway_test

import (
	"bytes"
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
	} {
		if !strings.Contains(body, want) {
			t.Errorf("GET /metrics: body lacks %q:\n%s", want, body)
		}
	}

	// A second gateway cannot register tusd's collector on the same registry.
	if _, err := gateway.New(gateway.Config{DataDir: t.TempDir(), Plan: testPlan, Registerer: reg}, h.st, h.n); err == nil || !strings.Contains(err.Error(), "register tusd metrics") {
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
