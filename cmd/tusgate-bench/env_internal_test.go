package main

import (
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
)

// The benchmark measures tusgate as the Docker image runs it: imageEnv is
// exactly the non-TUSGATE_ environment the Dockerfile sets.
func TestImageEnvIsTheDockerfiles(t *testing.T) {
	raw, err := os.ReadFile(filepath.Join("..", "..", "Dockerfile"))
	if err != nil {
		t.Fatal(err)
	}
	// ENV KEY=VALUE pairs, continued over lines ending in a backslash.
	text := strings.ReplaceAll(string(raw), "\\\n", " ")
	var env []string
	for line := range strings.SplitSeq(text, "\n") {
		f := strings.Fields(line)
		if len(f) == 0 || f[0] != "ENV" {
			continue
		}
		for _, kv := range f[1:] {
			if !strings.HasPrefix(kv, "TUSGATE_") {
				env = append(env, kv)
			}
		}
	}
	if !slices.Equal(env, imageEnv) {
		t.Errorf("Dockerfile sets %q beyond TUSGATE_ settings; the benchmark's imageEnv is %q", env, imageEnv)
	}
}

func TestTusgateEnvReplacesTheBenchmarksOwn(t *testing.T) {
	t.Setenv("GODEBUG", "adaptivestackstart=1")
	t.Setenv("TUSGATE_PART_SIZE", "7MiB")
	t.Setenv("TUSGATE_BENCH_CHECK", "kept-out")
	env := tusgateEnv([]string{"GODEBUG=adaptivestackstart=0"})
	var godebug []string
	for _, kv := range env {
		if strings.HasPrefix(kv, "TUSGATE_") {
			t.Errorf("tusgate's environment has %s", kv)
		}
		if strings.HasPrefix(kv, "GODEBUG=") {
			godebug = append(godebug, kv)
		}
	}
	if want := []string{"GODEBUG=adaptivestackstart=0"}; !slices.Equal(godebug, want) {
		t.Errorf("GODEBUG in tusgate's environment: got %q, want %q", godebug, want)
	}
	if !slices.ContainsFunc(env, func(kv string) bool { return strings.HasPrefix(kv, "PATH=") }) {
		t.Error("tusgate's environment lost PATH")
	}
}

func TestTusgateEnvFlag(t *testing.T) {
	for _, tt := range []struct {
		args    []string
		want    []string
		wantErr string
	}{
		{nil, imageEnv, ""},
		{[]string{"--tusgate-env", ""}, nil, ""},
		{[]string{"--tusgate-env", "GOGC=50 GODEBUG=madvdontneed=1"}, []string{"GOGC=50", "GODEBUG=madvdontneed=1"}, ""},
		{[]string{"--tusgate-env", "GOGC"}, nil, `--tusgate-env: "GOGC" is not KEY=VALUE`},
		{[]string{"--tusgate-env", "=1"}, nil, `--tusgate-env: "=1" is not KEY=VALUE`},
	} {
		cfg, err := parseConfig(append([]string{"tusgate-bench", "--work-dir", t.TempDir()}, tt.args...), os.Stderr)
		if tt.wantErr != "" {
			if err == nil || !strings.Contains(err.Error(), tt.wantErr) {
				t.Errorf("%q: got error %v, want %q", tt.args, err, tt.wantErr)
			}
			continue
		}
		if err != nil {
			t.Errorf("%q: %v", tt.args, err)
			continue
		}
		if !slices.Equal(cfg.TusgateEnv, tt.want) {
			t.Errorf("%q: TusgateEnv %q, want %q", tt.args, cfg.TusgateEnv, tt.want)
		}
	}
}
