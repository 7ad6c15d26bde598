package main

import (
	"fmt"
	"io"
	"os"
	"runtime"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/tusgate/tusgate/internal/benchkit"
)

// runResult is one run of one instance count.
type runResult struct {
	Instances int                `json:"instances"`
	Run       int                `json:"run"`
	Metrics   map[string]float64 `json:"metrics,omitempty"`
	// RedisCalls are the calls of each Redis command during the workload
	// (INFO left out; the status reads the benchmark caused are in).
	RedisCalls map[string]int64 `json:"redisCalls,omitempty"`
	Error      string           `json:"error,omitempty"`
}

// summaryRow is the spread of every figure of one instance count.
type summaryRow struct {
	Instances int                      `json:"instances"`
	Metrics   map[string]benchkit.Stat `json:"metrics"`
	// Ratio is ingest MB/s over that of the base instance count, run by
	// run (run i over run i); nil when no pair of runs succeeded.
	Ratio *benchkit.Stat `json:"ingestRatio"`
	// Failed counts the failed runs.
	Failed int `json:"failed,omitempty"`
}

// hostInfo describes the machine.
type hostInfo struct {
	GoVersion string `json:"goVersion"`
	OS        string `json:"os"`
	Arch      string `json:"arch"`
	CPUs      int    `json:"cpus"`
	CPUModel  string `json:"cpuModel,omitempty"`
	MemoryMiB int64  `json:"memoryMiB,omitempty"`
	Kernel    string `json:"kernel,omitempty"`
}

// setupInfo describes the workload and the servers.
type setupInfo struct {
	Uploads     int    `json:"uploads"`
	SizeBytes   int64  `json:"sizeBytes"`
	PatchBytes  int64  `json:"patchBytes"`
	PartBytes   int64  `json:"partBytes"`
	TusgateArgs string `json:"tusgateArgs,omitempty"`
	RedisServer string `json:"redisServer"`
	Gofakes3    string `json:"gofakes3,omitempty"`
}

// report collects the runs and renders them.
type report struct {
	Command  string       `json:"command"`
	Started  time.Time    `json:"started"`
	Finished time.Time    `json:"finished"`
	Host     hostInfo     `json:"host"`
	Setup    setupInfo    `json:"setup"`
	RunsEach int          `json:"runsEach"`
	Base     int          `json:"baseInstances"`
	Runs     []runResult  `json:"runs"`
	Summary  []summaryRow `json:"summary"`
}

func newReport(cfg *config) *report {
	return &report{
		Command: cfg.Command,
		Started: time.Now().UTC(),
		Host:    readHostInfo(),
		Setup: setupInfo{
			Uploads: cfg.Uploads, SizeBytes: cfg.Size, PatchBytes: cfg.PatchSize, PartBytes: cfg.PartSize,
			TusgateArgs: strings.Join(cfg.TusgateArgs, " "),
		},
		RunsEach: cfg.Runs,
		Base:     cfg.Instances[0],
	}
}

func (r *report) add(res runResult) { r.Runs = append(r.Runs, res) }

// failures counts the failed runs.
func (r *report) failures() int {
	n := 0
	for _, res := range r.Runs {
		if res.Error != "" {
			n++
		}
	}
	return n
}

// instanceCounts are the measured instance counts, ascending.
func (r *report) instanceCounts() []int {
	var out []int
	for _, res := range r.Runs {
		if !slices.Contains(out, res.Instances) {
			out = append(out, res.Instances)
		}
	}
	slices.Sort(out)
	return out
}

// finish computes the summary.
func (r *report) finish() {
	r.Finished = time.Now().UTC()
	base := map[int]float64{} // run → base ingest
	for _, res := range r.Runs {
		if res.Instances == r.Base && res.Error == "" {
			base[res.Run] = res.Metrics[mIngest]
		}
	}
	for _, n := range r.instanceCounts() {
		row := summaryRow{Instances: n}
		var ok []map[string]float64
		var ratios []float64
		for _, res := range r.Runs {
			if res.Instances != n {
				continue
			}
			if res.Error != "" {
				row.Failed++
				continue
			}
			ok = append(ok, res.Metrics)
			if b, found := base[res.Run]; found && b > 0 {
				ratios = append(ratios, res.Metrics[mIngest]/b)
			}
		}
		row.Metrics = benchkit.Summarize(ok)
		if len(ratios) > 0 {
			st := benchkit.NewStat(ratios)
			row.Ratio = &st
		}
		r.Summary = append(r.Summary, row)
	}
}

// column is one column of the Markdown table (after "instances").
type column struct {
	head   string
	key    string // metric key; "" for the ratio
	spread bool   // show [min–max] when runs differ
}

var columns = []column{
	{"ingest MB/s", mIngest, true},
	{"", "", true}, // the ratio; its heading names the base instance count
	{"delivered s", mDelivered, true},
	{"Redis cmds/MiB", mRedisCmds, false},
	{"tusgate CPU s/GB", mTusgateCPU, false},
	{"gofakes3 CPU s/GB", mGofakes3CPU, false},
	{"redis CPU s/GB", mRedisCPU, false},
	{"emulator CPU s/GB", mEmulatorCPU, false},
	{"client CPU s/GB", mClientCPU, false},
	{"machine busy %", mBusy, false},
}

// legend explains the table.
const legend = `- ingest MB/s: bytes uploaded / (first creation request → last PATCH acknowledged), all uploads together; MB = 10^6 bytes.
- × N: ingest over that of the base instance count, run by run (run i / run i), median.
- delivered s: first creation request → every upload reported "delivered" by GET /uploads/{id} (polled every 20 ms).
- Redis cmds/MiB: total_commands_processed of the run's private redis-server over the workload (the benchmark's INFO
  and the status reads it caused removed; a status read's cost is measured at the end) / MiB uploaded.
- CPU s/GB: CPU time (user + system) from the first creation to the last delivery, per 10^9 bytes uploaded; tusgate is
  the sum over the instances, client is this benchmark process (the tus client). machine busy %: /proc/stat, all cores,
  same window (includes anything else running on the machine).
- Every video is checked at the emulator: one complete video per upload, the one tusgate names, each api.video part's
  SHA-256 equal to that of the source bytes at its offset.`

// writeMarkdown writes the header, the table and the legend.
func (r *report) writeMarkdown(w io.Writer) error {
	var b strings.Builder
	h := r.Host
	fmt.Fprintf(&b, "command: %s\n\n", r.Command)
	fmt.Fprintf(&b, "- machine: %d CPUs", h.CPUs)
	if h.CPUModel != "" {
		fmt.Fprintf(&b, " (%s)", h.CPUModel)
	}
	if h.MemoryMiB > 0 {
		fmt.Fprintf(&b, ", %.1f GiB RAM", float64(h.MemoryMiB)/1024)
	}
	fmt.Fprintf(&b, ", %s/%s", h.OS, h.Arch)
	if h.Kernel != "" {
		fmt.Fprintf(&b, ", kernel %s", h.Kernel)
	}
	fmt.Fprintf(&b, ", %s\n", h.GoVersion)
	s := r.Setup
	fmt.Fprintf(&b, "- workload: %d concurrent uploads × %s (%s per run) in %s PATCHes; PATCH k of upload u → instance (u+k) mod N; tusgate --part-size %s",
		s.Uploads, benchkit.IBytes(s.SizeBytes), benchkit.IBytes(int64(s.Uploads)*s.SizeBytes), benchkit.IBytes(s.PatchBytes), benchkit.IBytes(s.PartBytes))
	if s.TusgateArgs != "" {
		fmt.Fprintf(&b, " %s", s.TusgateArgs)
	}
	b.WriteString("\n")
	gofakes3 := "gofakes3"
	if s.Gofakes3 != "" {
		gofakes3 += " " + s.Gofakes3
	}
	fmt.Fprintf(&b, "- per run, fresh: %s (private, no persistence), %s (memory backend, new bucket), api.video emulator (own process), N tusgate processes; all on 127.0.0.1\n", s.RedisServer, gofakes3)
	fmt.Fprintf(&b, "- %d run(s) per instance count, interleaved; medians, [min–max] where shown\n", r.RunsEach)
	fmt.Fprintf(&b, "- started %s, took %s\n\n", r.Started.Format(time.RFC3339), r.Finished.Sub(r.Started).Round(time.Second))

	heads := []string{"instances"}
	for _, c := range columns {
		if c.key == "" {
			heads = append(heads, "× "+strconv.Itoa(r.Base)+" instance")
		} else {
			heads = append(heads, c.head)
		}
	}
	b.WriteString("| " + strings.Join(heads, " | ") + " |\n")
	b.WriteString("|" + strings.Repeat("---:|", len(heads)) + "\n")
	for _, row := range r.Summary {
		cells := []string{strconv.Itoa(row.Instances)}
		for _, c := range columns {
			var st *benchkit.Stat
			if c.key == "" {
				st = row.Ratio
			} else if v, ok := row.Metrics[c.key]; ok {
				st = &v
			}
			cells = append(cells, cell(st, c.spread, c.key == ""))
		}
		b.WriteString("| " + strings.Join(cells, " | ") + " |\n")
	}
	b.WriteString("\n" + legend + "\n")
	if r.failures() > 0 {
		b.WriteString("\nfailed runs:\n")
		for _, res := range r.Runs {
			if res.Error != "" {
				fmt.Fprintf(&b, "- %d instance(s), run %d: %s\n", res.Instances, res.Run, res.Error)
			}
		}
	}
	_, err := io.WriteString(w, b.String())
	return err
}

// cell formats a statistic: the median, and [min–max] when spread is set
// and the runs differ; a ratio as 1.50×.
func cell(st *benchkit.Stat, spread, ratio bool) string {
	f := benchkit.FormatNum
	if ratio {
		f = func(v float64) string { return fmt.Sprintf("%.2f×", v) }
	}
	if st != nil && !spread {
		return f(st.Median)
	}
	return benchkit.FormatStat(st, f)
}

func readHostInfo() hostInfo {
	h := hostInfo{GoVersion: runtime.Version(), OS: runtime.GOOS, Arch: runtime.GOARCH, CPUs: runtime.NumCPU()}
	if b, err := os.ReadFile("/proc/sys/kernel/osrelease"); err == nil {
		h.Kernel = strings.TrimSpace(string(b))
	}
	if b, err := os.ReadFile("/proc/cpuinfo"); err == nil {
		for line := range strings.SplitSeq(string(b), "\n") {
			if k, v, ok := strings.Cut(line, ":"); ok && strings.TrimSpace(k) == "model name" {
				h.CPUModel = strings.Join(strings.Fields(v), " ")
				break
			}
		}
	}
	if b, err := os.ReadFile("/proc/meminfo"); err == nil {
		for line := range strings.SplitSeq(string(b), "\n") {
			if v, ok := strings.CutPrefix(line, "MemTotal:"); ok {
				if kb, err := strconv.ParseInt(strings.TrimSuffix(strings.TrimSpace(v), " kB"), 10, 64); err == nil {
					h.MemoryMiB = kb >> 10
				}
				break
			}
		}
	}
	return h
}
