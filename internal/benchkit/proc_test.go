package benchkit_test

import (
	"context"
	"errors"
	"os"
	"strings"
	"testing"
	"time"

	"github.com/tusgate/tusgate/internal/benchkit"
)

// readyAfter is a ProcSpec.Ready that finds "ready VALUE".
func readyAfter(line string) string {
	v, _ := strings.CutPrefix(line, "ready ")
	if v == line {
		return ""
	}
	return v
}

// startShell starts sh -c script with a stdin pipe.
func startShell(t *testing.T, ctx context.Context, script string) (*benchkit.Proc, string, error) {
	t.Helper()
	return benchkit.StartProc(ctx, benchkit.ProcSpec{
		Name: "child", Path: "/bin/sh", Args: []string{"-c", script},
		Env: os.Environ(), Stdin: true, Ready: readyAfter,
	})
}

func TestStartProc(t *testing.T) {
	// The child becomes ready on its third line, then lives until its stdin
	// closes (cat reads it to EOF).
	p, v, err := startShell(t, t.Context(), "echo starting; echo 'ready not yet' >&2; echo ready 42; echo after; exec cat")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(p.Kill)
	if v != "not yet" {
		t.Errorf("ready value: got %q, want %q (the first line Ready accepts, stderr included)", v, "not yet")
	}
	if p.Pid() <= 0 {
		t.Errorf("Pid: got %d, want > 0", p.Pid())
	}
	if dead, msg := p.Exited(); dead {
		t.Fatalf("Exited while running: got true (%s), want false", msg)
	}
	st, err := benchkit.ReadProcStats(p.Pid())
	if err != nil {
		t.Fatalf("ReadProcStats of the child: %v", err)
	}
	if st.HWM <= 0 || st.RSS <= 0 || st.RSS > st.HWM {
		t.Errorf("child stats: got %+v, want 0 < RSS <= HWM", st)
	}

	p.Kill()
	dead, msg := p.Exited()
	if !dead {
		t.Fatal("Exited after Kill: got false, want true")
	}
	if !strings.Contains(msg, "child exited: signal: killed") || !strings.Contains(msg, "starting\n") {
		t.Errorf("exit message: got %q, want the exit status and the output", msg)
	}
	if tail := p.Tail(); !strings.HasPrefix(tail, "starting\n") {
		t.Errorf("Tail: got %q, want the output from its start", tail)
	}
	p.Kill() // idempotent
	var none *benchkit.Proc
	none.Kill() // accepts nil
}

func TestStartProcExitsBeforeReady(t *testing.T) {
	p, _, err := startShell(t, t.Context(), "echo boom; exit 3")
	if err == nil {
		p.Kill()
		t.Fatal("got no error, want one")
	}
	if msg := err.Error(); !strings.Contains(msg, "child exited before it was ready: exit status 3") || !strings.Contains(msg, "boom") {
		t.Errorf("got %q, want the exit status and the output", msg)
	}
}

func TestStartProcCanceled(t *testing.T) {
	ctx, cancel := context.WithCancel(t.Context())
	cancel()
	p, _, err := startShell(t, ctx, "exec cat")
	if err == nil {
		p.Kill()
		t.Fatal("got no error, want one")
	}
	if !errors.Is(err, context.Canceled) {
		t.Errorf("got %v, want context.Canceled", err)
	}
}

func TestStartProcMissingExecutable(t *testing.T) {
	_, _, err := benchkit.StartProc(t.Context(), benchkit.ProcSpec{Name: "nothing", Path: "/nonexistent/bin", Ready: readyAfter})
	if err == nil || !strings.Contains(err.Error(), "start nothing (/nonexistent/bin)") {
		t.Errorf("got %v, want a start error naming the process and path", err)
	}
}

func TestWithOutput(t *testing.T) {
	running, _, err := startShell(t, t.Context(), "echo ready 1; exec cat")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(running.Kill)
	dead, _, err := startShell(t, t.Context(), "echo ready 1; echo last words")
	if err != nil {
		t.Fatal(err)
	}
	// It exits by itself after its last words (killing it could come first).
	deadline := time.Now().Add(10 * time.Second)
	tick := time.NewTicker(5 * time.Millisecond)
	defer tick.Stop()
	for exited, _ := dead.Exited(); !exited; exited, _ = dead.Exited() {
		if time.Now().After(deadline) {
			t.Fatal("the shell did not exit")
		}
		<-tick.C
	}
	base := errors.New("request failed")

	if got := benchkit.WithOutput(base, nil, running); got != base {
		t.Errorf("all running: got %v, want the error as it is", got)
	}
	got := benchkit.WithOutput(base, running, nil, dead)
	if !errors.Is(got, base) || !strings.Contains(got.Error(), "last words") {
		t.Errorf("one dead: got %q, want the error with the dead one's output", got)
	}
}

func TestReadProcStatsSelf(t *testing.T) {
	st, err := benchkit.ReadProcStats(os.Getpid())
	if err != nil {
		t.Fatal(err)
	}
	if st.CPU <= 0 || st.RSS <= 0 || st.HWM < st.RSS {
		t.Errorf("got %+v, want CPU > 0 and 0 < RSS <= HWM", st)
	}
	if self := benchkit.SelfCPU(); self <= 0 {
		t.Errorf("SelfCPU: got %v, want > 0", self)
	}
	if _, err := benchkit.ReadProcStats(-5); err == nil {
		t.Error("ReadProcStats of pid -5: got no error, want one")
	}
}
