package config_test

import (
	"io"
	"math"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/tusgate/tusgate/config"
)

// FuzzSizeAndDuration feeds arbitrary text to a size and a duration setting:
// Parse never panics, an accepted value is within its bounds, and a refused
// one gets an error naming the setting on one line per problem.
func FuzzSizeAndDuration(f *testing.F) {
	for _, s := range []string{"50MiB", "5 MiB", "52428800", "1GiB", "lots", "", "-1", "1e400", "200MiB", "9999999999999999999999"} {
		f.Add(s, "24h")
	}
	f.Add("50MiB", "-1h")
	f.Add("50MiB", "1h30m")
	f.Fuzz(func(t *testing.T, size, window string) {
		if strings.ContainsAny(size+window, "\x00") {
			t.Skip()
		}
		args := []string{"--part-size", size, "--completion-window", window, "--instance-id", "fuzz"}
		cfg, err := config.Parse(args, func(string) string { return "" }, io.Discard)
		if err != nil {
			for _, line := range strings.Split(err.Error(), "\n") {
				if !strings.HasPrefix(line, "--part-size") && !strings.HasPrefix(line, "--completion-window") {
					t.Fatalf("error line %q does not name the setting", line)
				}
			}
			return
		}
		if cfg.PartSize < config.MinPartSize || cfg.PartSize > config.MaxPartSize {
			t.Fatalf("accepted part size %d outside 5MiB..200MiB", cfg.PartSize)
		}
		if cfg.CompletionWindow <= 0 || cfg.CompletionWindow > 7*24*time.Hour {
			t.Fatalf("accepted completion window %v", cfg.CompletionWindow)
		}
	})
}

// FuzzRateAndProxies feeds arbitrary text to --create-rate and
// --trusted-proxies: Parse never panics, an accepted rate is finite and not
// negative, and what String shows for both parses back to the same values.
func FuzzRateAndProxies(f *testing.F) {
	for _, s := range [][2]string{
		{"10", ""}, {"10/s", "10.0.0.0/8"}, {"600/m", "10.0.0.1, fd00::/8"}, {"1/h", "::ffff:10.0.0.1"},
		{"-1", "x"}, {"NaN", "10.0.0.0/33"}, {"1e308/m", "fe80::1%eth0"}, {"0", ",,"}, {"/", "1.2.3.4/0"},
	} {
		f.Add(s[0], s[1])
	}
	f.Fuzz(func(t *testing.T, rate, proxies string) {
		if strings.ContainsAny(rate+proxies, "\x00") {
			t.Skip()
		}
		args := []string{"--create-rate", rate, "--trusted-proxies", proxies, "--instance-id", "fuzz"}
		cfg, err := config.Parse(args, func(string) string { return "" }, io.Discard)
		if err != nil {
			for _, line := range strings.Split(err.Error(), "\n") {
				if !strings.HasPrefix(line, "--create-rate") && !strings.HasPrefix(line, "--trusted-proxies") {
					t.Fatalf("error line %q does not name the setting", line)
				}
			}
			return
		}
		if !(cfg.CreateRate >= 0) || math.IsInf(cfg.CreateRate, 0) {
			t.Fatalf("accepted create rate %v", cfg.CreateRate)
		}
		shown := map[string]string{}
		for _, kv := range strings.Fields(cfg.String()) {
			if k, v, ok := strings.Cut(kv, "="); ok {
				if uq, err := strconv.Unquote(v); err == nil {
					v = uq
				}
				shown[k] = v
			}
		}
		back, err := config.Parse([]string{"--create-rate", shown["create-rate"], "--trusted-proxies", shown["trusted-proxies"], "--instance-id", "fuzz"},
			func(string) string { return "" }, io.Discard)
		if err != nil {
			t.Fatalf("shown as %q and %q: %v", shown["create-rate"], shown["trusted-proxies"], err)
		}
		if back.CreateRate != cfg.CreateRate || !slices.Equal(back.TrustedProxies, cfg.TrustedProxies) {
			t.Fatalf("shown as %q and %q: parses to %v %v, want %v %v", shown["create-rate"], shown["trusted-proxies"],
				back.CreateRate, back.TrustedProxies, cfg.CreateRate, cfg.TrustedProxies)
		}
	})
}
