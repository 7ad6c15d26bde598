package main

import (
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/tusgate/tusgate/internal/benchkit"
)

const (
	mib = 1 << 20
	// maxSize bounds the size flags.
	maxSize = 1 << 40
)

// Bounds of --part-size: api.video's smallest part, and the largest the
// benchmark allows (gofakes3 keeps every multipart part in memory).
const (
	minPartSize = 5 * mib
	maxPartSize = 50 * mib
)

// config is the benchmark's settings.
type config struct {
	// Command is the command line, shell-quoted, as printed at the top.
	Command string
	// Runs is the number of runs of each instance count.
	Runs int
	// Instances are the instance counts measured, in running order of the
	// first run; the first is the base of the ratios. Default 1,2,3.
	Instances []int
	// Uploads concurrent uploads of Size bytes each, sent in PATCHes of
	// PatchSize bytes.
	Uploads   int
	Size      int64
	PatchSize int64
	// PartSize is tusgate's --part-size (api.video parts after the first,
	// and the S3 part size).
	PartSize int64
	// Tusgate and Gofakes3 are the binaries to run; empty = go build.
	Tusgate, Gofakes3 string
	// RedisServer is the redis-server executable.
	RedisServer string
	// TusgateArgs are extra arguments for every tusgate process.
	TusgateArgs []string
	// WorkDir holds the builds and each run's temporary directories.
	WorkDir string
	// Output says where the report goes: the Markdown report or JSON.
	Output benchkit.Output
	// RunTimeout bounds one run.
	RunTimeout time.Duration
}

// TotalBytes is the number of bytes one run uploads.
func (c *config) TotalBytes() int64 { return int64(c.Uploads) * c.Size }

// intsValue is a comma-separated list of distinct instance counts.
type intsValue struct{ p *[]int }

func (v intsValue) String() string {
	if v.p == nil {
		return ""
	}
	s := make([]string, len(*v.p))
	for i, n := range *v.p {
		s[i] = strconv.Itoa(n)
	}
	return strings.Join(s, ",")
}

func (v intsValue) Set(s string) error {
	var out []int
	for f := range strings.SplitSeq(s, ",") {
		n, err := strconv.Atoi(strings.TrimSpace(f))
		if err != nil || n < 1 || n > 16 {
			return fmt.Errorf("%q: want instance counts between 1 and 16", f)
		}
		if !slices.Contains(out, n) {
			out = append(out, n)
		}
	}
	*v.p = out
	return nil
}

// parseConfig parses the benchmark's flags; it returns nil, nil for --help.
func parseConfig(args []string, stderr io.Writer) (*config, error) {
	cfg := &config{
		Command:     benchkit.QuoteCommand("tusgate-scalebench", args),
		Runs:        3,
		Instances:   []int{1, 2, 3},
		Uploads:     6,
		Size:        128 * mib,
		PatchSize:   8 * mib,
		PartSize:    50 * mib,
		RedisServer: "redis-server",
		WorkDir:     os.TempDir(),
		RunTimeout:  5 * time.Minute,
	}
	var quick bool
	var tusgateArgs string
	fs := flag.NewFlagSet("tusgate-scalebench", flag.ContinueOnError)
	fs.SetOutput(stderr)
	fs.Usage = func() {
		fmt.Fprintf(stderr, "Usage: tusgate-scalebench [flags]\n\n"+
			"Aggregate ingest throughput of 1, 2 and 3 tusgate instances sharing one Redis\n"+
			"and one S3 bucket (gofakes3), PATCHes round-robin over the instances, runs\n"+
			"interleaved. Sizes: 8MiB, 1GiB.\n\n")
		fs.PrintDefaults()
	}
	fs.IntVar(&cfg.Runs, "runs", cfg.Runs, "runs of each instance count (the report shows medians)")
	fs.Var(intsValue{&cfg.Instances}, "instances", "comma-separated instance counts; the first is the base of the ratio column")
	fs.IntVar(&cfg.Uploads, "uploads", cfg.Uploads, "concurrent uploads per run")
	fs.Var(benchkit.SizeValue{P: &cfg.Size, Max: maxSize}, "size", "size of each upload")
	fs.Var(benchkit.SizeValue{P: &cfg.PatchSize, Max: maxSize}, "patch-size", "PATCH size (each PATCH of an upload goes to the next instance)")
	fs.Var(benchkit.SizeValue{P: &cfg.PartSize, Max: maxSize}, "part-size", "tusgate --part-size (5MiB..50MiB)")
	fs.BoolVar(&quick, "quick", false, "smoke run: 2 uploads of 12MiB in 4MiB PATCHes, 5MiB parts, 1 run (flags given explicitly win)")
	fs.StringVar(&cfg.Tusgate, "tusgate", "", "tusgate binary (default: go build ./cmd/tusgate from the module root)")
	fs.StringVar(&cfg.Gofakes3, "gofakes3", "", "gofakes3 binary (default: go build the version go.mod pins)")
	fs.StringVar(&cfg.RedisServer, "redis-server", cfg.RedisServer, "redis-server executable (a private one is started per run)")
	fs.StringVar(&tusgateArgs, "tusgate-args", "", "extra space-separated arguments for every tusgate, such as \"--workers 8\"")
	fs.StringVar(&cfg.WorkDir, "work-dir", cfg.WorkDir, "directory for builds and temporary data directories")
	cfg.Output.RegisterFlags(fs, "Markdown report")
	fs.DurationVar(&cfg.RunTimeout, "run-timeout", cfg.RunTimeout, "bound on one run")
	if ok, err := benchkit.ParseFlags(fs, args[1:]); !ok || err != nil {
		return nil, err
	}
	if quick {
		benchkit.ApplyUnset(fs, map[string]func(){
			"runs":       func() { cfg.Runs = 1 },
			"uploads":    func() { cfg.Uploads = 2 },
			"size":       func() { cfg.Size = 12 * mib },
			"patch-size": func() { cfg.PatchSize = 4 * mib },
			"part-size":  func() { cfg.PartSize = 5 * mib },
		})
	}
	cfg.TusgateArgs = strings.Fields(tusgateArgs)
	return cfg, cfg.validate()
}

// validate reports every problem of cfg at once.
func (c *config) validate() error {
	var errs []error
	if c.Runs < 1 {
		errs = append(errs, fmt.Errorf("--runs %d: must be at least 1", c.Runs))
	}
	if len(c.Instances) == 0 {
		errs = append(errs, errors.New("--instances: empty list"))
	}
	if c.Uploads < 1 || c.Uploads > 1000 {
		errs = append(errs, fmt.Errorf("--uploads %d: must be between 1 and 1000", c.Uploads))
	}
	if c.PartSize < minPartSize || c.PartSize > maxPartSize {
		errs = append(errs, fmt.Errorf("--part-size %s: must be between %s and %s", benchkit.IBytes(c.PartSize), benchkit.IBytes(minPartSize), benchkit.IBytes(maxPartSize)))
	}
	if c.RunTimeout <= 0 {
		errs = append(errs, fmt.Errorf("--run-timeout %v: must be positive", c.RunTimeout))
	}
	if st, err := os.Stat(c.WorkDir); err != nil || !st.IsDir() {
		errs = append(errs, fmt.Errorf("--work-dir %s: not a directory", c.WorkDir))
	}
	return errors.Join(errs...)
}
