package main

import (
	"fmt"
	"io"
	"os"
)

// warmChunk is the write size of warmPageCache.
const warmChunk = 1 << 20

// warmPageCache writes n bytes to a new file in dir and removes it, so that
// the page-cache writes of the run that follows find memory the machine
// still backs.
//
// On a VM with free page reporting (virtio-balloon), memory the guest has
// kept free for about two seconds is handed back to the host, and touching
// it again costs a host fault per page: on this project's machine a 1 GiB
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
