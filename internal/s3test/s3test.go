// Package s3test runs a throwaway S3-compatible server for tests: gofakes3
// (github.com/johannesboyne/gofakes3, pinned as a Go tool in go.mod) as a
// separate process serving real HTTP on a free 127.0.0.1 port, with one
// empty bucket.
//
// gofakes3 is pure Go (Apache-2.0), comes from the Go module proxy and builds
// in seconds, and implements what tusd's s3store needs: multipart uploads
// with ListParts, ranged GET, ListObjectsV2 with prefixes and pagination,
// DeleteObjects and ListMultipartUploads. Its limits, which tests must not
// rely on: it checks no signature (any credentials pass), it does not
// enforce S3's 5 MiB minimum for non-final parts, and it keeps multipart
// parts in memory whatever the backend. The server runs with its memory
// backend: the afero "fs" backend lists sub-directories as common prefixes
// even without a delimiter (unlike S3), and the bolt backend re-encodes
// every object as BSON and syncs to disk on each write.
package s3test

import (
	"bytes"
	"context"
	"crypto/rand"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"runtime"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/credentials"
	"github.com/aws/aws-sdk-go-v2/service/s3"
)

// The credentials and region the server's clients use. gofakes3 accepts any.
const (
	AccessKeyID     = "tusgate-test"
	SecretAccessKey = "tusgate-test-secret"
	Region          = "us-east-1"
)

// The server's module and main package, a tool dependency in go.mod.
const (
	gofakes3Module = "github.com/johannesboyne/gofakes3"
	gofakes3Pkg    = gofakes3Module + "/cmd/gofakes3"
)

// startTimeout bounds how long Start waits for the server to answer.
const startTimeout = 30 * time.Second

// binary is the gofakes3 executable, built once per test process. It is the
// only package-level state: a build cache shared by every test.
var binary struct {
	once sync.Once
	path string
	err  error
}

// Server is a running gofakes3 process with one bucket.
type Server struct {
	endpoint string
	bucket   string
	cmd      *exec.Cmd
	out      *portWriter
	exited   chan struct{} // closed when the process has exited
	waitErr  error         // the process's exit status, set before exited closes

	mu      sync.Mutex
	stopped bool // Stop was called: the exit is expected
}

// Start builds gofakes3 (once per version and toolchain), runs it on a free loopback
// port with an empty bucket, waits until the bucket answers, and stops it
// when t ends. If the process exits before that, the cleanup fails t with
// its output.
func Start(t testing.TB) *Server {
	t.Helper()
	bin, err := buildBinary()
	if err != nil {
		t.Fatalf("build gofakes3: %v", err)
	}
	bucket := "tusgate-test-" + strings.ToLower(rand.Text()[:16])
	out := newPortWriter()
	cmd := exec.Command(bin, "-backend", "mem", "-host", "127.0.0.1:0", "-initialbucket", bucket, "-quiet")
	cmd.Stdout = out
	cmd.Stderr = out
	if err := cmd.Start(); err != nil {
		t.Fatalf("start gofakes3: %v", err)
	}
	s := &Server{bucket: bucket, cmd: cmd, out: out, exited: make(chan struct{})}
	go func() {
		s.waitErr = cmd.Wait()
		close(s.exited)
	}()
	t.Cleanup(func() { s.cleanup(t) })

	timer := time.NewTimer(startTimeout)
	defer timer.Stop()
	select {
	case port := <-out.port:
		s.endpoint = "http://127.0.0.1:" + port
	case <-s.exited:
		t.Fatalf("gofakes3 exited before listening: %v\n%s", s.waitErr, out.String())
	case <-timer.C:
		t.Fatalf("gofakes3 did not report its port within %v:\n%s", startTimeout, out.String())
	}
	s.waitReady(t)
	return s
}

// waitReady polls HeadBucket until the server answers.
func (s *Server) waitReady(t testing.TB) {
	t.Helper()
	client := s.Client(t)
	deadline := time.Now().Add(startTimeout)
	for {
		ctx, cancel := context.WithTimeout(t.Context(), 2*time.Second)
		_, err := client.HeadBucket(ctx, &s3.HeadBucketInput{Bucket: aws.String(s.bucket)}, func(o *s3.Options) { o.RetryMaxAttempts = 1 })
		cancel()
		if err == nil {
			return
		}
		select {
		case <-s.exited:
			t.Fatalf("gofakes3 exited while starting: %v\n%s", s.waitErr, s.out.String())
		default:
		}
		if time.Now().After(deadline) {
			t.Fatalf("gofakes3 at %s does not answer: %v\n%s", s.endpoint, err, s.out.String())
		}
		poll := time.NewTimer(20 * time.Millisecond)
		select {
		case <-poll.C:
		case <-t.Context().Done():
			poll.Stop()
			t.Fatalf("waiting for gofakes3: %v", t.Context().Err())
		}
	}
}

// cleanup kills the process; if it had exited on its own, t fails with its
// output.
func (s *Server) cleanup(t testing.TB) {
	s.mu.Lock()
	stopped := s.stopped
	s.mu.Unlock()
	select {
	case <-s.exited:
		if !stopped {
			t.Errorf("gofakes3 exited during the test: %v\n%s", s.waitErr, s.out.String())
		}
		return
	default:
	}
	_ = s.cmd.Process.Kill()
	<-s.exited
}

// Stop kills the server now (to test what clients do when S3 is down). The
// cleanup then expects it gone.
func (s *Server) Stop(t testing.TB) {
	t.Helper()
	s.mu.Lock()
	s.stopped = true
	s.mu.Unlock()
	_ = s.cmd.Process.Kill()
	<-s.exited
}

// Endpoint returns the server's base URL, http://127.0.0.1:<port>.
func (s *Server) Endpoint() string { return s.endpoint }

// Bucket returns the name of the server's bucket.
func (s *Server) Bucket() string { return s.bucket }

// Client returns a new S3 client of the server (its own connections, as a
// separate process would have): path-style, static test credentials, region
// us-east-1, checksums only where S3 requires them.
func (s *Server) Client(t testing.TB) *s3.Client {
	t.Helper()
	return s3.New(s3.Options{
		Region:                     Region,
		BaseEndpoint:               aws.String(s.endpoint),
		UsePathStyle:               true,
		Credentials:                credentials.NewStaticCredentialsProvider(AccessKeyID, SecretAccessKey, ""),
		RequestChecksumCalculation: aws.RequestChecksumCalculationWhenRequired,
		ResponseChecksumValidation: aws.ResponseChecksumValidationWhenRequired,
	})
}

// Env returns the environment a child process needs to reach the server
// through the standard AWS credential chain: static keys, the region, and
// no EC2 metadata look-ups.
func (s *Server) Env() []string {
	return []string{
		"AWS_ACCESS_KEY_ID=" + AccessKeyID,
		"AWS_SECRET_ACCESS_KEY=" + SecretAccessKey,
		"AWS_REGION=" + Region,
		"AWS_EC2_METADATA_DISABLED=true",
	}
}

// buildBinary returns the gofakes3 executable in the user cache directory
// (a temporary directory when there is none), named for the gofakes3
// version go.mod selects and the Go toolchain, and builds it when it is not
// there yet. A build goes to a private file renamed into place, so parallel
// test processes never run a half-written binary.
func buildBinary() (string, error) {
	binary.once.Do(func() {
		binary.path, binary.err = findOrBuild()
	})
	return binary.path, binary.err
}

func findOrBuild() (string, error) {
	version, err := goCommand("list", "-m", "-f", "{{.Version}}", gofakes3Module)
	if err != nil {
		return "", err
	}
	dir, err := os.UserCacheDir()
	if err != nil {
		dir = os.TempDir()
	}
	dir = filepath.Join(dir, "tusgate-test")
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return "", err
	}
	name := fmt.Sprintf("gofakes3-%s-%s-%s-%s", strings.TrimSpace(version), runtime.Version(), runtime.GOOS, runtime.GOARCH)
	final := filepath.Join(dir, name)
	if _, err := os.Stat(final); err == nil {
		return final, nil
	}
	tmp, err := os.CreateTemp(dir, name+".build-*")
	if err != nil {
		return "", err
	}
	tmpName := tmp.Name()
	_ = tmp.Close()
	defer os.Remove(tmpName)
	if _, err := goCommand("build", "-o", tmpName, gofakes3Pkg); err != nil {
		return "", err
	}
	if err := os.Rename(tmpName, final); err != nil {
		return "", err
	}
	return final, nil
}

// goCommand runs the go command with args and returns its output.
func goCommand(args ...string) (string, error) {
	var stdout, stderr bytes.Buffer
	cmd := exec.Command(goTool(), args...)
	cmd.Stdout = &stdout
	cmd.Stderr = &stderr
	if err := cmd.Run(); err != nil {
		return "", fmt.Errorf("go %s: %w\n%s", strings.Join(args, " "), err, stderr.String())
	}
	return stdout.String(), nil
}

// goTool returns the go command of the toolchain running the tests, or the
// one on PATH.
func goTool() string {
	name := "go"
	if runtime.GOOS == "windows" {
		name += ".exe"
	}
	//lint:ignore SA1019 the toolchain's own go command is the right one to build with.
	if root := runtime.GOROOT(); root != "" {
		p := filepath.Join(root, "bin", name)
		if _, err := os.Stat(p); err == nil {
			return p
		}
	}
	return name
}

// portLine is how gofakes3 reports its listening port.
var portLine = regexp.MustCompile(`using port: (\d+)`)

// portWriter collects the server's output and reports its port once.
type portWriter struct {
	mu   sync.Mutex
	buf  bytes.Buffer
	sent bool
	port chan string
}

func newPortWriter() *portWriter { return &portWriter{port: make(chan string, 1)} }

// Write implements io.Writer.
func (w *portWriter) Write(p []byte) (int, error) {
	w.mu.Lock()
	defer w.mu.Unlock()
	w.buf.Write(p)
	if !w.sent {
		if m := portLine.FindSubmatch(w.buf.Bytes()); m != nil {
			w.sent = true
			w.port <- string(m[1])
		}
	}
	return len(p), nil
}

// String returns everything the server wrote so far.
func (w *portWriter) String() string {
	w.mu.Lock()
	defer w.mu.Unlock()
	return w.buf.String()
}
