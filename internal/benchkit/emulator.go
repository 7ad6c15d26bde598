package benchkit

import (
	"context"
	"encoding/json"
	"flag"
	"fmt"
	"io"
	"net/http"
	"os"
	"strconv"
	"strings"

	"github.com/tusgate/tusgate/apivideo/apivideotest"
)

// ServeEmulatorCommand is the hidden subcommand a tool re-executes itself
// with to run the api.video emulator in a process of its own (see
// StartEmulator); its main dispatches it to ServeEmulator.
const ServeEmulatorCommand = "serve-emulator"

// MaxTokens bounds one POST /tokens to the emulator's control API.
const MaxTokens = 100_000

// ServeEmulator is the serve-emulator subcommand: the api.video emulator
// (keeping each part's size and SHA-256, not its bytes) and a control API
// on a second port (--listen, default 127.0.0.1:0), until ctx ends or
// stdin closes. Its ready line is "listening EMULATOR_URL CONTROL_ADDR".
//
// The control API answers POST /tokens?n=N with a JSON array of N upload
// tokens that never expire; setup, when not nil, adds the tool's own
// routes to it (and may hook the emulator) before it serves.
func ServeEmulator(ctx context.Context, args []string, stdin io.Reader, stdout, stderr io.Writer, setup func(*http.ServeMux, *apivideotest.Server)) error {
	fs := flag.NewFlagSet(ServeEmulatorCommand, flag.ContinueOnError)
	fs.SetOutput(stderr)
	listen := fs.String("listen", "127.0.0.1:0", "listen address of the control API (the emulator picks its own port)")
	hash := fs.Bool("hash", true, "compute each part's SHA-256 (false: sizes only, so hashing does not cap forwarding)")
	if err := fs.Parse(args); err != nil {
		return err
	}
	emu := apivideotest.NewServer(apivideotest.WithKeepBytes(false), apivideotest.WithHashing(*hash))
	defer emu.Close()
	mux := http.NewServeMux()
	mux.HandleFunc("POST /tokens", func(w http.ResponseWriter, r *http.Request) {
		n, err := strconv.Atoi(r.URL.Query().Get("n"))
		if err != nil || n < 0 || n > MaxTokens {
			http.Error(w, "n must be 0.."+strconv.Itoa(MaxTokens), http.StatusBadRequest)
			return
		}
		tokens := make([]string, n)
		for i := range tokens {
			tokens[i] = emu.CreateToken(0)
		}
		ReplyJSON(w, tokens)
	})
	if setup != nil {
		setup(mux, emu)
	}
	return Serve(ctx, *listen, mux, stdin, stdout, func(addr string) string { return emu.URL + " " + addr })
}

// Emulator is a running serve-emulator child process.
type Emulator struct {
	// Proc is the child process.
	Proc *Proc
	// URL is the api.video base URL to give tusgate.
	URL     string
	control string // the control API's base URL
	hc      *http.Client
}

// StartEmulator runs self (the tool's own executable) with the
// serve-emulator subcommand and waits until it is ready; hc talks to its
// control API. hash false makes the emulator keep only sizes (its SHA-256
// would otherwise cap forwarding below 1 GB/s).
func StartEmulator(ctx context.Context, self string, hc *http.Client, hash bool) (*Emulator, error) {
	p, line, err := StartProc(ctx, ProcSpec{
		Name: "emulator", Path: self, Args: []string{ServeEmulatorCommand, "-hash=" + strconv.FormatBool(hash)},
		Env: os.Environ(), Stdin: true, Ready: Ready,
	})
	if err != nil {
		return nil, err
	}
	apiURL, ctl, ok := strings.Cut(line, " ")
	if !ok {
		p.Kill()
		return nil, fmt.Errorf("emulator: malformed ready line %q", line)
	}
	return &Emulator{Proc: p, URL: apiURL, control: "http://" + ctl, hc: hc}, nil
}

// Close ends the emulator. It accepts nil.
func (e *Emulator) Close() {
	if e != nil {
		e.Proc.Kill()
	}
}

// Tokens creates n upload tokens that never expire.
func (e *Emulator) Tokens(ctx context.Context, n int) ([]string, error) {
	var out []string
	for len(out) < n {
		k := min(n-len(out), MaxTokens)
		var got []string
		if err := e.Call(ctx, http.MethodPost, "/tokens?n="+strconv.Itoa(k), &got); err != nil {
			return nil, fmt.Errorf("emulator tokens: %w", err)
		}
		if len(got) != k {
			return nil, fmt.Errorf("emulator tokens: got %d, want %d", len(got), k)
		}
		out = append(out, got...)
	}
	return out, nil
}

// Call sends method path (such as "/tokens?n=3") to the control API and
// decodes its 200 OK JSON answer into out; any other status is an error
// with the start of the body.
func (e *Emulator) Call(ctx context.Context, method, path string, out any) error {
	req, err := http.NewRequestWithContext(ctx, method, e.control+path, nil)
	if err != nil {
		return err
	}
	resp, err := e.hc.Do(req)
	if err != nil {
		return err
	}
	defer DrainClose(resp.Body)
	if resp.StatusCode != http.StatusOK {
		return fmt.Errorf("%s %s: %s: %s", method, path, resp.Status, ReadSome(resp.Body))
	}
	return json.NewDecoder(resp.Body).Decode(out)
}
