package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"os"
	"os/exec"
	"slices"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/tusgate/tusgate/internal/benchkit"
	"github.com/tusgate/tusgate/internal/tusclient"
)

// calibrationPolls is how many status reads measure their Redis cost.
const calibrationPolls = 10

// Metric keys of one run. The first group is tabulated.
const (
	mIngest      = "ingest_mb_s"
	mDelivered   = "delivered_s"
	mRedisCmds   = "redis_cmds_per_mib"
	mTusgateCPU  = "tusgate_cpu_s_per_gb"
	mGofakes3CPU = "gofakes3_cpu_s_per_gb"
	mRedisCPU    = "redis_cpu_s_per_gb"
	mEmulatorCPU = "emulator_cpu_s_per_gb"
	mClientCPU   = "client_cpu_s_per_gb"
	mBusy        = "machine_busy_pct"

	mIngestS        = "ingest_s"
	mLag            = "lag_s"
	mRedisCmdsTotal = "redis_cmds"
	mStatusPolls    = "status_polls"
	mPollCost       = "redis_cmds_per_status_poll"
	mTusgatePeakRSS = "tusgate_peak_rss_mib"
	mS3PeakRSS      = "gofakes3_peak_rss_mib"
	mPatches        = "patches"
	mParts          = "apivideo_parts"
)

// bench is one benchmark invocation.
type bench struct {
	cfg      *config
	self     string // this executable, for serve-emulator
	tusgate  string
	gofakes3 string
	redis    string // the redis-server executable
	hc       *http.Client
	gen      *generator
}

// benchmark builds what it needs, runs every instance count cfg.Runs times
// interleaved, and prints the report.
func benchmark(ctx context.Context, cfg *config, stdout, stderr io.Writer) error {
	b := &bench{cfg: cfg, gen: newGenerator(), tusgate: cfg.Tusgate, gofakes3: cfg.Gofakes3}
	var err error
	if b.self, err = benchkit.Executable(); err != nil {
		return err
	}
	if b.redis, err = exec.LookPath(cfg.RedisServer); err != nil {
		return fmt.Errorf("--redis-server %s: %w", cfg.RedisServer, err)
	}
	b.hc = &http.Client{Transport: &http.Transport{
		Proxy:               nil,
		DisableCompression:  true,
		MaxIdleConnsPerHost: cfg.Uploads + 4,
		IdleConnTimeout:     time.Minute,
		WriteBufferSize:     256 << 10,
		ReadBufferSize:      16 << 10,
	}}
	defer b.hc.CloseIdleConnections()

	buildDir, err := os.MkdirTemp(cfg.WorkDir, "tusgate-scalebench-bin-")
	if err != nil {
		return fmt.Errorf("build dir: %w", err)
	}
	defer os.RemoveAll(buildDir)
	rep := newReport(cfg)
	rep.Setup.RedisServer = redisVersion(ctx, b.redis)
	if b.tusgate == "" || b.gofakes3 == "" {
		root, err := benchkit.ModuleRoot(ctx)
		if err != nil {
			return fmt.Errorf("%w (pass --tusgate and --gofakes3 to skip the builds)", err)
		}
		fmt.Fprintln(stderr, "building cmd/tusgate and gofakes3 …")
		if b.tusgate == "" {
			if b.tusgate, err = benchkit.GoBuild(ctx, root, "./cmd/tusgate", buildDir, "tusgate"); err != nil {
				return err
			}
		}
		if b.gofakes3 == "" {
			if b.gofakes3, err = benchkit.GoBuild(ctx, root, gofakes3Module+"/cmd/gofakes3", buildDir, "gofakes3"); err != nil {
				return err
			}
			rep.Setup.Gofakes3 = goListVersion(ctx, root, gofakes3Module)
		}
	}

	for r := range cfg.Runs {
		for i := range cfg.Instances {
			n := cfg.Instances[(i+r)%len(cfg.Instances)]
			if err := ctx.Err(); err != nil {
				return err
			}
			fmt.Fprintf(stderr, "run %d/%d: %d instance(s) …\n", r+1, cfg.Runs, n)
			m := map[string]float64{}
			res := runResult{Instances: n, Run: r + 1, Metrics: m}
			if err := b.measure(ctx, n, &res); err != nil {
				res.Error = err.Error()
				res.Metrics = nil
				fmt.Fprintf(stderr, "  failed: %v\n", err)
			} else {
				fmt.Fprintf(stderr, "  %.0f MB/s ingest, delivered in %.2f s, %.2f Redis cmds/MiB\n", m[mIngest], m[mDelivered], m[mRedisCmds])
			}
			rep.add(res)
		}
	}
	rep.finish()
	if err := cfg.Output.Write(stdout, rep, rep.writeMarkdown); err != nil {
		return err
	}
	if n := rep.failures(); n > 0 {
		return fmt.Errorf("%d of %d runs failed", n, len(rep.Runs))
	}
	return nil
}

// gofakes3Module is the S3 server's module, a tool dependency in go.mod.
const gofakes3Module = "github.com/johannesboyne/gofakes3"

// redisVersion returns "redis-server 7.0.15", or the path when it cannot
// tell.
func redisVersion(ctx context.Context, bin string) string {
	out, err := exec.CommandContext(ctx, bin, "--version").Output()
	if err != nil {
		return bin
	}
	for f := range strings.FieldsSeq(string(out)) {
		if v, ok := strings.CutPrefix(f, "v="); ok {
			return "redis-server " + v
		}
	}
	return strings.TrimSpace(string(out))
}

// cluster is everything one run starts.
type cluster struct {
	redis     *redisServer
	s3        *s3Server
	emu       *benchkit.Emulator
	instances []*instance
}

// close ends every process, instances first.
func (c *cluster) close() {
	for _, in := range c.instances {
		in.proc.Kill()
	}
	c.emu.Close()
	c.s3.Close()
	c.redis.Close()
}

// withOutput adds the output of a process that died to err.
func (c *cluster) withOutput(err error) error {
	var ps []*benchkit.Proc
	for _, in := range c.instances {
		ps = append(ps, in.proc)
	}
	if c.emu != nil {
		ps = append(ps, c.emu.Proc)
	}
	if c.s3 != nil {
		ps = append(ps, c.s3.proc)
	}
	if c.redis != nil {
		ps = append(ps, c.redis.proc)
	}
	return benchkit.WithOutput(err, ps...)
}

// sample is the resource use of every process of a run at one moment.
type sample struct {
	at        time.Time
	instances []benchkit.ProcStats
	s3, redis benchkit.ProcStats
	emu       benchkit.ProcStats
	client    time.Duration
	machine   machineTimes
	cmds      int64            // Redis total_commands_processed
	calls     map[string]int64 // Redis calls per command
}

func (c *cluster) sample() (sample, error) {
	s := sample{at: time.Now()}
	var errs []error
	for _, in := range c.instances {
		st, err := benchkit.ReadProcStats(in.proc.Pid())
		errs = append(errs, err)
		s.instances = append(s.instances, st)
	}
	var err1, err2, err3, err4, err5 error
	s.s3, err1 = benchkit.ReadProcStats(c.s3.proc.Pid())
	s.redis, err2 = benchkit.ReadProcStats(c.redis.proc.Pid())
	s.emu, err3 = benchkit.ReadProcStats(c.emu.Proc.Pid())
	s.client = benchkit.SelfCPU()
	s.machine, err4 = readMachineTimes()
	s.cmds, s.calls, err5 = c.redis.conn.commandCounts()
	return s, errors.Join(append(errs, err1, err2, err3, err4, err5)...)
}

// measure runs the workload once on n instances and fills m.
func (b *bench) measure(ctx context.Context, n int, res *runResult) (err error) {
	m := res.Metrics
	ctx, cancel := context.WithTimeout(ctx, b.cfg.RunTimeout)
	defer cancel()
	dir, err := os.MkdirTemp(b.cfg.WorkDir, "tusgate-scalebench-")
	if err != nil {
		return fmt.Errorf("run dir: %w", err)
	}
	defer os.RemoveAll(dir)
	c := &cluster{}
	defer func() {
		if err != nil {
			err = c.withOutput(err)
		}
		c.close()
		b.hc.CloseIdleConnections()
	}()

	if c.redis, err = startRedis(ctx, b.redis); err != nil {
		return err
	}
	if c.s3, err = startGofakes3(ctx, b.gofakes3, b.hc); err != nil {
		return err
	}
	if c.emu, err = benchkit.StartEmulator(ctx, b.self, b.hc, true); err != nil {
		return err
	}
	for i := range n {
		in, err := startInstance(ctx, b.cfg, b.tusgate, dir, i, c.redis.addr, c.s3, c.emu.URL, b.hc)
		if err != nil {
			return err
		}
		c.instances = append(c.instances, in)
	}
	tokens, err := c.emu.Tokens(ctx, b.cfg.Uploads)
	if err != nil {
		return err
	}

	before, err := c.sample()
	if err != nil {
		return err
	}
	out, err := b.drive(ctx, c, tokens)
	if err != nil {
		return err
	}
	statuses, deliveredAt, polls, err := b.waitDelivered(ctx, c, out.paths)
	if err != nil {
		return err
	}
	after, err := c.sample()
	if err != nil {
		return err
	}
	perPoll, err := b.statusPollCost(ctx, c, out.paths[0])
	if err != nil {
		return err
	}
	parts, err := b.verify(ctx, c, tokens, statuses)
	if err != nil {
		return err
	}
	if err := b.checkSpread(ctx, c, out.perInstance); err != nil {
		return err
	}

	total := float64(b.cfg.TotalBytes())
	gb := total / 1e9
	cpu := func(a, b benchkit.ProcStats) float64 { return (b.CPU - a.CPU).Seconds() / gb }
	var tusgateCPU float64
	var peak int64
	for i := range after.instances {
		tusgateCPU += cpu(before.instances[i], after.instances[i])
		peak = max(peak, after.instances[i].HWM)
	}
	// The counter read after the workload includes the INFO that read the
	// one before; the benchmark's status reads go through tusgate to Redis.
	cmds := float64(after.cmds-before.cmds-1) - float64(polls)*perPoll
	ingest := out.lastAck.Sub(out.start).Seconds()

	m[mIngest] = total / 1e6 / ingest
	m[mIngestS] = ingest
	m[mDelivered] = deliveredAt.Sub(out.start).Seconds()
	m[mLag] = deliveredAt.Sub(out.lastAck).Seconds()
	m[mRedisCmds] = cmds / (total / mib)
	m[mRedisCmdsTotal] = cmds
	m[mStatusPolls] = float64(polls)
	m[mPollCost] = perPoll
	m[mTusgateCPU] = tusgateCPU
	m[mGofakes3CPU] = cpu(before.s3, after.s3)
	m[mRedisCPU] = cpu(before.redis, after.redis)
	m[mEmulatorCPU] = cpu(before.emu, after.emu)
	m[mClientCPU] = (after.client - before.client).Seconds() / gb
	m[mBusy] = busyPercent(before.machine, after.machine)
	m[mTusgatePeakRSS] = float64(peak) / mib
	m[mS3PeakRSS] = float64(after.s3.HWM) / mib
	m[mPatches] = float64(out.patches)
	m[mParts] = float64(parts)
	res.RedisCalls = map[string]int64{}
	for name, v := range after.calls {
		if d := v - before.calls[name]; d > 0 && name != "info" {
			res.RedisCalls[name] = d
		}
	}
	return nil
}

// driveResult is what the client saw.
type driveResult struct {
	// start is just before the first creation; lastAck is when the last
	// PATCH was acknowledged.
	start, lastAck time.Time
	// paths are the uploads' URL paths (the same on every instance).
	paths []string
	// patches counts the PATCH requests; perInstance counts them and their
	// bytes per instance.
	patches     int
	perInstance []sent
}

// sent counts the PATCH requests sent to one instance and their bytes.
type sent struct{ patches, bytes int64 }

// drive runs the uploads concurrently: upload u is created on instance
// u mod N and its PATCH k goes to instance (u+k) mod N.
func (b *bench) drive(ctx context.Context, c *cluster, tokens []string) (driveResult, error) {
	ctx, cancel := context.WithCancelCause(ctx)
	defer cancel(nil)
	client := &tusclient.Client{HTTPClient: b.hc}
	n := len(c.instances)
	out := driveResult{paths: make([]string, b.cfg.Uploads)}
	acks := make([]time.Time, b.cfg.Uploads)
	perUpload := make([][]sent, b.cfg.Uploads)
	var wg sync.WaitGroup
	out.start = time.Now()
	for u := range b.cfg.Uploads {
		perUpload[u] = make([]sent, n)
		wg.Go(func() {
			meta := map[string]string{
				"filename": "scalebench-" + strconv.Itoa(u) + ".mp4",
				"filetype": "video/mp4",
				"token":    tokens[u],
			}
			loc, err := client.Create(ctx, c.instances[u%n].base+"/files/", b.cfg.Size, meta)
			if err != nil {
				cancel(fmt.Errorf("upload %d: %w", u, err))
				return
			}
			lu, err := url.Parse(loc)
			if err != nil {
				cancel(fmt.Errorf("upload %d: Location %q: %w", u, loc, err))
				return
			}
			path := lu.EscapedPath()
			for k, off := 0, int64(0); off < b.cfg.Size; k++ {
				size := min(b.cfg.PatchSize, b.cfg.Size-off)
				target := c.instances[(u+k)%n].base + path
				got, err := client.Patch(ctx, target, off, b.gen.reader(u, off, size), size, -1)
				if err != nil {
					cancel(fmt.Errorf("upload %d PATCH %d (instance %d): %w", u, k, (u+k)%n, err))
					return
				}
				if got != off+size {
					cancel(fmt.Errorf("upload %d PATCH %d: offset %d, want %d", u, k, got, off+size))
					return
				}
				off = got
				perUpload[u][(u+k)%n].patches++
				perUpload[u][(u+k)%n].bytes += size
			}
			acks[u] = time.Now()
			out.paths[u] = path
		})
	}
	wg.Wait()
	if err := context.Cause(ctx); err != nil {
		return out, err
	}
	out.perInstance = make([]sent, n)
	for u, t := range acks {
		out.lastAck = later(out.lastAck, t)
		for i, s := range perUpload[u] {
			out.perInstance[i].patches += s.patches
			out.perInstance[i].bytes += s.bytes
			out.patches += int(s.patches)
		}
	}
	return out, nil
}

func later(a, b time.Time) time.Time {
	if b.After(a) {
		return b
	}
	return a
}

// waitDelivered polls GET /uploads/{id} (round robin over the instances)
// until every upload is delivered, one upload at a time: the moment the
// last one is seen delivered is the same as if all were polled, with far
// fewer reads (each of which costs Redis commands). It returns the final
// statuses, when the last upload was seen delivered, and the number of
// status reads.
func (b *bench) waitDelivered(ctx context.Context, c *cluster, paths []string) ([]benchkit.UploadStatus, time.Time, int, error) {
	tick := time.NewTicker(pollInterval)
	defer tick.Stop()
	statuses := make([]benchkit.UploadStatus, len(paths))
	polls := 0
	for u, path := range paths {
		for {
			st, err := benchkit.FetchStatus(ctx, b.hc, c.instances[polls%len(c.instances)].base, path)
			polls++
			if err != nil {
				return nil, time.Time{}, polls, err
			}
			if st.State == "delivered" {
				statuses[u] = st
				break
			}
			if st.State == "failed" || st.State == "terminated" {
				return nil, time.Time{}, polls, fmt.Errorf("upload %d: state %s: %+v", u, st.State, st.Error)
			}
			select {
			case <-tick.C:
			case <-ctx.Done():
				return nil, time.Time{}, polls, fmt.Errorf("upload %d still %s (%d of %d bytes delivered): %w", u, st.State, st.Delivered, b.cfg.Size, ctx.Err())
			}
		}
	}
	return statuses, time.Now(), polls, nil
}

// statusPollCost measures the Redis commands one status read costs.
func (b *bench) statusPollCost(ctx context.Context, c *cluster, path string) (float64, error) {
	before, _, err := c.redis.conn.commandCounts()
	if err != nil {
		return 0, err
	}
	for i := range calibrationPolls {
		if _, err := benchkit.FetchStatus(ctx, b.hc, c.instances[i%len(c.instances)].base, path); err != nil {
			return 0, err
		}
	}
	after, _, err := c.redis.conn.commandCounts()
	if err != nil {
		return 0, err
	}
	return float64(after-before-1) / calibrationPolls, nil
}

// verify checks every video at the emulator against the source: one
// complete video per upload, the one tusgate names, its parts numbered
// 1..k, and each part's SHA-256 equal to that of the source bytes at its
// place. It returns the number of parts.
func (b *bench) verify(ctx context.Context, c *cluster, tokens []string, statuses []benchkit.UploadStatus) (int, error) {
	videos, err := emulatorVideos(ctx, c.emu)
	if err != nil {
		return 0, err
	}
	if len(videos) != len(tokens) {
		return 0, fmt.Errorf("verify: the emulator holds %d videos, want %d", len(videos), len(tokens))
	}
	byToken := map[string][]emulatorVideo{}
	for _, v := range videos {
		byToken[v.Token] = append(byToken[v.Token], v)
	}
	parts := 0
	for u, token := range tokens {
		vs := byToken[token]
		if len(vs) != 1 {
			return 0, fmt.Errorf("verify upload %d: %d videos with its token, want 1", u, len(vs))
		}
		v := vs[0]
		if v.ID != statuses[u].VideoID {
			return 0, fmt.Errorf("verify upload %d: tusgate names video %q, the emulator holds %q", u, statuses[u].VideoID, v.ID)
		}
		if !v.Complete || v.Size != b.cfg.Size {
			return 0, fmt.Errorf("verify upload %d: video complete=%v with %d bytes, want complete with %d", u, v.Complete, v.Size, b.cfg.Size)
		}
		ps := slices.Clone(v.Parts)
		slices.SortFunc(ps, func(a, b emulatorPart) int { return a.Number - b.Number })
		var off int64
		for i, p := range ps {
			if p.Number != i+1 {
				return 0, fmt.Errorf("verify upload %d: part numbers %v, want 1..%d", u, partNumbers(ps), len(ps))
			}
			if off+p.Size > b.cfg.Size {
				return 0, fmt.Errorf("verify upload %d: part %d ends at %d, past the upload's %d bytes", u, p.Number, off+p.Size, b.cfg.Size)
			}
			if want := b.gen.sha256Hex(u, off, p.Size); p.SHA256 != want {
				return 0, fmt.Errorf("verify upload %d: part %d (bytes %d..%d): SHA-256 %s, want %s", u, p.Number, off, off+p.Size, p.SHA256, want)
			}
			off += p.Size
		}
		if off != b.cfg.Size {
			return 0, fmt.Errorf("verify upload %d: parts hold %d bytes, want %d", u, off, b.cfg.Size)
		}
		parts += len(ps)
	}
	return parts, nil
}

// checkSpread checks, from each instance's tusd metrics, that it served
// exactly the PATCH requests and bytes the client sent it: the round robin
// really reached every instance (no proxy or connection reuse in between).
func (b *bench) checkSpread(ctx context.Context, c *cluster, want []sent) error {
	for i, in := range c.instances {
		got, err := b.tusdCounters(ctx, in)
		if err != nil {
			return fmt.Errorf("instance %d: %w", i, err)
		}
		if got != want[i] {
			return fmt.Errorf("instance %d served %d PATCHes with %d bytes, want %d with %d", i, got.patches, got.bytes, want[i].patches, want[i].bytes)
		}
	}
	return nil
}

// tusdCounters reads tusd_requests_total{method="PATCH"} and
// tusd_bytes_received from in's /metrics.
func (b *bench) tusdCounters(ctx context.Context, in *instance) (sent, error) {
	const patches, bytes = `tusd_requests_total{method="PATCH"}`, "tusd_bytes_received"
	m, err := benchkit.ScrapeMetrics(ctx, b.hc, in.base+"/metrics", patches, bytes)
	if err != nil {
		return sent{}, err
	}
	return sent{patches: int64(m[patches]), bytes: int64(m[bytes])}, nil
}

func partNumbers(ps []emulatorPart) []int {
	out := make([]int, len(ps))
	for i, p := range ps {
		out[i] = p.Number
	}
	return out
}
