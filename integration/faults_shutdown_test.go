package integration_test

import (
	"bytes"
	"fmt"
	"net"
	"syscall"
	"testing"
	"time"

	"github.com/tusgate/tusgate/gateway"
	"github.com/tusgate/tusgate/internal/tusclient"
)

// Graceful shutdown: SIGTERM drains and exits 0; a second SIGTERM during
// the drain exits at once. Either way the upload resumes after a restart
// and is delivered as one identical video.
func TestFaultShutdown(t *testing.T) {
	t.Parallel()

	// SIGTERM with a client PATCH stalled mid-body and part 2 held in
	// flight at api.video: the PATCH gets a 5xx, the part is handed back,
	// and the process exits 0 well within --shutdown-timeout.
	t.Run("SIGTERM", func(t *testing.T) {
		t.Parallel()
		const shutdownTimeout = 10 * time.Second
		forEachStore(t, func(t *testing.T, kind string) {
			emu := newEmulator(t)
			g := newGate(t)
			token := emu.CreateToken(time.Hour)
			holdPart(emu, token, 2, g)
			gw := startGateway(t, emu, gatewayOptions{Store: kind, Args: []string{"--shutdown-timeout", shutdownTimeout.String()}})
			data := testData(440, 12*mib)
			size := int64(len(data))
			u := create(t, gw, size, meta(token))
			id := uploadID(t, u)
			patchRange(t, gw, u, data, 0, 10*mib, mib)
			waitFor(t, "part 2 to reach api.video", func() bool { return partSeen(emu, token, 2) })
			waitStatus(t, gw, id, func(s gateway.Status) bool { return s.Parts.Delivered == 1 })

			release := make(chan struct{})
			defer close(release)
			patchErr := make(chan error, 1)
			go func() { // owned by the test: it receives from patchErr below
				body := &blockingReader{r: bytes.NewReader(data[10*mib:]), limit: 512 << 10, release: release}
				_, err := gw.Tus.Patch(t.Context(), u, 10*mib, body, size-10*mib, -1)
				patchErr <- err
			}()
			waitFor(t, "the gateway to write the stalled PATCH's bytes", func() bool { return fileSize(t, gw, id) == 10*mib+512<<10 })

			start := time.Now()
			gw.Stop() // fails the test unless the exit status is 0
			took := time.Since(start)
			t.Logf("exit %v after SIGTERM", took.Round(time.Millisecond))
			if took >= shutdownTimeout {
				t.Errorf("graceful stop took %v, want less than the %v shutdown timeout", took, shutdownTimeout)
			}
			select {
			case err := <-patchErr:
				if code := tusclient.StatusCode(err); code < 500 {
					t.Errorf("PATCH running at SIGTERM: got status %d (%v), want a 5xx", code, err)
				} else {
					t.Logf("PATCH running at SIGTERM: %v", err)
				}
			case <-time.After(statusTimeout):
				t.Fatalf("PATCH running at SIGTERM got no answer within %v of the exit", statusTimeout)
			}
			g.open()

			gw.Restart()
			upload(t, gw, u, data, mib)
			finishDelivered(t, emu, gw, token, data, id)
		})
	})

	// A second SIGTERM while the first one drains (a client connection
	// holding a half-sent PATCH keeps the drain going for about 5 s) ends
	// the process at once.
	t.Run("second SIGTERM", func(t *testing.T) {
		t.Parallel()
		forEachStore(t, func(t *testing.T, kind string) {
			emu := newEmulator(t)
			gw := startGateway(t, emu, gatewayOptions{Store: kind, Args: []string{"--shutdown-timeout", "20s"}})
			token := emu.CreateToken(time.Hour)
			data := testData(441, 12*mib)
			u := create(t, gw, int64(len(data)), meta(token))
			id := uploadID(t, u)
			patchRange(t, gw, u, data, 0, 7*mib, mib)
			waitStatus(t, gw, id, func(s gateway.Status) bool { return s.Parts.Delivered == 1 })

			conn, err := net.Dial("tcp", gw.URL[len("http://"):])
			if err != nil {
				t.Fatalf("dial the gateway: %v", err)
			}
			defer conn.Close()
			if _, err := fmt.Fprintf(conn, "PATCH /files/%s HTTP/1.1\r\nHost: %s\r\nTus-Resumable: 1.0.0\r\n", id, gw.URL[len("http://"):]); err != nil {
				t.Fatalf("write half a request: %v", err)
			}

			p := gw.cur
			if err := p.cmd.Process.Signal(syscall.SIGTERM); err != nil {
				t.Fatalf("first SIGTERM: %v", err)
			}
			waitFor(t, "the gateway to start shutting down", func() bool { return logsContain(gw, `"shutting down"`) })
			select {
			case <-p.done:
				t.Fatalf("the gateway exited before the second SIGTERM (%v): the drain was not held", p.err)
			default:
			}
			start := time.Now()
			if err := p.cmd.Process.Signal(syscall.SIGTERM); err != nil {
				t.Fatalf("second SIGTERM: %v", err)
			}
			const quick = 2 * time.Second
			select {
			case <-p.done:
			case <-time.After(10 * time.Second):
				t.Fatalf("the gateway did not exit within 10s of the second SIGTERM")
			}
			took := time.Since(start)
			gw.cur = nil
			gw.transport.CloseIdleConnections()
			fmt.Fprintf(gw.out, "==== exit after a second SIGTERM: %v\n", p.err)
			t.Logf("exit %v after the second SIGTERM: %v", took.Round(time.Millisecond), p.err)
			if took > quick {
				t.Errorf("exit after the second SIGTERM took %v, want at most %v", took, quick)
			}

			gw.Restart()
			upload(t, gw, u, data, mib)
			finishDelivered(t, emu, gw, token, data, id)
		})
	})
}
