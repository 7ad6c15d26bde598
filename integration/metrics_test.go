package integration_test

import (
	"bufio"
	"io"
	"net/http"
	"strconv"
	"strings"
	"testing"
	"time"
)

// getMetrics fetches GET /metrics and returns its body.
func getMetrics(t *testing.T, gw *gatewayProc) string {
	t.Helper()
	req, err := http.NewRequestWithContext(t.Context(), http.MethodGet, gw.URL+"/metrics", nil)
	if err != nil {
		t.Fatalf("metrics request: %v", err)
	}
	resp, err := gw.HTTP.Do(req)
	if err != nil {
		t.Fatalf("GET /metrics: %v", err)
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(resp.Body)
	if err != nil {
		t.Fatalf("GET /metrics: read body: %v", err)
	}
	if resp.StatusCode != http.StatusOK {
		t.Fatalf("GET /metrics: got status %d, want 200: %s", resp.StatusCode, body)
	}
	return string(body)
}

// metricValue returns the value of the sample series (name with its labels,
// exactly as exposed) in a Prometheus text exposition.
func metricValue(text, series string) (float64, bool) {
	sc := bufio.NewScanner(strings.NewReader(text))
	for sc.Scan() {
		rest, ok := strings.CutPrefix(sc.Text(), series+" ")
		if !ok {
			continue
		}
		v, err := strconv.ParseFloat(strings.TrimSpace(rest), 64)
		return v, err == nil
	}
	return 0, false
}

// After one delivered upload whose token deadline is known, GET /metrics
// serves tusd's series and the forwarder's: the parts delivered, the queue
// depth, and the deadline margin of part 1, and never a token.
func TestMetricsEndpoint(t *testing.T) {
	t.Parallel()
	emu := newEmulator(t)
	gw := startGateway(t, emu, gatewayOptions{Store: "embedded"})
	token, expiresFrom, _ := createToken(emu, time.Hour)
	data := testData(340, 12*mib)

	u := create(t, gw, int64(len(data)), metaWithDeadline(token, expiresFrom))
	upload(t, gw, u, data, 4*mib)
	st, _ := waitDelivered(t, gw, uploadID(t, u))
	checkDelivered(t, emu, token, data, st)

	// The counter moves just after the delivery is recorded.
	var text string
	waitFor(t, "tusgate_parts_delivered_total to reach 3", func() bool {
		text = getMetrics(t, gw)
		v, _ := metricValue(text, "tusgate_parts_delivered_total")
		return v == 3
	})
	for _, s := range []string{
		"tusd_",
		`tusgate_forwarder_queue_depth{class="first"}`,
		`tusgate_forwarder_queue_depth{class="later"}`,
		"tusgate_delivered_bytes_total",
	} {
		if !strings.Contains(text, s) {
			t.Errorf("GET /metrics: no %s", s)
		}
	}
	// The 4 MiB PATCHes came fast over loopback: their bodies were read
	// in batches (the binary hands its connections to the gateway).
	if v, ok := metricValue(text, "tusgate_batched_body_reads_total"); v < 1 {
		t.Errorf("tusgate_batched_body_reads_total: got %v (found %v), want at least 1", v, ok)
	}
	if _, ok := metricValue(text, "tusgate_batched_body_read_stalls_total"); !ok {
		t.Error("GET /metrics: no tusgate_batched_body_read_stalls_total")
	}
	if v, ok := metricValue(text, "tusgate_delivered_bytes_total"); v != float64(len(data)) {
		t.Errorf("tusgate_delivered_bytes_total: got %v (found %v), want %d", v, ok, len(data))
	}
	// Part 1 is always freed before the upload completes (it goes alone);
	// the part that completes the upload goes with its files.
	if v, ok := metricValue(text, "tusgate_discarded_bytes_total"); v < 5*mib || v >= float64(len(data)) {
		t.Errorf("tusgate_discarded_bytes_total: got %v (found %v), want at least part 1 (%d) and less than %d", v, ok, 5*mib, len(data))
	}
	if v, ok := metricValue(text, "tusgate_first_part_deadline_margin_seconds_count"); v != 1 {
		t.Errorf("tusgate_first_part_deadline_margin_seconds_count: got %v (found %v), want 1", v, ok)
	}
	// Part 1 went within seconds of the creation: about an hour was left.
	if v, ok := metricValue(text, "tusgate_first_part_deadline_margin_seconds_sum"); v <= time.Hour.Seconds()-60 || v > time.Hour.Seconds() {
		t.Errorf("tusgate_first_part_deadline_margin_seconds_sum: got %v (found %v), want just under %v", v, ok, time.Hour.Seconds())
	}
	checkNoToken(t, token, map[string]string{"GET /metrics": text})
}
