package integration_test

import (
	"bytes"
	"io"
	"sync/atomic"
	"testing"
	"time"

	"github.com/tusgate/tusgate/apivideo/apivideotest"
	"github.com/tusgate/tusgate/gateway"
)

// holdFirstPart2 makes the emulator hold the first request for part 2 (until
// it closes), so a test can stop the gateway while that part is in flight.
// Later part-2 requests go through.
func holdFirstPart2(emu *apivideotest.Server) {
	var held atomic.Bool
	emu.InjectFault(func(r apivideotest.FaultRequest) apivideotest.Fault {
		if r.IsUpload() && r.Part == 2 && held.CompareAndSwap(false, true) {
			return apivideotest.DelayFault(time.Hour)
		}
		return apivideotest.Fault{}
	})
}

// part2Seen reports whether the emulator received a request for part 2.
func part2Seen(emu *apivideotest.Server, token string) bool {
	for _, r := range uploadRequests(emu, token) {
		if r.Part == 2 {
			return true
		}
	}
	return false
}

// A gateway killed (SIGKILL) while part 2 is in flight and restarted on the
// same data dir and instance id re-sends part 2, takes the rest of the
// upload, and delivers one identical video.
func TestRestartAfterKill(t *testing.T) {
	t.Parallel()
	forEachStore(t, func(t *testing.T, kind string) {
		emu := newEmulator(t)
		holdFirstPart2(emu)
		gw := startGateway(t, emu, gatewayOptions{Store: kind})
		token := emu.CreateToken(time.Hour)
		data := testData(6, 12*mib)

		u := create(t, gw, int64(len(data)), meta(token))
		id := uploadID(t, u)
		patchRange(t, gw, u, data, 0, 11*mib, mib)
		waitFor(t, "part 2 to reach api.video", func() bool { return part2Seen(emu, token) })
		st, raw := waitStatus(t, gw, id, func(s gateway.Status) bool { return s.Parts.Delivered == 1 })
		if st.State != "forwarding" {
			t.Fatalf("status with part 2 in flight: got %s, want state forwarding", raw)
		}

		gw.Kill()
		gw.Restart()
		upload(t, gw, u, data, mib) // resumes from the offset HEAD reports
		st, _ = waitDelivered(t, gw, id)
		checkDelivered(t, emu, token, data, st)
		if n := len(uploadRequests(emu, token)); n != 4 {
			t.Errorf("upload requests: got %d, want 4 (part 2 twice)", n)
		}
	})
}

// blockingReader yields limit bytes of r, then blocks until release is
// closed and reports EOF.
type blockingReader struct {
	r       io.Reader
	limit   int64
	release <-chan struct{}
}

func (b *blockingReader) Read(p []byte) (int, error) {
	if b.limit <= 0 {
		<-b.release
		return 0, io.EOF
	}
	p = p[:min(int64(len(p)), b.limit)]
	n, err := b.r.Read(p)
	b.limit -= int64(n)
	return n, err
}

// On SIGTERM, with part 2 in flight to api.video and a client PATCH stalled
// mid-body, the gateway ends the PATCH, releases the part, exits 0 within
// its shutdown timeout, and after a restart the upload resumes and is
// delivered.
func TestRestartAfterGracefulStop(t *testing.T) {
	t.Parallel()
	forEachStore(t, func(t *testing.T, kind string) {
		emu := newEmulator(t)
		holdFirstPart2(emu)
		const shutdownTimeout = 15 * time.Second
		gw := startGateway(t, emu, gatewayOptions{Store: kind, Args: []string{"--shutdown-timeout", shutdownTimeout.String()}})
		token := emu.CreateToken(time.Hour)
		data := testData(7, 12*mib)
		size := int64(len(data))

		u := create(t, gw, size, meta(token))
		id := uploadID(t, u)
		patchRange(t, gw, u, data, 0, 10*mib, mib)
		waitFor(t, "part 2 to reach api.video", func() bool { return part2Seen(emu, token) })

		// A PATCH that sends 512 KiB of the last 2 MiB, then stalls.
		release := make(chan struct{})
		defer close(release)
		patchErr := make(chan error, 1)
		go func() { // owned by the test: it receives from patchErr below
			body := &blockingReader{r: bytes.NewReader(data[10*mib:]), limit: 512 << 10, release: release}
			_, err := gw.Tus.Patch(t.Context(), u, 10*mib, body, size-10*mib, -1)
			patchErr <- err
		}()
		waitStatus(t, gw, id, func(s gateway.Status) bool { return s.Received > 10*mib })

		start := time.Now()
		gw.Stop()
		if took := time.Since(start); took >= shutdownTimeout {
			t.Errorf("graceful stop took %v, want less than the %v shutdown timeout (the stalled PATCH was not ended)", took, shutdownTimeout)
		}
		select {
		case err := <-patchErr:
			if err == nil {
				t.Errorf("stalled PATCH during shutdown: got success, want an error")
			}
		case <-time.After(statusTimeout):
			t.Fatalf("stalled PATCH got no answer within %v of the gateway's exit", statusTimeout)
		}

		gw.Restart()
		info, err := gw.Tus.Head(t.Context(), u)
		if err != nil {
			t.Fatalf("HEAD after restart: %v", err)
		}
		if info.Offset < 10*mib || info.Offset > 10*mib+512<<10 {
			t.Errorf("offset after restart: got %d, want between %d and %d", info.Offset, 10*mib, 10*mib+512<<10)
		}
		upload(t, gw, u, data, mib)
		st, _ := waitDelivered(t, gw, id)
		checkDelivered(t, emu, token, data, st)
		if !bytes.Contains([]byte(gw.Output()), []byte(`"stopped"`)) {
			t.Errorf("gateway logs: no \"stopped\" message after SIGTERM")
		}
	})
}
