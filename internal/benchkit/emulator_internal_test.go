package benchkit

import (
	"bufio"
	"io"
	"net/http"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/tusgate/tusgate/apivideo/apivideotest"
)

// TestServeEmulator runs the serve-emulator subcommand in-process and
// talks to its control API as the tools do.
func TestServeEmulator(t *testing.T) {
	stdinR, stdinW := io.Pipe()
	stdoutR, stdoutW := io.Pipe()
	done := make(chan error, 1)
	go func() {
		done <- ServeEmulator(t.Context(), nil, stdinR, stdoutW, io.Discard, func(mux *http.ServeMux, emu *apivideotest.Server) {
			mux.HandleFunc("GET /own", func(w http.ResponseWriter, r *http.Request) { ReplyJSON(w, emu.URL) })
		})
	}()
	line, err := bufio.NewReader(stdoutR).ReadString('\n')
	if err != nil {
		t.Fatal(err)
	}
	apiURL, ctl, ok := strings.Cut(Ready(strings.TrimSuffix(line, "\n")), " ")
	if !ok || !strings.HasPrefix(apiURL, "http://") {
		t.Fatalf("ready line %q: want listening EMULATOR_URL CONTROL_ADDR", line)
	}
	e := &Emulator{URL: apiURL, control: "http://" + ctl, hc: &http.Client{}}

	tokens, err := e.Tokens(t.Context(), 3)
	if err != nil {
		t.Fatal(err)
	}
	if len(tokens) != 3 || slices.Contains(tokens, "") || len(slices.Compact(slices.Sorted(slices.Values(tokens)))) != 3 {
		t.Errorf("Tokens(3): got %q, want 3 distinct tokens", tokens)
	}
	var own string
	if err := e.Call(t.Context(), http.MethodGet, "/own", &own); err != nil || own != apiURL {
		t.Errorf("the tool's own route: got %q, %v; want %q", own, err, apiURL)
	}
	var none []string
	err = e.Call(t.Context(), http.MethodPost, "/tokens?n=-1", &none)
	if err == nil || !strings.Contains(err.Error(), "400 Bad Request: n must be 0..100000") {
		t.Errorf("POST /tokens?n=-1: got %v, want 400 with the bound", err)
	}

	stdinW.Close()
	select {
	case err := <-done:
		if err != nil {
			t.Errorf("ServeEmulator after stdin closed: got %v, want nil", err)
		}
	case <-time.After(10 * time.Second):
		t.Fatal("ServeEmulator did not return after stdin closed")
	}
}
