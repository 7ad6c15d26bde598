//go:build !linux

package gateway

import "errors"

// setRcvLowat is Linux-only: lowWater.stall relies on Linux waking a
// reader whose mark is lowered. Elsewhere bodies are read as they arrive.
func setRcvLowat(uintptr, int) error { return errors.ErrUnsupported }

// socketReadable says yes elsewhere: waitReadable returns at once and the
// next read waits as usual, holding its buffer.
func socketReadable(uintptr) bool { return true }
