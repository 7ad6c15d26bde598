package main

import (
	"bufio"
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"time"
)

const (
	// startTimeout bounds a server's start until it announced its address.
	startTimeout = 30 * time.Second
	// tailSize is how much of a process's output is kept for error reports.
	tailSize = 16 << 10
)

// proc is a server process started by the benchmark. Kill ends it; every
// proc must be killed.
type proc struct {
	name  string
	cmd   *exec.Cmd
	out   *lineWriter
	stdin io.Closer // nil, or the pipe whose closing tells the child to exit
	done  chan struct{}
	err   error // cmd.Wait's result, set before done is closed
}

// startProc starts path with args and waits until ready, fed every output
// line (stdout and stderr), returns a non-empty value, which startProc
// returns. withStdin gives the child a pipe on stdin that closes when the
// benchmark ends, however it ends.
func startProc(ctx context.Context, name, path string, args, env []string, withStdin bool, ready func(line string) string) (*proc, string, error) {
	found := make(chan string, 1)
	lw := &lineWriter{check: ready, found: found}
	cmd := exec.Command(path, args...)
	cmd.Env = env
	cmd.Stdout = lw
	cmd.Stderr = lw
	// Its own process group keeps a terminal's Ctrl-C away from the servers
	// (the benchmark stops them), and the parent-death signal ends them if
	// the benchmark dies without cleaning up.
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true, Pdeathsig: syscall.SIGKILL}
	p := &proc{name: name, cmd: cmd, out: lw, done: make(chan struct{})}
	if withStdin {
		w, err := cmd.StdinPipe()
		if err != nil {
			return nil, "", fmt.Errorf("start %s: %w", name, err)
		}
		p.stdin = w
	}
	if err := cmd.Start(); err != nil {
		return nil, "", fmt.Errorf("start %s (%s): %w", name, path, err)
	}
	go func() {
		p.err = cmd.Wait()
		close(p.done)
	}()
	timer := time.NewTimer(startTimeout)
	defer timer.Stop()
	select {
	case v := <-found:
		return p, v, nil
	case <-p.done:
		return nil, "", fmt.Errorf("%s exited before it was ready: %v\n%s", name, p.err, lw.Tail())
	case <-timer.C:
		p.Kill()
		return nil, "", fmt.Errorf("%s not ready after %v:\n%s", name, startTimeout, lw.Tail())
	case <-ctx.Done():
		p.Kill()
		return nil, "", fmt.Errorf("start %s: %w", name, ctx.Err())
	}
}

// Pid is the process id.
func (p *proc) Pid() int { return p.cmd.Process.Pid }

// Exited reports whether the process has ended, with its output's tail.
func (p *proc) Exited() (bool, string) {
	select {
	case <-p.done:
		return true, fmt.Sprintf("%s exited: %v\n%s", p.name, p.err, p.out.Tail())
	default:
		return false, ""
	}
}

// Kill ends the process with SIGKILL and waits for it. It is idempotent.
func (p *proc) Kill() {
	if p == nil {
		return
	}
	_ = p.cmd.Process.Kill()
	if p.stdin != nil {
		_ = p.stdin.Close()
	}
	<-p.done
}

// lineWriter keeps the tail of a process's output and feeds each line to
// check until check returns a non-empty value, which it sends on found.
type lineWriter struct {
	check func(line string) string
	found chan<- string

	mu      sync.Mutex
	partial []byte
	tail    []byte
	done    bool
}

func (w *lineWriter) Write(p []byte) (int, error) {
	w.mu.Lock()
	defer w.mu.Unlock()
	w.tail = append(w.tail, p...)
	if len(w.tail) > 2*tailSize {
		w.tail = slices.Clone(w.tail[len(w.tail)-tailSize:])
	}
	if w.done {
		return len(p), nil
	}
	w.partial = append(w.partial, p...)
	for {
		i := bytes.IndexByte(w.partial, '\n')
		if i < 0 {
			break
		}
		line := string(w.partial[:i])
		w.partial = w.partial[i+1:]
		if v := w.check(line); v != "" {
			w.done = true
			w.partial = nil
			w.found <- v // buffered, sent once
			break
		}
	}
	return len(p), nil
}

// Tail returns the end of the output.
func (w *lineWriter) Tail() string {
	w.mu.Lock()
	defer w.mu.Unlock()
	t := w.tail
	if len(t) > tailSize {
		t = t[len(t)-tailSize:]
	}
	return string(t)
}

// hermeticEnv is the environment without TUSGATE_ variables, so tusgate
// sees only the settings the benchmark gives it.
func hermeticEnv() []string {
	return slices.DeleteFunc(os.Environ(), func(kv string) bool { return strings.HasPrefix(kv, "TUSGATE_") })
}

// buildTusgate builds cmd/tusgate of the module around the working
// directory into dir.
func buildTusgate(ctx context.Context, dir string) (string, error) {
	out, err := exec.CommandContext(ctx, "go", "env", "GOMOD").Output()
	if err != nil {
		return "", fmt.Errorf("go env GOMOD (pass --tusgate to skip the build): %w", err)
	}
	gomod := strings.TrimSpace(string(out))
	if gomod == "" || gomod == os.DevNull {
		return "", errors.New("not inside the tusgate module: run from its directory or pass --tusgate")
	}
	bin := filepath.Join(dir, "tusgate")
	cmd := exec.CommandContext(ctx, "go", "build", "-o", bin, "./cmd/tusgate")
	cmd.Dir = filepath.Dir(gomod)
	if out, err := cmd.CombinedOutput(); err != nil {
		return "", fmt.Errorf("go build ./cmd/tusgate in %s: %w\n%s", cmd.Dir, err, out)
	}
	return bin, nil
}

// procStats is a process's resource use at one moment.
type procStats struct {
	// CPU is the process's total CPU time (user + system, every thread).
	CPU time.Duration
	// RSS and HWM are the current and peak resident set sizes in bytes.
	RSS, HWM int64
}

// readProcStats reads pid's CPU time and resident set sizes.
func readProcStats(pid int) (procStats, error) {
	cpu, err := processCPU(pid)
	if err != nil {
		return procStats{}, err
	}
	f, err := os.Open("/proc/" + strconv.Itoa(pid) + "/status")
	if err != nil {
		return procStats{}, fmt.Errorf("read memory of process %d: %w", pid, err)
	}
	defer f.Close()
	st := procStats{CPU: cpu}
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		key, val, ok := strings.Cut(sc.Text(), ":")
		if !ok || (key != "VmRSS" && key != "VmHWM") {
			continue
		}
		kb, err := strconv.ParseInt(strings.TrimSuffix(strings.TrimSpace(val), " kB"), 10, 64)
		if err != nil {
			return procStats{}, fmt.Errorf("process %d status %s %q: %w", pid, key, val, err)
		}
		if key == "VmRSS" {
			st.RSS = kb << 10
		} else {
			st.HWM = kb << 10
		}
	}
	if err := sc.Err(); err != nil {
		return procStats{}, fmt.Errorf("read memory of process %d: %w", pid, err)
	}
	if st.HWM == 0 {
		return procStats{}, fmt.Errorf("process %d: no VmHWM in /proc/%d/status", pid, pid)
	}
	return st, nil
}

// processCPU returns pid's CPU time (user + system, all threads, with
// nanosecond resolution) from its process CPU-time clock, falling back to
// /proc/<pid>/stat (10 ms resolution).
func processCPU(pid int) (time.Duration, error) {
	if d, err := cpuClock(pid); err == nil {
		return d, nil
	}
	b, err := os.ReadFile("/proc/" + strconv.Itoa(pid) + "/stat")
	if err != nil {
		return 0, fmt.Errorf("read CPU time of process %d: %w", pid, err)
	}
	// The command name (field 2) may hold spaces; fields after it are fixed.
	i := bytes.LastIndexByte(b, ')')
	if i < 0 {
		return 0, fmt.Errorf("process %d: malformed /proc stat", pid)
	}
	fields := strings.Fields(string(b[i+1:]))
	// fields[0] is field 3 (state); utime and stime are fields 14 and 15.
	if len(fields) < 13 {
		return 0, fmt.Errorf("process %d: short /proc stat", pid)
	}
	utime, err1 := strconv.ParseInt(fields[11], 10, 64)
	stime, err2 := strconv.ParseInt(fields[12], 10, 64)
	if err := errors.Join(err1, err2); err != nil {
		return 0, fmt.Errorf("process %d: /proc stat times: %w", pid, err)
	}
	const clockTicks = 100 // USER_HZ on Linux
	return time.Duration(utime+stime) * time.Second / clockTicks, nil
}
