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
	"unsafe"
)

const (
	// startTimeout bounds a process's start until it is ready.
	startTimeout = 30 * time.Second
	// tailSize is how much of a process's output is kept for error reports.
	tailSize = 16 << 10
)

// proc is a child process started by the benchmark. Kill ends it; every
// proc must be killed.
type proc struct {
	name  string
	cmd   *exec.Cmd
	out   *lineWriter
	stdin io.Closer // nil, or the pipe whose closing tells the child to exit
	done  chan struct{}
	err   error // cmd.Wait's result, set before done is closed
}

// startProc starts path with args and env, and waits until ready, fed
// every output line (stdout and stderr), returns a non-empty value, which
// startProc returns. withStdin gives the child a pipe on stdin that closes
// when the benchmark ends, however it ends.
func startProc(ctx context.Context, name, path string, args, env []string, withStdin bool, ready func(line string) string) (*proc, string, error) {
	found := make(chan string, 1)
	lw := &lineWriter{check: ready, found: found}
	cmd := exec.Command(path, args...)
	cmd.Env = env
	cmd.Stdout = lw
	cmd.Stderr = lw
	// Its own process group keeps a terminal's Ctrl-C away from the children
	// (the benchmark stops them); the parent-death signal ends them if the
	// benchmark dies without cleaning up.
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

// Kill ends the process with SIGKILL and waits for it. It is idempotent
// and accepts nil.
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

// hermeticEnv is the environment without TUSGATE_ and AWS_ variables, plus
// extra.
func hermeticEnv(extra ...string) []string {
	env := slices.DeleteFunc(os.Environ(), func(kv string) bool {
		return strings.HasPrefix(kv, "TUSGATE_") || strings.HasPrefix(kv, "AWS_")
	})
	return append(env, extra...)
}

// moduleRoot is the directory of the go.mod around the working directory.
func moduleRoot(ctx context.Context) (string, error) {
	out, err := exec.CommandContext(ctx, "go", "env", "GOMOD").Output()
	if err != nil {
		return "", fmt.Errorf("go env GOMOD (pass --tusgate and --gofakes3 to skip the builds): %w", err)
	}
	gomod := strings.TrimSpace(string(out))
	if gomod == "" || gomod == os.DevNull {
		return "", errors.New("not inside the tusgate module: run from its directory or pass --tusgate and --gofakes3")
	}
	return filepath.Dir(gomod), nil
}

// goBuild builds pkg of the module at root into dir/name.
func goBuild(ctx context.Context, root, pkg, dir, name string) (string, error) {
	bin := filepath.Join(dir, name)
	cmd := exec.CommandContext(ctx, "go", "build", "-o", bin, pkg)
	cmd.Dir = root
	if out, err := cmd.CombinedOutput(); err != nil {
		return "", fmt.Errorf("go build %s in %s: %w\n%s", pkg, root, err, out)
	}
	return bin, nil
}

// goListVersion returns the version of module mod that go.mod selects.
func goListVersion(ctx context.Context, root, mod string) string {
	cmd := exec.CommandContext(ctx, "go", "list", "-m", "-f", "{{.Version}}", mod)
	cmd.Dir = root
	out, err := cmd.Output()
	if err != nil {
		return ""
	}
	return strings.TrimSpace(string(out))
}

// procStats is a process's resource use at one moment.
type procStats struct {
	// CPU is the process's total CPU time (user + system, every thread).
	CPU time.Duration
	// HWM is the peak resident set size in bytes.
	HWM int64
}

// readProcStats reads pid's CPU time and peak resident set size.
func readProcStats(pid int) (procStats, error) {
	cpu, err := cpuClock(pid)
	if err != nil {
		return procStats{}, err
	}
	b, err := os.ReadFile("/proc/" + strconv.Itoa(pid) + "/status")
	if err != nil {
		return procStats{}, fmt.Errorf("read memory of process %d: %w", pid, err)
	}
	st := procStats{CPU: cpu}
	sc := bufio.NewScanner(bytes.NewReader(b))
	for sc.Scan() {
		if v, ok := strings.CutPrefix(sc.Text(), "VmHWM:"); ok {
			kb, err := strconv.ParseInt(strings.TrimSuffix(strings.TrimSpace(v), " kB"), 10, 64)
			if err != nil {
				return procStats{}, fmt.Errorf("process %d: VmHWM %q: %w", pid, v, err)
			}
			st.HWM = kb << 10
		}
	}
	return st, nil
}

// cpuClock reads the process CPU-time clock of pid (clock_getcpuclockid's
// clock: user + system time of every thread, with nanosecond resolution).
func cpuClock(pid int) (time.Duration, error) {
	// MAKE_PROCESS_CPUCLOCK(pid, CPUCLOCK_SCHED) of the kernel's
	// posix-timers.h.
	const cpuclockSched = 2
	clock := (^uintptr(pid) << 3) | cpuclockSched
	var ts syscall.Timespec
	if _, _, errno := syscall.Syscall(syscall.SYS_CLOCK_GETTIME, clock, uintptr(unsafe.Pointer(&ts)), 0); errno != 0 {
		return 0, fmt.Errorf("CPU clock of process %d: %w", pid, errno)
	}
	return time.Duration(ts.Nano()), nil
}

// selfCPU is the benchmark process's CPU time (the tus client).
func selfCPU() time.Duration {
	var ru syscall.Rusage
	if err := syscall.Getrusage(syscall.RUSAGE_SELF, &ru); err != nil {
		return 0
	}
	return time.Duration(ru.Utime.Nano() + ru.Stime.Nano())
}

// machineTimes are the machine's CPU times from /proc/stat, in clock ticks.
type machineTimes struct{ busy, total int64 }

// readMachineTimes reads the aggregate "cpu" line of /proc/stat.
func readMachineTimes() (machineTimes, error) {
	b, err := os.ReadFile("/proc/stat")
	if err != nil {
		return machineTimes{}, fmt.Errorf("read /proc/stat: %w", err)
	}
	line, _, _ := strings.Cut(string(b), "\n")
	f := strings.Fields(line)
	if len(f) < 9 || f[0] != "cpu" {
		return machineTimes{}, fmt.Errorf("/proc/stat: unexpected first line %q", line)
	}
	var t machineTimes
	// user nice system idle iowait irq softirq steal (guest time is
	// already in user).
	for i, s := range f[1:9] {
		v, err := strconv.ParseInt(s, 10, 64)
		if err != nil {
			return machineTimes{}, fmt.Errorf("/proc/stat: %q: %w", s, err)
		}
		t.total += v
		if i != 3 && i != 4 { // idle, iowait
			t.busy += v
		}
	}
	return t, nil
}

// busyPercent is the share of the machine's CPU time that was busy between
// a and b.
func busyPercent(a, b machineTimes) float64 {
	if b.total <= a.total {
		return 0
	}
	return 100 * float64(b.busy-a.busy) / float64(b.total-a.total)
}
