package benchkit

import (
	"context"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
)

// EnvWithout returns the benchmark's environment without the variables
// whose names start with one of prefixes, followed by extra ("NAME=value"
// entries), so that a child sees only the settings the benchmark gives it.
func EnvWithout(prefixes []string, extra ...string) []string {
	env := slices.DeleteFunc(os.Environ(), func(kv string) bool {
		return slices.ContainsFunc(prefixes, func(p string) bool { return strings.HasPrefix(kv, p) })
	})
	return append(env, extra...)
}

// ErrNoModule means the working directory is not inside a Go module.
var ErrNoModule = errors.New("not inside the tusgate module: run from its directory")

// ModuleRoot returns the directory of the go.mod around the working
// directory (found with `go env GOMOD`), or an error wrapping ErrNoModule
// when there is none.
func ModuleRoot(ctx context.Context) (string, error) {
	out, err := exec.CommandContext(ctx, "go", "env", "GOMOD").Output()
	if err != nil {
		return "", fmt.Errorf("go env GOMOD: %w", err)
	}
	gomod := strings.TrimSpace(string(out))
	if gomod == "" || gomod == os.DevNull {
		return "", ErrNoModule
	}
	return filepath.Dir(gomod), nil
}

// GoBuild builds package pkg (such as ./cmd/tusgate) of the module at root
// into dir/name and returns the binary's path. The error holds the
// compiler's output.
func GoBuild(ctx context.Context, root, pkg, dir, name string) (string, error) {
	bin := filepath.Join(dir, name)
	cmd := exec.CommandContext(ctx, "go", "build", "-o", bin, pkg)
	cmd.Dir = root
	if out, err := cmd.CombinedOutput(); err != nil {
		return "", fmt.Errorf("go build %s in %s: %w\n%s", pkg, root, err, out)
	}
	return bin, nil
}

// Executable returns the path of the running executable, which a tool
// re-runs with a hidden subcommand to serve in a process of its own.
func Executable() (string, error) {
	p, err := os.Executable()
	if err != nil {
		return "", fmt.Errorf("find own executable: %w", err)
	}
	return filepath.Clean(p), nil
}
