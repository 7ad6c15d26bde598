//go:build !linux

package gateway

import "errors"

// setRcvLowat is Linux-only: lowWater.stall relies on Linux waking a
// reader whose mark is lowered. Elsewhere bodies are read as they arrive.
func setRcvLowat(uintptr, int) error { return errors.ErrUnsupported }
