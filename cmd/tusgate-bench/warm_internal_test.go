package main

import (
	"os"
	"path/filepath"
	"strings"
	"testing"
)

type countingWriter struct{ n, writes int64 }

func (c *countingWriter) Write(p []byte) (int, error) {
	c.n += int64(len(p))
	c.writes++
	return len(p), nil
}

func TestWriteZerosWritesExactlyN(t *testing.T) {
	for _, n := range []int64{0, 1, warmChunk, 3*warmChunk + 17} {
		var c countingWriter
		if err := writeZeros(&c, n); err != nil {
			t.Fatalf("writeZeros(%d): %v", n, err)
		}
		if c.n != n {
			t.Errorf("writeZeros(%d) wrote %d bytes", n, c.n)
		}
		if want := (n + warmChunk - 1) / warmChunk; c.writes != want {
			t.Errorf("writeZeros(%d): %d writes, want %d", n, c.writes, want)
		}
	}
}

func TestWarmPageCacheLeavesNothing(t *testing.T) {
	dir := t.TempDir()
	if err := warmPageCache(dir, 3*warmChunk+5); err != nil {
		t.Fatalf("warmPageCache: %v", err)
	}
	left, err := os.ReadDir(dir)
	if err != nil {
		t.Fatal(err)
	}
	if len(left) != 0 {
		t.Errorf("files left in the work dir: %v", left)
	}
}

func TestWarmPageCacheMissingDir(t *testing.T) {
	err := warmPageCache(filepath.Join(t.TempDir(), "missing"), warmChunk)
	if err == nil || !strings.Contains(err.Error(), "warm the page cache") {
		t.Fatalf("got %v, want an error about warming the page cache", err)
	}
}
