// Package benchkittest helps the end-to-end tests of the benchmark tools:
// it builds the tool under test and runs it.
package benchkittest

import (
	"bytes"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
)

// Build builds the main package in the test's working directory (the
// tool's own directory under go test) into a temporary directory as name,
// with the race detector when the test runs with it, and returns the
// binary's path.
func Build(tb testing.TB, name string) string {
	tb.Helper()
	bin := filepath.Join(tb.TempDir(), name)
	args := []string{"build", "-o", bin}
	if RaceEnabled {
		args = append(args, "-race")
	}
	args = append(args, ".")
	if out, err := exec.CommandContext(tb.Context(), "go", args...).CombinedOutput(); err != nil {
		tb.Fatalf("go %s: %v\n%s", strings.Join(args, " "), err, out)
	}
	return bin
}

// Run runs bin with args and returns its stdout, which it also logs. A
// failing run fails tb with the command, its stdout and its stderr. The
// report must start with the command line ("command: NAME ARGS…", NAME
// being bin's base name), as both tools print it.
func Run(tb testing.TB, bin string, args ...string) string {
	tb.Helper()
	name := filepath.Base(bin)
	cmd := exec.CommandContext(tb.Context(), bin, args...)
	var stdout, stderr bytes.Buffer
	cmd.Stdout, cmd.Stderr = &stdout, &stderr
	if err := cmd.Run(); err != nil {
		tb.Fatalf("%s %s: %v\nstdout:\n%s\nstderr:\n%s", name, strings.Join(args, " "), err, stdout.String(), stderr.String())
	}
	out := stdout.String()
	tb.Logf("report:\n%s", out)
	if want := "command: " + name + " " + strings.Join(args, " ") + "\n"; !strings.HasPrefix(out, want) {
		first, _, _ := strings.Cut(out, "\n")
		tb.Errorf("report starts with %q, want %q", first, want)
	}
	return out
}
