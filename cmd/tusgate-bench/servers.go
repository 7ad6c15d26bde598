package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"net/http"
	"os"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"
	"github.com/prometheus/client_golang/prometheus/promhttp"
	"github.com/tus/tusd/v2/pkg/filestore"
	"github.com/tus/tusd/v2/pkg/handler"
	"github.com/tus/tusd/v2/pkg/memorylocker"
	"golang.org/x/exp/slog"

	"github.com/tusgate/tusgate/apivideo/apivideotest"
	"github.com/tusgate/tusgate/internal/benchkit"
)

// servePlainTusd is the serve-plain-tusd subcommand: tusd's routed handler
// with its disk store and in-memory locker at /files/, plus Go runtime
// metrics at /metrics (the same collectors tusgate registers), until ctx
// ends or stdin closes.
func servePlainTusd(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	fs := flag.NewFlagSet(cmdServePlainTusd, flag.ContinueOnError)
	fs.SetOutput(stderr)
	dir := fs.String("dir", "", "upload directory (created if missing)")
	listen := fs.String("listen", "127.0.0.1:0", "listen address")
	if err := fs.Parse(args); err != nil {
		return err
	}
	if *dir == "" {
		return errors.New("--dir is required")
	}
	if err := os.MkdirAll(*dir, 0o755); err != nil {
		return fmt.Errorf("--dir: %w", err)
	}
	composer := handler.NewStoreComposer()
	filestore.New(*dir).UseIn(composer)
	memorylocker.New().UseIn(composer)
	// tusd logs every request at Info; tusgate turns those into Debug by
	// default, so plain tusd logs Warn and above too.
	logger := slog.New(slog.NewTextHandler(stderr, &slog.HandlerOptions{Level: slog.LevelWarn}))
	tus, err := handler.NewHandler(handler.Config{BasePath: "/files/", StoreComposer: composer, Logger: logger})
	if err != nil {
		return fmt.Errorf("tusd handler: %w", err)
	}
	reg := prometheus.NewRegistry()
	reg.MustRegister(collectors.NewGoCollector(), collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}))
	mux := http.NewServeMux()
	mux.Handle("/files/", http.StripPrefix("/files/", tus))
	mux.Handle("GET /metrics", promhttp.HandlerFor(reg, promhttp.HandlerOpts{}))
	return benchkit.Serve(ctx, *listen, mux, os.Stdin, stdout, func(addr string) string { return addr })
}

// serveEmulator is the serve-emulator subcommand (see
// benchkit.ServeEmulator). Its control API also answers GET /state with an
// emulatorState.
func serveEmulator(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	return benchkit.ServeEmulator(ctx, args, os.Stdin, stdout, stderr, func(mux *http.ServeMux, emu *apivideotest.Server) {
		var mu sync.Mutex
		var firstUpload time.Time
		emu.InjectFault(func(r apivideotest.FaultRequest) apivideotest.Fault {
			if r.IsUpload() {
				mu.Lock()
				if firstUpload.IsZero() {
					firstUpload = r.Time
				}
				mu.Unlock()
			}
			return apivideotest.Fault{}
		})
		mux.HandleFunc("GET /state", func(w http.ResponseWriter, r *http.Request) {
			var st emulatorState
			for _, v := range emu.Videos() {
				st.Videos++
				if v.Complete {
					st.Complete++
					st.Bytes += v.Size
					if v.CompletedAt.After(st.LastComplete) {
						st.LastComplete = v.CompletedAt
					}
				}
			}
			mu.Lock()
			st.FirstUpload = firstUpload
			mu.Unlock()
			benchkit.ReplyJSON(w, st)
		})
	})
}

// emulatorState is what the emulator's control API reports.
type emulatorState struct {
	// Videos and Complete count the videos started and complete.
	Videos   int `json:"videos"`
	Complete int `json:"complete"`
	// Bytes is the size of the complete videos together.
	Bytes int64 `json:"bytes"`
	// FirstUpload is when the first POST /upload arrived (zero: none yet).
	FirstUpload time.Time `json:"firstUpload"`
	// LastComplete is when the last complete video received its last byte
	// (zero: none complete yet).
	LastComplete time.Time `json:"lastComplete"`
}

// emulatorStateOf reads the emulator's progress.
func emulatorStateOf(ctx context.Context, e *benchkit.Emulator) (emulatorState, error) {
	var st emulatorState
	if err := e.Call(ctx, http.MethodGet, "/state", &st); err != nil {
		return st, fmt.Errorf("emulator state: %w", err)
	}
	return st, nil
}

// server is a running system under test.
type server struct {
	proc *benchkit.Proc
	// base is the server's base URL; endpoint is its tus creation URL.
	base, endpoint string
	gateway        bool
}

// startPlainTusd starts a serve-plain-tusd subprocess storing into dir.
func startPlainTusd(ctx context.Context, self, dir string) (*server, error) {
	p, addr, err := benchkit.StartProc(ctx, benchkit.ProcSpec{
		Name: sysPlain, Path: self, Args: []string{cmdServePlainTusd, "--dir", dir},
		Env: os.Environ(), Stdin: true, Ready: benchkit.Ready,
	})
	if err != nil {
		return nil, err
	}
	base := "http://" + addr
	return &server{proc: p, base: base, endpoint: base + "/files/"}, nil
}

// startBare starts a serve-bare subprocess storing into dir and forwarding
// to emulatorURL in parts of partSize bytes.
func startBare(ctx context.Context, self, dir, emulatorURL string, partSize int64) (*server, error) {
	p, addr, err := benchkit.StartProc(ctx, benchkit.ProcSpec{
		Name: sysBare, Path: self,
		Args: []string{cmdServeBare, "--dir", dir, "--apivideo-url", emulatorURL, "--part-size", strconv.FormatInt(partSize, 10)},
		Env:  os.Environ(), Stdin: true, Ready: benchkit.Ready,
	})
	if err != nil {
		return nil, err
	}
	base := "http://" + addr
	return &server{proc: p, base: base, endpoint: base + "/files/", gateway: true}, nil
}

// imageEnv is the environment the Docker image (Dockerfile, ENV) gives
// tusgate beyond its TUSGATE_ settings, so that the benchmark measures it
// as it ships. GODEBUG=adaptivestackstart=0: new goroutines start with the
// runtime's smallest stack instead of the average in use at the last GC.
// With 1000 slow uploads open, that average is raised by the connections'
// deep handler stacks, and tusd's three small per-request goroutines were
// started with 4-8 KiB stacks each instead of 2 KiB.
var imageEnv = []string{"GODEBUG=adaptivestackstart=0"}

// tusgateEnv returns the environment of a tusgate process: the benchmark's
// own without TUSGATE_ variables (tusgate sees only the benchmark's
// settings) and without the keys of extra, then extra.
func tusgateEnv(extra []string) []string {
	drop := []string{"TUSGATE_"}
	for _, kv := range extra {
		k, _, _ := strings.Cut(kv, "=")
		drop = append(drop, k+"=")
	}
	return benchkit.EnvWithout(drop, extra...)
}

// startTusgate starts the tusgate binary with its data in dir, forwarding to
// emulatorURL, on Redis when redisURL is set.
func startTusgate(ctx context.Context, name, bin, dir, emulatorURL, redisURL string, extra, env []string) (*server, error) {
	args := []string{
		"--listen", "127.0.0.1:0",
		"--data-dir", dir,
		"--apivideo-url", emulatorURL,
		"--instance-id", "tusgate-bench",
		"--log-format", "json",
		// Every benchmark client comes from 127.0.0.1: lift the per-address
		// abuse limits so they measure the gateway, not the limiter.
		"--max-open-uploads-per-client", "0",
		"--create-rate", "0",
	}
	if redisURL != "" {
		args = append(args, "--redis-url", redisURL)
	}
	args = append(args, extra...)
	p, addr, err := benchkit.StartProc(ctx, benchkit.ProcSpec{
		Name: name, Path: bin, Args: args,
		Env: tusgateEnv(env), Ready: benchkit.TusgateListening,
	})
	if err != nil {
		return nil, err
	}
	base := "http://" + addr
	return &server{proc: p, base: base, endpoint: base + "/files/", gateway: true}, nil
}

// heapInuse scrapes go_memstats_heap_inuse_bytes from base/metrics.
func heapInuse(ctx context.Context, hc *http.Client, base string) (int64, error) {
	const name = "go_memstats_heap_inuse_bytes"
	m, err := benchkit.ScrapeMetrics(ctx, hc, base+"/metrics", name)
	if err != nil {
		return 0, err
	}
	return int64(m[name]), nil
}
