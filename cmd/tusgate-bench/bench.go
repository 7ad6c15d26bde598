package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net/http"
	"os"
	"runtime"
	"slices"
	"strconv"
	"sync"
	"sync/atomic"
	"time"

	"github.com/tusgate/tusgate/internal/benchkit"
)

const (
	// emulatorPoll is how often the emulator is asked whether every video
	// is complete.
	emulatorPoll = 10 * time.Millisecond
	// failureCheck is how often one tusgate upload status is read while
	// waiting for delivery, to stop early on a failed upload.
	failureCheck = 500 * time.Millisecond
	// memorySample is how often memory is sampled while slow uploads are open.
	memorySample = 250 * time.Millisecond
	// calibrationPolls is how many status reads measure their Redis cost.
	calibrationPolls = 4
)

// bench is one benchmark invocation.
type bench struct {
	cfg     *config
	self    string // this executable, for the subcommands
	tusgate string // the tusgate binary
	hc      *http.Client
	pattern []byte
	redis   *redisDB // nil unless tusgate-redis runs
	log     io.Writer
}

// benchmark runs every selected workload on every selected system and
// prints the report.
func benchmark(ctx context.Context, cfg *config, stdout, stderr io.Writer) (err error) {
	b := &bench{cfg: cfg, log: stderr, pattern: newPattern()}
	if b.self, err = benchkit.Executable(); err != nil {
		return err
	}
	wls := cfg.workloads()
	conns := 16
	for _, w := range wls {
		conns = max(conns, w.Uploads)
	}
	b.hc = newHTTPClient(conns, nil)
	defer b.hc.CloseIdleConnections()

	if slices.Contains(cfg.Systems, sysEmbedded) || slices.Contains(cfg.Systems, sysRedis) {
		b.tusgate = cfg.Tusgate
		if b.tusgate == "" {
			dir, err := os.MkdirTemp(cfg.WorkDir, "tusgate-bench-bin-")
			if err != nil {
				return fmt.Errorf("temp dir for the tusgate build: %w", err)
			}
			defer os.RemoveAll(dir)
			fmt.Fprintln(stderr, "building ./cmd/tusgate …")
			root, err := benchkit.ModuleRoot(ctx)
			if err != nil {
				return fmt.Errorf("%w (pass --tusgate to skip the build)", err)
			}
			if b.tusgate, err = benchkit.GoBuild(ctx, root, "./cmd/tusgate", dir, "tusgate"); err != nil {
				return err
			}
		}
	}
	if slices.Contains(cfg.Systems, sysRedis) {
		if b.redis, err = claimRedis(ctx, cfg.RedisURL); err != nil {
			return err
		}
		defer func() {
			if rerr := b.redis.release(context.WithoutCancel(ctx)); rerr != nil && err == nil {
				err = fmt.Errorf("release Redis database: %w", rerr)
			}
		}()
	}

	rep := newReport(cfg, wls, b.tusgate)
	for _, w := range wls {
		for run := 1; run <= cfg.Runs; run++ {
			for _, sys := range cfg.Systems {
				if err := ctx.Err(); err != nil {
					return fmt.Errorf("interrupted: %w", err)
				}
				res := b.runOne(ctx, sys, w, run)
				fmt.Fprintf(stderr, "[%s run %d/%d] %-16s %s\n", w.Name, run, cfg.Runs, sys, res.summaryLine())
				rep.add(res)
			}
		}
	}
	rep.finish()
	if err := cfg.Output.Write(stdout, rep, rep.writeTable); err != nil {
		return err
	}
	if n := rep.failures(); n > 0 {
		return fmt.Errorf("%d run(s) failed (see the report)", n)
	}
	return nil
}

// result is the outcome of one run of one workload on one system.
type result struct {
	System   string `json:"system"`
	Workload string `json:"workload"`
	Run      int    `json:"run"`
	// Metrics holds the figures by key (see metricDefs); a figure that does
	// not apply is absent.
	Metrics map[string]float64 `json:"metrics"`
	// Error is set when the run failed; Metrics is then empty.
	Error string `json:"error,omitempty"`
}

func (r result) summaryLine() string {
	if r.Error != "" {
		return "FAILED: " + r.Error
	}
	s := ""
	for _, k := range []string{mIngest, mCPU, mE2E, mForward, mPeakRSS, mRSSPerUpload, mRedisCmds} {
		if v, ok := r.Metrics[k]; ok {
			s += fmt.Sprintf(" %s=%s", k, benchkit.FormatNum(v))
		}
	}
	return s
}

// runOne runs workload w once on system sys, each server in a fresh
// process, and kills them and removes their data before returning.
func (b *bench) runOne(ctx context.Context, sys string, w workload, run int) result {
	res := result{System: sys, Workload: w.Name, Run: run, Metrics: map[string]float64{}}
	if err := b.measure(ctx, sys, w, res.Metrics); err != nil {
		res.Error = err.Error()
		res.Metrics = map[string]float64{}
	}
	return res
}

// measure runs one run and fills m.
func (b *bench) measure(ctx context.Context, sys string, w workload, m map[string]float64) error {
	ctx, cancel := context.WithTimeout(ctx, b.cfg.RunTimeout)
	defer cancel()
	dir, err := os.MkdirTemp(b.cfg.WorkDir, "tusgate-bench-")
	if err != nil {
		return fmt.Errorf("data dir: %w", err)
	}
	defer os.RemoveAll(dir)

	var srv *server
	var emu *benchkit.Emulator
	var counter *redisCounter
	defer func() {
		// Servers first (they hold the data dir and the proxy's connections).
		if srv != nil {
			srv.proc.Kill()
		}
		emu.Close()
		if counter != nil {
			counter.Close()
		}
		b.hc.CloseIdleConnections()
	}()

	switch sys {
	case sysPlain:
		srv, err = startPlainTusd(ctx, b.self, dir)
	case sysBare:
		if emu, err = benchkit.StartEmulator(ctx, b.self, b.hc, false); err != nil {
			return err
		}
		srv, err = startBare(ctx, b.self, dir, emu.URL, b.cfg.BarePartSize)
	case sysEmbedded, sysRedis:
		if emu, err = benchkit.StartEmulator(ctx, b.self, b.hc, false); err != nil {
			return err
		}
		redisURL := ""
		if sys == sysRedis {
			if err := b.redis.reset(ctx); err != nil {
				return err
			}
			if counter, err = startRedisCounter(b.redis.addr); err != nil {
				return err
			}
			redisURL = b.redis.proxiedURL(counter.Addr())
		}
		srv, err = startTusgate(ctx, sys, b.tusgate, dir, emu.URL, redisURL, b.cfg.TusgateArgs, b.cfg.TusgateEnv)
	default:
		err = fmt.Errorf("unknown system %q", sys)
	}
	if err != nil {
		return err
	}
	if srv.gateway {
		if err := benchkit.WaitOK(ctx, b.hc, http.MethodGet, srv.base+"/healthz", srv.proc); err != nil {
			return fmt.Errorf("tusgate not healthy: %w", err)
		}
	}
	var tokens []string
	if emu != nil {
		if tokens, err = emu.Tokens(ctx, w.Uploads); err != nil {
			return err
		}
	}

	if b.cfg.Warm {
		if err := warmPageCache(b.cfg.WorkDir, w.TotalBytes()); err != nil {
			return err
		}
	}

	// Idle baseline (the heap scrape first, so that its CPU is not counted).
	heapBefore, heapErr := heapInuse(ctx, b.hc, srv.base)
	pid := srv.proc.Pid()
	before, err := benchkit.ReadProcStats(pid)
	if err != nil {
		return err
	}
	reportedBefore, reportedOK := readReportedKiB(reportedKiBFile)
	clientBefore := benchkit.SelfCPU()
	var emuBefore benchkit.ProcStats
	if emu != nil {
		if emuBefore, err = benchkit.ReadProcStats(emu.Proc.Pid()); err != nil {
			return err
		}
	}
	var cmdsBefore, serverCmdsBefore int64
	if counter != nil {
		cmdsBefore = counter.Commands()
		if serverCmdsBefore, err = b.redis.serverCommands(ctx); err != nil {
			return err
		}
	}

	var open *openSampler
	if w.MeasureOpen {
		open = &openSampler{pid: pid, hc: b.hc, base: srv.base, wantHeap: heapErr == nil}
	}
	out, err := b.drive(ctx, srv, w, tokens, open)
	if err != nil {
		return benchkit.WithOutput(err, srv.proc, emuProc(emu))
	}

	var polls int
	var delivered, firstPart time.Time
	if srv.gateway {
		if delivered, firstPart, polls, err = b.waitDelivered(ctx, srv, emu, out.urls, w); err != nil {
			return benchkit.WithOutput(err, srv.proc, emuProc(emu))
		}
	}
	after, err := benchkit.ReadProcStats(pid)
	if err != nil {
		return benchkit.WithOutput(err, srv.proc, emuProc(emu))
	}
	m[mClientCPU] = (benchkit.SelfCPU() - clientBefore).Seconds() / (float64(w.TotalBytes()) / 1e9)
	if emu != nil {
		emuAfter, err := benchkit.ReadProcStats(emu.Proc.Pid())
		if err != nil {
			return benchkit.WithOutput(err, srv.proc, emuProc(emu))
		}
		m[mEmulatorCPU] = (emuAfter.CPU - emuBefore.CPU).Seconds() / (float64(w.TotalBytes()) / 1e9)
	}
	if counter != nil {
		cmds := counter.Commands() - cmdsBefore
		serverCmds, err := b.redis.serverCommands(ctx)
		if err != nil {
			return err
		}
		// Remove the status reads the benchmark itself caused.
		perPoll, err := b.statusPollCost(ctx, srv, counter, out.urls[0])
		if err != nil {
			return err
		}
		cmds -= int64(float64(polls)*perPoll + 0.5)
		mibs := float64(w.TotalBytes()) / mib
		m[mRedisCmds] = float64(cmds) / mibs
		m[mRedisServerCmds] = float64(serverCmds-serverCmdsBefore) / mibs
	}

	if reportedOK {
		if reported, ok := readReportedKiB(reportedKiBFile); ok {
			m[mVMReclaimed] = float64(reported-reportedBefore) / 1024
		}
	}

	total := float64(w.TotalBytes())
	ingest := out.lastAck.Sub(out.start).Seconds()
	cpu := (after.CPU - before.CPU).Seconds()
	m[mBytes] = total
	m[mIngestS] = ingest
	m[mIngest] = total / 1e6 / ingest
	m[mCPUS] = cpu
	m[mCPU] = cpu / (total / 1e9)
	m[mPeakRSS] = float64(after.HWM) / mib
	m[mRSSEnd] = float64(after.RSS) / mib
	m[mRSSIdle] = float64(before.RSS) / mib
	if heapErr == nil {
		m[mHeapIdle] = float64(heapBefore) / mib
	}
	if srv.gateway {
		m[mE2E] = delivered.Sub(out.start).Seconds()
		m[mLag] = delivered.Sub(out.lastAck).Seconds()
		if d := delivered.Sub(firstPart).Seconds(); !firstPart.IsZero() && d > 0 {
			m[mForward] = total / 1e6 / d
		}
		m[mStatusPolls] = float64(polls)
	}
	if open != nil {
		rss, heap, samples := open.result()
		if samples == 0 {
			return errors.New("slow uploads: no memory sample while every upload was open (creation took longer than the first upload)")
		}
		n := float64(w.Uploads)
		m[mRSSPerUpload] = float64(rss-before.RSS) / kib / n
		if heapErr == nil && heap > 0 {
			m[mHeapPerUpload] = float64(heap-heapBefore) / kib / n
		}
		m[mOpenSamples] = float64(samples)
	}
	return nil
}

// driveResult is what the client saw.
type driveResult struct {
	// start is just before the first creation; lastAck is when the last
	// PATCH was acknowledged.
	start, lastAck time.Time
	// urls are the uploads' URLs.
	urls []string
}

// drive runs the workload's uploads concurrently, each created then sent
// in PATCHes, and reports when it started and when the last byte was
// acknowledged. open, when set, samples memory while every upload is open.
func (b *bench) drive(ctx context.Context, srv *server, w workload, tokens []string, open *openSampler) (driveResult, error) {
	ctx, cancel := context.WithCancelCause(ctx)
	defer cancel(nil)
	client := tusClient{hc: b.hc}
	out := driveResult{urls: make([]string, w.Uploads)}
	var opened, finished atomic.Int64
	allOpen := make(chan struct{})
	firstDone := make(chan struct{})
	var firstDoneOnce sync.Once

	var samplerWG sync.WaitGroup
	if open != nil {
		samplerWG.Add(1)
		go func() {
			defer samplerWG.Done()
			open.run(ctx, allOpen, firstDone)
		}()
	}

	acks := make([]time.Time, w.Uploads)
	var wg sync.WaitGroup
	out.start = time.Now()
	for i := range w.Uploads {
		wg.Add(1)
		go func() {
			defer wg.Done()
			meta := map[string]string{"filename": "bench-" + strconv.Itoa(i) + ".mp4", "filetype": "video/mp4"}
			if tokens != nil {
				meta["token"] = tokens[i]
			}
			markOpen := func() {
				if opened.Add(1) == int64(w.Uploads) {
					close(allOpen)
				}
			}
			u, err := b.upload(ctx, client, srv.endpoint, w, meta, i, markOpen)
			if err != nil {
				cancel(fmt.Errorf("upload %d of %d: %w", i+1, w.Uploads, err))
				return
			}
			acks[i] = time.Now()
			out.urls[i] = u
			finished.Add(1)
			firstDoneOnce.Do(func() { close(firstDone) })
		}()
	}
	wg.Wait()
	firstDoneOnce.Do(func() { close(firstDone) })
	cancel(nil) // ends the sampler if some upload never opened
	samplerWG.Wait()
	if err := context.Cause(ctx); err != nil && finished.Load() != int64(w.Uploads) {
		return out, err
	}
	for _, t := range acks {
		if t.After(out.lastAck) {
			out.lastAck = t
		}
	}
	return out, nil
}

// upload creates one upload and sends it; markOpen is called once its
// bytes start flowing.
func (b *bench) upload(ctx context.Context, client tusClient, endpoint string, w workload, meta map[string]string, i int, markOpen func()) (string, error) {
	u, err := client.create(ctx, endpoint, w.Size, meta)
	if err != nil {
		return "", err
	}
	patch := w.Patch
	if patch <= 0 {
		patch = w.Size
	}
	// Each upload starts at a different place in the pattern.
	base := int64(i) * 4099
	var once sync.Once
	for off := int64(0); off < w.Size; {
		n := min(patch, w.Size-off)
		var body io.Reader = &dataReader{pattern: b.pattern, off: base + off, n: n}
		if w.Rate > 0 {
			body = &pacedReader{ctx: ctx, r: body, rate: float64(w.Rate), onFirst: func() { once.Do(markOpen) }}
		} else {
			once.Do(markOpen)
		}
		got, err := client.patch(ctx, u, off, n, body)
		if err != nil {
			return "", err
		}
		if got != off+n {
			return "", fmt.Errorf("tus patch at offset %d: server offset %d, want %d", off, got, off+n)
		}
		off = got
	}
	return u, nil
}

// emuProc is e's process, or nil.
func emuProc(e *benchkit.Emulator) *benchkit.Proc {
	if e == nil {
		return nil
	}
	return e.Proc
}

// waitDelivered waits until the emulator holds every video complete and
// tusgate reports every upload delivered. It returns when the emulator saw
// the last video complete, when its first part arrived, and how many status
// reads it made.
func (b *bench) waitDelivered(ctx context.Context, srv *server, emu *benchkit.Emulator, urls []string, w workload) (time.Time, time.Time, int, error) {
	tick := time.NewTicker(emulatorPoll)
	defer tick.Stop()
	polls := 0
	lastCheck := time.Now()
	next := 0
	var delivered time.Time
	var st emulatorState
	for {
		var err error
		if st, err = emulatorStateOf(ctx, emu); err != nil {
			return delivered, st.FirstUpload, polls, err
		}
		if st.Complete >= len(urls) {
			// The emulator's own record, not this poll's time: polling
			// every emulatorPoll would add up to that much to the lag.
			delivered = st.LastComplete
			if delivered.IsZero() {
				delivered = time.Now()
			}
			break
		}
		if time.Since(lastCheck) >= failureCheck {
			// One upload per check, round robin: a failed upload ends the wait.
			lastCheck = time.Now()
			s, err := benchkit.FetchStatus(ctx, b.hc, srv.base, urls[next])
			polls++
			if err != nil {
				return delivered, st.FirstUpload, polls, err
			}
			if s.State == "failed" || s.State == "terminated" {
				return delivered, st.FirstUpload, polls, fmt.Errorf("upload %s: state %s: %+v", urls[next], s.State, s.Error)
			}
			next = (next + 1) % len(urls)
		}
		select {
		case <-tick.C:
		case <-ctx.Done():
			return delivered, st.FirstUpload, polls, fmt.Errorf("waiting for delivery (%d of %d videos complete at the emulator): %w", st.Complete, len(urls), ctx.Err())
		}
	}
	if st.Bytes != w.TotalBytes() {
		return delivered, st.FirstUpload, polls, fmt.Errorf("emulator holds %d bytes in complete videos, want %d", st.Bytes, w.TotalBytes())
	}
	// tusgate records each delivery just after api.video's answer.
	for _, u := range urls {
		for {
			s, err := benchkit.FetchStatus(ctx, b.hc, srv.base, u)
			polls++
			if err != nil {
				return delivered, st.FirstUpload, polls, err
			}
			if s.State == "delivered" {
				if s.Delivered != w.Size {
					return delivered, st.FirstUpload, polls, fmt.Errorf("upload %s: delivered %d bytes, want %d", u, s.Delivered, w.Size)
				}
				break
			}
			if s.State == "failed" || s.State == "terminated" {
				return delivered, st.FirstUpload, polls, fmt.Errorf("upload %s: state %s: %+v", u, s.State, s.Error)
			}
			select {
			case <-tick.C:
			case <-ctx.Done():
				return delivered, st.FirstUpload, polls, fmt.Errorf("upload %s: still %s: %w", u, s.State, ctx.Err())
			}
		}
	}
	return delivered, st.FirstUpload, polls, nil
}

// statusPollCost measures the Redis commands one status read costs.
func (b *bench) statusPollCost(ctx context.Context, srv *server, counter *redisCounter, u string) (float64, error) {
	before := counter.Commands()
	for range calibrationPolls {
		if _, err := benchkit.FetchStatus(ctx, b.hc, srv.base, u); err != nil {
			return 0, err
		}
	}
	return float64(counter.Commands()-before) / calibrationPolls, nil
}

// openSampler samples a server's memory while every upload is open.
type openSampler struct {
	pid      int
	hc       *http.Client
	base     string
	wantHeap bool

	mu      sync.Mutex
	rss     int64 // highest VmRSS seen
	heap    int64 // highest heap in use seen
	samples int
}

// run samples from when allOpen closes until firstDone closes (at least
// once) or ctx ends.
func (o *openSampler) run(ctx context.Context, allOpen, firstDone <-chan struct{}) {
	select {
	case <-allOpen:
	case <-ctx.Done():
		return
	}
	tick := time.NewTicker(memorySample)
	defer tick.Stop()
	for {
		o.sample(ctx)
		select {
		case <-tick.C:
		case <-firstDone:
			return
		case <-ctx.Done():
			return
		}
	}
}

func (o *openSampler) sample(ctx context.Context) {
	st, err := benchkit.ReadProcStats(o.pid)
	if err != nil {
		return
	}
	var heap int64
	if o.wantHeap {
		heap, _ = heapInuse(ctx, o.hc, o.base)
	}
	o.mu.Lock()
	defer o.mu.Unlock()
	o.samples++
	o.rss = max(o.rss, st.RSS)
	o.heap = max(o.heap, heap)
}

// result returns the highest RSS and heap seen, and the number of samples.
func (o *openSampler) result() (rss, heap int64, samples int) {
	o.mu.Lock()
	defer o.mu.Unlock()
	return o.rss, o.heap, o.samples
}

// hostInfo describes the machine in the report.
type hostInfo struct {
	GoVersion string `json:"goVersion"`
	OS        string `json:"os"`
	Arch      string `json:"arch"`
	CPUs      int    `json:"cpus"`
	Kernel    string `json:"kernel,omitempty"`
}

func readHostInfo() hostInfo {
	h := hostInfo{GoVersion: runtime.Version(), OS: runtime.GOOS, Arch: runtime.GOARCH, CPUs: runtime.NumCPU()}
	if b, err := os.ReadFile("/proc/sys/kernel/osrelease"); err == nil {
		h.Kernel = string(trimNewline(b))
	}
	return h
}

func trimNewline(b []byte) []byte {
	for len(b) > 0 && (b[len(b)-1] == '\n' || b[len(b)-1] == '\r') {
		b = b[:len(b)-1]
	}
	return b
}
