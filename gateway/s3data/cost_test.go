package s3data_test

import (
	"bytes"
	"context"
	"fmt"
	"maps"
	"slices"
	"strings"
	"testing"

	"github.com/tus/tusd/v2/pkg/handler"
	"github.com/tus/tusd/v2/pkg/s3store"

	"github.com/tusgate/tusgate/gateway/s3data"
	"github.com/tusgate/tusgate/internal/s3test"
)

// format renders request counts as "Op×n, …", sorted.
func format(c map[string]int) string {
	var parts []string
	for _, op := range slices.Sorted(maps.Keys(c)) {
		parts = append(parts, fmt.Sprintf("%s×%d", op, c[op]))
	}
	return strings.Join(parts, ", ")
}

// The S3 requests each step costs, as the package documentation states
// them. A change in these numbers is a change in the cost of the design.
func TestRequestsPerSubChunk(t *testing.T) {
	t.Parallel()
	srv := s3test.Start(t)
	st, a := newStore(t, srv)
	const size = 5*MiB + testPartSize + 4*MiB
	data := randomData(size, 12)
	write := func(up handler.Upload, from, to int64) {
		t.Helper()
		if n, err := up.WriteChunk(t.Context(), from, bytes.NewReader(data[from:to])); err != nil || n != to-from {
			t.Fatalf("WriteChunk [%d, %d): n=%d, %v", from, to, n, err)
		}
	}
	steps := []struct {
		name string
		do   func()
		want map[string]int
	}{}
	var up handler.Upload
	var id string
	add := func(name string, want map[string]int, do func()) {
		steps = append(steps, struct {
			name string
			do   func()
			want map[string]int
		}{name, do, want})
	}
	add("NewUpload", map[string]int{"CreateMultipartUpload": 1, "PutObject": 1}, func() {
		up = newUpload(t, st, "c1", size)
		id = uploadID(t, up)
	})
	add("first sub-chunk on the handle (5 MiB part 1)", map[string]int{"UploadPart": 1, "PutObject": 1}, func() {
		write(up, 0, 5*MiB)
	})
	add("next sub-chunk, one S3 part (6 MiB)", map[string]int{"GetObject": 1, "ListParts": 1, "HeadObject": 1, "UploadPart": 1, "PutObject": 1}, func() {
		write(up, 5*MiB, 5*MiB+testPartSize)
	})
	add("sub-chunk below 5 MiB (incomplete part)", map[string]int{"GetObject": 1, "ListParts": 1, "HeadObject": 1, "PutObject": 2}, func() {
		write(up, 5*MiB+testPartSize, 5*MiB+testPartSize+MiB)
	})
	add("empty sub-chunk", map[string]int{}, func() {
		write(up, 5*MiB+testPartSize+MiB, 5*MiB+testPartSize+MiB)
	})
	add("GetUpload and GetInfo (tusd, each PATCH)", map[string]int{"GetObject": 2, "ListParts": 1, "HeadObject": 1}, func() {
		var err error
		if up, err = st.GetUpload(t.Context(), id); err != nil {
			t.Fatal(err)
		}
		if _, err := up.GetInfo(t.Context()); err != nil {
			t.Fatal(err)
		}
	})
	add("last sub-chunk after an incomplete part, first on the handle", map[string]int{"GetObject": 1, "DeleteObject": 1, "UploadPart": 1, "PutObject": 1}, func() {
		write(up, 5*MiB+testPartSize+MiB, size)
	})
	add("OpenRange while incomplete, 4 segments", map[string]int{"ListObjectsV2": 1, "GetObject": 4}, func() {
		// Finish is next: read before it.
		checkRange(t, st, id, 0, data)
	})
	add("FinishUpload", map[string]int{"CompleteMultipartUpload": 1, "ListObjectsV2": 1, "DeleteObjects": 1}, func() {
		if err := up.FinishUpload(t.Context()); err != nil {
			t.Fatal(err)
		}
	})
	add("OpenRange of a finished upload", map[string]int{"ListObjectsV2": 1, "GetObject": 1}, func() {
		checkRange(t, st, id, MiB, data[MiB:])
	})
	add("Offset", map[string]int{"GetObject": 2, "ListParts": 1, "HeadObject": 1}, func() {
		offset(t, st, id)
	})
	add("Remove", map[string]int{"GetObject": 1, "AbortMultipartUpload": 1, "ListObjectsV2": 1, "DeleteObjects": 1}, func() {
		if err := st.Remove(t.Context(), id); err != nil {
			t.Fatal(err)
		}
	})
	for _, s := range steps {
		a.take()
		s.do()
		got := a.take()
		t.Logf("%-62s %s", s.name+":", format(got))
		if !maps.Equal(got, s.want) {
			t.Errorf("%s: requests %s, want %s", s.name, format(got), format(s.want))
		}
	}
}

// BenchmarkWriteChunk writes 64 MiB uploads as the gateway does with the
// default plan (sub-chunks of 5 MiB, 50 MiB and the 9 MiB rest) to gofakes3
// on loopback, through the Store (staged) and through tusd's s3store alone
// (the cost without staging), and finishes each upload.
func BenchmarkWriteChunk(b *testing.B) {
	srv := s3test.Start(b)
	const size = 64 * MiB
	data := randomData(size, 13)
	chunks := [][2]int64{{0, 5 * MiB}, {5 * MiB, 55 * MiB}, {55 * MiB, size}}
	type store interface {
		NewUpload(ctx context.Context, info handler.FileInfo) (handler.Upload, error)
		GetUpload(ctx context.Context, id string) (handler.Upload, error)
	}
	run := func(b *testing.B, st store, remove func(id string)) {
		b.SetBytes(size)
		for i := 0; b.Loop(); i++ {
			up, err := st.NewUpload(b.Context(), handler.FileInfo{ID: fmt.Sprintf("b%d", i), Size: size})
			if err != nil {
				b.Fatal(err)
			}
			info, _ := up.GetInfo(b.Context())
			for _, c := range chunks {
				// One request per sub-chunk, as a PATCH per part: tusd
				// opens the upload and reads its info first.
				if up, err = st.GetUpload(b.Context(), info.ID); err != nil {
					b.Fatal(err)
				}
				if _, err := up.GetInfo(b.Context()); err != nil {
					b.Fatal(err)
				}
				if n, err := up.WriteChunk(b.Context(), c[0], bytes.NewReader(data[c[0]:c[1]])); err != nil || n != c[1]-c[0] {
					b.Fatalf("WriteChunk: n=%d, %v", n, err)
				}
			}
			if err := up.FinishUpload(b.Context()); err != nil {
				b.Fatal(err)
			}
			b.StopTimer()
			remove(info.ID)
			b.StartTimer()
		}
	}
	b.Run("staged", func(b *testing.B) {
		st, err := s3data.NewWithClient(srv.Client(b), s3data.Config{Bucket: srv.Bucket(), Prefix: testPrefix, TempDir: b.TempDir()})
		if err != nil {
			b.Fatal(err)
		}
		run(b, st, func(id string) {
			if err := st.Remove(b.Context(), id); err != nil {
				b.Fatal(err)
			}
		})
	})
	b.Run("s3store-only", func(b *testing.B) {
		tus := s3store.New(srv.Bucket(), srv.Client(b))
		tus.ObjectPrefix = testPrefix
		tus.TemporaryDirectory = b.TempDir()
		st, err := s3data.NewWithClient(srv.Client(b), s3data.Config{Bucket: srv.Bucket(), Prefix: testPrefix})
		if err != nil {
			b.Fatal(err)
		}
		run(b, tus, func(id string) {
			if err := st.Remove(b.Context(), id); err != nil {
				b.Fatal(err)
			}
		})
	})
}
