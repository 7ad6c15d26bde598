package s3data

import (
	"context"
	"fmt"
	"sync"

	"github.com/aws/aws-sdk-go-v2/service/s3"
	"github.com/tus/tusd/v2/pkg/s3store"
)

// guardedAPI is the S3 client of one upload handle's copy of tusd's store.
// Once an UploadPart or PutObject fails, it fails every later one until
// reset, without sending it.
//
// tusd's s3store keeps uploading the remaining pieces of a write after one
// failed (an errgroup without cancellation). If a part fails and the
// incomplete-part object after it succeeds, S3 then holds bytes at the
// wrong offset: the offset tusd computes (sum of parts + incomplete part)
// counts them, and the bytes in between are missing. With one part in
// flight at a time (Store.uploadStore) and this guard, a failed write leaves
// exactly a prefix of its bytes in S3.
type guardedAPI struct {
	s3store.S3API

	mu     sync.Mutex
	failed error
}

// reset forgets an earlier failure; called before each write.
func (g *guardedAPI) reset() {
	g.mu.Lock()
	g.failed = nil
	g.mu.Unlock()
}

// check returns an error when an earlier write failed.
func (g *guardedAPI) check() error {
	g.mu.Lock()
	defer g.mu.Unlock()
	if g.failed != nil {
		return fmt.Errorf("s3data: not sent after an earlier part of the same write failed: %w", g.failed)
	}
	return nil
}

// record remembers the first failure.
func (g *guardedAPI) record(err error) {
	if err == nil {
		return
	}
	g.mu.Lock()
	if g.failed == nil {
		g.failed = err
	}
	g.mu.Unlock()
}

// UploadPart implements s3store.S3API.
func (g *guardedAPI) UploadPart(ctx context.Context, in *s3.UploadPartInput, opts ...func(*s3.Options)) (*s3.UploadPartOutput, error) {
	if err := g.check(); err != nil {
		return nil, err
	}
	out, err := g.S3API.UploadPart(ctx, in, opts...)
	g.record(err)
	return out, err
}

// PutObject implements s3store.S3API.
func (g *guardedAPI) PutObject(ctx context.Context, in *s3.PutObjectInput, opts ...func(*s3.Options)) (*s3.PutObjectOutput, error) {
	if err := g.check(); err != nil {
		return nil, err
	}
	out, err := g.S3API.PutObject(ctx, in, opts...)
	g.record(err)
	return out, err
}
