package benchkit

import (
	"bytes"
	"context"
	"fmt"
	"io"
	"os/exec"
	"slices"
	"sync"
	"syscall"
	"time"
)

const (
	// StartTimeout bounds a child process's start until it is ready, and
	// WaitOK's wait.
	StartTimeout = 30 * time.Second
	// tailSize is how much of a process's output is kept for error reports.
	tailSize = 16 << 10
)

// ProcSpec describes a child process for StartProc.
type ProcSpec struct {
	// Name names the process in errors.
	Name string
	// Path is the executable, Args its arguments (without the program
	// name) and Env its whole environment.
	Path string
	Args []string
	Env  []string
	// Stdin gives the child a pipe on stdin that Kill closes, and that
	// also closes when the benchmark ends, however it ends: a child that
	// reads stdin to EOF (as Serve does) learns that it is gone.
	Stdin bool
	// Ready is fed every line the child writes (stdout and stderr) until it
	// returns a non-empty value, which means the child is ready.
	Ready func(line string) string
}

// Proc is a child process started by StartProc. Kill ends it; every Proc
// must be killed.
type Proc struct {
	name  string
	cmd   *exec.Cmd
	out   *lineWriter
	stdin io.Closer // nil, or the pipe whose closing tells the child to exit
	done  chan struct{}
	err   error // cmd.Wait's result, set before done is closed
}

// StartProc starts the process spec describes and waits until it is ready,
// for at most StartTimeout. It returns the process and the value
// spec.Ready returned. The child runs in its own process group (a
// terminal's Ctrl-C does not reach it; the benchmark stops it) and gets
// SIGKILL when the benchmark dies without cleaning up. The error of a
// child that exited or timed out holds the end of its output.
func StartProc(ctx context.Context, spec ProcSpec) (*Proc, string, error) {
	found := make(chan string, 1)
	lw := &lineWriter{check: spec.Ready, found: found}
	cmd := exec.Command(spec.Path, spec.Args...)
	cmd.Env = spec.Env
	cmd.Stdout = lw
	cmd.Stderr = lw
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true, Pdeathsig: syscall.SIGKILL}
	p := &Proc{name: spec.Name, cmd: cmd, out: lw, done: make(chan struct{})}
	if spec.Stdin {
		w, err := cmd.StdinPipe()
		if err != nil {
			return nil, "", fmt.Errorf("start %s: %w", spec.Name, err)
		}
		p.stdin = w
	}
	if err := cmd.Start(); err != nil {
		return nil, "", fmt.Errorf("start %s (%s): %w", spec.Name, spec.Path, err)
	}
	go func() {
		p.err = cmd.Wait()
		close(p.done)
	}()
	timer := time.NewTimer(StartTimeout)
	defer timer.Stop()
	select {
	case v := <-found:
		return p, v, nil
	case <-p.done:
		return nil, "", fmt.Errorf("%s exited before it was ready: %v\n%s", spec.Name, p.err, lw.Tail())
	case <-timer.C:
		p.Kill()
		return nil, "", fmt.Errorf("%s not ready after %v:\n%s", spec.Name, StartTimeout, lw.Tail())
	case <-ctx.Done():
		p.Kill()
		return nil, "", fmt.Errorf("start %s: %w", spec.Name, ctx.Err())
	}
}

// Pid is the process id.
func (p *Proc) Pid() int { return p.cmd.Process.Pid }

// Exited reports whether the process has ended and, if so, a message with
// its exit status and the end of its output.
func (p *Proc) Exited() (bool, string) {
	select {
	case <-p.done:
		return true, fmt.Sprintf("%s exited: %v\n%s", p.name, p.err, p.out.Tail())
	default:
		return false, ""
	}
}

// Tail returns the end of the process's output (at most 16 KiB).
func (p *Proc) Tail() string { return p.out.Tail() }

// WithOutput adds to err the exit status and the end of the output of the
// first of ps that has exited (nil entries are skipped), the likely cause
// of err; it returns err as it is when all still run.
func WithOutput(err error, ps ...*Proc) error {
	for _, p := range ps {
		if p == nil {
			continue
		}
		if dead, tail := p.Exited(); dead {
			return fmt.Errorf("%w\n%s", err, tail)
		}
	}
	return err
}

// Kill ends the process with SIGKILL and waits for it. It is idempotent
// and accepts nil.
func (p *Proc) Kill() {
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
