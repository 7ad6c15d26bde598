package integration_test

import (
	"bytes"
	"io"
	"net/http"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/tusgate/tusgate/apivideo/apivideotest"
	"github.com/tusgate/tusgate/internal/tusclient"
	"github.com/tusgate/tusgate/store"
)

// metaWithDeadline returns upload metadata with the token, its deadline as
// `tokenExpiresAt`, and a file name.
func metaWithDeadline(token string, deadline time.Time) map[string]string {
	m := meta(token)
	m["tokenExpiresAt"] = deadline.UTC().Format(time.RFC3339Nano)
	return m
}

// createToken creates an emulator token valid for ttl and returns it with
// bounds on its expiry: the emulator reads its clock between before and
// after, so the token expires in [before+ttl, after+ttl].
func createToken(emu *apivideotest.Server, ttl time.Duration) (token string, expiresFrom, expiresBy time.Time) {
	before := time.Now()
	token = emu.CreateToken(ttl)
	return token, before.Add(ttl), time.Now().Add(ttl)
}

// checkNear fails the test unless got is within tolerance of want.
func checkNear(t *testing.T, what string, got *time.Time, want time.Time, tolerance time.Duration) {
	t.Helper()
	if got == nil {
		t.Errorf("%s: got null, want %s", what, want.UTC().Format(time.RFC3339Nano))
		return
	}
	if d := got.Sub(want); d < -tolerance || d > tolerance {
		t.Errorf("%s: got %s, want %s ± %v", what, got.UTC().Format(time.RFC3339Nano), want.UTC().Format(time.RFC3339Nano), tolerance)
	}
}

// pacedReader yields the bytes of r at chunk bytes per tick, whatever the
// size of the reads: a client with a slow uplink.
type pacedReader struct {
	r      io.Reader
	chunk  int
	tick   <-chan time.Time
	done   <-chan struct{} // ends a Read waiting for a tick
	budget int
	// readyAfter is a byte count; readyAt (Unix ns, set by Read, read by
	// the test) is when that many bytes had been handed out.
	readyAfter int64
	readyAt    atomic.Int64
	n          int64
}

func (p *pacedReader) Read(b []byte) (int, error) {
	if p.budget == 0 {
		select {
		case <-p.tick:
		case <-p.done:
			return 0, errClientGaveUp
		}
		p.budget = p.chunk
	}
	n, err := p.r.Read(b[:min(len(b), p.budget)])
	p.budget -= n
	p.n += int64(n)
	if p.n >= p.readyAfter {
		p.readyAt.CompareAndSwap(0, time.Now().UnixNano())
	}
	return n, err
}

// Under load (one worker, three big uploads whose parts api.video answers
// slowly), the part 1 of an upload with a 20 s token, sent by a client at
// about 1 MiB/s, overtakes the big uploads' later parts and reaches
// api.video before the token expires, where first-come-first-served would
// have sent it after every big part, past the deadline. Every upload is
// delivered intact. The deadline comes from `tokenExpiresAt` (embedded
// store) or from api.video, looked up with the API key (Redis store).
func TestFirstPartBeatsDeadlineUnderLoad(t *testing.T) {
	t.Parallel()
	const (
		largeCount = 3
		largeSize  = 20 * mib // 4 parts each
		// largeDelay is how long api.video holds each big upload's part:
		// the 12 big parts keep the one worker busy for more than slowTTL.
		largeDelay = 2 * time.Second
		slowSize   = 6 * mib
		slowTTL    = 20 * time.Second
		// slowChunk bytes every slowTick is 1 MiB/s.
		slowChunk = 64 << 10
		slowTick  = time.Second / (mib / slowChunk)
	)
	tests := []struct {
		store  string
		lookup bool // the gateway asks api.video for the deadline
	}{
		{"embedded", false},
		{"redis", true},
	}
	for _, tc := range tests {
		name := tc.store + " tokenExpiresAt"
		if tc.lookup {
			name = tc.store + " token lookup"
		}
		t.Run(name, func(t *testing.T) {
			t.Parallel()
			emu := newEmulator(t)
			args := []string{"--workers", "1"}
			if tc.lookup {
				args = append(args, "--apivideo-api-key", apivideotest.DefaultAPIKey)
			}
			gw := startGateway(t, emu, gatewayOptions{Store: tc.store, Args: args})

			// Every token exists before any upload request, so each big
			// part's hold counts against the slow token's lifetime.
			largeTokens := make([]string, largeCount)
			isLarge := map[string]bool{}
			for i := range largeTokens {
				largeTokens[i] = emu.CreateToken(0)
				isLarge[largeTokens[i]] = true
			}
			slowToken, expiresFrom, expiresBy := createToken(emu, slowTTL)
			emu.InjectFault(func(r apivideotest.FaultRequest) apivideotest.Fault {
				if r.IsUpload() && isLarge[r.Token] { // isLarge is read-only from here on
					return apivideotest.DelayFault(largeDelay)
				}
				return apivideotest.Fault{}
			})

			type result struct {
				name string
				err  error
			}
			results := make(chan result, largeCount+1)
			largeData := make([][]byte, largeCount)
			largeURLs := make([]string, largeCount)
			for i := range largeCount {
				largeData[i] = testData(uint64(300+i), largeSize)
				largeURLs[i] = create(t, gw, largeSize, meta(largeTokens[i]))
			}
			for i := range largeCount {
				go func() { // owned by the test: it receives every result below
					err := gw.Tus.Upload(t.Context(), largeURLs[i], bytes.NewReader(largeData[i]), largeSize, largeSize)
					results <- result{"big upload " + string(rune('A'+i)), err}
				}()
			}

			slowData := testData(310, slowSize)
			slowMeta := metaWithDeadline(slowToken, expiresFrom)
			if tc.lookup {
				slowMeta = meta(slowToken)
			}
			slowURL := create(t, gw, slowSize, slowMeta)
			slowID := uploadID(t, slowURL)
			tick := time.NewTicker(slowTick)
			defer tick.Stop()
			slow := &pacedReader{r: bytes.NewReader(slowData), chunk: slowChunk, tick: tick.C, done: t.Context().Done(), readyAfter: partSize}
			go func() { // owned by the test: it receives every result below
				_, err := gw.Tus.Patch(t.Context(), slowURL, 0, slow, slowSize, -1)
				results <- result{"slow upload", err}
			}()
			for range largeCount + 1 {
				if r := <-results; r.err != nil {
					t.Errorf("%s: %v", r.name, r.err)
				}
			}
			if t.Failed() {
				t.FailNow()
			}

			for i := range largeCount {
				st, _ := waitDelivered(t, gw, uploadID(t, largeURLs[i]))
				checkDelivered(t, emu, largeTokens[i], largeData[i], st)
			}
			st, _ := waitDelivered(t, gw, slowID)
			checkDelivered(t, emu, slowToken, slowData, st)
			checkNear(t, "slow upload tokenDeadline", st.TokenDeadline, expiresFrom, 2*time.Second)

			var slowPart1 *apivideotest.Request
			var lastLarge apivideotest.Request
			for _, r := range emu.Requests() {
				switch {
				case r.Method != http.MethodPost || r.Path != "/upload":
				case r.Token == slowToken && r.Part == 1 && r.Accepted && slowPart1 == nil:
					slowPart1 = &r
				case isLarge[r.Token]:
					lastLarge = r
				}
			}
			if slowPart1 == nil {
				t.Fatal("api.video accepted no part 1 of the slow upload")
			}
			if !slowPart1.Time.Before(expiresFrom) {
				t.Errorf("slow upload's part 1 accepted at %s, want before its token expired at %s",
					slowPart1.Time.Format(time.RFC3339Nano), expiresFrom.Format(time.RFC3339Nano))
			}
			overtaken := 0
			for _, r := range emu.Requests() {
				if r.Seq > slowPart1.Seq && r.Method == http.MethodPost && r.Path == "/upload" && isLarge[r.Token] {
					overtaken++
				}
			}
			t.Logf("slow part 1: bytes ready %v after the token, sent %v after it (%v before expiry); %d big-upload requests went after it; the last one %v after the token",
				time.Unix(0, slow.readyAt.Load()).Sub(expiresFrom.Add(-slowTTL)).Round(time.Millisecond),
				slowPart1.Time.Sub(expiresFrom.Add(-slowTTL)).Round(time.Millisecond),
				expiresFrom.Sub(slowPart1.Time).Round(time.Millisecond), overtaken,
				lastLarge.Time.Sub(expiresFrom.Add(-slowTTL)).Round(time.Millisecond))
			if slowPart1.Seq > lastLarge.Seq {
				t.Errorf("slow upload's part 1 was request %d, after the last big-upload request %d: it did not overtake the queued big parts", slowPart1.Seq, lastLarge.Seq)
			}
			// The test's premise: the big parts kept the worker busy past the
			// slow token's expiry, so sending the slow part 1 after them
			// (first come, first served) would have missed the deadline.
			if !lastLarge.Time.After(expiresBy) {
				t.Errorf("premise: the last big-upload part went at %s, before the slow token expired (%s): the load was too light to matter",
					lastLarge.Time.Format(time.RFC3339Nano), expiresBy.Format(time.RFC3339Nano))
			}
			if tc.lookup {
				looked := false
				for _, r := range emu.Requests() {
					looked = looked || (r.Method == http.MethodGet && r.Path == "/upload-tokens/"+slowToken)
				}
				if !looked {
					t.Errorf("the gateway did not look the slow token up (GET /upload-tokens/{token})")
				}
			}
			for _, tok := range append(largeTokens, slowToken) {
				checkNoToken(t, tok, map[string]string{"gateway logs": gw.Output()})
			}
		})
	}
}

// A delegated upload whose client stalls after 1 MiB, with a token that
// expires 3 s after creation, ends failed (deadline_missed) shortly after
// the deadline, without the client doing anything; the client's next PATCH
// and HEAD get 410, and api.video never hears of the token.
func TestStalledClientMissesDeadline(t *testing.T) {
	t.Parallel()
	const (
		ttl = 3 * time.Second
		// grace bounds how long after the deadline the failure may show.
		grace = 5 * time.Second
	)
	forEachStore(t, func(t *testing.T, kind string) {
		emu := newEmulator(t)
		gw := startGateway(t, emu, gatewayOptions{Store: kind})
		token, deadline, _ := createToken(emu, ttl)
		data := testData(320, 6*mib)

		u := create(t, gw, int64(len(data)), metaWithDeadline(token, deadline))
		id := uploadID(t, u)
		patchRange(t, gw, u, data, 0, mib, mib)
		_, st, raw := getStatus(t, gw, id)
		if st.State != store.StateReceiving {
			t.Fatalf("status after 1 MiB: got %s, want state receiving", raw)
		}
		checkNear(t, "tokenDeadline", st.TokenDeadline, deadline, time.Millisecond)

		// The client stalls: only the status is polled from here on.
		tick := time.NewTicker(pollInterval)
		defer tick.Stop()
		for {
			_, st, raw = getStatus(t, gw, id)
			now := time.Now()
			if st.State.Terminal() {
				if now.Before(deadline) {
					t.Errorf("upload ended at %s, before its token deadline %s", now.Format(time.RFC3339Nano), deadline.Format(time.RFC3339Nano))
				}
				break
			}
			if now.After(deadline.Add(grace)) {
				t.Fatalf("upload not failed %v after its token deadline passed with part 1 incomplete; status: %s", grace, raw)
			}
			<-tick.C
		}
		if st.State != store.StateFailed || st.Error == nil || st.Error.Reason != store.ReasonDeadlineMissed {
			t.Fatalf("status after the deadline: got %s, want state failed, error.reason %s", raw, store.ReasonDeadlineMissed)
		}

		_, err := gw.Tus.Patch(t.Context(), u, mib, bytes.NewReader(data[mib:2*mib]), mib, -1)
		if code := tusclient.StatusCode(err); code != http.StatusGone {
			t.Errorf("PATCH after the deadline: got %d (%v), want 410", code, err)
		} else if body := strings.ToLower(err.(*tusclient.HTTPError).Body); !strings.Contains(body, "deadline") || !strings.Contains(body, "token") {
			t.Errorf("PATCH after the deadline: body %q, want it to mention the token deadline", body)
		}
		_, err = gw.Tus.Head(t.Context(), u)
		if code := tusclient.StatusCode(err); code != http.StatusGone {
			t.Errorf("HEAD after the deadline: got %d (%v), want 410", code, err)
		}
		if n := len(uploadRequests(emu, token)); n != 0 {
			t.Errorf("upload requests to api.video with the token: got %d, want 0", n)
		}
		_, _, raw = getStatus(t, gw, id)
		checkNoToken(t, token, map[string]string{"status JSON": string(raw), "gateway logs": gw.Output()})
	})
}
