package main

import (
	"context"
	"crypto/rand"
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

	"github.com/tusgate/tusgate/apivideo/apivideotest"
)

// The credentials and region every tusgate gets through the standard AWS
// environment. gofakes3 checks no signature.
const (
	s3AccessKeyID     = "tusgate-scalebench"
	s3SecretAccessKey = "tusgate-scalebench-secret"
	s3Region          = "us-east-1"
)

// pollInterval is how often a readiness or delivery condition is polled.
const pollInterval = 20 * time.Millisecond

// redisServer is a private redis-server, without persistence.
type redisServer struct {
	proc *proc
	addr string
	conn *respConn // the benchmark's only connection
}

// startRedis starts bin on a free 127.0.0.1 port (another port if that one
// was taken meanwhile) and connects to it.
func startRedis(ctx context.Context, bin string) (*redisServer, error) {
	var lastErr error
	for range 3 {
		port, err := freePort()
		if err != nil {
			return nil, err
		}
		args := []string{"--port", strconv.Itoa(port), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no"}
		p, _, err := startProc(ctx, "redis-server", bin, args, os.Environ(), false, func(line string) string {
			if strings.Contains(line, "Ready to accept connections") {
				return "ready"
			}
			return ""
		})
		if err != nil {
			lastErr = err
			if strings.Contains(err.Error(), "already in use") {
				continue
			}
			return nil, err
		}
		addr := net.JoinHostPort("127.0.0.1", strconv.Itoa(port))
		conn, err := dialRESP(addr)
		if err == nil {
			_, err = conn.do("PING")
		}
		if err != nil {
			p.Kill()
			return nil, fmt.Errorf("redis-server on %s: %w\n%s", addr, err, p.out.Tail())
		}
		return &redisServer{proc: p, addr: addr, conn: conn}, nil
	}
	return nil, lastErr
}

// Close ends the server.
func (r *redisServer) Close() {
	if r == nil {
		return
	}
	_ = r.conn.Close()
	r.proc.Kill()
}

// freePort returns a TCP port that was free on 127.0.0.1 a moment ago.
func freePort() (int, error) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return 0, fmt.Errorf("find a free port: %w", err)
	}
	port := ln.Addr().(*net.TCPAddr).Port
	return port, ln.Close()
}

// s3Server is a gofakes3 process with one empty bucket in memory.
type s3Server struct {
	proc             *proc
	endpoint, bucket string
}

// startGofakes3 runs bin on a free 127.0.0.1 port with a new bucket and
// waits until the bucket answers.
func startGofakes3(ctx context.Context, bin string, hc *http.Client) (*s3Server, error) {
	bucket := "scalebench-" + strings.ToLower(rand.Text()[:12])
	args := []string{"-backend", "mem", "-host", "127.0.0.1:0", "-initialbucket", bucket, "-quiet"}
	p, port, err := startProc(ctx, "gofakes3", bin, args, os.Environ(), false, func(line string) string {
		_, port, ok := strings.Cut(line, "using port: ")
		if !ok {
			return ""
		}
		return strings.TrimSpace(port)
	})
	if err != nil {
		return nil, err
	}
	s := &s3Server{proc: p, endpoint: "http://127.0.0.1:" + port, bucket: bucket}
	// gofakes3 checks no signature: an unsigned HEAD of the bucket tells
	// whether it serves.
	if err := waitOK(ctx, hc, http.MethodHead, s.endpoint+"/"+bucket, p); err != nil {
		p.Kill()
		return nil, fmt.Errorf("gofakes3: %w", err)
	}
	return s, nil
}

// Close ends the server.
func (s *s3Server) Close() {
	if s != nil {
		s.proc.Kill()
	}
}

// waitOK polls method url until it answers 200, p exits, or startTimeout
// passes.
func waitOK(ctx context.Context, hc *http.Client, method, url string, p *proc) error {
	ctx, cancel := context.WithTimeout(ctx, startTimeout)
	defer cancel()
	tick := time.NewTicker(pollInterval)
	defer tick.Stop()
	var last string
	for {
		req, err := http.NewRequestWithContext(ctx, method, url, nil)
		if err != nil {
			return err
		}
		resp, err := hc.Do(req)
		if err == nil {
			last = resp.Status
			drainClose(resp.Body)
			if resp.StatusCode == http.StatusOK {
				return nil
			}
		} else {
			last = err.Error()
		}
		if dead, tail := p.Exited(); dead {
			return errors.New(tail)
		}
		select {
		case <-tick.C:
		case <-ctx.Done():
			return fmt.Errorf("%s %s: not 200 OK (last: %s): %w\n%s", method, url, last, ctx.Err(), p.out.Tail())
		}
	}
}

// instance is a running tusgate process.
type instance struct {
	proc *proc
	// base is its base URL, http://127.0.0.1:port.
	base string
}

// startInstance starts tusgate instance i of a run.
func startInstance(ctx context.Context, cfg *config, bin, dir string, i int, redisAddr string, s3 *s3Server, emulatorURL string, hc *http.Client) (*instance, error) {
	dataDir := filepath.Join(dir, "tusgate-"+strconv.Itoa(i))
	args := []string{
		"--listen", "127.0.0.1:0",
		"--data-dir", dataDir,
		"--instance-id", "scalebench-" + strconv.Itoa(i),
		"--redis-url", "redis://" + redisAddr,
		"--s3-bucket", s3.bucket,
		"--s3-endpoint", s3.endpoint,
		"--s3-region", s3Region,
		"--apivideo-url", emulatorURL,
		"--part-size", strconv.FormatInt(cfg.PartSize, 10),
		"--log-format", "json",
		// Every benchmark client comes from 127.0.0.1: lift the per-address
		// abuse limits so they measure the gateway, not the limiter.
		"--max-open-uploads-per-client", "0",
		"--create-rate", "0",
	}
	args = append(args, cfg.TusgateArgs...)
	env := hermeticEnv(
		"AWS_ACCESS_KEY_ID="+s3AccessKeyID,
		"AWS_SECRET_ACCESS_KEY="+s3SecretAccessKey,
		"AWS_REGION="+s3Region,
		"AWS_EC2_METADATA_DISABLED=true",
	)
	name := "tusgate-" + strconv.Itoa(i)
	p, addr, err := startProc(ctx, name, bin, args, env, false, tusgateReady)
	if err != nil {
		return nil, err
	}
	in := &instance{proc: p, base: "http://" + addr}
	if err := waitOK(ctx, hc, http.MethodGet, in.base+"/readyz", p); err != nil {
		p.Kill()
		return nil, fmt.Errorf("%s: %w", name, err)
	}
	return in, nil
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

// readyPrefix starts the line serve-emulator prints once it listens.
const readyPrefix = "listening "

// maxTokens bounds one token request to the emulator's control API.
const maxTokens = 10_000

// emulatorVideo is what the control API reports of one video.
type emulatorVideo struct {
	ID       string         `json:"id"`
	Token    string         `json:"token"`
	Complete bool           `json:"complete"`
	Size     int64          `json:"size"`
	Parts    []emulatorPart `json:"parts"`
}

// emulatorPart is one accepted api.video part.
type emulatorPart struct {
	Number int    `json:"number"`
	Size   int64  `json:"size"`
	SHA256 string `json:"sha256"`
}

// serveEmulator is the serve-emulator subcommand: the api.video emulator
// (keeping each part's size and SHA-256, not its bytes) and a control API
// on a second port, until ctx ends or stdin closes. It prints
// "listening EMULATOR_URL CONTROL_ADDR".
//
// Control API: POST /tokens?n=N answers a JSON array of N upload tokens
// that never expire; GET /videos answers every video ([]emulatorVideo).
func serveEmulator(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	fs := flag.NewFlagSet(cmdServeEmulator, flag.ContinueOnError)
	fs.SetOutput(stderr)
	listen := fs.String("listen", "127.0.0.1:0", "listen address of the control API (the emulator picks its own port)")
	if err := fs.Parse(args); err != nil {
		return err
	}
	emu := apivideotest.NewServer(apivideotest.WithKeepBytes(false))
	defer emu.Close()
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
	mux.HandleFunc("GET /videos", func(w http.ResponseWriter, r *http.Request) {
		videos := []emulatorVideo{}
		for _, v := range emu.Videos() {
			ev := emulatorVideo{ID: v.ID, Token: v.Token, Complete: v.Complete, Size: v.Size}
			for _, p := range v.Parts {
				ev.Parts = append(ev.Parts, emulatorPart{Number: p.Number, Size: p.Size, SHA256: p.SHA256})
			}
			videos = append(videos, ev)
		}
		writeJSONResponse(w, videos)
	})

	ln, err := net.Listen("tcp", *listen)
	if err != nil {
		return fmt.Errorf("--listen %s: %w", *listen, err)
	}
	srv := &http.Server{Handler: mux, ReadHeaderTimeout: 30 * time.Second}
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
	fmt.Fprintf(stdout, "%s%s %s\n", readyPrefix, emu.URL, ln.Addr())
	select {
	case <-ctx.Done():
		_ = srv.Close()
		wg.Wait()
		return nil
	case err := <-serveErr:
		return fmt.Errorf("serve: %w", err)
	}
}

func writeJSONResponse(w http.ResponseWriter, v any) {
	w.Header().Set("Content-Type", "application/json")
	_ = json.NewEncoder(w).Encode(v) // a failed write means the client is gone
}

// emulator is a running serve-emulator subprocess.
type emulator struct {
	proc *proc
	// url is the api.video base URL; control is the control API's.
	url, control string
	hc           *http.Client
}

// startEmulator starts a serve-emulator subprocess of self.
func startEmulator(ctx context.Context, self string, hc *http.Client) (*emulator, error) {
	p, line, err := startProc(ctx, "emulator", self, []string{cmdServeEmulator}, os.Environ(), true, func(line string) string {
		rest, _ := strings.CutPrefix(line, readyPrefix)
		if rest == line {
			return ""
		}
		return rest
	})
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

// Close ends the emulator.
func (e *emulator) Close() {
	if e != nil {
		e.proc.Kill()
	}
}

// tokens creates n upload tokens.
func (e *emulator) tokens(ctx context.Context, n int) ([]string, error) {
	var got []string
	if err := e.call(ctx, http.MethodPost, "/tokens?n="+strconv.Itoa(n), &got); err != nil {
		return nil, fmt.Errorf("emulator tokens: %w", err)
	}
	if len(got) != n {
		return nil, fmt.Errorf("emulator tokens: got %d, want %d", len(got), n)
	}
	return got, nil
}

// videos returns every video the emulator holds.
func (e *emulator) videos(ctx context.Context) ([]emulatorVideo, error) {
	var vs []emulatorVideo
	if err := e.call(ctx, http.MethodGet, "/videos", &vs); err != nil {
		return nil, fmt.Errorf("emulator videos: %w", err)
	}
	return vs, nil
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
	defer drainClose(resp.Body)
	if resp.StatusCode != http.StatusOK {
		return fmt.Errorf("%s %s: %s: %s", method, path, resp.Status, readSome(resp.Body))
	}
	return json.NewDecoder(resp.Body).Decode(out)
}

func drainClose(r io.ReadCloser) {
	_, _ = io.Copy(io.Discard, io.LimitReader(r, 64<<10))
	_ = r.Close()
}

func readSome(r io.Reader) string {
	b, _ := io.ReadAll(io.LimitReader(r, 1<<10))
	return strings.TrimSpace(string(b))
}

// selfPath is the benchmark's own executable, re-run for serve-emulator.
func selfPath() (string, error) {
	p, err := os.Executable()
	if err != nil {
		return "", fmt.Errorf("find own executable: %w", err)
	}
	return filepath.Clean(p), nil
}
