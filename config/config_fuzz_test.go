package config_test

import (
	"io"
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
		if cfg.CompletionWindow <= 0 || cfg.CompletionWindow > 1<<62*time.Nanosecond {
			t.Fatalf("accepted completion window %v", cfg.CompletionWindow)
		}
	})
}
