package s3data_test

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"math/rand/v2"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/service/s3"
	"github.com/tus/tusd/v2/pkg/handler"

	"github.com/tusgate/tusgate/gateway/s3data"
	"github.com/tusgate/tusgate/internal/s3test"
	"github.com/tusgate/tusgate/internal/testwait"
	"github.com/tusgate/tusgate/store"
)

// testPartSize is the api.video part size of the tests' plan (after the
// 5 MiB first part), and the stores' preferred S3 part size.
const testPartSize = 6 * MiB

// The gateway's write pattern: PATCHes of 3 MiB + 7 bytes cut at part
// boundaries (5 MiB, then every 6 MiB), so calls are at most one part,
// often shorter than S3's 5 MiB minimum, leaving an incomplete part that
// later calls complete; the last part is short. After every call, a second
// store (another gateway instance, its own client) reads byte-identical data
// for any range of committed bytes, and nothing beyond; after FinishUpload
// it reads the same from the final object, and the staging objects are gone.
func TestSubChunksReadableWhileIncompleteAndAfterFinish(t *testing.T) {
	t.Parallel()
	srv := s3test.Start(t)
	writer, _ := newStore(t, srv)
	reader, _ := newStore(t, srv)
	const size = 5*MiB + 2*testPartSize + 1234567
	data := randomData(size, 1)
	up := newUpload(t, writer, "a1", size)
	id := uploadID(t, up)
	if id != "a1" {
		t.Fatalf("upload id %q, want a1 (the multipart id stays inside the store)", id)
	}
	// s3store's own form of the id works too.
	mus := multipartUploads(t, srv)
	if len(mus) != 1 || !strings.HasPrefix(mus[0], testPrefix+"/a1+") {
		t.Fatalf("multipart uploads %v", mus)
	}
	fullID := strings.TrimPrefix(mus[0], testPrefix+"/")
	rng := rand.New(rand.NewPCG(1, 2))

	const patch = 3*MiB + 7
	calls := 0
	for p := int64(0); p < size; p += patch {
		for _, c := range subChunks(p, min(p+patch, size), testPartSize) {
			calls++
			n, err := up.WriteChunk(t.Context(), c[0], bytes.NewReader(data[c[0]:c[1]]))
			if err != nil || n != c[1]-c[0] {
				t.Fatalf("WriteChunk [%d, %d): n=%d, %v", c[0], c[1], n, err)
			}
			end := c[1]
			if got := offset(t, reader, id); got != end {
				t.Fatalf("after writing [%d, %d): Offset %d, want %d", c[0], c[1], got, end)
			}
			contiguous, total := stagedEnd(staged(t, srv, "a1"))
			if contiguous != end || total != end {
				t.Fatalf("after writing [%d, %d): staged bytes contiguous to %d, %d in all, want %d", c[0], c[1], contiguous, total, end)
			}
			// Whole, first-part and random ranges of committed bytes.
			checkRange(t, reader, id, 0, data[:end])
			if end >= 5*MiB {
				checkRange(t, reader, id, 0, data[:5*MiB])
			}
			for range 3 {
				off := rng.Int64N(end)
				n := 1 + rng.Int64N(end-off)
				checkRange(t, reader, id, off, data[off:off+n])
			}
			checkRange(t, reader, id, end, nil)
			checkNotReceived(t, reader, id, end-1, 2)
			checkNotReceived(t, reader, id, end, 1)
		}
	}
	if got := offset(t, reader, fullID); got != size {
		t.Fatalf("Offset(%s) %d, want %d", fullID, got, size)
	}
	checkRange(t, reader, fullID, 0, data)
	if calls < 8 {
		t.Fatalf("%d WriteChunk calls, the pattern should make at least 8", calls)
	}
	if err := up.FinishUpload(t.Context()); err != nil {
		t.Fatalf("FinishUpload: %v", err)
	}
	if segs := staged(t, srv, "a1"); len(segs) != 0 {
		t.Fatalf("staging objects after FinishUpload: %v, want none", segs)
	}
	if got := offset(t, reader, id); got != size {
		t.Fatalf("Offset after finish %d, want %d", got, size)
	}
	checkRange(t, reader, id, 0, data)
	for range 5 {
		off := rng.Int64N(size)
		n := 1 + rng.Int64N(size-off)
		checkRange(t, reader, id, off, data[off:off+n])
	}
	checkRange(t, writer, id, size-1, data[size-1:])
	checkNotReceived(t, reader, id, size-1, 2)
	if err := reader.Remove(t.Context(), id); err != nil {
		t.Fatalf("Remove: %v", err)
	}
	if keys := bucketKeys(t, srv); len(keys) != 0 {
		t.Fatalf("objects left after Remove: %v", keys)
	}
}

// A reader opened on staging objects that FinishUpload deletes before the
// reader reaches them reads the rest from the final object.
func TestReaderSwitchesToFinalObject(t *testing.T) {
	t.Parallel()
	srv := s3test.Start(t)
	st, _ := newStore(t, srv)
	const size = 5*MiB + 3*MiB
	data := randomData(size, 16)
	up := newUpload(t, st, "r1", size)
	id := uploadID(t, up)
	for _, c := range [][2]int64{{0, MiB}, {MiB, 5 * MiB}, {5 * MiB, size}} {
		if n, err := up.WriteChunk(t.Context(), c[0], bytes.NewReader(data[c[0]:c[1]])); err != nil || n != c[1]-c[0] {
			t.Fatalf("WriteChunk [%d, %d): n=%d, %v", c[0], c[1], n, err)
		}
	}
	rc, err := st.OpenRange(t.Context(), id, 100, size-200)
	if err != nil {
		t.Fatalf("OpenRange: %v", err)
	}
	defer rc.Close()
	head := make([]byte, 1000)
	if _, err := io.ReadFull(rc, head); err != nil {
		t.Fatalf("read the first bytes: %v", err)
	}
	if err := up.FinishUpload(t.Context()); err != nil {
		t.Fatalf("FinishUpload: %v", err)
	}
	if segs := staged(t, srv, "r1"); len(segs) != 0 {
		t.Fatalf("staging objects after FinishUpload: %v", segs)
	}
	rest, err := io.ReadAll(rc)
	if err != nil {
		t.Fatalf("read the rest after FinishUpload: %v", err)
	}
	if got := append(head, rest...); !bytes.Equal(got, data[100:size-100]) {
		t.Fatalf("read %d bytes, %d differ from what was written", len(got), diffCount(got, data[100:size-100]))
	}
}

// A deferred-length upload, its length declared before the last write.
func TestDeferredLength(t *testing.T) {
	t.Parallel()
	srv := s3test.Start(t)
	st, _ := newStore(t, srv)
	const size = 5*MiB + testPartSize + 3*MiB + 5
	data := randomData(size, 2)
	up := newUpload(t, st, "d1", -1)
	id := uploadID(t, up)
	chunks := subChunks(0, size, testPartSize)
	for i, c := range chunks {
		if i == len(chunks)-1 {
			if err := st.AsLengthDeclarableUpload(up).DeclareLength(t.Context(), size); err != nil {
				t.Fatalf("DeclareLength: %v", err)
			}
		}
		if n, err := up.WriteChunk(t.Context(), c[0], bytes.NewReader(data[c[0]:c[1]])); err != nil || n != c[1]-c[0] {
			t.Fatalf("WriteChunk [%d, %d): n=%d, %v", c[0], c[1], n, err)
		}
		checkRange(t, st, id, 0, data[:c[1]])
	}
	if err := up.FinishUpload(t.Context()); err != nil {
		t.Fatalf("FinishUpload: %v", err)
	}
	checkRange(t, st, id, 0, data)
	info, err := up.GetInfo(t.Context())
	if err != nil || info.SizeIsDeferred || info.Size != size {
		t.Fatalf("GetInfo: size %d deferred %v, %v; want %d", info.Size, info.SizeIsDeferred, err, size)
	}
}

// A deferred-length upload whose length is declared after its last bytes,
// which sit in tusd's incomplete-part object: FinishUpload must still put
// them in the final object (s3store's own FinishUpload leaves them out).
// The gateway makes no WriteChunk call for the empty final PATCH.
func TestDeferredLengthDeclaredAfterTheLastBytes(t *testing.T) {
	t.Parallel()
	srv := s3test.Start(t)
	st, _ := newStore(t, srv)
	const size = 5*MiB + 2*MiB + 3
	data := randomData(size, 3)
	up := newUpload(t, st, "d2", -1)
	id := uploadID(t, up)
	for _, c := range subChunks(0, size, testPartSize) {
		if n, err := up.WriteChunk(t.Context(), c[0], bytes.NewReader(data[c[0]:c[1]])); err != nil || n != c[1]-c[0] {
			t.Fatalf("WriteChunk [%d, %d): n=%d, %v", c[0], c[1], n, err)
		}
	}
	// A new request: a new handle, as tusd opens one per PATCH.
	up2, err := st.GetUpload(t.Context(), id)
	if err != nil {
		t.Fatalf("GetUpload: %v", err)
	}
	if err := st.AsLengthDeclarableUpload(up2).DeclareLength(t.Context(), size); err != nil {
		t.Fatalf("DeclareLength: %v", err)
	}
	if n, err := up2.WriteChunk(t.Context(), size, bytes.NewReader(nil)); n != 0 || err != nil {
		t.Fatalf("empty WriteChunk: n=%d, %v", n, err)
	}
	if err := up2.FinishUpload(t.Context()); err != nil {
		t.Fatalf("FinishUpload: %v", err)
	}
	if segs := staged(t, srv, "d2"); len(segs) != 0 {
		t.Fatalf("staging objects after FinishUpload: %v", segs)
	}
	checkRange(t, st, id, 0, data)
}

// A source that fails midway: everything read is committed (also the
// incomplete part s3store had prepended, which it would drop) and staged,
// never more than Offset, and the error is returned.
func TestWriteChunkSourceFailsMidway(t *testing.T) {
	t.Parallel()
	srv := s3test.Start(t)
	st, _ := newStore(t, srv)
	const size = 5*MiB + testPartSize
	data := randomData(size, 4)
	up := newUpload(t, st, "f1", size)
	id := uploadID(t, up)
	// 1 MiB: an incomplete part.
	if n, err := up.WriteChunk(t.Context(), 0, bytes.NewReader(data[:MiB])); err != nil || n != MiB {
		t.Fatalf("WriteChunk: n=%d, %v", n, err)
	}
	srcErr := errors.New("client went away")
	const sent = 2*MiB + 11
	n, err := up.WriteChunk(t.Context(), MiB, &failingReader{r: bytes.NewReader(data[MiB : MiB+sent]), err: srcErr})
	if !errors.Is(err, srcErr) {
		t.Fatalf("WriteChunk with a failing source: error %v, want the source's", err)
	}
	if n != sent {
		t.Fatalf("WriteChunk with a failing source: n=%d, want every byte read (%d)", n, sent)
	}
	end := int64(MiB + sent)
	if got := offset(t, st, id); got != end {
		t.Fatalf("Offset %d, want %d", got, end)
	}
	contiguous, total := stagedEnd(staged(t, srv, "f1"))
	if contiguous != end || total != end {
		t.Fatalf("staged contiguous to %d, %d in all; want %d (= Offset)", contiguous, total, end)
	}
	checkRange(t, st, id, 0, data[:end])
	checkNotReceived(t, st, id, end, 1)

	// The client resumes from the offset and completes the upload.
	up2, err := st.GetUpload(t.Context(), id)
	if err != nil {
		t.Fatal(err)
	}
	for _, c := range subChunks(end, size, testPartSize) {
		if n, err := up2.WriteChunk(t.Context(), c[0], bytes.NewReader(data[c[0]:c[1]])); err != nil || n != c[1]-c[0] {
			t.Fatalf("WriteChunk [%d, %d): n=%d, %v", c[0], c[1], n, err)
		}
	}
	if err := up2.FinishUpload(t.Context()); err != nil {
		t.Fatalf("FinishUpload: %v", err)
	}
	checkRange(t, st, id, 0, data)
}

// An S3 failure while uploading a part: s3store has already deleted its
// incomplete-part object (to prepend it), and would go on to store the tail
// of the write as a new incomplete part, leaving a hole. The store sends
// nothing after the failure, finds that S3 lost the incomplete part, and
// restores it from the staging objects: the offset stays where it was and
// the retried write completes a byte-identical upload.
func TestS3FailureKeepsOffsetAndBytes(t *testing.T) {
	t.Parallel()
	srv := s3test.Start(t)
	st, a := newStore(t, srv, func(c *s3data.Config) { c.PreferredPartSize = 5 * MiB })
	const size = 5*MiB + testPartSize + 2*MiB
	data := randomData(size, 5)
	up := newUpload(t, st, "s1", size)
	id := uploadID(t, up)
	if n, err := up.WriteChunk(t.Context(), 0, bytes.NewReader(data[:MiB])); err != nil || n != MiB {
		t.Fatalf("WriteChunk: n=%d, %v", n, err)
	}
	// 1 MiB incomplete + 7 MiB = one 5 MiB part and a 3 MiB tail; the part fails.
	a.setFailUploadParts(1)
	a.take()
	n, err := up.WriteChunk(t.Context(), MiB, bytes.NewReader(data[MiB:8*MiB]))
	if !errors.Is(err, errInjected) || n != 0 {
		t.Fatalf("WriteChunk during an S3 failure: n=%d, %v; want 0 and the S3 error", n, err)
	}
	if got := offset(t, st, id); got != MiB {
		t.Fatalf("Offset after the failed write %d, want %d (restored)", got, MiB)
	}
	_, total := stagedEnd(staged(t, srv, "s1"))
	if total > MiB {
		t.Fatalf("%d bytes staged, more than the offset", total)
	}
	checkRange(t, st, id, 0, data[:MiB])
	checkNotReceived(t, st, id, MiB, 1)

	// The client resumes at the offset (a new request, a new handle).
	up2, err := st.GetUpload(t.Context(), id)
	if err != nil {
		t.Fatal(err)
	}
	for _, c := range subChunks(MiB, size, testPartSize) {
		if n, err := up2.WriteChunk(t.Context(), c[0], bytes.NewReader(data[c[0]:c[1]])); err != nil || n != c[1]-c[0] {
			t.Fatalf("WriteChunk [%d, %d): n=%d, %v", c[0], c[1], n, err)
		}
	}
	checkRange(t, st, id, 0, data)
	if err := up2.FinishUpload(t.Context()); err != nil {
		t.Fatalf("FinishUpload: %v", err)
	}
	checkRange(t, st, id, 0, data)
}

// A staging PUT that fails (the same gap as a crash between the part
// upload and the staging PUT): the bytes are committed and counted, the
// error is returned, they are not readable while the upload is incomplete
// (ErrNotReceived; later bytes are), and they are once it is finished.
func TestStagingFailureLeavesBytesReadableAfterFinish(t *testing.T) {
	t.Parallel()
	srv := s3test.Start(t)
	st, a := newStore(t, srv)
	const size = 5*MiB + testPartSize
	data := randomData(size, 6)
	up := newUpload(t, st, "g1", size)
	id := uploadID(t, up)
	a.setFailPut(func(key string) bool { return strings.Contains(key, ".stage/") })
	n, err := up.WriteChunk(t.Context(), 0, bytes.NewReader(data[:5*MiB]))
	if !errors.Is(err, errInjected) || n != 5*MiB {
		t.Fatalf("WriteChunk with a failing staging PUT: n=%d, %v; want %d and the error", n, err, 5*MiB)
	}
	a.setFailPut(nil)
	if got := offset(t, st, id); got != 5*MiB {
		t.Fatalf("Offset %d, want %d", got, 5*MiB)
	}
	checkNotReceived(t, st, id, 0, 5*MiB)
	if n, err := up.WriteChunk(t.Context(), 5*MiB, bytes.NewReader(data[5*MiB:])); err != nil || n != testPartSize {
		t.Fatalf("WriteChunk: n=%d, %v", n, err)
	}
	checkRange(t, st, id, 5*MiB, data[5*MiB:])
	checkNotReceived(t, st, id, 5*MiB-1, 2)
	if err := up.FinishUpload(t.Context()); err != nil {
		t.Fatalf("FinishUpload: %v", err)
	}
	checkRange(t, st, id, 0, data)
}

// A request cancelled while its bytes are being staged (client gone,
// shutdown): the bytes S3 committed are still staged.
func TestStagingSurvivesCancelledRequest(t *testing.T) {
	t.Parallel()
	srv := s3test.Start(t)
	st, a := newStore(t, srv)
	data := randomData(5*MiB, 14)
	up := newUpload(t, st, "k1", 10*MiB)
	id := uploadID(t, up)
	ctx, cancel := context.WithCancel(t.Context())
	defer cancel()
	a.setBeforePut(func(key string) {
		if strings.Contains(key, ".stage/") {
			cancel()
		}
	})
	if n, err := up.WriteChunk(ctx, 0, bytes.NewReader(data)); err != nil || n != 5*MiB {
		t.Fatalf("WriteChunk: n=%d, %v", n, err)
	}
	if ctx.Err() == nil {
		t.Fatal("the request context was not cancelled during staging")
	}
	checkRange(t, st, id, 0, data)
}

// Remove and Terminate leave no object and no multipart upload behind,
// whatever the state: half-created (only a multipart upload, known by its
// object id), incomplete with staging and an incomplete part, finished.
// Removing twice is not an error.
func TestRemoveLeavesNothing(t *testing.T) {
	t.Parallel()
	srv := s3test.Start(t)
	st, _ := newStore(t, srv)
	data := randomData(8*MiB, 7)

	// Half-created: the process died after CreateMultipartUpload.
	_, err := srv.Client(t).CreateMultipartUpload(t.Context(), &s3.CreateMultipartUploadInput{
		Bucket: aws.String(srv.Bucket()), Key: aws.String(testPrefix + "/h1"),
	})
	if err != nil {
		t.Fatal(err)
	}
	// Incomplete: a part, staging objects and an incomplete part.
	inc := newUpload(t, st, "h2", 20*MiB)
	for _, c := range subChunks(0, 8*MiB, testPartSize) {
		if _, err := inc.WriteChunk(t.Context(), c[0], bytes.NewReader(data[c[0]:c[1]])); err != nil {
			t.Fatal(err)
		}
	}
	// Finished.
	fin := newUpload(t, st, "h3", 3*MiB)
	if _, err := fin.WriteChunk(t.Context(), 0, bytes.NewReader(data[:3*MiB])); err != nil {
		t.Fatal(err)
	}
	if err := fin.FinishUpload(t.Context()); err != nil {
		t.Fatal(err)
	}
	// Terminated through tusd's interface.
	term := newUpload(t, st, "h4", 20*MiB)
	if _, err := term.WriteChunk(t.Context(), 0, bytes.NewReader(data[:2*MiB])); err != nil {
		t.Fatal(err)
	}
	if len(bucketKeys(t, srv)) == 0 || len(multipartUploads(t, srv)) != 3 {
		t.Fatalf("setup: keys %v, multipart uploads %v", bucketKeys(t, srv), multipartUploads(t, srv))
	}

	for _, id := range []string{"h1", uploadID(t, inc), uploadID(t, fin)} {
		if err := st.Remove(t.Context(), id); err != nil {
			t.Fatalf("Remove(%s): %v", id, err)
		}
		if err := st.Remove(t.Context(), id); err != nil {
			t.Fatalf("second Remove(%s): %v", id, err)
		}
	}
	if err := st.AsTerminatableUpload(term).Terminate(t.Context()); err != nil {
		t.Fatalf("Terminate: %v", err)
	}
	if keys := bucketKeys(t, srv); len(keys) != 0 {
		t.Fatalf("objects left: %v", keys)
	}
	if mus := multipartUploads(t, srv); len(mus) != 0 {
		t.Fatalf("multipart uploads left: %v", mus)
	}
	if _, err := st.Offset(t.Context(), uploadID(t, inc)); !errors.Is(err, store.ErrNotFound) {
		t.Fatalf("Offset of a removed upload: %v, want store.ErrNotFound", err)
	}
}

// An upload written in many small calls (as small PATCHes make it), read
// through listings of a few keys per page: ranges anywhere, starting on a
// staging object's first byte (found by listing from there) or inside one
// (found by listing from the start), and across an overlapping staging
// object as a resent write leaves.
func TestOpenRangeManyStagingObjects(t *testing.T) {
	t.Parallel()
	srv := s3test.Start(t)
	st, a := newStore(t, srv)
	s3data.SetListPageSize(st, 4)
	const calls = 40
	var bounds []int64
	var size int64
	for i := range calls {
		bounds = append(bounds, size)
		size += 1000 + int64(i)*37
	}
	data := randomData(size, 15)
	up := newUpload(t, st, "m1", size+MiB)
	id := uploadID(t, up)
	for i, from := range bounds {
		to := size
		if i+1 < len(bounds) {
			to = bounds[i+1]
		}
		if n, err := up.WriteChunk(t.Context(), from, bytes.NewReader(data[from:to])); err != nil || n != to-from {
			t.Fatalf("WriteChunk [%d, %d): n=%d, %v", from, to, n, err)
		}
	}
	if segs := staged(t, srv, "m1"); len(segs) != calls {
		t.Fatalf("%d staging objects, want %d", len(segs), calls)
	}
	// An overlapping staging object, [bounds[30]-100, bounds[32]+100).
	from, to := bounds[30]-100, bounds[32]+100
	if _, err := srv.Client(t).PutObject(t.Context(), &s3.PutObjectInput{
		Bucket: aws.String(srv.Bucket()), Key: aws.String(fmt.Sprintf("%s/m1.stage/%020d", testPrefix, from)),
		Body: bytes.NewReader(data[from:to]),
	}); err != nil {
		t.Fatal(err)
	}
	lists := func(f func()) int {
		a.take()
		f()
		return a.take()["ListObjectsV2"]
	}
	atBoundary := lists(func() { checkRange(t, st, id, bounds[35], data[bounds[35]:bounds[37]]) })
	inside := lists(func() { checkRange(t, st, id, bounds[35]+1, data[bounds[35]+1:bounds[37]]) })
	if atBoundary >= inside {
		t.Errorf("LISTs for a range starting on a staging object: %d, inside one: %d; want fewer", atBoundary, inside)
	}
	t.Logf("LISTs with 4 keys per page: range from a staging object's start %d, from inside one %d", atBoundary, inside)
	checkRange(t, st, id, 0, data)
	checkRange(t, st, id, bounds[29], data[bounds[29]:bounds[34]])
	rng := rand.New(rand.NewPCG(3, 4))
	for range 10 {
		off := rng.Int64N(size)
		n := 1 + rng.Int64N(size-off)
		checkRange(t, st, id, off, data[off:off+n])
	}
	checkNotReceived(t, st, id, size-10, 11)
	if err := up.FinishUpload(t.Context()); err == nil || !strings.Contains(err.Error(), "bytes written") {
		t.Fatalf("FinishUpload of an incomplete upload: %v, want an error", err)
	}
	if err := st.Remove(t.Context(), id); err != nil {
		t.Fatal(err)
	}
	if keys := bucketKeys(t, srv); len(keys) != 0 {
		t.Fatalf("objects left after Remove: %v", keys)
	}
}

// Ids with "+" or "/" cannot be created: "+" separates s3store's
// multipart id, "/" would leave the prefix.
func TestNewUploadRejectsBadIDs(t *testing.T) {
	t.Parallel()
	srv := s3test.Start(t)
	st, _ := newStore(t, srv)
	for _, id := range []string{"a+b", "a/b", "../x"} {
		if _, err := st.NewUpload(t.Context(), handler.FileInfo{ID: id, Size: 1}); err == nil {
			t.Errorf("NewUpload(%q): no error", id)
		}
	}
	if keys, mus := bucketKeys(t, srv), multipartUploads(t, srv); len(keys)+len(mus) != 0 {
		t.Fatalf("left behind: %v %v", keys, mus)
	}
}

// Unknown or malformed ids: store.ErrNotFound from Offset and OpenRange,
// handler.ErrNotFound from tusd's operations, zero LastWrite.
func TestNotFound(t *testing.T) {
	t.Parallel()
	srv := s3test.Start(t)
	st, _ := newStore(t, srv)
	for _, id := range []string{"nope+1", "nope", "+1", "a/b+1", "x+"} {
		if _, err := st.Offset(t.Context(), id); !errors.Is(err, store.ErrNotFound) {
			t.Errorf("Offset(%q): %v, want store.ErrNotFound", id, err)
		}
		if _, err := st.OpenRange(t.Context(), id, 0, 1); !errors.Is(err, store.ErrNotFound) {
			t.Errorf("OpenRange(%q): %v, want store.ErrNotFound", id, err)
		}
		if lw, err := st.LastWrite(t.Context(), id); err != nil || !lw.IsZero() {
			t.Errorf("LastWrite(%q): %v, %v; want zero", id, lw, err)
		}
		if err := st.Remove(t.Context(), id); err != nil {
			t.Errorf("Remove(%q): %v", id, err)
		}
		up, err := st.GetUpload(t.Context(), id)
		if err == nil {
			_, err = up.GetInfo(t.Context())
		}
		if !errors.Is(err, handler.ErrNotFound) {
			t.Errorf("GetUpload(%q) + GetInfo: %v, want handler.ErrNotFound", id, err)
		}
	}
}

// LastWrite is set at creation and advances with each write.
func TestLastWrite(t *testing.T) {
	t.Parallel()
	srv := s3test.Start(t)
	st, _ := newStore(t, srv)
	up := newUpload(t, st, "l1", 10*MiB)
	id := uploadID(t, up)
	lw0, err := st.LastWrite(t.Context(), id)
	if err != nil || lw0.IsZero() {
		t.Fatalf("LastWrite after creation: %v, %v", lw0, err)
	}
	data := randomData(2*MiB, 8)
	last := lw0
	for i, c := range [][2]int64{{0, MiB}, {MiB, 2 * MiB}} {
		// S3 times have millisecond precision: let the clock pass the last one.
		waitFor(t, "the clock to pass the last write", func() bool { return time.Now().After(last.Add(2 * time.Millisecond)) })
		if _, err := up.WriteChunk(t.Context(), c[0], bytes.NewReader(data[c[0]:c[1]])); err != nil {
			t.Fatal(err)
		}
		lw, err := st.LastWrite(t.Context(), id)
		if err != nil || !lw.After(last) {
			t.Fatalf("LastWrite after write %d: %v, %v; want after %v", i+1, lw, err, last)
		}
		last = lw
	}
}

// Check answers while S3 does, and fails promptly once it is down.
func TestCheck(t *testing.T) {
	t.Parallel()
	srv := s3test.Start(t)
	st, _ := newStore(t, srv)
	if err := st.Check(t.Context()); err != nil {
		t.Fatalf("Check: %v", err)
	}
	other, _ := newStore(t, srv, func(c *s3data.Config) { c.Bucket = "no-such-bucket" })
	if err := other.Check(t.Context()); err == nil {
		t.Fatal("Check of a missing bucket: no error")
	}
	noTemp, _ := newStore(t, srv, func(c *s3data.Config) { c.TempDir = t.TempDir() + "/missing" })
	if err := noTemp.Check(t.Context()); err == nil {
		t.Fatal("Check with a missing temporary directory: no error")
	}
	srv.Stop(t)
	ctx, cancel := context.WithTimeout(t.Context(), 10*time.Second)
	defer cancel()
	start := time.Now()
	if err := st.Check(ctx); err == nil {
		t.Fatal("Check with the server down: no error")
	}
	if d := time.Since(start); d > 5*time.Second {
		t.Fatalf("Check with the server down took %v", d)
	}
}

// New builds its client from the standard AWS chain (here the environment)
// and talks path-style to the endpoint.
func TestNewFromEnvironment(t *testing.T) {
	srv := s3test.Start(t)
	for _, kv := range srv.Env() {
		k, v, _ := strings.Cut(kv, "=")
		t.Setenv(k, v)
	}
	dir := t.TempDir()
	t.Setenv("AWS_CONFIG_FILE", dir+"/config")
	t.Setenv("AWS_SHARED_CREDENTIALS_FILE", dir+"/credentials")
	st, err := s3data.New(t.Context(), s3data.Config{Bucket: srv.Bucket(), Endpoint: srv.Endpoint(), Prefix: "p/", TempDir: t.TempDir()})
	if err != nil {
		t.Fatalf("New: %v", err)
	}
	if err := st.Check(t.Context()); err != nil {
		t.Fatalf("Check: %v", err)
	}
	data := randomData(MiB+1, 9)
	up := newUpload(t, st, "n1", int64(len(data)))
	if _, err := up.WriteChunk(t.Context(), 0, bytes.NewReader(data)); err != nil {
		t.Fatal(err)
	}
	checkRange(t, st, uploadID(t, up), 0, data)
	if err := up.FinishUpload(t.Context()); err != nil {
		t.Fatal(err)
	}
	keys := bucketKeys(t, srv)
	if !slices.Equal(keys, []string{"p/n1", "p/n1.info"}) {
		t.Fatalf("keys %v, want p/n1 and p/n1.info", keys)
	}
}

// Invalid configurations fail with every problem named, never quoting the
// endpoint's credentials.
func TestConfigErrors(t *testing.T) {
	t.Parallel()
	_, err := s3data.New(t.Context(), s3data.Config{Endpoint: "https://AKID:s3cr3t@s3.example.com", PreferredPartSize: MiB})
	if err == nil {
		t.Fatal("New with an invalid configuration: no error")
	}
	msg := err.Error()
	for _, want := range []string{"bucket", "credentials", "part size"} {
		if !strings.Contains(msg, want) {
			t.Errorf("error %q does not mention %q", msg, want)
		}
	}
	if strings.Contains(msg, "s3cr3t") || strings.Contains(msg, "AKID") {
		t.Errorf("error %q leaks the endpoint's credentials", msg)
	}
	if got := s3data.RedactURL("https://AKID:s3cr3t@s3.example.com/x"); strings.Contains(got, "s3cr3t") {
		t.Errorf("RedactURL: %q", got)
	}
	if _, err := s3data.New(t.Context(), s3data.Config{Bucket: "b", Endpoint: "ftp://x"}); err == nil {
		t.Error("New with an ftp endpoint: no error")
	}
}

// waitFor polls cond until it holds (see testwait.For).
func waitFor(t testing.TB, what string, cond func() bool) {
	t.Helper()
	testwait.For(t, 10*time.Second, what, cond)
}

// List names every upload with a .info object, once, whatever else (bytes,
// incomplete part, staging objects) it has, and no other key.
func TestList(t *testing.T) {
	t.Parallel()
	srv := s3test.Start(t)
	st, _ := newStore(t, srv)
	a := newUpload(t, st, "la", 10*MiB)
	if _, err := a.WriteChunk(t.Context(), 0, bytes.NewReader(randomData(6*MiB, 9))); err != nil {
		t.Fatal(err)
	}
	newUpload(t, st, "lb", 3)
	if _, err := srv.Client(t).PutObject(t.Context(), &s3.PutObjectInput{
		Bucket: aws.String(srv.Bucket()), Key: aws.String("unrelated/thing.info"), Body: strings.NewReader("x"),
	}); err != nil {
		t.Fatal(err)
	}
	got, err := st.List(t.Context())
	if err != nil {
		t.Fatal(err)
	}
	ids := map[string]bool{}
	for _, s := range got {
		if s.Modified.IsZero() {
			t.Errorf("upload %s listed without a modification time", s.ID)
		}
		ids[s.ID] = true
	}
	if len(got) != 2 || !ids[uploadID(t, a)] || !ids["lb"] {
		t.Errorf("List: got %+v, want la and lb once each", got)
	}
}
