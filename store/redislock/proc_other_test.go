//go:build !linux

package redislock_test

import "os/exec"

// dieWithParent does nothing where the kernel cannot kill a child with its
// parent: the test's cleanup kills the process.
func dieWithParent(*exec.Cmd) {}
