package integration_test

import (
	"bytes"
	"errors"
	"os/exec"
	"strings"
	"testing"
)

// runCLI runs the binary with args and extra environment to completion and
// returns its stdout, stderr and exit code.
func runCLI(t *testing.T, env []string, args ...string) (stdout, stderr string, code int) {
	t.Helper()
	cmd := exec.CommandContext(t.Context(), tusgateBin, args...)
	cmd.Env = append(hermeticEnv(), env...)
	cmd.Dir = t.TempDir() // the default --data-dir ./data lands here, if anywhere
	var out, errOut bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &errOut
	err := cmd.Run()
	var exit *exec.ExitError
	switch {
	case err == nil:
	case errors.As(err, &exit):
		code = exit.ExitCode()
	default:
		t.Fatalf("run tusgate %s: %v", strings.Join(args, " "), err)
	}
	return out.String(), errOut.String(), code
}

// The CLI contract: --help documents every setting of the design's table with
// its environment variable and exits 0; an invalid value exits non-zero with
// one stderr line naming the setting as the user wrote it.
func TestCLI(t *testing.T) {
	t.Parallel()

	t.Run("help", func(t *testing.T) {
		t.Parallel()
		stdout, stderr, code := runCLI(t, nil, "--help")
		if code != 0 {
			t.Fatalf("--help: exit code %d, want 0; stderr: %s", code, stderr)
		}
		for _, s := range []struct{ flag, env string }{
			{"--listen", "TUSGATE_LISTEN"},
			{"--data-dir", "TUSGATE_DATA_DIR"},
			{"--redis-url", "TUSGATE_REDIS_URL"},
			{"--apivideo-url", "TUSGATE_APIVIDEO_URL"},
			{"--apivideo-api-key", "TUSGATE_APIVIDEO_API_KEY"},
			{"--part-size", "TUSGATE_PART_SIZE"},
			{"--workers", "TUSGATE_WORKERS"},
			{"--base-path", "TUSGATE_BASE_PATH"},
			{"--cors-origins", "TUSGATE_CORS_ORIGINS"},
			{"--completion-window", "TUSGATE_COMPLETION_WINDOW"},
			{"--max-size", "TUSGATE_MAX_SIZE"},
		} {
			if !strings.Contains(stdout, s.flag+" ") {
				t.Errorf("--help: %s is not documented", s.flag)
			}
			if !strings.Contains(stdout, s.env) {
				t.Errorf("--help: %s is not documented", s.env)
			}
		}
	})

	tests := []struct {
		name string
		env  []string
		args []string
		want string
	}{
		{"flag", nil, []string{"--part-size", "1MiB"}, "--part-size"},
		{"env", []string{"TUSGATE_PART_SIZE=1MiB"}, nil, "TUSGATE_PART_SIZE"},
	}
	for _, tc := range tests {
		t.Run("invalid "+tc.name, func(t *testing.T) {
			t.Parallel()
			args := append([]string{"--listen", "127.0.0.1:0"}, tc.args...)
			stdout, stderr, code := runCLI(t, tc.env, args...)
			if code == 0 {
				t.Fatalf("exit code: got 0, want non-zero; stdout: %s", stdout)
			}
			lines := strings.Split(strings.TrimRight(stderr, "\n"), "\n")
			if len(lines) != 1 || !strings.Contains(lines[0], tc.want) {
				t.Errorf("stderr: got %q, want one line naming %s", stderr, tc.want)
			}
		})
	}
}
