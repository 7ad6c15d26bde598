package main

import (
	"context"
	"crypto/rand"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"time"

	"github.com/tusgate/tusgate/apivideo/apivideotest"
	"github.com/tusgate/tusgate/internal/benchkit"
)

// The credentials and region every tusgate gets through the standard AWS
// environment. gofakes3 checks no signature.
const (
	s3AccessKeyID     = "tusgate-scalebench"
	s3SecretAccessKey = "tusgate-scalebench-secret"
	s3Region          = "us-east-1"
)

// pollInterval is how often delivery is polled.
const pollInterval = 20 * time.Millisecond

// redisServer is a private redis-server, without persistence.
type redisServer struct {
	proc *benchkit.Proc
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
		p, _, err := benchkit.StartProc(ctx, benchkit.ProcSpec{
			Name: "redis-server", Path: bin, Args: args, Env: os.Environ(),
			Ready: func(line string) string {
				if strings.Contains(line, "Ready to accept connections") {
					return "ready"
				}
				return ""
			},
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
			return nil, fmt.Errorf("redis-server on %s: %w\n%s", addr, err, p.Tail())
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
	proc             *benchkit.Proc
	endpoint, bucket string
}

// startGofakes3 runs bin on a free 127.0.0.1 port with a new bucket and
// waits until the bucket answers.
func startGofakes3(ctx context.Context, bin string, hc *http.Client) (*s3Server, error) {
	bucket := "scalebench-" + strings.ToLower(rand.Text()[:12])
	args := []string{"-backend", "mem", "-host", "127.0.0.1:0", "-initialbucket", bucket, "-quiet"}
	p, port, err := benchkit.StartProc(ctx, benchkit.ProcSpec{
		Name: "gofakes3", Path: bin, Args: args, Env: os.Environ(),
		Ready: func(line string) string {
			_, port, ok := strings.Cut(line, "using port: ")
			if !ok {
				return ""
			}
			return strings.TrimSpace(port)
		},
	})
	if err != nil {
		return nil, err
	}
	s := &s3Server{proc: p, endpoint: "http://127.0.0.1:" + port, bucket: bucket}
	// gofakes3 checks no signature: an unsigned HEAD of the bucket tells
	// whether it serves.
	if err := benchkit.WaitOK(ctx, hc, http.MethodHead, s.endpoint+"/"+bucket, p); err != nil {
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

// instance is a running tusgate process.
type instance struct {
	proc *benchkit.Proc
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
	// Without TUSGATE_ and AWS_ variables tusgate sees only the
	// benchmark's settings.
	env := benchkit.EnvWithout([]string{"TUSGATE_", "AWS_"},
		"AWS_ACCESS_KEY_ID="+s3AccessKeyID,
		"AWS_SECRET_ACCESS_KEY="+s3SecretAccessKey,
		"AWS_REGION="+s3Region,
		"AWS_EC2_METADATA_DISABLED=true",
	)
	name := "tusgate-" + strconv.Itoa(i)
	p, addr, err := benchkit.StartProc(ctx, benchkit.ProcSpec{Name: name, Path: bin, Args: args, Env: env, Ready: benchkit.TusgateListening})
	if err != nil {
		return nil, err
	}
	in := &instance{proc: p, base: "http://" + addr}
	if err := benchkit.WaitOK(ctx, hc, http.MethodGet, in.base+"/readyz", p); err != nil {
		p.Kill()
		return nil, fmt.Errorf("%s: %w", name, err)
	}
	return in, nil
}

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

// serveEmulator is the serve-emulator subcommand (see
// benchkit.ServeEmulator). Its control API also answers GET /videos with
// every video ([]emulatorVideo).
func serveEmulator(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	return benchkit.ServeEmulator(ctx, args, os.Stdin, stdout, stderr, func(mux *http.ServeMux, emu *apivideotest.Server) {
		mux.HandleFunc("GET /videos", func(w http.ResponseWriter, r *http.Request) {
			videos := []emulatorVideo{}
			for _, v := range emu.Videos() {
				ev := emulatorVideo{ID: v.ID, Token: v.Token, Complete: v.Complete, Size: v.Size}
				for _, p := range v.Parts {
					ev.Parts = append(ev.Parts, emulatorPart{Number: p.Number, Size: p.Size, SHA256: p.SHA256})
				}
				videos = append(videos, ev)
			}
			benchkit.ReplyJSON(w, videos)
		})
	})
}

// emulatorVideos returns every video the emulator holds.
func emulatorVideos(ctx context.Context, e *benchkit.Emulator) ([]emulatorVideo, error) {
	var vs []emulatorVideo
	if err := e.Call(ctx, http.MethodGet, "/videos", &vs); err != nil {
		return nil, fmt.Errorf("emulator videos: %w", err)
	}
	return vs, nil
}
