package s3data

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/url"
	"os"
	"strings"
	"time"

	"github.com/aws/aws-sdk-go-v2/aws"
	awsconfig "github.com/aws/aws-sdk-go-v2/config"
	"github.com/aws/aws-sdk-go-v2/service/s3"
	"github.com/aws/aws-sdk-go-v2/service/s3/types"
	"github.com/aws/smithy-go"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/tus/tusd/v2/pkg/handler"
	"github.com/tus/tusd/v2/pkg/s3store"
	"go.uber.org/zap"

	"github.com/tusgate/tusgate/gateway"
	"github.com/tusgate/tusgate/store"
)

// Part sizes of S3 multipart uploads.
const (
	// MinPartSize is S3's smallest part (all but the last).
	MinPartSize = 5 << 20
	// MaxPartSize is S3's largest part.
	MaxPartSize = 5 << 30
	// DefaultPartSize is Config.PreferredPartSize when it is zero: the
	// gateway's default api.video part size, and tusd's default.
	DefaultPartSize = 50 << 20
)

// maxInfoSize bounds the .info object resolve reads.
const maxInfoSize = 1 << 20

// cleanupTimeout bounds the clean-up after a failed creation.
const cleanupTimeout = 30 * time.Second

// deleteBatch is the most keys one DeleteObjects request takes.
const deleteBatch = 1000

// Config configures a Store.
type Config struct {
	// Bucket holds the uploads. Required.
	Bucket string
	// Endpoint is the base URL of an S3-compatible server, such as
	// http://127.0.0.1:9000; requests then use path-style addressing
	// (bucket in the path). Empty means AWS S3. It must not carry
	// credentials (user:password@): they come from the AWS chain.
	Endpoint string
	// Region is the S3 region. Empty means the AWS chain's (AWS_REGION,
	// the shared config file), else us-east-1 when Endpoint is set.
	Region string
	// Prefix is prepended to every object key; a "/" is added when it does
	// not end with one. Empty means the bucket's root.
	Prefix string
	// PreferredPartSize is the size, in bytes, of the multipart parts the
	// store cuts writes into: set it to the gateway's api.video part size
	// (--part-size), so that one write of one api.video part is one S3
	// part. Default DefaultPartSize (50 MiB); 5 MiB to 5 GiB.
	PreferredPartSize int64
	// TempDir holds the temporary copies of the bytes being written (about
	// two api.video parts per PATCH in progress). Default os.TempDir().
	TempDir string
	// Logger receives warnings about staging and clean-up failures.
	// Default: no logging.
	Logger *zap.Logger
}

// validate reports every problem of c at once. Messages never quote the
// endpoint, which could hold credentials.
func (c Config) validate() error {
	var errs []error
	if c.Bucket == "" {
		errs = append(errs, errors.New("the bucket is required"))
	}
	if c.Endpoint != "" {
		if err := checkEndpoint(c.Endpoint); err != nil {
			errs = append(errs, err)
		}
	}
	if c.PreferredPartSize != 0 && (c.PreferredPartSize < MinPartSize || c.PreferredPartSize > MaxPartSize) {
		errs = append(errs, fmt.Errorf("the preferred part size %d is outside S3's %d..%d bytes", c.PreferredPartSize, MinPartSize, MaxPartSize))
	}
	if err := errors.Join(errs...); err != nil {
		return fmt.Errorf("s3data: invalid configuration: %w", err)
	}
	return nil
}

// checkEndpoint accepts an absolute http(s) URL without credentials.
func checkEndpoint(raw string) error {
	u, err := url.Parse(raw)
	switch {
	case err != nil:
		return errors.New("the endpoint is not a valid URL")
	case u.User != nil:
		return errors.New("the endpoint must not contain credentials (user:password@); use the AWS credential chain")
	case u.Scheme != "http" && u.Scheme != "https", u.Host == "":
		return errors.New("the endpoint must be an absolute http:// or https:// URL")
	}
	return nil
}

// RedactURL returns raw with any user information replaced by "redacted",
// for logs; an unparsable URL is replaced whole.
func RedactURL(raw string) string {
	u, err := url.Parse(raw)
	if err != nil {
		return "(invalid URL)"
	}
	return u.Redacted()
}

// API is the part of an S3 client the Store calls: tusd's s3store.S3API
// plus listing and the bucket check. *s3.Client implements it.
type API interface {
	s3store.S3API
	ListObjectsV2(ctx context.Context, in *s3.ListObjectsV2Input, opts ...func(*s3.Options)) (*s3.ListObjectsV2Output, error)
	ListMultipartUploads(ctx context.Context, in *s3.ListMultipartUploadsInput, opts ...func(*s3.Options)) (*s3.ListMultipartUploadsOutput, error)
	HeadBucket(ctx context.Context, in *s3.HeadBucketInput, opts ...func(*s3.Options)) (*s3.HeadBucketOutput, error)
}

// Store keeps upload bytes in S3 through tusd's s3store, and keeps the bytes
// of incomplete uploads readable by offset on every instance (staging
// objects, see the package documentation). It implements gateway.Backend.
type Store struct {
	api     API
	bucket  string
	prefix  string // "" or ending in "/"
	tus     s3store.S3Store
	tempDir string
	log     *zap.Logger
	// listPageSize is the MaxKeys of listings; 0 leaves the server's
	// default (1000 on S3). Tests lower it.
	listPageSize int32
}

var _ gateway.Backend = (*Store)(nil)

// New returns a Store using an S3 client configured from cfg and the
// standard AWS chain (environment, shared files, SSO, web identity, ECS/EC2
// roles). Request and response checksums are computed only where S3 requires
// them: many S3-compatible servers reject the CRC32 trailers that
// aws-sdk-go-v2 adds by default since v1.73 of its s3 module. New does not
// contact S3; Check does.
func New(ctx context.Context, cfg Config) (*Store, error) {
	if err := cfg.validate(); err != nil {
		return nil, err
	}
	opts := []func(*awsconfig.LoadOptions) error{
		awsconfig.WithRequestChecksumCalculation(aws.RequestChecksumCalculationWhenRequired),
		awsconfig.WithResponseChecksumValidation(aws.ResponseChecksumValidationWhenRequired),
	}
	if cfg.Region != "" {
		opts = append(opts, awsconfig.WithRegion(cfg.Region))
	}
	awsCfg, err := awsconfig.LoadDefaultConfig(ctx, opts...)
	if err != nil {
		return nil, fmt.Errorf("s3data: load the AWS configuration: %w", err)
	}
	if awsCfg.Region == "" {
		if cfg.Endpoint == "" {
			return nil, errors.New("s3data: no S3 region: set the region or AWS_REGION")
		}
		awsCfg.Region = "us-east-1"
	}
	client := s3.NewFromConfig(awsCfg, func(o *s3.Options) {
		if cfg.Endpoint != "" {
			o.BaseEndpoint = aws.String(cfg.Endpoint)
			o.UsePathStyle = true
		}
	})
	s, err := NewWithClient(client, cfg)
	if err != nil {
		return nil, err
	}
	s.log.Info("S3 data store", zap.String("bucket", cfg.Bucket), zap.String("endpoint", RedactURL(cfg.Endpoint)),
		zap.String("region", awsCfg.Region), zap.String("prefix", s.prefix),
		zap.Int64("preferredPartSize", s.tus.PreferredPartSize), zap.String("tempDir", s.tempDir))
	return s, nil
}

// NewWithClient returns a Store using client; cfg.Endpoint and cfg.Region
// are ignored (they configure the client New builds).
func NewWithClient(client API, cfg Config) (*Store, error) {
	cfg.Endpoint = ""
	if err := cfg.validate(); err != nil {
		return nil, err
	}
	if client == nil {
		return nil, errors.New("s3data: no S3 client")
	}
	prefix := cfg.Prefix
	if prefix != "" && !strings.HasSuffix(prefix, "/") {
		prefix += "/"
	}
	tempDir := cfg.TempDir
	if tempDir == "" {
		tempDir = os.TempDir()
	}
	log := cfg.Logger
	if log == nil {
		log = zap.NewNop()
	}
	tus := s3store.New(cfg.Bucket, client)
	tus.ObjectPrefix = prefix
	tus.MetadataObjectPrefix = prefix
	tus.TemporaryDirectory = tempDir
	tus.PreferredPartSize = DefaultPartSize
	if cfg.PreferredPartSize != 0 {
		tus.PreferredPartSize = cfg.PreferredPartSize
	}
	return &Store{api: client, bucket: cfg.Bucket, prefix: prefix, tus: tus, tempDir: tempDir, log: log.Named("s3data")}, nil
}

// RegisterMetrics registers tusd's s3store metrics (tusd_s3_*) on r.
// tusd_s3_upload_semaphore_limit reads 1: each upload handle sends one part
// at a time (see guardedAPI); uploads still send in parallel.
func (s *Store) RegisterMetrics(r prometheus.Registerer) { s.tus.RegisterMetrics(r) }

// Keys of an upload's objects; objectID is the tusd id before its "+".
func (s *Store) objectKey(objectID string) string { return s.prefix + objectID }
func (s *Store) infoKey(objectID string) string   { return s.prefix + objectID + ".info" }
func (s *Store) partKey(objectID string) string   { return s.prefix + objectID + ".part" }
func (s *Store) stagePrefix(objectID string) string {
	return s.prefix + objectID + ".stage/"
}

// stageKey is the key of the staging object holding bytes from offset off.
// The zero-padded offset makes keys sort in offset order.
func (s *Store) stageKey(objectID string, off int64) string {
	return fmt.Sprintf("%s%020d", s.stagePrefix(objectID), off)
}

// splitID splits an upload id: the object id alone (what tusd, clients and
// the gateway see), or s3store's "<objectID>+<multipartID>". ok is false for
// an id that cannot name an upload of this store.
func splitID(id string) (objectID, multipartID string, ok bool) {
	objectID = id
	if i := strings.LastIndexByte(id, '+'); i >= 0 {
		objectID, multipartID = id[:i], id[i+1:]
		if multipartID == "" {
			return "", "", false
		}
	}
	if !validObjectID(objectID) {
		return "", "", false
	}
	return objectID, multipartID, true
}

// validObjectID reports whether id can be an object id: not empty, no "+"
// (it separates the multipart id) and no "/" (keys stay in the prefix).
func validObjectID(id string) bool {
	return id != "" && !strings.ContainsAny(id, "+/")
}

// resolve returns the object id and s3store's id ("<objectID>+<multipart
// id>") of upload id, given either. An object id costs one GET: s3store
// writes its own id in the .info object. The error is handler.ErrNotFound
// when the upload has no .info object.
func (s *Store) resolve(ctx context.Context, id string) (objectID, fullID string, err error) {
	objectID, multipartID, ok := splitID(id)
	if !ok {
		return "", "", handler.ErrNotFound
	}
	if multipartID != "" {
		return objectID, id, nil
	}
	out, err := s.api.GetObject(ctx, &s3.GetObjectInput{Bucket: aws.String(s.bucket), Key: aws.String(s.infoKey(objectID))})
	if err != nil {
		if isNotFound(err) {
			return "", "", handler.ErrNotFound
		}
		return "", "", fmt.Errorf("read %s: %w", s.infoKey(objectID), err)
	}
	defer out.Body.Close()
	var info struct{ ID string }
	if err := json.NewDecoder(io.LimitReader(out.Body, maxInfoSize)).Decode(&info); err != nil {
		return "", "", fmt.Errorf("read %s: %w", s.infoKey(objectID), err)
	}
	if o, m, ok := splitID(info.ID); !ok || o != objectID || m == "" {
		return "", "", fmt.Errorf("read %s: it names upload %q", s.infoKey(objectID), info.ID)
	}
	return objectID, info.ID, nil
}

// NewUpload implements handler.DataStore: it starts the multipart upload
// and writes the .info object. The upload's id is info.ID (tusd makes one
// up when it is empty); s3store's id adds the multipart id, kept in .info.
// When it fails after S3 started a multipart upload, that upload is aborted.
func (s *Store) NewUpload(ctx context.Context, info handler.FileInfo) (handler.Upload, error) {
	if info.ID != "" && !validObjectID(info.ID) {
		return nil, fmt.Errorf("s3data: create upload %q: an id cannot contain + or /", info.ID)
	}
	tus, guard := s.uploadStore()
	up, err := tus.NewUpload(ctx, info)
	if err != nil {
		if info.ID != "" {
			// The request may be gone; the clean-up still gets its time.
			cctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), cleanupTimeout)
			if aerr := s.abortAll(cctx, info.ID); aerr != nil {
				s.log.Warn("abort the multipart upload of a failed creation", zap.String("objectId", info.ID), zap.Error(aerr))
			}
			cancel()
		}
		return nil, fmt.Errorf("s3data: create upload: %w", err)
	}
	got, err := up.GetInfo(ctx) // cached: no request
	if err != nil {
		return nil, fmt.Errorf("s3data: create upload: %w", err)
	}
	objectID, _, _ := splitID(got.ID)
	return &upload{s: s, objectID: objectID, fullID: got.ID, tus: tus, guard: guard, h: up}, nil
}

// GetUpload implements handler.DataStore. With an object id it reads the
// .info object (one request) to learn the multipart id; the error is
// handler.ErrNotFound when there is none.
func (s *Store) GetUpload(ctx context.Context, id string) (handler.Upload, error) {
	objectID, fullID, err := s.resolve(ctx, id)
	if err != nil {
		if errors.Is(err, handler.ErrNotFound) {
			return nil, handler.ErrNotFound
		}
		return nil, fmt.Errorf("s3data: open upload %s: %w", id, err)
	}
	tus, guard := s.uploadStore()
	h, err := tus.GetUpload(ctx, fullID)
	if err != nil {
		return nil, err
	}
	return &upload{s: s, objectID: objectID, fullID: fullID, tus: tus, guard: guard, h: h}, nil
}

// AsTerminatableUpload implements handler.TerminaterDataStore.
func (s *Store) AsTerminatableUpload(up handler.Upload) handler.TerminatableUpload {
	u, _ := up.(*upload)
	return terminatable{s: s, u: u}
}

// AsLengthDeclarableUpload implements handler.LengthDeferrerDataStore.
func (s *Store) AsLengthDeclarableUpload(up handler.Upload) handler.LengthDeclarableUpload {
	u, _ := up.(*upload)
	return lengthDeclarable{u: u}
}

// StreamsDurably implements gateway.Backend: false, bytes are durable (and
// staged) only once WriteChunk returns.
func (s *Store) StreamsDurably() bool { return false }

// Offset implements gateway.Backend: tusd's offset (the parts, plus the
// incomplete part), read fresh from S3 (four requests: .info twice,
// ListParts, HEAD .part).
func (s *Store) Offset(ctx context.Context, id string) (int64, error) {
	_, fullID, err := s.resolve(ctx, id)
	if err == nil {
		var h handler.Upload
		if h, err = s.tus.GetUpload(ctx, fullID); err == nil {
			var info handler.FileInfo
			if info, err = h.GetInfo(ctx); err == nil {
				return info.Offset, nil
			}
		}
	}
	if errors.Is(err, handler.ErrNotFound) {
		return 0, fmt.Errorf("s3data: upload %s: %w", id, store.ErrNotFound)
	}
	return 0, fmt.Errorf("s3data: read offset of upload %s: %w", id, err)
}

// LastWrite implements gateway.Backend: the newest modification time among
// the upload's staging objects, incomplete part, .info and final object
// (one listing), or zero when none exists.
func (s *Store) LastWrite(ctx context.Context, id string) (time.Time, error) {
	objectID, _, ok := splitID(id)
	if !ok {
		return time.Time{}, nil
	}
	l, err := s.list(ctx, objectID, "", "", 0)
	if err != nil {
		return time.Time{}, fmt.Errorf("s3data: last write of upload %s: %w", id, err)
	}
	return l.lastModified, nil
}

// List implements gateway.Backend: every upload with a .info object under
// the prefix (one LIST page per 1000 objects of the prefix), modified when
// that object was last written.
func (s *Store) List(ctx context.Context) ([]gateway.Stored, error) {
	var out []gateway.Stored
	in := &s3.ListObjectsV2Input{Bucket: aws.String(s.bucket), Prefix: aws.String(s.prefix)}
	for {
		page, err := s.api.ListObjectsV2(ctx, in)
		if err != nil {
			return out, fmt.Errorf("s3data: list uploads: %w", err)
		}
		var last string
		for _, o := range page.Contents {
			last = aws.ToString(o.Key)
			objectID, ok := strings.CutSuffix(strings.TrimPrefix(last, s.prefix), ".info")
			if !ok || objectID == "" || strings.Contains(objectID, "/") {
				continue // bytes, staging or another key
			}
			out = append(out, gateway.Stored{ID: objectID, Modified: aws.ToTime(o.LastModified)})
		}
		if !aws.ToBool(page.IsTruncated) || last == "" {
			return out, nil
		}
		in.StartAfter = aws.String(last)
	}
}

// Remove implements gateway.Backend: it aborts the multipart upload and
// deletes the final object, .info, .part and staging objects. When the
// .info object is gone too, every multipart upload of the key is aborted
// (a creation that died half-way). What is missing is not an error.
func (s *Store) Remove(ctx context.Context, id string) error {
	objectID, multipartID, ok := splitID(id)
	if !ok {
		return nil
	}
	var errs []error
	if multipartID == "" {
		// The .info object names the multipart upload; without it (a
		// creation that died half-way), every multipart upload of the key
		// is aborted.
		switch _, fullID, err := s.resolve(ctx, id); {
		case err == nil:
			_, multipartID, _ = splitID(fullID)
		case !errors.Is(err, handler.ErrNotFound):
			errs = append(errs, err)
		}
	}
	if multipartID != "" {
		if err := s.abort(ctx, objectID, multipartID); err != nil {
			errs = append(errs, err)
		}
	} else if err := s.abortAll(ctx, objectID); err != nil {
		errs = append(errs, err)
	}
	keys := []string{s.objectKey(objectID), s.infoKey(objectID), s.partKey(objectID)}
	l, err := s.list(ctx, objectID, "", "", 0)
	if err != nil {
		errs = append(errs, err)
	}
	for _, seg := range l.segs {
		keys = append(keys, seg.key)
	}
	if err := s.deleteKeys(ctx, keys); err != nil {
		errs = append(errs, err)
	}
	if err := errors.Join(errs...); err != nil {
		return fmt.Errorf("s3data: remove upload %s: %w", id, err)
	}
	return nil
}

// Check implements gateway.Backend: the bucket answers HeadBucket (one
// attempt, no retries) and a file can be created in the temporary
// directory.
func (s *Store) Check(ctx context.Context) error {
	_, err := s.api.HeadBucket(ctx, &s3.HeadBucketInput{Bucket: aws.String(s.bucket)}, func(o *s3.Options) { o.RetryMaxAttempts = 1 })
	if err != nil {
		return fmt.Errorf("s3data: bucket %s: %w", s.bucket, err)
	}
	f, err := os.CreateTemp(s.tempDir, "tusgate-s3-check-*")
	if err != nil {
		return fmt.Errorf("s3data: temporary directory: %w", err)
	}
	_ = f.Close()
	if err := os.Remove(f.Name()); err != nil {
		return fmt.Errorf("s3data: temporary directory: %w", err)
	}
	return nil
}

// uploadStore returns a copy of tusd's store for one upload handle: its
// client is a fresh guard (see guardedAPI) and it uploads one part at a
// time, so a failed write leaves a prefix of its bytes in S3.
func (s *Store) uploadStore() (s3store.S3Store, *guardedAPI) {
	guard := &guardedAPI{S3API: s.api}
	tus := s.tus
	tus.Service = guard
	tus.SetConcurrentPartUploads(1)
	return tus, guard
}

// abort aborts one multipart upload; a missing one is not an error.
func (s *Store) abort(ctx context.Context, objectID, multipartID string) error {
	_, err := s.api.AbortMultipartUpload(ctx, &s3.AbortMultipartUploadInput{
		Bucket:   aws.String(s.bucket),
		Key:      aws.String(s.objectKey(objectID)),
		UploadId: aws.String(multipartID),
	})
	if err != nil && !isNotFound(err) {
		return fmt.Errorf("abort the multipart upload: %w", err)
	}
	return nil
}

// abortAll aborts every multipart upload of objectID's key.
func (s *Store) abortAll(ctx context.Context, objectID string) error {
	key := s.objectKey(objectID)
	var errs []error
	in := &s3.ListMultipartUploadsInput{Bucket: aws.String(s.bucket), Prefix: aws.String(key)}
	for {
		out, err := s.api.ListMultipartUploads(ctx, in)
		if err != nil {
			if isNotFound(err) {
				return nil
			}
			s.log.Warn("list multipart uploads", zap.String("objectId", objectID), zap.Error(err))
			return fmt.Errorf("list the multipart uploads: %w", err)
		}
		for _, mu := range out.Uploads {
			if aws.ToString(mu.Key) != key || mu.UploadId == nil {
				continue
			}
			if err := s.abort(ctx, objectID, *mu.UploadId); err != nil {
				errs = append(errs, err)
			}
		}
		if !aws.ToBool(out.IsTruncated) || (aws.ToString(out.NextKeyMarker) == "" && aws.ToString(out.NextUploadIdMarker) == "") {
			break
		}
		in.KeyMarker, in.UploadIdMarker = out.NextKeyMarker, out.NextUploadIdMarker
	}
	return errors.Join(errs...)
}

// deleteKeys deletes keys in batches; missing keys are not errors.
func (s *Store) deleteKeys(ctx context.Context, keys []string) error {
	var errs []error
	for len(keys) > 0 {
		n := min(len(keys), deleteBatch)
		objs := make([]types.ObjectIdentifier, n)
		for i, k := range keys[:n] {
			objs[i] = types.ObjectIdentifier{Key: aws.String(k)}
		}
		keys = keys[n:]
		out, err := s.api.DeleteObjects(ctx, &s3.DeleteObjectsInput{
			Bucket: aws.String(s.bucket),
			Delete: &types.Delete{Objects: objs, Quiet: aws.Bool(true)},
		})
		if err != nil {
			errs = append(errs, fmt.Errorf("delete objects: %w", err))
			continue
		}
		for _, e := range out.Errors {
			if aws.ToString(e.Code) == "NoSuchKey" {
				continue
			}
			errs = append(errs, fmt.Errorf("delete %s: %s: %s", aws.ToString(e.Key), aws.ToString(e.Code), aws.ToString(e.Message)))
		}
	}
	return errors.Join(errs...)
}

// deleteStaging deletes the staging objects of objectID.
func (s *Store) deleteStaging(ctx context.Context, objectID string) error {
	l, err := s.list(ctx, objectID, s.stagePrefix(objectID), "", 0)
	if err != nil {
		return err
	}
	keys := make([]string, len(l.segs))
	for i, seg := range l.segs {
		keys[i] = seg.key
	}
	return s.deleteKeys(ctx, keys)
}

// isNotFound reports whether err is S3's answer for a missing key, upload
// or object.
func isNotFound(err error) bool {
	if _, ok := errors.AsType[*types.NoSuchKey](err); ok {
		return true
	}
	if _, ok := errors.AsType[*types.NoSuchUpload](err); ok {
		return true
	}
	if _, ok := errors.AsType[*types.NotFound](err); ok {
		return true
	}
	if apiErr, ok := errors.AsType[smithy.APIError](err); ok {
		switch apiErr.ErrorCode() {
		case "NoSuchKey", "NoSuchUpload", "NotFound":
			return true
		}
	}
	return false
}
