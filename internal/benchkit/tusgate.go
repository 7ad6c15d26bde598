package benchkit

import (
	"bufio"
	"context"
	"encoding/json"
	"fmt"
	"net/http"
	"net/url"
	"strconv"
	"strings"
)

// TusgateListening is a ProcSpec.Ready for tusgate run with --log-format
// json: it returns the address of its "listening" log line, and "" for
// other lines.
func TusgateListening(line string) string {
	var entry struct {
		Msg  string `json:"msg"`
		Addr string `json:"addr"`
	}
	if json.Unmarshal([]byte(line), &entry) != nil || entry.Msg != "listening" {
		return ""
	}
	return entry.Addr
}

// UploadStatus is the part of tusgate's GET /uploads/{id} the benchmarks
// read.
type UploadStatus struct {
	// State is the upload's state: "receiving", "delivered", "failed", ….
	State string `json:"state"`
	// Received and Delivered are the bytes tusgate holds and the bytes
	// api.video accepted.
	Received  int64 `json:"received"`
	Delivered int64 `json:"delivered"`
	// VideoID is api.video's video id once part 1 was accepted.
	VideoID string `json:"videoId"`
	// Error says why a failed upload failed.
	Error *StatusError `json:"error"`
}

// StatusError is the error of a failed upload in its status.
type StatusError struct {
	Reason  string `json:"reason"`
	Message string `json:"message"`
}

// FetchStatus reads tusgate's status of an upload from the instance at
// base (http://host:port). upload is the upload's tus URL or URL path; its
// last segment is the upload id.
func FetchStatus(ctx context.Context, hc *http.Client, base, upload string) (UploadStatus, error) {
	var st UploadStatus
	id := upload[strings.LastIndexByte(upload, '/')+1:]
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, base+"/uploads/"+url.PathEscape(id), nil)
	if err != nil {
		return st, fmt.Errorf("upload status: %w", err)
	}
	resp, err := hc.Do(req)
	if err != nil {
		return st, fmt.Errorf("upload status: %w", err)
	}
	defer DrainClose(resp.Body)
	if resp.StatusCode != http.StatusOK {
		return st, fmt.Errorf("upload status %s: %s: %s", id, resp.Status, ReadSome(resp.Body))
	}
	if err := json.NewDecoder(resp.Body).Decode(&st); err != nil {
		return st, fmt.Errorf("upload status %s: %w", id, err)
	}
	return st, nil
}

// ScrapeMetrics reads the Prometheus text exposition at url and returns
// the values of the named series: a name is matched whole against what
// precedes the value on a line, labels included, such as
// `tusd_requests_total{method="PATCH"}`. A series that is missing is an
// error. It reads the whole page, so the connection can be reused.
func ScrapeMetrics(ctx context.Context, hc *http.Client, url string, names ...string) (map[string]float64, error) {
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, url, nil)
	if err != nil {
		return nil, err
	}
	resp, err := hc.Do(req)
	if err != nil {
		return nil, fmt.Errorf("scrape metrics: %w", err)
	}
	defer DrainClose(resp.Body)
	if resp.StatusCode != http.StatusOK {
		return nil, fmt.Errorf("scrape metrics: %s", resp.Status)
	}
	want := map[string]bool{}
	for _, n := range names {
		want[n] = true
	}
	got := map[string]float64{}
	sc := bufio.NewScanner(resp.Body)
	for sc.Scan() {
		name, val, ok := strings.Cut(sc.Text(), " ")
		if !ok || !want[name] {
			continue
		}
		f, err := strconv.ParseFloat(strings.TrimSpace(val), 64)
		if err != nil {
			return nil, fmt.Errorf("scrape metrics: %s %q: %w", name, val, err)
		}
		got[name] = f
	}
	if err := sc.Err(); err != nil {
		return nil, fmt.Errorf("scrape metrics: %w", err)
	}
	for _, n := range names {
		if _, ok := got[n]; !ok {
			return nil, fmt.Errorf("scrape metrics: no %s", n)
		}
	}
	return got, nil
}
