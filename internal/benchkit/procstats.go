package benchkit

import (
	"bufio"
	"bytes"
	"errors"
	"fmt"
	"os"
	"strconv"
	"strings"
	"syscall"
	"time"
	"unsafe"
)

// ProcStats is a process's resource use at one moment.
type ProcStats struct {
	// CPU is the process's total CPU time (user + system, every thread).
	CPU time.Duration
	// RSS and HWM are the current and peak resident set sizes in bytes.
	RSS, HWM int64
}

// ReadProcStats reads pid's CPU time (see ProcessCPU) and its resident set
// sizes from /proc/<pid>/status. A process without VmHWM (a zombie) is an
// error.
func ReadProcStats(pid int) (ProcStats, error) {
	cpu, err := ProcessCPU(pid)
	if err != nil {
		return ProcStats{}, err
	}
	f, err := os.Open("/proc/" + strconv.Itoa(pid) + "/status")
	if err != nil {
		return ProcStats{}, fmt.Errorf("read memory of process %d: %w", pid, err)
	}
	defer f.Close()
	st := ProcStats{CPU: cpu}
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		key, val, ok := strings.Cut(sc.Text(), ":")
		if !ok || (key != "VmRSS" && key != "VmHWM") {
			continue
		}
		kb, err := strconv.ParseInt(strings.TrimSuffix(strings.TrimSpace(val), " kB"), 10, 64)
		if err != nil {
			return ProcStats{}, fmt.Errorf("process %d status %s %q: %w", pid, key, val, err)
		}
		if key == "VmRSS" {
			st.RSS = kb << 10
		} else {
			st.HWM = kb << 10
		}
	}
	if err := sc.Err(); err != nil {
		return ProcStats{}, fmt.Errorf("read memory of process %d: %w", pid, err)
	}
	if st.HWM == 0 {
		return ProcStats{}, fmt.Errorf("process %d: no VmHWM in /proc/%d/status", pid, pid)
	}
	return st, nil
}

// ProcessCPU returns pid's CPU time (user + system of every thread,
// including exited ones) from its process CPU-time clock (nanosecond
// resolution), falling back to /proc/<pid>/stat (10 ms resolution).
func ProcessCPU(pid int) (time.Duration, error) {
	if d, err := cpuClock(pid); err == nil {
		return d, nil
	}
	b, err := os.ReadFile("/proc/" + strconv.Itoa(pid) + "/stat")
	if err != nil {
		return 0, fmt.Errorf("read CPU time of process %d: %w", pid, err)
	}
	d, err := statCPU(b)
	if err != nil {
		return 0, fmt.Errorf("process %d: %w", pid, err)
	}
	return d, nil
}

// statCPU returns utime + stime from the contents of /proc/<pid>/stat.
func statCPU(b []byte) (time.Duration, error) {
	// The command name (field 2) may hold spaces and parentheses; the
	// fields after its last ')' are fixed.
	i := bytes.LastIndexByte(b, ')')
	if i < 0 {
		return 0, errors.New("malformed /proc stat")
	}
	fields := strings.Fields(string(b[i+1:]))
	// fields[0] is field 3 (state); utime and stime are fields 14 and 15.
	if len(fields) < 13 {
		return 0, errors.New("short /proc stat")
	}
	utime, err1 := strconv.ParseInt(fields[11], 10, 64)
	stime, err2 := strconv.ParseInt(fields[12], 10, 64)
	if err := errors.Join(err1, err2); err != nil {
		return 0, fmt.Errorf("/proc stat times: %w", err)
	}
	const clockTicks = 100 // USER_HZ on Linux
	return time.Duration(utime+stime) * time.Second / clockTicks, nil
}

// cpuClock reads the process CPU-time clock of pid (clock_getcpuclockid's
// clock: user + system time of every thread, with nanosecond resolution).
func cpuClock(pid int) (time.Duration, error) {
	// MAKE_PROCESS_CPUCLOCK(pid, CPUCLOCK_SCHED) of the kernel's
	// posix-timers.h.
	const cpuclockSched = 2
	clock := (^uintptr(pid) << 3) | cpuclockSched
	var ts syscall.Timespec
	if _, _, errno := syscall.Syscall(syscall.SYS_CLOCK_GETTIME, clock, uintptr(unsafe.Pointer(&ts)), 0); errno != 0 {
		return 0, fmt.Errorf("CPU clock of process %d: %w", pid, errno)
	}
	return time.Duration(ts.Nano()), nil
}

// SelfCPU is the CPU time (user + system) of the calling process so far,
// or 0 when getrusage fails.
func SelfCPU() time.Duration {
	var ru syscall.Rusage
	if err := syscall.Getrusage(syscall.RUSAGE_SELF, &ru); err != nil {
		return 0
	}
	return time.Duration(ru.Utime.Nano() + ru.Stime.Nano())
}
