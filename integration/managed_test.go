package integration_test

import (
	"encoding/json"
	"fmt"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/tusgate/tusgate/apivideo/apivideotest"
	"github.com/tusgate/tusgate/gateway"
	"github.com/tusgate/tusgate/internal/tusclient"
)

// tokenMints returns the emulator's POST /upload-tokens requests.
func tokenMints(emu *apivideotest.Server) []apivideotest.Request {
	var out []apivideotest.Request
	for _, r := range emu.Requests() {
		if r.Method == http.MethodPost && r.Path == "/upload-tokens" {
			out = append(out, r)
		}
	}
	return out
}

// emulatorTokenTTL asks the emulator, with its API key, for the TTL of an
// upload token.
func emulatorTokenTTL(t *testing.T, emu *apivideotest.Server, token string) time.Duration {
	t.Helper()
	req, err := http.NewRequestWithContext(t.Context(), http.MethodGet, emu.URL+"/upload-tokens/"+token, nil)
	if err != nil {
		t.Fatalf("token request: %v", err)
	}
	req.SetBasicAuth(apivideotest.DefaultAPIKey, "")
	resp, err := emu.Client().Do(req)
	if err != nil {
		t.Fatalf("GET /upload-tokens/{token}: %v", err)
	}
	defer resp.Body.Close()
	var tok struct {
		TTL int64 `json:"ttl"`
	}
	if resp.StatusCode != http.StatusOK {
		t.Fatalf("GET /upload-tokens/{token}: got status %d, want 200", resp.StatusCode)
	}
	if err := json.NewDecoder(resp.Body).Decode(&tok); err != nil {
		t.Fatalf("GET /upload-tokens/{token}: decode: %v", err)
	}
	return time.Duration(tok.TTL) * time.Second
}

// With an API key, an upload created without a token is managed: the
// gateway mints a token (with --token-ttl) only once part 1 is ready, the
// upload is delivered as one identical video, and the minted token shows up
// nowhere a client or an operator can see it. Delegated tokens are looked
// up at creation: an unknown one is refused with 403, a known one's expiry
// becomes the upload's token deadline.
func TestManagedMode(t *testing.T) {
	t.Parallel()
	const tokenTTL = 2 * time.Hour
	forEachStore(t, func(t *testing.T, kind string) {
		emu := newEmulator(t)
		gw := startGateway(t, emu, gatewayOptions{Store: kind, Args: []string{
			"--apivideo-api-key", apivideotest.DefaultAPIKey,
			"--token-ttl", tokenTTL.String(),
		}})
		created := map[string]bool{} // the tokens this test made

		t.Run("delegated token lookup", func(t *testing.T) {
			unknown := "to" + strings.Repeat("u", 22)
			_, err := gw.Tus.Create(t.Context(), gw.Endpoint, mib, meta(unknown))
			if code := tusclient.StatusCode(err); code != http.StatusForbidden {
				t.Errorf("create with a token api.video does not know: got %d (%v), want 403", code, err)
			} else if body := err.(*tusclient.HTTPError).Body; !strings.Contains(body, "token") || strings.Contains(body, unknown) {
				t.Errorf("create with an unknown token: body %q, want it to mention the token without echoing it", body)
			}

			tests := []struct {
				name     string
				metadata func(token string) map[string]string
			}{
				{"without tokenExpiresAt", meta},
				// api.video's answer wins over what the client claims.
				{"with a wrong tokenExpiresAt", func(token string) map[string]string {
					return metaWithDeadline(token, time.Now().Add(10*time.Minute))
				}},
			}
			for _, tc := range tests {
				token, expiresFrom, _ := createToken(emu, time.Hour)
				created[token] = true
				u := create(t, gw, mib, tc.metadata(token))
				_, st, _ := getStatus(t, gw, uploadID(t, u))
				checkNear(t, tc.name+": tokenDeadline", st.TokenDeadline, expiresFrom, 2*time.Second)
			}
		})

		t.Run("managed upload", func(t *testing.T) {
			data := testData(330, 12*mib)
			u := create(t, gw, int64(len(data)), map[string]string{"filename": "video.mp4", "filetype": "video/mp4"})
			id := uploadID(t, u)
			patchRange(t, gw, u, data, 0, mib, mib)
			if n := len(tokenMints(emu)); n != 0 {
				t.Errorf("token mints before part 1 is ready: got %d, want 0", n)
			}
			patchRange(t, gw, u, data, mib, 7*mib, mib)
			midSt, midRaw := waitStatus(t, gw, id, func(s gateway.Status) bool { return s.Parts.Delivered == 1 })
			midHead, err := gw.Tus.Head(t.Context(), u)
			if err != nil {
				t.Fatalf("HEAD during the upload: %v", err)
			}
			patchRange(t, gw, u, data, 7*mib, 12*mib, mib)
			st, raw := waitDelivered(t, gw, id)

			videos := emu.Videos()
			var other []string
			for _, v := range videos {
				if v.Token == "" || created[v.Token] {
					other = append(other, v.ID)
				}
			}
			if len(videos) != 1 || len(other) != 0 {
				t.Fatalf("emulator videos: got %d (%d with a token the test made), want 1 with a minted token", len(videos), len(other))
			}
			minted := videos[0].Token
			checkDelivered(t, emu, minted, data, st)
			mints := tokenMints(emu)
			if len(mints) != 1 {
				t.Errorf("token mints: got %d, want 1", len(mints))
			} else if reqs := uploadRequests(emu, minted); len(reqs) > 0 && mints[0].Seq > reqs[0].Seq {
				t.Errorf("token minted by request %d, after the first upload request %d", mints[0].Seq, reqs[0].Seq)
			}
			if got := emulatorTokenTTL(t, emu, minted); got != tokenTTL {
				t.Errorf("minted token TTL: got %v, want %v (--token-ttl)", got, tokenTTL)
			}
			if midSt.TokenDeadline == nil {
				t.Errorf("status after part 1: tokenDeadline null, want the minted token's expiry")
			}

			head, err := gw.Tus.Head(t.Context(), u)
			if err != nil {
				t.Fatalf("HEAD after delivery: %v", err)
			}
			texts := map[string]string{
				"status JSON during the upload":  string(midRaw),
				"status JSON after delivery":     string(raw),
				"HEAD headers during the upload": fmt.Sprint(midHead.Header, midHead.Metadata),
				"HEAD headers after delivery":    fmt.Sprint(head.Header, head.Metadata),
				"gateway logs":                   gw.Output(),
			}
			infos, _ := filepath.Glob(filepath.Join(gw.DataDir, "uploads", "*.info"))
			if len(infos) == 0 {
				t.Errorf("no tusd .info file in %s", gw.DataDir)
			}
			for _, name := range infos {
				b, err := os.ReadFile(name)
				if err != nil {
					t.Fatalf("read %s: %v", name, err)
				}
				texts["tusd file "+filepath.Base(name)] = string(b)
			}
			checkNoToken(t, minted, texts)
			if strings.Contains(gw.Output(), apivideotest.DefaultAPIKey) {
				t.Errorf("gateway logs contain the API key")
			}
		})
	})
}
