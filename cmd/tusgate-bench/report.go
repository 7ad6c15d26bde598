package main

import (
	"fmt"
	"io"
	"slices"
	"strings"
	"text/tabwriter"
	"time"

	"github.com/tusgate/tusgate/internal/benchkit"
)

// Metric keys. The first group is tabulated; the rest is in the JSON only.
const (
	mIngest        = "ingest_mb_s"
	mCPU           = "cpu_s_per_gb"
	mE2E           = "e2e_s"
	mLag           = "lag_s"
	mForward       = "forward_mb_s"
	mPeakRSS       = "peak_rss_mib"
	mRSSPerUpload  = "rss_per_upload_kib"
	mHeapPerUpload = "heap_per_upload_kib"
	mRedisCmds     = "redis_cmds_per_mib"
	mVMReclaimed   = "vm_reclaimed_mib"

	mBytes           = "bytes"
	mIngestS         = "ingest_s"
	mCPUS            = "cpu_s"
	mRSSEnd          = "rss_end_mib"
	mRSSIdle         = "rss_idle_mib"
	mHeapIdle        = "heap_idle_mib"
	mRedisServerCmds = "redis_server_cmds_per_mib"
	mStatusPolls     = "status_polls"
	mOpenSamples     = "open_samples"
	// mClientCPU and mEmulatorCPU are the CPU s/GB of the benchmark process
	// (client and Redis proxy) and of the emulator, which share the machine
	// with the server under test.
	mClientCPU   = "client_cpu_s_per_gb"
	mEmulatorCPU = "emulator_cpu_s_per_gb"
)

// tableColumns are the tabulated metrics with their headings.
var tableColumns = []struct{ key, head string }{
	{mIngest, "ingest MB/s"},
	{mCPU, "CPU s/GB"},
	{mE2E, "e2e s"},
	{mLag, "lag s"},
	{mForward, "fwd MB/s"},
	{mPeakRSS, "peak RSS MiB"},
	{mRSSPerUpload, "RSS/upload KiB"},
	{mHeapPerUpload, "heap/upload KiB"},
	{mRedisCmds, "Redis cmds/MiB"},
	{mVMReclaimed, "VM reclaimed MiB"},
}

// legend explains the table's columns.
const legend = `ingest MB/s      upload bytes / (first creation request → last PATCH acknowledged); MB = 10^6 bytes
CPU s/GB         server process CPU time (user+system) from idle to the end of the workload (tusgate, bare: until
                 every upload is delivered, so forwarding is included) per 10^9 bytes uploaded
e2e s            first creation request → last video complete at the emulator
lag s            client's last byte acknowledged → last video complete at the emulator
fwd MB/s         bytes delivered / (first part arriving at the emulator → last video complete)
peak RSS MiB     VmHWM of the server process (a fresh process per run)
RSS/upload KiB   (highest VmRSS while every slow upload is open − idle VmRSS) / uploads
heap/upload KiB  (highest go_memstats_heap_inuse_bytes while open − idle) / uploads
Redis cmds/MiB   commands tusgate sent to Redis (counted by a proxy in front of it, the benchmark's own
                 status reads removed) / MiB uploaded; the JSON also has the server-wide INFO figure
VM reclaimed MiB free memory the VM handed back to its host during the run (free page reporting; n/a where the
                 kernel does not count it); page-cache writes into it cost a host fault per page afterwards`

// summaryRow is the spread of every figure of one workload on one system.
type summaryRow struct {
	Workload string                   `json:"workload"`
	System   string                   `json:"system"`
	Metrics  map[string]benchkit.Stat `json:"metrics"`
	// Failed counts the failed runs.
	Failed int `json:"failed,omitempty"`
}

// ratioRow compares one system (tusgate or bare) with plain tusd on one workload,
// over the per-run ratios (run i of the system / run i of plain tusd).
type ratioRow struct {
	Workload string         `json:"workload"`
	System   string         `json:"system"`
	Ingest   *benchkit.Stat `json:"ingestMBps"`
	CPU      *benchkit.Stat `json:"cpuSecondsPerGB"`
}

// report collects the runs and renders them.
type report struct {
	Command  string    `json:"command"`
	Started  time.Time `json:"started"`
	Finished time.Time `json:"finished"`
	Host     hostInfo  `json:"host"`
	Tusgate  string    `json:"tusgate,omitempty"`
	// TusgateEnv is what the benchmark added to tusgate's environment.
	TusgateEnv []string     `json:"tusgateEnv,omitempty"`
	RedisURL   string       `json:"redisURL,omitempty"`
	RunsEach   int          `json:"runsEach"`
	Systems    []string     `json:"systems"`
	Workloads  []workload   `json:"workloads"`
	Runs       []result     `json:"runs"`
	Summary    []summaryRow `json:"summary"`
	Ratios     []ratioRow   `json:"ratios"`
}

func newReport(cfg *config, wls []workload, tusgate string) *report {
	r := &report{
		Command:    cfg.Command,
		Started:    time.Now().UTC(),
		Host:       readHostInfo(),
		Tusgate:    tusgate,
		TusgateEnv: cfg.TusgateEnv,
		RunsEach:   cfg.Runs,
		Systems:    cfg.Systems,
		Workloads:  wls,
	}
	if slices.Contains(cfg.Systems, sysRedis) {
		r.RedisURL = redactURL(cfg.RedisURL)
	}
	return r
}

// redactURL hides a password in a URL.
func redactURL(raw string) string {
	if i := strings.Index(raw, "@"); i >= 0 {
		if j := strings.Index(raw, "://"); j >= 0 && j < i {
			return raw[:j+3] + "[REDACTED]" + raw[i:]
		}
	}
	return raw
}

func (r *report) add(res result) { r.Runs = append(r.Runs, res) }

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

// finish computes the summary and the ratios.
func (r *report) finish() {
	r.Finished = time.Now().UTC()
	for _, w := range r.Workloads {
		for _, sys := range r.Systems {
			row := summaryRow{Workload: w.Name, System: sys}
			var ok []map[string]float64
			for _, res := range r.Runs {
				if res.Workload != w.Name || res.System != sys {
					continue
				}
				if res.Error != "" {
					row.Failed++
					continue
				}
				ok = append(ok, res.Metrics)
			}
			row.Metrics = benchkit.Summarize(ok)
			r.Summary = append(r.Summary, row)
		}
		if !slices.Contains(r.Systems, sysPlain) {
			continue
		}
		for _, sys := range r.Systems {
			if sys == sysPlain {
				continue
			}
			r.Ratios = append(r.Ratios, ratioRow{
				Workload: w.Name, System: sys,
				Ingest: r.ratio(w.Name, sys, mIngest),
				CPU:    r.ratio(w.Name, sys, mCPU),
			})
		}
	}
}

// ratio is the spread of metric key of sys over plain tusd, run by run.
func (r *report) ratio(wl, sys, key string) *benchkit.Stat {
	byRun := func(system string) map[int]float64 {
		m := map[int]float64{}
		for _, res := range r.Runs {
			if v, ok := res.Metrics[key]; ok && res.Workload == wl && res.System == system && res.Error == "" {
				m[res.Run] = v
			}
		}
		return m
	}
	num, den := byRun(sys), byRun(sysPlain)
	var ratios []float64
	for run, v := range num {
		if d, ok := den[run]; ok && d > 0 {
			ratios = append(ratios, v/d)
		}
	}
	if len(ratios) == 0 {
		return nil
	}
	st := benchkit.NewStat(ratios)
	return &st
}

// writeTable writes the report as aligned text.
func (r *report) writeTable(w io.Writer) error {
	var b strings.Builder
	fmt.Fprintf(&b, "command: %s\n", r.Command)
	fmt.Fprintf(&b, "started: %s  took: %s\n", r.Started.Format(time.RFC3339), r.Finished.Sub(r.Started).Round(time.Second))
	fmt.Fprintf(&b, "host: %s %s/%s, %d CPUs, kernel %s\n", r.Host.GoVersion, r.Host.OS, r.Host.Arch, r.Host.CPUs, r.Host.Kernel)
	if r.Tusgate != "" {
		fmt.Fprintf(&b, "tusgate: %s\n", r.Tusgate)
		if len(r.TusgateEnv) > 0 {
			note := ""
			if slices.Equal(r.TusgateEnv, imageEnv) {
				note = " (the Docker image's)"
			}
			fmt.Fprintf(&b, "tusgate environment: %s%s\n", strings.Join(r.TusgateEnv, " "), note)
		}
	}
	if r.RedisURL != "" {
		fmt.Fprintf(&b, "redis: %s (flushed before each run)\n", r.RedisURL)
	}
	fmt.Fprintf(&b, "runs: %d per workload and system, systems interleaved run by run; cells: median [min–max]\n\n", r.RunsEach)
	b.WriteString("workloads:\n")
	for _, wl := range r.Workloads {
		fmt.Fprintf(&b, "  %-14s %s\n", wl.Name, wl.Desc)
	}
	b.WriteString("\n")

	tw := tabwriter.NewWriter(&b, 0, 0, 2, ' ', 0)
	head := []string{"workload", "system"}
	for _, c := range tableColumns {
		head = append(head, c.head)
	}
	fmt.Fprintln(tw, strings.Join(head, "\t"))
	for _, row := range r.Summary {
		cells := []string{row.Workload, row.System}
		for _, c := range tableColumns {
			var st *benchkit.Stat
			if v, ok := row.Metrics[c.key]; ok {
				st = &v
			}
			cells = append(cells, benchkit.FormatStat(st, nil))
		}
		if row.Failed > 0 {
			cells = append(cells, fmt.Sprintf("(%d failed)", row.Failed))
		}
		fmt.Fprintln(tw, strings.Join(cells, "\t"))
	}
	if err := tw.Flush(); err != nil {
		return err
	}

	if len(r.Ratios) > 0 {
		b.WriteString("\nsystem / plain tusd (per-run ratios; ingest > 1 is faster, CPU < 1 is cheaper):\n")
		tw = tabwriter.NewWriter(&b, 0, 0, 2, ' ', 0)
		fmt.Fprintln(tw, "workload\tsystem\tingest MB/s\tCPU s/GB")
		for _, row := range r.Ratios {
			fmt.Fprintf(tw, "%s\t%s\t%s\t%s\n", row.Workload, row.System, benchkit.FormatStat(row.Ingest, nil), benchkit.FormatStat(row.CPU, nil))
		}
		if err := tw.Flush(); err != nil {
			return err
		}
	}
	b.WriteString("\n" + legend + "\n")

	if r.failures() > 0 {
		b.WriteString("\nfailed runs:\n")
		for _, res := range r.Runs {
			if res.Error != "" {
				fmt.Fprintf(&b, "  %s %s run %d: %s\n", res.Workload, res.System, res.Run, res.Error)
			}
		}
	}
	_, err := io.WriteString(w, b.String())
	return err
}
