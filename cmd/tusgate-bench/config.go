package main

import (
	"errors"
	"flag"
	"fmt"
	"io"
	"net/url"
	"os"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/tusgate/tusgate/internal/benchkit"
)

const (
	kib = 1 << 10
	mib = 1 << 20
	gib = 1 << 30
	// maxSize bounds the size flags.
	maxSize = 1 << 50
)

// System names.
const (
	sysPlain    = "plain-tusd"
	sysEmbedded = "tusgate-embedded"
	sysRedis    = "tusgate-redis"
	sysBare     = "bare"
)

// Workload names.
const (
	wlOnePatch     = "one-patch"
	wlSmallPatches = "small-patches"
	wlConcurrent   = "concurrent"
	wlSlowClients  = "slow-clients"
	wlPaced        = "paced"
)

var (
	// defaultSystems run unless --systems says otherwise; knownSystems
	// adds bare, which runs only when selected.
	defaultSystems = []string{sysPlain, sysEmbedded, sysRedis}
	knownSystems   = []string{sysPlain, sysEmbedded, sysRedis, sysBare}
	allWorkloads   = []string{wlOnePatch, wlSmallPatches, wlConcurrent, wlSlowClients, wlPaced}
)

// config is the benchmark's settings.
type config struct {
	// Command is the command line, shell-quoted, as printed at the top.
	Command string
	// Runs is the number of runs of each workload on each system.
	Runs int
	// Systems and Workloads are the selected names, in running order.
	Systems, Workloads []string

	// Size is the upload size of one-patch and small-patches, in bytes.
	Size int64
	// PatchSize is the PATCH size of small-patches, in bytes.
	PatchSize int64
	// ConcurrentUploads and ConcurrentSize shape the concurrent workload.
	ConcurrentUploads int
	ConcurrentSize    int64
	// SlowClients, SlowRate (bytes per second per client) and SlowDuration
	// shape the slow-clients workload: each client sends
	// SlowRate*SlowDuration bytes at SlowRate.
	SlowClients  int
	SlowRate     int64
	SlowDuration time.Duration
	// PacedUploads, PacedSize and PacedRate shape the paced workload:
	// clients slower than the server, as on real networks, each sending
	// PacedSize bytes in one PATCH at PacedRate bytes per second.
	PacedUploads int
	PacedSize    int64
	PacedRate    int64

	// RedisURL is the Redis database the tusgate-redis system uses (flushed
	// before each run).
	RedisURL string
	// Tusgate is the tusgate binary; empty = build cmd/tusgate.
	Tusgate string
	// TusgateArgs are extra arguments for every tusgate process.
	TusgateArgs []string
	// TusgateEnv are KEY=VALUE settings added to every tusgate process's
	// environment (replacing the benchmark's own value of KEY). Default:
	// imageEnv, what the Docker image sets.
	TusgateEnv []string
	// BarePartSize is the part size of the bare system (tusgate's default,
	// 50 MiB, unless set).
	BarePartSize int64
	// WorkDir holds each run's temporary data directory.
	WorkDir string
	// Output says where the report goes: the text table or JSON.
	Output benchkit.Output
	// RunTimeout bounds one run of one workload on one system.
	RunTimeout time.Duration
	// Warm writes and deletes each run's bytes in WorkDir before the run
	// (warmPageCache), so that every system starts in the same memory state.
	Warm bool
}

// listValue is a comma-separated list flag checked against allowed names.
type listValue struct {
	p       *[]string
	allowed []string
}

func (l listValue) String() string {
	if l.p == nil {
		return ""
	}
	return strings.Join(*l.p, ",")
}

func (l listValue) Set(v string) error {
	var out []string
	for name := range strings.SplitSeq(v, ",") {
		name = strings.TrimSpace(name)
		if name == "" {
			continue
		}
		if !slices.Contains(l.allowed, name) {
			return fmt.Errorf("unknown name %q (want some of %s)", name, strings.Join(l.allowed, ","))
		}
		if !slices.Contains(out, name) {
			out = append(out, name)
		}
	}
	if len(out) == 0 {
		return errors.New("empty list")
	}
	*l.p = out
	return nil
}

// parseConfig parses the benchmark's flags; it returns nil, nil for --help.
func parseConfig(args []string, stderr io.Writer) (*config, error) {
	cfg := &config{
		Command:           benchkit.QuoteCommand("tusgate-bench", args),
		Runs:              3,
		Systems:           slices.Clone(defaultSystems),
		Workloads:         slices.Clone(allWorkloads),
		Size:              1 * gib,
		PatchSize:         5 * mib,
		ConcurrentUploads: 16,
		ConcurrentSize:    64 * mib,
		SlowClients:       1000,
		SlowRate:          64 * kib,
		SlowDuration:      10 * time.Second,
		PacedUploads:      8,
		PacedSize:         64 * mib,
		PacedRate:         16 * mib,
		RedisURL:          "redis://127.0.0.1:6379/14",
		BarePartSize:      50 * mib,
		WorkDir:           os.TempDir(),
		RunTimeout:        10 * time.Minute,
		Warm:              true,
	}
	var quick bool
	var tusgateArgs string
	tusgateEnv := strings.Join(imageEnv, " ")
	fs := flag.NewFlagSet("tusgate-bench", flag.ContinueOnError)
	fs.SetOutput(stderr)
	fs.Usage = func() {
		fmt.Fprintf(stderr, "Usage: tusgate-bench [flags]\n\nCompares plain tusd, tusgate (embedded store) and tusgate (Redis store)\non the same workloads, run by run interleaved. Sizes: 64MiB, 1GiB.\n\n")
		fs.PrintDefaults()
	}
	fs.IntVar(&cfg.Runs, "runs", cfg.Runs, "runs of each workload on each system")
	fs.Var(listValue{&cfg.Systems, knownSystems}, "systems", "comma-separated systems to run ("+sysBare+": only when named, the least a server that stores and forwards every byte does)")
	fs.Var(listValue{&cfg.Workloads, allWorkloads}, "workloads", "comma-separated workloads to run")
	fs.Var(benchkit.SizeValue{P: &cfg.Size, Max: maxSize}, "size", "upload size of one-patch and small-patches")
	fs.Var(benchkit.SizeValue{P: &cfg.PatchSize, Max: maxSize}, "patch-size", "PATCH size of small-patches")
	fs.IntVar(&cfg.ConcurrentUploads, "concurrent-uploads", cfg.ConcurrentUploads, "uploads of the concurrent workload")
	fs.Var(benchkit.SizeValue{P: &cfg.ConcurrentSize, Max: maxSize}, "concurrent-size", "size of each upload of the concurrent workload")
	fs.IntVar(&cfg.SlowClients, "slow-clients", cfg.SlowClients, "clients of the slow-clients workload")
	fs.Var(benchkit.SizeValue{P: &cfg.SlowRate, Max: maxSize}, "slow-rate", "bytes per second each slow client sends")
	fs.DurationVar(&cfg.SlowDuration, "slow-duration", cfg.SlowDuration, "how long each slow client sends")
	fs.IntVar(&cfg.PacedUploads, "paced-uploads", cfg.PacedUploads, "uploads of the paced workload")
	fs.Var(benchkit.SizeValue{P: &cfg.PacedSize, Max: maxSize}, "paced-size", "size of each upload of the paced workload")
	fs.Var(benchkit.SizeValue{P: &cfg.PacedRate, Max: maxSize}, "paced-rate", "bytes per second each paced client sends")
	fs.BoolVar(&quick, "quick", false, "smoke run: 64MiB uploads, 8 x 16MiB concurrent, 100 slow clients for 3s, 4 x 16MiB paced (flags given explicitly win)")
	fs.StringVar(&cfg.RedisURL, "redis-url", cfg.RedisURL, "Redis database for tusgate-redis (redis://host:port/db); FLUSHDB before each run")
	fs.StringVar(&cfg.Tusgate, "tusgate", "", "tusgate binary to run (default: go build ./cmd/tusgate from the module root)")
	fs.StringVar(&tusgateArgs, "tusgate-args", "", "extra space-separated arguments for tusgate, such as \"--part-size 20MiB\"")
	fs.StringVar(&tusgateEnv, "tusgate-env", tusgateEnv, "space-separated KEY=VALUE settings added to tusgate's environment (default: what the Docker image sets; \"\" for none)")
	fs.Var(benchkit.SizeValue{P: &cfg.BarePartSize, Max: maxSize}, "bare-part-size", "part size of the bare system (set it to tusgate's --part-size when --tusgate-args changes that)")
	fs.StringVar(&cfg.WorkDir, "work-dir", cfg.WorkDir, "directory for the runs' temporary data directories")
	cfg.Output.RegisterFlags(fs, "text table")
	fs.DurationVar(&cfg.RunTimeout, "run-timeout", cfg.RunTimeout, "bound on one run of one workload on one system")
	fs.BoolVar(&cfg.Warm, "warm", cfg.Warm, "before each run, write and delete as many bytes as it sends in --work-dir, so that every system finds memory the VM still backs (false: leave the memory as the previous run left it)")
	if ok, err := benchkit.ParseFlags(fs, args[1:]); !ok || err != nil {
		return nil, err
	}
	if quick {
		benchkit.ApplyUnset(fs, map[string]func(){
			"size":               func() { cfg.Size = 64 * mib },
			"concurrent-uploads": func() { cfg.ConcurrentUploads = 8 },
			"concurrent-size":    func() { cfg.ConcurrentSize = 16 * mib },
			"slow-clients":       func() { cfg.SlowClients = 100 },
			"slow-duration":      func() { cfg.SlowDuration = 3 * time.Second },
			"paced-uploads":      func() { cfg.PacedUploads = 4 },
			"paced-size":         func() { cfg.PacedSize = 16 * mib },
		})
	}
	cfg.TusgateArgs = strings.Fields(tusgateArgs)
	cfg.TusgateEnv = strings.Fields(tusgateEnv)
	return cfg, cfg.validate()
}

// validate reports every problem of cfg at once.
func (c *config) validate() error {
	var errs []error
	if c.Runs < 1 {
		errs = append(errs, fmt.Errorf("--runs %d: must be at least 1", c.Runs))
	}
	if c.ConcurrentUploads < 1 {
		errs = append(errs, fmt.Errorf("--concurrent-uploads %d: must be at least 1", c.ConcurrentUploads))
	}
	if c.SlowClients < 1 {
		errs = append(errs, fmt.Errorf("--slow-clients %d: must be at least 1", c.SlowClients))
	}
	if c.PacedUploads < 1 {
		errs = append(errs, fmt.Errorf("--paced-uploads %d: must be at least 1", c.PacedUploads))
	}
	if c.PacedRate < 1 {
		errs = append(errs, fmt.Errorf("--paced-rate %d: must be at least 1 byte per second", c.PacedRate))
	}
	if c.SlowDuration <= 0 {
		errs = append(errs, fmt.Errorf("--slow-duration %v: must be positive", c.SlowDuration))
	}
	if c.RunTimeout <= 0 {
		errs = append(errs, fmt.Errorf("--run-timeout %v: must be positive", c.RunTimeout))
	}
	if slices.Contains(c.Systems, sysBare) {
		for _, w := range c.Workloads {
			if w == wlSlowClients || w == wlPaced {
				errs = append(errs, fmt.Errorf("--systems %s: runs only the unpaced workloads (%s, %s, %s), not %s: it has no stall handling and holds a 1 MiB buffer per open PATCH", sysBare, wlOnePatch, wlSmallPatches, wlConcurrent, w))
			}
		}
	}
	if slices.Contains(c.Systems, sysRedis) {
		if u, err := url.Parse(c.RedisURL); err != nil || u.Scheme != "redis" || u.Host == "" {
			errs = append(errs, errors.New("--redis-url: must be redis://host:port[/db] (rediss:// is not supported: the benchmark counts commands on the wire)"))
		}
	}
	for _, kv := range c.TusgateEnv {
		if k, _, ok := strings.Cut(kv, "="); !ok || k == "" {
			errs = append(errs, fmt.Errorf("--tusgate-env: %q is not KEY=VALUE", kv))
		}
	}
	if st, err := os.Stat(c.WorkDir); err != nil || !st.IsDir() {
		errs = append(errs, fmt.Errorf("--work-dir %s: not a directory", c.WorkDir))
	}
	return errors.Join(errs...)
}

// workload is one traffic shape: Uploads uploads of Size bytes each, sent
// concurrently, each in PATCHes of Patch bytes (0: one PATCH), at Rate bytes
// per second per upload (0: as fast as possible).
type workload struct {
	Name    string `json:"name"`
	Desc    string `json:"description"`
	Uploads int    `json:"uploads"`
	Size    int64  `json:"sizeBytes"`
	Patch   int64  `json:"patchBytes,omitempty"`
	Rate    int64  `json:"rateBytesPerSecond,omitempty"`
	// MeasureOpen samples memory while every upload is open.
	MeasureOpen bool `json:"measureOpen,omitempty"`
}

// TotalBytes is the number of bytes the workload uploads.
func (w workload) TotalBytes() int64 { return int64(w.Uploads) * w.Size }

// workloads builds the selected workloads from the settings.
func (c *config) workloads() []workload {
	var out []workload
	for _, name := range c.Workloads {
		switch name {
		case wlOnePatch:
			out = append(out, workload{Name: name, Uploads: 1, Size: c.Size,
				Desc: benchkit.IBytes(c.Size) + " in one PATCH"})
		case wlSmallPatches:
			out = append(out, workload{Name: name, Uploads: 1, Size: c.Size, Patch: c.PatchSize,
				Desc: benchkit.IBytes(c.Size) + " in " + benchkit.IBytes(c.PatchSize) + " PATCHes"})
		case wlConcurrent:
			out = append(out, workload{Name: name, Uploads: c.ConcurrentUploads, Size: c.ConcurrentSize,
				Desc: strconv.Itoa(c.ConcurrentUploads) + " concurrent uploads of " + benchkit.IBytes(c.ConcurrentSize)})
		case wlSlowClients:
			size := max(1, int64(float64(c.SlowRate)*c.SlowDuration.Seconds()))
			out = append(out, workload{Name: name, Uploads: c.SlowClients, Size: size, Rate: c.SlowRate, MeasureOpen: true,
				Desc: fmt.Sprintf("%d clients at %s/s for %v (%s each)", c.SlowClients, benchkit.IBytes(c.SlowRate), c.SlowDuration, benchkit.IBytes(size))})
		case wlPaced:
			out = append(out, workload{Name: name, Uploads: c.PacedUploads, Size: c.PacedSize, Rate: c.PacedRate,
				Desc: fmt.Sprintf("%d concurrent uploads of %s, one PATCH each at %s/s", c.PacedUploads, benchkit.IBytes(c.PacedSize), benchkit.IBytes(c.PacedRate))})
		}
	}
	return out
}
