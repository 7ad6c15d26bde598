package main_test

import (
	"encoding/json"
	"math"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"testing"

	"github.com/tusgate/tusgate/internal/benchkit/benchkittest"
)

// report is the part of the JSON report the test reads.
type report struct {
	Summary []struct {
		Instances int `json:"instances"`
		Failed    int `json:"failed"`
		Metrics   map[string]struct {
			Median float64 `json:"median"`
			N      int     `json:"n"`
		} `json:"metrics"`
		Ratio *struct {
			Median float64 `json:"median"`
		} `json:"ingestRatio"`
	} `json:"summary"`
}

// TestQuickRun runs the benchmark's smoke mode (1, 2 and 3 instances, one
// run each, 2 uploads of 12MiB) and checks that the Markdown table has one
// row per instance count with finite positive figures, and that the JSON
// report agrees. It asserts no timing. The run itself fails if a video
// differs from its source or an instance did not serve its share of the
// PATCHes.
func TestQuickRun(t *testing.T) {
	if _, err := exec.LookPath("redis-server"); err != nil {
		t.Skip("redis-server is not on PATH")
	}
	bin := benchkittest.Build(t, "tusgate-scalebench")

	work := t.TempDir()
	jsonPath := filepath.Join(work, "report.json")
	args := []string{"--quick", "--work-dir", work, "--json-file", jsonPath, "--run-timeout", "2m"}
	out := benchkittest.Run(t, bin, args...)
	if !strings.Contains(out, "- machine: ") || !strings.Contains(out, "go1.") {
		t.Errorf("report header names no machine or Go version")
	}

	var header []string
	rows := map[int][]string{}
	for line := range strings.SplitSeq(out, "\n") {
		if !strings.HasPrefix(line, "| ") {
			continue
		}
		cells := strings.Split(strings.Trim(line, "| "), " | ")
		if cells[0] == "instances" {
			header = cells
			continue
		}
		n, err := strconv.Atoi(cells[0])
		if err != nil {
			t.Errorf("table row %q: first cell is not an instance count", line)
			continue
		}
		if _, dup := rows[n]; dup {
			t.Errorf("table has two rows for %d instances", n)
		}
		rows[n] = cells
	}
	if len(header) < 11 {
		t.Fatalf("table header: got %q, want at least 11 columns", header)
	}
	if len(rows) != 3 {
		t.Fatalf("table rows: got %d, want 3 (1, 2 and 3 instances)", len(rows))
	}
	for n := 1; n <= 3; n++ {
		cells, ok := rows[n]
		if !ok {
			t.Errorf("no table row for %d instances", n)
			continue
		}
		if len(cells) != len(header) {
			t.Errorf("row %d: got %d cells, want %d", n, len(cells), len(header))
			continue
		}
		for i, c := range cells[1:] {
			v, err := strconv.ParseFloat(strings.TrimSuffix(c, "×"), 64)
			if err != nil || math.IsInf(v, 0) || math.IsNaN(v) || v <= 0 {
				t.Errorf("row %d, %s: got %q, want a finite number > 0", n, header[i+1], c)
			}
		}
		if n == 1 && cells[2] != "1.00×" {
			t.Errorf("row 1, %s: got %q, want 1.00×", header[2], cells[2])
		}
	}

	raw, err := os.ReadFile(jsonPath)
	if err != nil {
		t.Fatalf("read JSON report: %v", err)
	}
	var rep report
	if err := json.Unmarshal(raw, &rep); err != nil {
		t.Fatalf("decode JSON report: %v", err)
	}
	if len(rep.Summary) != 3 {
		t.Fatalf("JSON summary rows: got %d, want 3", len(rep.Summary))
	}
	for i, row := range rep.Summary {
		if row.Instances != i+1 || row.Failed != 0 {
			t.Errorf("summary row %d: got %d instances, %d failed runs; want %d instances, 0 failed", i, row.Instances, row.Failed, i+1)
		}
		if row.Ratio == nil || row.Ratio.Median <= 0 {
			t.Errorf("%d instances: no positive ingest ratio", row.Instances)
		}
		// 2 uploads of 12MiB: 3 PATCHes of 4MiB and 3 api.video parts each.
		for metric, want := range map[string]float64{"patches": 6, "apivideo_parts": 6} {
			if got := row.Metrics[metric]; got.Median != want || got.N != 1 {
				t.Errorf("%d instances, %s: got %v over %d runs, want %v over 1", row.Instances, metric, got.Median, got.N, want)
			}
		}
	}
}
