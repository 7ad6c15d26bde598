package gateway

import (
	"context"
	"io"
	"time"

	"github.com/tus/tusd/v2/pkg/handler"
)

// Backend holds the bytes of uploads: tusd's disk store in Config.DataDir
// (the default, see NewDiskBackend), or a shared store such as S3 (package
// gateway/s3data) when several instances serve the same uploads.
//
// The gateway wraps the tusd operations (creation, writes, termination,
// deferred length) with its state-store bookkeeping; the forwarder reads
// parts with OpenRange, never through tusd's handler.
type Backend interface {
	// NewUpload, GetUpload, AsTerminatableUpload and
	// AsLengthDeclarableUpload are tusd's data-store operations.
	NewUpload(ctx context.Context, info handler.FileInfo) (handler.Upload, error)
	GetUpload(ctx context.Context, id string) (handler.Upload, error)
	AsTerminatableUpload(up handler.Upload) handler.TerminatableUpload
	AsLengthDeclarableUpload(up handler.Upload) handler.LengthDeclarableUpload

	// StreamsDurably reports how WriteChunk commits: true when every byte it
	// has read from src is durable by the time it reads the next one (the
	// disk store), so the gateway records part boundaries mid-stream; false
	// when the bytes are durable only once WriteChunk returns (S3), so the
	// gateway feeds WriteChunk at most one api.video part at a time and
	// records after each call.
	StreamsDurably() bool

	// OpenRange returns a reader of exactly length bytes of upload id from
	// offset. It works while the upload is still being received, on every
	// instance that shares the backend. The error wraps store.ErrNotFound
	// when the upload's bytes do not exist, and ErrNotReceived when the
	// range is not readable (yet).
	OpenRange(ctx context.Context, id string, offset, length int64) (io.ReadCloser, error)
	// Offset returns how many bytes of upload id are stored (tusd's
	// offset). The error wraps store.ErrNotFound when the upload's bytes
	// (or its tusd metadata) do not exist.
	Offset(ctx context.Context, id string) (int64, error)
	// LastWrite returns when bytes of upload id were last stored, or the
	// zero time when it holds none or cannot tell.
	LastWrite(ctx context.Context, id string) (time.Time, error)
	// Remove deletes the bytes and tusd metadata of upload id, whatever
	// state they are in (half-created, incomplete, complete); what is
	// already missing is not an error.
	Remove(ctx context.Context, id string) error
	// Check reports whether the backend can store bytes now (readiness).
	Check(ctx context.Context) error
	// List returns every upload whose tusd metadata the backend holds,
	// for the orphan sweep (Gateway.SweepOrphans).
	List(ctx context.Context) ([]Stored, error)
}

// Stored is an upload a Backend holds.
type Stored struct {
	ID string
	// Modified is when its tusd metadata or bytes last changed (as far as
	// a listing tells).
	Modified time.Time
}
