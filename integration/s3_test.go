package integration_test

import (
	"testing"

	"github.com/tusgate/tusgate/gateway"
	"github.com/tusgate/tusgate/gateway/s3data"
	"github.com/tusgate/tusgate/internal/s3test"
)

// s3Backend reads the bucket of srv as the gateway instances do.
func s3Backend(t *testing.T, srv *s3test.Server) gateway.Backend {
	t.Helper()
	be, err := s3data.NewWithClient(srv.Client(t), s3data.Config{Bucket: srv.Bucket(), TempDir: t.TempDir()})
	if err != nil {
		t.Fatalf("S3 backend: %v", err)
	}
	return be
}
