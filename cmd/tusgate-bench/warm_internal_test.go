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

func TestReadReportedKiB(t *testing.T) {
	dir := t.TempDir()
	for _, c := range []struct {
		content string
		want    int64
		ok      bool
	}{
		{"19111760\n", 19111760, true},
		{"0", 0, true},
		{"lots\n", 0, false},
		{"-5\n", 0, false},
	} {
		path := filepath.Join(dir, "reported_kib")
		if err := os.WriteFile(path, []byte(c.content), 0o644); err != nil {
			t.Fatal(err)
		}
		got, ok := readReportedKiB(path)
		if got != c.want || ok != c.ok {
			t.Errorf("readReportedKiB(%q) = %d, %v; want %d, %v", c.content, got, ok, c.want, c.ok)
		}
	}
	if _, ok := readReportedKiB(filepath.Join(dir, "missing")); ok {
		t.Error("a missing counter reads as present")
	}
}
