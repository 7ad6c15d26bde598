//go:build !linux

package gateway

import (
	"errors"
	"os"
)

// punchHole is Linux-only (fallocate(2)); elsewhere delivered bytes stay
// on disk until the upload's file is removed.
func punchHole(*os.File, int64, int64) error { return errors.ErrUnsupported }
