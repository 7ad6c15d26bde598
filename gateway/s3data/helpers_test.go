package s3data_test

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"math/rand/v2"
	"sort"
	"strings"
	"sync"
	"testing"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/service/s3"
	smithyhttp "github.com/aws/smithy-go/transport/http"
	"github.com/tus/tusd/v2/pkg/handler"
	"go.uber.org/zap/zaptest"

	"github.com/tusgate/tusgate/gateway"
	"github.com/tusgate/tusgate/gateway/s3data"
	"github.com/tusgate/tusgate/internal/s3test"
)

const MiB = 1 << 20

// testPrefix is the key prefix of the test stores.
const testPrefix = "uploads"

// randomData returns n deterministic pseudo-random bytes.
func randomData(n int64, seed uint64) []byte {
	b := make([]byte, n)
	r := rand.NewChaCha8([32]byte{byte(seed), byte(seed >> 8), byte(seed >> 16)})
	_, _ = r.Read(b)
	return b
}

// api is the S3 client a test store uses: the real client of the test
// server, with request counting and switchable failures.
type api struct {
	s3data.API

	mu     sync.Mutex
	counts map[string]int
	// failUploadParts fails the next n UploadPart calls.
	failUploadParts int
	// failPut, when set, fails the PutObject calls of keys it returns true for.
	failPut func(key string) bool
	// beforePut, when set, runs before each PutObject.
	beforePut func(key string)
}

var errInjected = errors.New("injected S3 failure")

func (a *api) count(op string) {
	a.mu.Lock()
	if a.counts == nil {
		a.counts = map[string]int{}
	}
	a.counts[op]++
	a.mu.Unlock()
}

// take returns the requests counted since the last take, as "Op×n" sorted.
func (a *api) take() map[string]int {
	a.mu.Lock()
	defer a.mu.Unlock()
	c := a.counts
	a.counts = nil
	if c == nil {
		c = map[string]int{}
	}
	return c
}

func (a *api) setFailUploadParts(n int) {
	a.mu.Lock()
	a.failUploadParts = n
	a.mu.Unlock()
}

func (a *api) setFailPut(f func(string) bool) {
	a.mu.Lock()
	a.failPut = f
	a.mu.Unlock()
}

func (a *api) setBeforePut(f func(string)) {
	a.mu.Lock()
	a.beforePut = f
	a.mu.Unlock()
}

func (a *api) PutObject(ctx context.Context, in *s3.PutObjectInput, opts ...func(*s3.Options)) (*s3.PutObjectOutput, error) {
	a.count("PutObject")
	a.mu.Lock()
	fail := a.failPut != nil && a.failPut(aws.ToString(in.Key))
	before := a.beforePut
	a.mu.Unlock()
	if before != nil {
		before(aws.ToString(in.Key))
	}
	if fail {
		return nil, fmt.Errorf("put %s: %w", aws.ToString(in.Key), errInjected)
	}
	return a.API.PutObject(ctx, in, opts...)
}

func (a *api) UploadPart(ctx context.Context, in *s3.UploadPartInput, opts ...func(*s3.Options)) (*s3.UploadPartOutput, error) {
	a.count("UploadPart")
	a.mu.Lock()
	fail := a.failUploadParts > 0
	if fail {
		a.failUploadParts--
	}
	a.mu.Unlock()
	if fail {
		_, _ = io.Copy(io.Discard, in.Body)
		return nil, fmt.Errorf("upload part %d: %w", aws.ToInt32(in.PartNumber), errInjected)
	}
	return a.API.UploadPart(ctx, in, opts...)
}

func (a *api) GetObject(ctx context.Context, in *s3.GetObjectInput, opts ...func(*s3.Options)) (*s3.GetObjectOutput, error) {
	a.count("GetObject")
	return a.API.GetObject(ctx, in, opts...)
}

func (a *api) HeadObject(ctx context.Context, in *s3.HeadObjectInput, opts ...func(*s3.Options)) (*s3.HeadObjectOutput, error) {
	a.count("HeadObject")
	return a.API.HeadObject(ctx, in, opts...)
}

func (a *api) ListParts(ctx context.Context, in *s3.ListPartsInput, opts ...func(*s3.Options)) (*s3.ListPartsOutput, error) {
	a.count("ListParts")
	return a.API.ListParts(ctx, in, opts...)
}

func (a *api) DeleteObject(ctx context.Context, in *s3.DeleteObjectInput, opts ...func(*s3.Options)) (*s3.DeleteObjectOutput, error) {
	a.count("DeleteObject")
	return a.API.DeleteObject(ctx, in, opts...)
}

func (a *api) DeleteObjects(ctx context.Context, in *s3.DeleteObjectsInput, opts ...func(*s3.Options)) (*s3.DeleteObjectsOutput, error) {
	a.count("DeleteObjects")
	return a.API.DeleteObjects(ctx, in, opts...)
}

func (a *api) CreateMultipartUpload(ctx context.Context, in *s3.CreateMultipartUploadInput, opts ...func(*s3.Options)) (*s3.CreateMultipartUploadOutput, error) {
	a.count("CreateMultipartUpload")
	return a.API.CreateMultipartUpload(ctx, in, opts...)
}

func (a *api) CompleteMultipartUpload(ctx context.Context, in *s3.CompleteMultipartUploadInput, opts ...func(*s3.Options)) (*s3.CompleteMultipartUploadOutput, error) {
	a.count("CompleteMultipartUpload")
	return a.API.CompleteMultipartUpload(ctx, in, opts...)
}

func (a *api) AbortMultipartUpload(ctx context.Context, in *s3.AbortMultipartUploadInput, opts ...func(*s3.Options)) (*s3.AbortMultipartUploadOutput, error) {
	a.count("AbortMultipartUpload")
	return a.API.AbortMultipartUpload(ctx, in, opts...)
}

func (a *api) ListObjectsV2(ctx context.Context, in *s3.ListObjectsV2Input, opts ...func(*s3.Options)) (*s3.ListObjectsV2Output, error) {
	a.count("ListObjectsV2")
	return a.API.ListObjectsV2(ctx, in, opts...)
}

// newStore returns a Store on srv with its own client (as a separate
// gateway process has), with 6 MiB preferred parts, and its client.
func newStore(t testing.TB, srv *s3test.Server, mod ...func(*s3data.Config)) (*s3data.Store, *api) {
	t.Helper()
	a := &api{API: srv.Client(t)}
	cfg := s3data.Config{
		Bucket:            srv.Bucket(),
		Prefix:            testPrefix,
		PreferredPartSize: 6 * MiB,
		TempDir:           t.TempDir(),
		Logger:            zaptest.NewLogger(t),
	}
	for _, m := range mod {
		m(&cfg)
	}
	st, err := s3data.NewWithClient(a, cfg)
	if err != nil {
		t.Fatalf("NewWithClient: %v", err)
	}
	return st, a
}

// newUpload creates an upload of size bytes (deferred when size < 0).
func newUpload(t testing.TB, st *s3data.Store, objectID string, size int64) handler.Upload {
	t.Helper()
	info := handler.FileInfo{ID: objectID, Size: size, MetaData: handler.MetaData{"filename": "a.mp4"}}
	if size < 0 {
		info.Size, info.SizeIsDeferred = 0, true
	}
	up, err := st.NewUpload(t.Context(), info)
	if err != nil {
		t.Fatalf("NewUpload: %v", err)
	}
	return up
}

// uploadID returns the tusd id of up.
func uploadID(t testing.TB, up handler.Upload) string {
	t.Helper()
	info, err := up.GetInfo(t.Context())
	if err != nil {
		t.Fatalf("GetInfo: %v", err)
	}
	return info.ID
}

// readRange reads [off, off+n) of upload id through st.
func readRange(t testing.TB, st *s3data.Store, id string, off, n int64) ([]byte, error) {
	t.Helper()
	rc, err := st.OpenRange(t.Context(), id, off, n)
	if err != nil {
		return nil, err
	}
	defer rc.Close()
	return io.ReadAll(rc)
}

// checkRange fails t unless [off, off+n) of upload id reads as want.
func checkRange(t testing.TB, st *s3data.Store, id string, off int64, want []byte) {
	t.Helper()
	got, err := readRange(t, st, id, off, int64(len(want)))
	if err != nil {
		t.Fatalf("OpenRange [%d, %d): %v", off, off+int64(len(want)), err)
	}
	if !bytes.Equal(got, want) {
		t.Fatalf("OpenRange [%d, %d): %d bytes differ from what was written (got %d bytes)", off, off+int64(len(want)), diffCount(got, want), len(got))
	}
}

// checkNotReceived fails t unless reading [off, off+n) gives ErrNotReceived.
func checkNotReceived(t testing.TB, st *s3data.Store, id string, off, n int64) {
	t.Helper()
	_, err := readRange(t, st, id, off, n)
	if !errors.Is(err, gateway.ErrNotReceived) {
		t.Fatalf("OpenRange [%d, %d): got error %v, want ErrNotReceived", off, off+n, err)
	}
}

func diffCount(a, b []byte) int {
	d := 0
	for i := range min(len(a), len(b)) {
		if a[i] != b[i] {
			d++
		}
	}
	return d + max(len(a), len(b)) - min(len(a), len(b))
}

// offset returns st's Offset of id.
func offset(t testing.TB, st *s3data.Store, id string) int64 {
	t.Helper()
	off, err := st.Offset(t.Context(), id)
	if err != nil {
		t.Fatalf("Offset: %v", err)
	}
	return off
}

// bucketKeys lists every key of srv's bucket.
func bucketKeys(t testing.TB, srv *s3test.Server) []string {
	t.Helper()
	client := srv.Client(t)
	var keys []string
	p := s3.NewListObjectsV2Paginator(client, &s3.ListObjectsV2Input{Bucket: aws.String(srv.Bucket())})
	for p.HasMorePages() {
		out, err := p.NextPage(t.Context())
		if err != nil {
			t.Fatalf("list bucket: %v", err)
		}
		for _, o := range out.Contents {
			keys = append(keys, aws.ToString(o.Key))
		}
	}
	sort.Strings(keys)
	return keys
}

// staged returns the staging objects of objectID: offset → size.
func staged(t testing.TB, srv *s3test.Server, objectID string) map[int64]int64 {
	t.Helper()
	client := srv.Client(t)
	prefix := testPrefix + "/" + objectID + ".stage/"
	out, err := client.ListObjectsV2(t.Context(), &s3.ListObjectsV2Input{Bucket: aws.String(srv.Bucket()), Prefix: aws.String(prefix)})
	if err != nil {
		t.Fatalf("list staging objects: %v", err)
	}
	m := map[int64]int64{}
	for _, o := range out.Contents {
		var off int64
		if _, err := fmt.Sscanf(strings.TrimPrefix(aws.ToString(o.Key), prefix), "%d", &off); err != nil {
			t.Fatalf("staging key %s: %v", aws.ToString(o.Key), err)
		}
		m[off] = aws.ToInt64(o.Size)
	}
	return m
}

// stagedEnd returns the end of the staged bytes that run contiguously from
// 0, and the total staged.
func stagedEnd(segs map[int64]int64) (contiguous, total int64) {
	offs := make([]int64, 0, len(segs))
	for o, n := range segs {
		offs = append(offs, o)
		total += n
	}
	sort.Slice(offs, func(i, j int) bool { return offs[i] < offs[j] })
	for _, o := range offs {
		if o > contiguous {
			break
		}
		contiguous = max(contiguous, o+segs[o])
	}
	return contiguous, total
}

// multipartUploads lists the bucket's multipart uploads in progress.
func multipartUploads(t testing.TB, srv *s3test.Server) []string {
	t.Helper()
	out, err := srv.Client(t).ListMultipartUploads(t.Context(), &s3.ListMultipartUploadsInput{Bucket: aws.String(srv.Bucket())})
	if _, ok := errors.AsType[*smithyhttp.ResponseError](err); ok && strings.Contains(err.Error(), "NoSuchUpload") {
		// gofakes3 answers NoSuchUpload for a bucket that never had one
		// (S3 answers an empty list).
		return nil
	}
	if err != nil {
		t.Fatalf("list multipart uploads: %v", err)
	}
	var ids []string
	for _, u := range out.Uploads {
		ids = append(ids, aws.ToString(u.Key)+"+"+aws.ToString(u.UploadId))
	}
	return ids
}

// subChunks cuts [from, to) at the part boundaries of a plan with a 5 MiB
// first part and partSize parts, as the gateway cuts a PATCH.
func subChunks(from, to, partSize int64) [][2]int64 {
	var out [][2]int64
	for from < to {
		b := int64(5 * MiB)
		for b <= from {
			b += partSize
		}
		end := min(b, to)
		out = append(out, [2]int64{from, end})
		from = end
	}
	return out
}

// failingReader returns r's bytes, then err.
type failingReader struct {
	r   io.Reader
	err error
}

func (f *failingReader) Read(p []byte) (int, error) {
	n, err := f.r.Read(p)
	if errors.Is(err, io.EOF) {
		return n, f.err
	}
	return n, err
}
