package apivideo_test

import (
	"bufio"
	"flag"
	"fmt"
	"io"
	"os"
	"os/exec"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/tusgate/tusgate/apivideo"
	"github.com/tusgate/tusgate/apivideo/apivideotest"
)

// emulatorChildEnv makes this test binary serve an emulator instead of
// running tests (see TestMain): BenchmarkUploadPart runs the emulator in a
// process of its own, so this process's CPU time is the client's alone.
const emulatorChildEnv = "APIVIDEO_TEST_EMULATOR_CHILD"

// emulatorHashing makes BenchmarkUploadPart's emulator hash what it
// receives, as tests' emulators do; without it the emulator keeps sizes
// only, so that its SHA-256 (0.6 to 0.9 CPU-s/GB) does not cap the upload.
var emulatorHashing = flag.Bool("emulator-hashing", false, "BenchmarkUploadPart: the emulator computes SHA-256 sums")

func TestMain(m *testing.M) {
	if mode := os.Getenv(emulatorChildEnv); mode != "" {
		serveEmulatorChild(mode == "hash")
		return
	}
	os.Exit(m.Run())
}

// serveEmulatorChild runs an emulator keeping sizes (and sums if hash),
// prints "URL TOKEN" and serves until stdin closes.
func serveEmulatorChild(hash bool) {
	srv := apivideotest.NewServer(apivideotest.WithKeepBytes(false), apivideotest.WithHashing(hash))
	defer srv.Close()
	fmt.Println(srv.URL, srv.CreateToken(0))
	_, _ = io.Copy(io.Discard, os.Stdin)
}

// emulatorChild is a running serveEmulatorChild process.
type emulatorChild struct {
	cmd        *exec.Cmd
	stdin      io.Closer
	url, token string
}

func startEmulatorChild(b *testing.B) *emulatorChild {
	b.Helper()
	cmd := exec.Command(os.Args[0], "-test.run=^$")
	mode := "sizes"
	if *emulatorHashing {
		mode = "hash"
	}
	cmd.Env = append(os.Environ(), emulatorChildEnv+"="+mode)
	cmd.Stderr = os.Stderr
	stdin, err := cmd.StdinPipe()
	if err != nil {
		b.Fatal(err)
	}
	stdout, err := cmd.StdoutPipe()
	if err != nil {
		b.Fatal(err)
	}
	if err := cmd.Start(); err != nil {
		b.Fatal(err)
	}
	e := &emulatorChild{cmd: cmd, stdin: stdin}
	b.Cleanup(func() { e.stop(b) })
	line, err := bufio.NewReader(stdout).ReadString('\n')
	var ok bool
	e.url, e.token, ok = strings.Cut(strings.TrimSpace(line), " ")
	if err != nil || !ok {
		b.Fatalf("emulator child: ready line %q, %v", line, err)
	}
	return e
}

// stop ends the child and returns the CPU time it used.
func (e *emulatorChild) stop(b *testing.B) time.Duration {
	if e.cmd.ProcessState != nil {
		return e.cmd.ProcessState.UserTime() + e.cmd.ProcessState.SystemTime()
	}
	e.stdin.Close()
	if err := e.cmd.Wait(); err != nil {
		b.Errorf("emulator child: %v", err)
	}
	return e.cmd.ProcessState.UserTime() + e.cmd.ProcessState.SystemTime()
}

// processCPU is the CPU time (user and system) this process used so far.
func processCPU(b *testing.B) time.Duration {
	var ru syscall.Rusage
	if err := syscall.Getrusage(syscall.RUSAGE_SELF, &ru); err != nil {
		b.Fatal(err)
	}
	return time.Duration(ru.Utime.Nano() + ru.Stime.Nano())
}

// BenchmarkUploadPart sends 200 MiB parts (the largest api.video takes)
// from a file in the page cache to an emulator in another process over
// loopback, alternately with sendfile(2) and by the old copy path (the
// same file section, hidden from UploadPart). Run it with -benchtime=5x
// (and -emulator-hashing to have the emulator hash, as in tests). It
// reports, per path, MB/s, this process's CPU s/GB and the emulator's, and
// the ratios sendfile/copy.
func BenchmarkUploadPart(b *testing.B) {
	const size = apivideotest.MaxPartSize
	path := writePatternFile(b, 1, size)
	type mode struct {
		name string
		hide bool
		emu  *emulatorChild
		c    *apivideo.Client
		wall time.Duration
		cpu  time.Duration
	}
	modes := []*mode{{name: "sendfile"}, {name: "copy", hide: true}}
	for _, m := range modes {
		m.emu = startEmulatorChild(b)
		m.c = apivideo.New(m.emu.url)
	}
	b.ResetTimer()
	for range b.N {
		for _, m := range modes {
			rng := openRange(b, path, 0, size)
			var body io.Reader = rng
			if m.hide {
				body = struct{ io.Reader }{rng}
			}
			cpu0, t0 := processCPU(b), time.Now()
			_, err := m.c.UploadPart(b.Context(), apivideo.PartRequest{
				Token: m.emu.token, Part: 1, TotalParts: 1, Body: body, Size: size,
			})
			m.wall += time.Since(t0)
			m.cpu += processCPU(b) - cpu0
			rng.f.Close()
			if err != nil {
				b.Fatalf("%s: %v", m.name, err)
			}
		}
	}
	b.StopTimer()

	gb := float64(b.N) * float64(size) / 1e9
	var mbs, cpu, emu [2]float64
	for i, m := range modes {
		mbs[i] = gb * 1e3 / m.wall.Seconds()
		cpu[i] = m.cpu.Seconds() / gb
		emu[i] = m.emu.stop(b).Seconds() / gb
		b.ReportMetric(mbs[i], m.name+"-MB/s")
		b.ReportMetric(cpu[i], m.name+"-cpu-s/GB")
		b.ReportMetric(emu[i], m.name+"-emulator-cpu-s/GB")
	}
	if got := apivideo.SentByFile(modes[0].c); got < int64(b.N)*size*9/10 {
		b.Errorf("sendfile sent %d bytes, want ≥ 90%% of %d", got, int64(b.N)*size)
	}
	b.ReportMetric(mbs[0]/mbs[1], "speed-ratio")
	b.ReportMetric(cpu[0]/cpu[1], "cpu-ratio")
	b.ReportMetric(0, "ns/op")
}
