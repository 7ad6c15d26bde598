package main

import (
	"bytes"
	"crypto/sha256"
	"encoding/hex"
	"io"
	"testing"
)

// TestGeneratorConsistent checks that the bytes of an upload do not depend
// on how they are read (PATCH bodies and hashed ranges are cut
// differently), that uploads differ, and that a range moved by a multiple
// of the pattern hashes differently (the stamps).
func TestGeneratorConsistent(t *testing.T) {
	g := newGenerator()
	const size = 3*patternSize + 12345
	whole := make([]byte, size)
	g.fill(whole, 2, 0)

	var pieces bytes.Buffer
	for off, step := int64(0), int64(1); off < size; step = step*3 + 7 {
		n := min(step, size-off)
		if _, err := io.Copy(&pieces, g.reader(2, off, n)); err != nil {
			t.Fatal(err)
		}
		off += n
	}
	if !bytes.Equal(pieces.Bytes(), whole) {
		t.Fatal("bytes read in pieces differ from the bytes filled at once")
	}

	other := make([]byte, size)
	g.fill(other, 3, 0)
	if bytes.Equal(other, whole) {
		t.Error("uploads 2 and 3 have the same bytes")
	}

	sum := sha256.Sum256(whole[100 : 100+2<<20])
	if got, want := g.sha256Hex(2, 100, 2<<20), hex.EncodeToString(sum[:]); got != want {
		t.Errorf("sha256Hex(2, 100, 2MiB): got %s, want %s", got, want)
	}
	if g.sha256Hex(2, patternSize, 1<<20) == g.sha256Hex(2, 2*patternSize, 1<<20) {
		t.Error("ranges one pattern length apart hash the same: the stamps are missing")
	}
}
