package main

import (
	"fmt"
	"syscall"
	"time"
	"unsafe"
)

// cpuClock reads the process CPU-time clock of pid (clock_getcpuclockid's
// clock: user + system time of every thread, including exited ones).
func cpuClock(pid int) (time.Duration, error) {
	// MAKE_PROCESS_CPUCLOCK(pid, CPUCLOCK_SCHED) from the kernel's
	// posix-timers.h.
	const cpuclockSched = 2
	clock := (^uintptr(pid) << 3) | cpuclockSched
	var ts syscall.Timespec
	if _, _, errno := syscall.Syscall(syscall.SYS_CLOCK_GETTIME, clock, uintptr(unsafe.Pointer(&ts)), 0); errno != 0 {
		return 0, fmt.Errorf("CPU clock of process %d: %w", pid, errno)
	}
	return time.Duration(ts.Nano()), nil
}
