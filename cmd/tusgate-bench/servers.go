package main

import (
	"bufio"
	"context"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"path/filepath"
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
)

// readyPrefix starts the line a subcommand prints once it listens.
const readyPrefix = "listening "

// maxTokens bounds one token request to the emulator's control API.
const maxTokens = 100_000

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
	return serveUntilDone(ctx, *listen, mux, stdout, readyPrefix+"%s\n")
}

// serveEmulator is the serve-emulator subcommand: the api.video emulator
// (hashing, keeping no bytes) and a control API for the benchmark on a
// second port, until ctx ends or stdin closes. It prints
// "listening EMULATOR_URL CONTROL_ADDR".
//
// Control API: POST /tokens?n=N answers a JSON array of N upload tokens that
// never expire; GET /state answers an emulatorState.
func serveEmulator(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	fs := flag.NewFlagSet(cmdServeEmulator, flag.ContinueOnError)
	fs.SetOutput(stderr)
	listen := fs.String("listen", "127.0.0.1:0", "listen address of the control API (the emulator picks its own port)")
	if err := fs.Parse(args); err != nil {
		return err
	}
	emu := apivideotest.NewServer(apivideotest.WithKeepBytes(false))
	defer emu.Close()
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
	mux := http.NewServeMux()
	mux.HandleFunc("POST /tokens", func(w http.ResponseWriter, r *http.Request) {
		n, err := strconv.Atoi(r.URL.Query().Get("n"))
		if err != nil || n < 0 || n > maxTokens {
			http.Error(w, "n must be 0.."+strconv.Itoa(maxTokens), http.StatusBadRequest)
			return
		}
		tokens := make([]string, n)
		for i := range tokens {
			tokens[i] = emu.CreateToken(0)
		}
		writeJSONResponse(w, tokens)
	})
	mux.HandleFunc("GET /state", func(w http.ResponseWriter, r *http.Request) {
		var st emulatorState
		for _, v := range emu.Videos() {
			st.Videos++
			if v.Complete {
				st.Complete++
				st.Bytes += v.Size
			}
		}
		mu.Lock()
		st.FirstUpload = firstUpload
		mu.Unlock()
		writeJSONResponse(w, st)
	})
	return serveUntilDone(ctx, *listen, mux, stdout, readyPrefix+emu.URL+" %s\n")
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
}

func writeJSONResponse(w http.ResponseWriter, v any) {
	w.Header().Set("Content-Type", "application/json")
	_ = json.NewEncoder(w).Encode(v) // a failed write means the client is gone
}

// serveUntilDone serves h on listen, prints readyFormat with the address
// once listening, and returns when ctx ends or stdin reaches EOF (the
// benchmark is gone).
func serveUntilDone(ctx context.Context, listen string, h http.Handler, stdout io.Writer, readyFormat string) error {
	ln, err := net.Listen("tcp", listen)
	if err != nil {
		return fmt.Errorf("--listen %s: %w", listen, err)
	}
	srv := &http.Server{Handler: h, ReadHeaderTimeout: 30 * time.Second, IdleTimeout: 2 * time.Minute}
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	var wg sync.WaitGroup
	wg.Add(1)
	serveErr := make(chan error, 1)
	go func() {
		defer wg.Done()
		serveErr <- srv.Serve(ln)
	}()
	// The stdin watcher is not waited for: it blocks in a read that only
	// the process's exit ends, and it only cancels ctx.
	go func() {
		_, _ = io.Copy(io.Discard, os.Stdin)
		cancel()
	}()
	fmt.Fprintf(stdout, readyFormat, ln.Addr())
	select {
	case <-ctx.Done():
		_ = srv.Close()
		wg.Wait()
		return nil
	case err := <-serveErr:
		return fmt.Errorf("serve: %w", err)
	}
}

// server is a running system under test.
type server struct {
	proc *proc
	// base is the server's base URL; endpoint is its tus creation URL.
	base, endpoint string
	gateway        bool
}

// startPlainTusd starts a serve-plain-tusd subprocess storing into dir.
func startPlainTusd(ctx context.Context, self, dir string) (*server, error) {
	p, addr, err := startProc(ctx, sysPlain, self, []string{cmdServePlainTusd, "--dir", dir}, os.Environ(), true, subcommandReady)
	if err != nil {
		return nil, err
	}
	base := "http://" + addr
	return &server{proc: p, base: base, endpoint: base + "/files/"}, nil
}

// subcommandReady parses a subcommand's ready line.
func subcommandReady(line string) string {
	if rest, ok := strings.CutPrefix(line, readyPrefix); ok {
		return rest
	}
	return ""
}

// startTusgate starts the tusgate binary with its data in dir, forwarding to
// emulatorURL, on Redis when redisURL is set.
func startTusgate(ctx context.Context, name, bin, dir, emulatorURL, redisURL string, extra []string) (*server, error) {
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
	p, addr, err := startProc(ctx, name, bin, args, hermeticEnv(), false, tusgateReady)
	if err != nil {
		return nil, err
	}
	base := "http://" + addr
	return &server{proc: p, base: base, endpoint: base + "/files/", gateway: true}, nil
}

// tusgateReady finds the address in tusgate's "listening" log line.
func tusgateReady(line string) string {
	var entry struct {
		Msg  string `json:"msg"`
		Addr string `json:"addr"`
	}
	if json.Unmarshal([]byte(line), &entry) != nil || entry.Msg != "listening" {
		return ""
	}
	return entry.Addr
}

// emulator is a running serve-emulator subprocess.
type emulator struct {
	proc *proc
	// url is the api.video base URL; control is the control API's.
	url, control string
	hc           *http.Client
}

// startEmulator starts a serve-emulator subprocess.
func startEmulator(ctx context.Context, self string, hc *http.Client) (*emulator, error) {
	p, line, err := startProc(ctx, "emulator", self, []string{cmdServeEmulator}, os.Environ(), true, subcommandReady)
	if err != nil {
		return nil, err
	}
	apiURL, ctl, ok := strings.Cut(line, " ")
	if !ok {
		p.Kill()
		return nil, fmt.Errorf("emulator: malformed ready line %q", line)
	}
	return &emulator{proc: p, url: apiURL, control: "http://" + ctl, hc: hc}, nil
}

// tokens creates n upload tokens.
func (e *emulator) tokens(ctx context.Context, n int) ([]string, error) {
	var out []string
	for len(out) < n {
		k := min(n-len(out), maxTokens)
		var got []string
		if err := e.call(ctx, http.MethodPost, "/tokens?n="+strconv.Itoa(k), &got); err != nil {
			return nil, fmt.Errorf("emulator tokens: %w", err)
		}
		if len(got) != k {
			return nil, fmt.Errorf("emulator tokens: got %d, want %d", len(got), k)
		}
		out = append(out, got...)
	}
	return out, nil
}

// state reads the emulator's progress.
func (e *emulator) state(ctx context.Context) (emulatorState, error) {
	var st emulatorState
	if err := e.call(ctx, http.MethodGet, "/state", &st); err != nil {
		return st, fmt.Errorf("emulator state: %w", err)
	}
	return st, nil
}

func (e *emulator) call(ctx context.Context, method, path string, out any) error {
	req, err := http.NewRequestWithContext(ctx, method, e.control+path, nil)
	if err != nil {
		return err
	}
	resp, err := e.hc.Do(req)
	if err != nil {
		return err
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		b, _ := io.ReadAll(io.LimitReader(resp.Body, 1<<10))
		return fmt.Errorf("%s %s: %s: %s", method, path, resp.Status, strings.TrimSpace(string(b)))
	}
	return json.NewDecoder(resp.Body).Decode(out)
}

// heapInuse scrapes go_memstats_heap_inuse_bytes from base/metrics.
func heapInuse(ctx context.Context, hc *http.Client, base string) (int64, error) {
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, base+"/metrics", nil)
	if err != nil {
		return 0, err
	}
	resp, err := hc.Do(req)
	if err != nil {
		return 0, fmt.Errorf("scrape metrics: %w", err)
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		return 0, fmt.Errorf("scrape metrics: %s", resp.Status)
	}
	const name = "go_memstats_heap_inuse_bytes "
	sc := bufio.NewScanner(resp.Body)
	for sc.Scan() {
		if v, ok := strings.CutPrefix(sc.Text(), name); ok {
			f, err := strconv.ParseFloat(strings.TrimSpace(v), 64)
			if err != nil {
				return 0, fmt.Errorf("scrape metrics: %s%q: %w", name, v, err)
			}
			_, _ = io.Copy(io.Discard, resp.Body)
			return int64(f), nil
		}
	}
	if err := sc.Err(); err != nil {
		return 0, fmt.Errorf("scrape metrics: %w", err)
	}
	return 0, errors.New("scrape metrics: no go_memstats_heap_inuse_bytes")
}

// selfPath is the benchmark's own executable, re-run for the subcommands.
func selfPath() (string, error) {
	p, err := os.Executable()
	if err != nil {
		return "", fmt.Errorf("find own executable: %w", err)
	}
	return filepath.Clean(p), nil
}
