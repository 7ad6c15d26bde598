package integration_test

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"maps"
	"net/http"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/tusgate/tusgate/gateway"
	"github.com/tusgate/tusgate/internal/tusclient"
	"github.com/tusgate/tusgate/store"
)

// A 12 MiB upload sent in 1 MiB PATCHes reaches api.video as one video of
// three parts (5 + 5 + 2 MiB), identical to the source, and the token never
// leaves the gateway.
func TestUploadDelivered(t *testing.T) {
	t.Parallel()
	forEachStore(t, func(t *testing.T, kind string) {
		emu := newEmulator(t)
		gw := startGateway(t, emu, gatewayOptions{Store: kind})
		token := emu.CreateToken(time.Hour)
		data := testData(1, 12*mib)

		u := create(t, gw, int64(len(data)), meta(token))
		id := uploadID(t, u)
		patchRange(t, gw, u, data, 0, 7*mib, mib)
		_, _, midRaw := getStatus(t, gw, id)
		midHead, err := gw.Tus.Head(t.Context(), u)
		if err != nil {
			t.Fatalf("HEAD during the upload: %v", err)
		}
		// tusd's .info file, while it exists (the bytes go after delivery).
		midInfos := map[string]string{}
		infos, _ := filepath.Glob(filepath.Join(gw.DataDir, "uploads", "*.info"))
		if len(infos) == 0 {
			t.Errorf("no tusd .info file in %s", gw.DataDir)
		}
		for _, name := range infos {
			b, err := os.ReadFile(name)
			if err != nil {
				t.Fatalf("read %s: %v", name, err)
			}
			midInfos["tusd file "+filepath.Base(name)] = string(b)
		}
		patchRange(t, gw, u, data, 7*mib, 12*mib, mib)

		st, raw := waitDelivered(t, gw, id)
		v := checkDelivered(t, emu, token, data, st)

		reqs := uploadRequests(emu, token)
		if len(reqs) != 3 {
			t.Fatalf("upload requests: got %d, want 3", len(reqs))
		}
		for i, r := range reqs {
			want := v.ID
			if i == 0 {
				want = ""
			}
			if r.VideoID != want {
				t.Errorf("request %d (part %d) videoId: got %q, want %q", i, r.Part, r.VideoID, want)
			}
		}
		if st.Assets.Player == nil || *st.Assets.Player != v.Assets.Player {
			t.Errorf("assets.player: got %s, want %s", ptrString(st.Assets.Player), v.Assets.Player)
		}
		if st.Filename == nil || *st.Filename != "video.mp4" {
			t.Errorf("filename: got %s, want video.mp4", ptrString(st.Filename))
		}

		// api.video has every part: the gateway drops its copy, and HEAD
		// still says the upload is complete.
		waitFor(t, "the delivered upload's bytes to be removed", func() bool { return fileSize(t, gw, id) == -1 })
		head, err := gw.Tus.Head(t.Context(), u)
		if err != nil {
			t.Fatalf("HEAD after delivery: %v", err)
		}
		if head.Offset != int64(len(data)) || head.Length != int64(len(data)) {
			t.Errorf("HEAD after delivery: got offset %d length %d, want %d and %d", head.Offset, head.Length, len(data), len(data))
		}
		if _, ok := head.Metadata["token"]; ok {
			t.Errorf("HEAD Upload-Metadata: has a token key, want none")
		}
		texts := map[string]string{
			"status JSON during the upload":  string(midRaw),
			"status JSON after delivery":     string(raw),
			"HEAD headers during the upload": fmt.Sprint(midHead.Header, midHead.Metadata),
			"HEAD headers after delivery":    fmt.Sprint(head.Header, head.Metadata),
			"gateway logs":                   gw.Output(),
		}
		maps.Copy(texts, midInfos)
		checkNoToken(t, token, texts)
	})
}

// A deferred-length upload is forwarded as "part k/*" until the length is
// declared on the last PATCH, then ends with "part N/N".
func TestUploadDeferredLength(t *testing.T) {
	t.Parallel()
	forEachStore(t, func(t *testing.T, kind string) {
		emu := newEmulator(t)
		gw := startGateway(t, emu, gatewayOptions{Store: kind})
		token := emu.CreateToken(time.Hour)
		data := testData(2, 12*mib)
		size := int64(len(data))

		u := create(t, gw, tusclient.Deferred, meta(token))
		id := uploadID(t, u)
		patchRange(t, gw, u, data, 0, 11*mib, mib)
		// Part 2 goes out as "part 2/*" only while the length is unknown:
		// wait for it before declaring the length, so the test is
		// deterministic.
		waitFor(t, "api.video to accept part 2", func() bool { return partAccepted(emu, token, 2) })
		if _, st, raw := getStatus(t, gw, id); st.Size != nil || st.Parts.Total != nil {
			t.Errorf("status before the length is declared: got size %s, parts.total %s, want null: %s", ptrString(st.Size), ptrString(st.Parts.Total), raw)
		}
		got, err := gw.Tus.Patch(t.Context(), u, 11*mib, bytes.NewReader(data[11*mib:]), size-11*mib, size)
		if err != nil {
			t.Fatalf("last PATCH declaring the length: %v", err)
		}
		if got != size {
			t.Fatalf("offset after the last PATCH: got %d, want %d", got, size)
		}

		st, _ := waitDelivered(t, gw, id)
		checkDelivered(t, emu, token, data, st)
		var ranges []string
		for _, r := range uploadRequests(emu, token) {
			if r.Accepted {
				ranges = append(ranges, r.ContentRange)
			}
		}
		if want := []string{"part 1/*", "part 2/*", "part 3/3"}; !slices.Equal(ranges, want) {
			t.Errorf("Content-Range of the accepted parts: got %q, want %q", ranges, want)
		}
	})
}

// An upload smaller than the first part (100 KiB, sent with
// creation-with-upload) is sent as a single "part 1/1".
func TestUploadSmallSinglePart(t *testing.T) {
	t.Parallel()
	forEachStore(t, func(t *testing.T, kind string) {
		emu := newEmulator(t)
		gw := startGateway(t, emu, gatewayOptions{Store: kind})
		token := emu.CreateToken(time.Hour)
		data := testData(3, 100<<10)

		u, off, err := gw.Tus.CreateWithUpload(t.Context(), gw.Endpoint, int64(len(data)), meta(token), data)
		if err != nil {
			t.Fatalf("creation-with-upload: %v", err)
		}
		if off != int64(len(data)) {
			t.Fatalf("offset after creation-with-upload: got %d, want %d", off, len(data))
		}
		st, _ := waitDelivered(t, gw, uploadID(t, u))
		checkDelivered(t, emu, token, data, st)
		reqs := uploadRequests(emu, token)
		if len(reqs) != 1 || reqs[0].ContentRange != "part 1/1" {
			var got []string
			for _, r := range reqs {
				got = append(got, r.ContentRange)
			}
			t.Errorf("upload requests: got %q, want [\"part 1/1\"]", got)
		}
	})
}

// Parts go to api.video while the client is still uploading: part 1 is
// accepted before the client sends more than 6 MiB of 12.
func TestUploadPipelined(t *testing.T) {
	t.Parallel()
	forEachStore(t, func(t *testing.T, kind string) {
		emu := newEmulator(t)
		gw := startGateway(t, emu, gatewayOptions{Store: kind})
		token := emu.CreateToken(time.Hour)
		data := testData(4, 12*mib)

		u := create(t, gw, int64(len(data)), meta(token))
		id := uploadID(t, u)
		patchRange(t, gw, u, data, 0, 6*mib, mib)
		waitFor(t, "api.video to accept part 1 while the client waits", func() bool { return partAccepted(emu, token, 1) })
		// The emulator marks the part accepted just before it answers: wait
		// for the gateway to record the answer too.
		st, raw := waitStatus(t, gw, id, func(s gateway.Status) bool { return s.Parts.Delivered == 1 })
		if st.State != store.StateForwarding || st.Received != 6*mib || st.VideoID == nil {
			t.Errorf("status after part 1, mid-upload: got %s, want state forwarding, received %d, a videoId", raw, 6*mib)
		}
		// Part 1's bytes are freed on disk once api.video has them, while
		// the client is still sending: 6 MiB received, 1 MiB left to send.
		file := filepath.Join(gw.DataDir, "uploads", id)
		waitFor(t, "part 1's bytes to be freed on disk", func() bool { return allocatedBytes(t, file) <= 6*mib-5*mib+mib/2 })
		upload(t, gw, u, data, mib)
		st, _ = waitDelivered(t, gw, id)
		checkDelivered(t, emu, token, data, st)
	})
}

// With --keep-delivered the data file holds every byte after delivery:
// no part is freed while the rest is sent.
func TestUploadKeepDelivered(t *testing.T) {
	t.Parallel()
	emu := newEmulator(t)
	gw := startGateway(t, emu, gatewayOptions{Store: "embedded", Args: []string{"--keep-delivered"}})
	token := emu.CreateToken(time.Hour)
	data := testData(5, 12*mib)

	u := create(t, gw, int64(len(data)), meta(token))
	id := uploadID(t, u)
	upload(t, gw, u, data, mib)
	st, _ := waitDelivered(t, gw, id)
	checkDelivered(t, emu, token, data, st)
	kept, err := os.ReadFile(filepath.Join(gw.DataDir, "uploads", id))
	if err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(kept, data) {
		t.Errorf("kept file: %d bytes differing from the %d uploaded", len(kept), len(data))
	}
}

// failingReader yields limit bytes of r, then fails (or, with cancel set,
// cancels the request's context and blocks until it is done).
type failingReader struct {
	r      io.Reader
	limit  int64
	cancel context.CancelFunc
	ctx    context.Context
	// atLimit, when set, is called once the limit is sent, before the
	// reader fails.
	atLimit func()
}

var errClientGaveUp = errors.New("client gave up")

func (f *failingReader) Read(p []byte) (int, error) {
	if f.limit <= 0 {
		if f.atLimit != nil {
			f.atLimit()
			f.atLimit = nil
		}
		if f.cancel != nil {
			f.cancel()
			<-f.ctx.Done()
			return 0, f.ctx.Err()
		}
		return 0, errClientGaveUp
	}
	p = p[:min(int64(len(p)), f.limit)]
	n, err := f.r.Read(p)
	f.limit -= int64(n)
	return n, err
}

// A PATCH cut off part-way (body error or cancelled request) keeps the bytes
// that arrived; HEAD reports them and the client resumes from there.
func TestUploadInterruptedAndResumed(t *testing.T) {
	t.Parallel()
	tests := []struct {
		name   string
		cancel bool
	}{
		{"body error", false},
		{"cancelled request", true},
	}
	for i, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			forEachStore(t, func(t *testing.T, kind string) {
				emu := newEmulator(t)
				gw := startGateway(t, emu, gatewayOptions{Store: kind})
				token := emu.CreateToken(time.Hour)
				data := testData(uint64(50+i), 12*mib)
				size := int64(len(data))

				u := create(t, gw, size, meta(token))
				id := uploadID(t, u)
				patchRange(t, gw, u, data, 0, 4*mib, mib)

				// Declare the 8 MiB left, deliver 3 MiB of it, then give up:
				// the cut crosses the end of part 1 (5 MiB).
				const sent = 3 * mib
				ctx, cancel := context.WithCancel(t.Context())
				defer cancel()
				body := &failingReader{r: bytes.NewReader(data[4*mib:]), limit: sent}
				if tc.cancel {
					body.cancel, body.ctx = cancel, ctx
				}
				if _, err := gw.Tus.Patch(ctx, u, 4*mib, body, size-4*mib, -1); err == nil {
					t.Fatal("interrupted PATCH: got success, want an error")
				}

				// The gateway may still be finishing the cut PATCH: its HEAD
				// waits for the upload's lock.
				var off int64
				waitFor(t, "HEAD to report the bytes of the cut PATCH", func() bool {
					info, err := gw.Tus.Head(t.Context(), u)
					if err != nil {
						t.Fatalf("HEAD after the cut: %v", err)
					}
					off = info.Offset
					return off > 4*mib
				})
				if off > 4*mib+sent {
					t.Fatalf("offset after the cut: got %d, want at most %d", off, 4*mib+sent)
				}
				if off > partSize {
					waitFor(t, "api.video to accept part 1", func() bool { return partAccepted(emu, token, 1) })
				}
				upload(t, gw, u, data, mib)
				st, _ := waitDelivered(t, gw, id)
				checkDelivered(t, emu, token, data, st)
			})
		})
	}
}

// The status API answers 404 for an unknown upload and /readyz answers 200
// when the state store and data directory work.
func TestStatusEndpoints(t *testing.T) {
	t.Parallel()
	forEachStore(t, func(t *testing.T, kind string) {
		emu := newEmulator(t)
		gw := startGateway(t, emu, gatewayOptions{Store: kind})
		if code, _, raw := getStatus(t, gw, "0123456789abcdef0123456789abcdef"); code != http.StatusNotFound {
			t.Errorf("GET /uploads/unknown: got %d %s, want 404", code, raw)
		}
		for _, p := range []string{"/healthz", "/readyz"} {
			req, err := http.NewRequestWithContext(t.Context(), http.MethodGet, gw.URL+p, nil)
			if err != nil {
				t.Fatalf("GET %s: %v", p, err)
			}
			resp, err := gw.HTTP.Do(req)
			if err != nil {
				t.Fatalf("GET %s: %v", p, err)
			}
			body, _ := io.ReadAll(resp.Body)
			resp.Body.Close()
			if resp.StatusCode != http.StatusOK {
				t.Errorf("GET %s: got %d %s, want 200", p, resp.StatusCode, body)
			}
			if p == "/readyz" && !strings.Contains(string(body), `"ok"`) {
				t.Errorf("GET /readyz body: got %s, want status ok", body)
			}
		}
	})
}

// A HEAD while the client's previous PATCH is stalled (a client that lost
// its connection and came back) ends that PATCH, reports the bytes it
// brought, and the client resumes from there.
func TestUploadResumedWhilePatchStalled(t *testing.T) {
	t.Parallel()
	forEachStore(t, func(t *testing.T, kind string) {
		emu := newEmulator(t)
		gw := startGateway(t, emu, gatewayOptions{Store: kind})
		token := emu.CreateToken(time.Hour)
		data := testData(9, 12*mib)
		size := int64(len(data))

		u := create(t, gw, size, meta(token))
		id := uploadID(t, u)
		patchRange(t, gw, u, data, 0, 4*mib, mib)

		const sent = 2 * mib
		release := make(chan struct{})
		defer close(release)
		patchErr := make(chan error, 1)
		go func() { // owned by the test: it receives from patchErr below
			body := &blockingReader{r: bytes.NewReader(data[4*mib:]), limit: sent, release: release}
			_, err := gw.Tus.Patch(t.Context(), u, 4*mib, body, size-4*mib, -1)
			patchErr <- err
		}()
		waitStatus(t, gw, id, func(s gateway.Status) bool { return s.Received > 5*mib })

		info, err := gw.Tus.Head(t.Context(), u)
		if err != nil {
			t.Fatalf("HEAD while a PATCH stalls: %v", err)
		}
		if info.Offset <= 5*mib || info.Offset > 4*mib+sent {
			t.Errorf("HEAD offset: got %d, want in (%d, %d]", info.Offset, 5*mib, 4*mib+sent)
		}
		select {
		case err := <-patchErr:
			if err == nil {
				t.Errorf("stalled PATCH: got success, want an error")
			}
		case <-time.After(statusTimeout):
			t.Fatalf("stalled PATCH not ended within %v of the HEAD", statusTimeout)
		}
		upload(t, gw, u, data, mib)
		st, _ := waitDelivered(t, gw, id)
		checkDelivered(t, emu, token, data, st)
	})
}
