package main_test

import (
	"encoding/json"
	"math"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"

	"github.com/tusgate/tusgate/internal/benchkit/benchkittest"
)

var (
	systems   = []string{"plain-tusd", "tusgate-embedded", "tusgate-redis"}
	workloads = []string{"one-patch", "small-patches", "concurrent", "slow-clients", "paced"}
)

// readSummary reads the JSON report the benchmark wrote to path.
func readSummary(t *testing.T, path string) summary {
	t.Helper()
	raw, err := os.ReadFile(path)
	if err != nil {
		t.Fatalf("read JSON report: %v", err)
	}
	var rep summary
	if err := json.Unmarshal(raw, &rep); err != nil {
		t.Fatalf("decode JSON report: %v", err)
	}
	return rep
}

func redisAddr() string {
	if a := os.Getenv("TUSGATE_TEST_REDIS_ADDR"); a != "" {
		return a
	}
	return "127.0.0.1:6379"
}

// summary is the part of the JSON report the test reads.
type summary struct {
	Summary []struct {
		Workload string `json:"workload"`
		System   string `json:"system"`
		Failed   int    `json:"failed"`
		Metrics  map[string]struct {
			Median float64 `json:"median"`
			N      int     `json:"n"`
		} `json:"metrics"`
	} `json:"summary"`
	Ratios []struct {
		Workload string `json:"workload"`
		System   string `json:"system"`
		Ingest   *struct {
			Median float64 `json:"median"`
		} `json:"ingestMBps"`
		CPU *struct {
			Median float64 `json:"median"`
		} `json:"cpuSecondsPerGB"`
	} `json:"ratios"`
}

// TestQuickRun runs every workload once on every system with tiny sizes and
// checks that the report has every row with sane figures. It asserts no
// timing.
func TestQuickRun(t *testing.T) {
	bin := benchkittest.Build(t, "tusgate-bench")
	work := t.TempDir()
	jsonPath := filepath.Join(work, "report.json")
	args := []string{
		"--quick", "--runs", "1",
		"--size", "8MiB",
		"--concurrent-uploads", "2", "--concurrent-size", "8MiB",
		"--slow-clients", "10", "--slow-duration", "1s",
		"--paced-uploads", "2", "--paced-size", "4MiB",
		"--redis-url", "redis://" + redisAddr() + "/14",
		"--work-dir", work,
		"--json-file", jsonPath,
		"--run-timeout", "2m",
	}
	table := benchkittest.Run(t, bin, args...)
	rows := map[string]int{}
	for line := range strings.SplitSeq(table, "\n") {
		if f := strings.Fields(line); len(f) >= 4 && slices.Contains(workloads, f[0]) && slices.Contains(systems, f[1]) {
			rows[f[0]+" "+f[1]]++
		}
	}
	for _, w := range workloads {
		for _, s := range systems {
			want := 1 // the main table
			if s != "plain-tusd" {
				want = 2 // and the ratio table
			}
			if got := rows[w+" "+s]; got != want {
				t.Errorf("table rows for %s %s: got %d, want %d", w, s, got, want)
			}
		}
	}

	// The runs' data directories and the page-cache warm-up files are gone.
	entries, err := os.ReadDir(work)
	if err != nil {
		t.Fatal(err)
	}
	for _, e := range entries {
		if e.Name() != filepath.Base(jsonPath) {
			t.Errorf("left in the work dir: %s", e.Name())
		}
	}

	rep := readSummary(t, jsonPath)
	if got, want := len(rep.Summary), len(workloads)*len(systems); got != want {
		t.Fatalf("JSON summary rows: got %d, want %d", got, want)
	}
	for _, row := range rep.Summary {
		t.Run(row.Workload+"/"+row.System, func(t *testing.T) {
			if row.Failed != 0 {
				t.Fatalf("failed runs: got %d, want 0", row.Failed)
			}
			gateway := row.System != "plain-tusd"
			checks := []struct {
				metric   string
				present  bool
				positive bool
			}{
				{"ingest_mb_s", true, true},
				{"cpu_s_per_gb", true, true},
				{"peak_rss_mib", true, true},
				{"e2e_s", gateway, true},
				{"forward_mb_s", gateway, true},
				{"lag_s", gateway, false},
				{"redis_cmds_per_mib", row.System == "tusgate-redis", true},
				{"rss_per_upload_kib", row.Workload == "slow-clients", false},
				{"heap_per_upload_kib", row.Workload == "slow-clients", false},
			}
			for _, c := range checks {
				st, ok := row.Metrics[c.metric]
				if ok != c.present {
					t.Errorf("%s present: got %v, want %v", c.metric, ok, c.present)
					continue
				}
				if !ok {
					continue
				}
				if st.N != 1 {
					t.Errorf("%s runs: got %d, want 1", c.metric, st.N)
				}
				if math.IsNaN(st.Median) || math.IsInf(st.Median, 0) || (c.positive && st.Median <= 0) {
					t.Errorf("%s: got %v, want a finite number%s", c.metric, st.Median, map[bool]string{true: " > 0"}[c.positive])
				}
			}
		})
	}
	if got, want := len(rep.Ratios), len(workloads)*(len(systems)-1); got != want {
		t.Errorf("ratio rows: got %d, want %d", got, want)
	}
	for _, r := range rep.Ratios {
		if r.Ingest == nil || r.CPU == nil || r.Ingest.Median <= 0 || r.CPU.Median <= 0 {
			t.Errorf("ratio %s %s: got ingest %+v cpu %+v, want both > 0", r.Workload, r.System, r.Ingest, r.CPU)
		}
	}
}

// TestQuickRunBare runs the bare yardstick beside plain tusd on the unpaced
// workloads and checks that it delivers and reports the forwarding figures
// and a ratio to plain tusd. It asserts no timing.
func TestQuickRunBare(t *testing.T) {
	bin := benchkittest.Build(t, "tusgate-bench")
	work := t.TempDir()
	jsonPath := filepath.Join(work, "report.json")
	unpaced := []string{"one-patch", "small-patches", "concurrent"}
	benchkittest.Run(t, bin,
		"--quick", "--runs", "1",
		"--size", "8MiB",
		"--concurrent-uploads", "2", "--concurrent-size", "8MiB",
		"--systems", "plain-tusd,bare",
		"--workloads", strings.Join(unpaced, ","),
		"--bare-part-size", "5MiB",
		"--work-dir", work,
		"--json-file", jsonPath,
		"--run-timeout", "2m",
	)
	rep := readSummary(t, jsonPath)
	bare := 0
	for _, row := range rep.Summary {
		if row.System != "bare" {
			continue
		}
		bare++
		if row.Failed != 0 {
			t.Errorf("%s: %d failed runs", row.Workload, row.Failed)
		}
		for _, m := range []string{"ingest_mb_s", "cpu_s_per_gb", "e2e_s", "forward_mb_s"} {
			if st, ok := row.Metrics[m]; !ok || !(st.Median > 0) {
				t.Errorf("%s %s: got %+v (present %v), want > 0", row.Workload, m, st, ok)
			}
		}
	}
	if bare != len(unpaced) {
		t.Errorf("bare summary rows: got %d, want %d", bare, len(unpaced))
	}
	ratios := 0
	for _, r := range rep.Ratios {
		if r.System == "bare" && r.Ingest != nil && r.Ingest.Median > 0 && r.CPU != nil && r.CPU.Median > 0 {
			ratios++
		}
	}
	if ratios != len(unpaced) {
		t.Errorf("bare ratio rows with figures: got %d, want %d", ratios, len(unpaced))
	}
}
