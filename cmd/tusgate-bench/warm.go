package main

import (
	"fmt"
	"io"
	"os"
	"strconv"
	"strings"
)

// warmChunk is the write size of warmPageCache.
const warmChunk = 1 << 20

// warmPageCache writes n bytes to a new file in dir and removes it, so that
// the page-cache writes of the run that follows find memory the machine
// still backs.
//
// On a VM with free page reporting (virtio-balloon), free guest memory is
// handed back to the host (on this project's machine with min_free_ms=0,
// i.e. as soon as a reporting pass finds it), and touching it again costs a
// host fault per page: on this project's machine a 1 GiB
// write into the page cache took 1.4–2.4 s of system time after a 3 s pause
// and 0.17 s right after another 1 GiB file was deleted. Which state a run
// started in depended on how long the previous run's teardown and this
// run's start-up took, so one system could be measured warm and another
// cold. Writing and deleting the run's bytes first puts every system in the
// same, warm state, the one a machine without free page reporting is always
// in. The cost is the benchmark's, paid before the baselines are read.
func warmPageCache(dir string, n int64) error {
	f, err := os.CreateTemp(dir, "warm-")
	if err != nil {
		return fmt.Errorf("warm the page cache: %w", err)
	}
	name := f.Name()
	defer os.Remove(name)
	if err := writeZeros(f, n); err != nil {
		f.Close()
		return fmt.Errorf("warm the page cache: %w", err)
	}
	if err := f.Close(); err != nil {
		return fmt.Errorf("warm the page cache: %w", err)
	}
	if err := os.Remove(name); err != nil {
		return fmt.Errorf("warm the page cache: %w", err)
	}
	return nil
}

// writeZeros writes n zero bytes to w in warmChunk writes.
func writeZeros(w io.Writer, n int64) error {
	buf := make([]byte, min(n, warmChunk))
	for left := n; left > 0; {
		k, err := w.Write(buf[:min(left, int64(len(buf)))])
		if err != nil {
			return err
		}
		left -= int64(k)
	}
	return nil
}

// reportedKiBFile is where a kernel with free page reporting (here, the
// Firecracker guest kernel's page_reporting module) counts the KiB of free
// memory it has handed back to the host.
const reportedKiBFile = "/sys/module/page_reporting/parameters/reported_kib"

// readReportedKiB reads a reported_kib counter; ok is false where there is
// none (no free page reporting, or not this kernel's variant of it).
//
// The benchmark records how much the counter grew during each run. It says
// that the host took memory back, not when: on this project's machine the
// slow runs had 0.5-1.3 GiB reported, but so had some fast ones, whose
// reporting pass came after their writes. warmPageCache cannot prevent a
// pass during the run itself.
func readReportedKiB(path string) (kib int64, ok bool) {
	raw, err := os.ReadFile(path)
	if err != nil {
		return 0, false
	}
	n, err := strconv.ParseInt(strings.TrimSpace(string(raw)), 10, 64)
	if err != nil || n < 0 {
		return 0, false
	}
	return n, true
}
