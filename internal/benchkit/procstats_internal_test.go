package benchkit

import (
	"os"
	"testing"
	"time"
)

func TestStatCPU(t *testing.T) {
	// Fields 14 and 15 (utime, stime) are 150 and 50 ticks; the command name
	// holds a space and a ')'.
	stat := "4242 (odd) name) S 1 4242 4242 0 -1 4194560 100 0 0 0 150 50 0 0 20 0 1 0 12345 1000 10\n"
	got, err := statCPU([]byte(stat))
	if err != nil || got != 2*time.Second {
		t.Errorf("statCPU: got %v, %v; want 2s, nil", got, err)
	}
	for _, bad := range []string{"", "4242 no parenthesis", "4242 (short) S 1 2 3", "4242 (x) S 1 2 3 4 5 6 7 8 9 10 u s"} {
		if _, err := statCPU([]byte(bad)); err == nil {
			t.Errorf("statCPU(%q): got no error, want one", bad)
		}
	}
}

// TestCPUClockAgreesWithStat checks the CPU-time clock against the 10 ms
// figure of /proc/self/stat, read after it (so at least as large, give or
// take one tick of rounding).
func TestCPUClockAgreesWithStat(t *testing.T) {
	clock, err := cpuClock(os.Getpid())
	if err != nil {
		t.Fatal(err)
	}
	b, err := os.ReadFile("/proc/self/stat")
	if err != nil {
		t.Fatal(err)
	}
	ticks, err := statCPU(b)
	if err != nil {
		t.Fatal(err)
	}
	if clock <= 0 || ticks > clock+20*time.Millisecond {
		t.Errorf("cpuClock %v, /proc stat %v read after it: want 0 < stat <= clock (+2 ticks)", clock, ticks)
	}
}
