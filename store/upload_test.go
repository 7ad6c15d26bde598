package store_test

import (
	"encoding/json"
	"errors"
	"fmt"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/tusgate/tusgate/store"
)

// now is the fixed clock of these tests.
var now = time.Date(2025, 3, 14, 12, 0, 0, 0, time.UTC)

// plan5 has 5 MiB parts: part 1 is [0,5), part 2 [5,10), part 3 [10,15) MiB.
var plan5 = store.Plan{FirstPartSize: store.MinPartSize, PartSize: store.MinPartSize}

func newUpload(size int64, received int64) *store.Upload {
	return &store.Upload{
		ID:               "u1",
		State:            store.StateReceiving,
		Size:             size,
		Received:         received,
		Complete:         received == size,
		Plan:             plan5,
		CompletionWindow: 24 * time.Hour,
		CreatedAt:        now,
	}
}

func mustNil(t *testing.T, what string, err error) {
	t.Helper()
	if err != nil {
		t.Fatalf("%s: %v", what, err)
	}
}

func wantConflict(t *testing.T, what string, err error) {
	t.Helper()
	if !errors.Is(err, store.ErrConflict) {
		t.Errorf("%s: got %v, want ErrConflict", what, err)
	}
}

func checkReady(t *testing.T, u *store.Upload, at time.Time, want ...int) {
	t.Helper()
	if got := u.ReadyParts(at); !slices.Equal(got, want) {
		t.Errorf("ReadyParts (received %d) = %v, want %v", u.Received, got, want)
	}
}

func TestReadyPartsKnownSize(t *testing.T) {
	const size = 12 * mib // 3 parts: 5, 5, 2 MiB
	u := newUpload(size, 0)
	checkReady(t, u, now)
	mustNil(t, "RecordReceived", u.RecordReceived(5*mib-1, false, now))
	checkReady(t, u, now)
	mustNil(t, "RecordReceived", u.RecordReceived(5*mib, false, now))
	checkReady(t, u, now, 1)
	mustNil(t, "RecordReceived", u.RecordReceived(size, true, now))
	checkReady(t, u, now, 1) // later parts wait for part 1's video id

	_, err := u.Claim(1, "a", now.Add(time.Minute), now)
	mustNil(t, "Claim 1", err)
	checkReady(t, u, now)                     // leased
	checkReady(t, u, now.Add(time.Minute), 1) // lease expired
	mustNil(t, "Deliver 1", u.Deliver(1, "vi1", store.Assets{}, now))
	checkReady(t, u, now, 2, 3)

	_, err = u.Claim(2, "a", now.Add(time.Minute), now)
	mustNil(t, "Claim 2", err)
	checkReady(t, u, now, 3)
	checkReady(t, u, now.Add(2*time.Minute), 2, 3)

	mustNil(t, "Fail", u.Fail(store.ReasonDeadlineMissed, "late", now))
	checkReady(t, u, now)
}

func TestReadyPartsDeferredSize(t *testing.T) {
	u := newUpload(0, 0)
	u.SizeDeferred = true
	u.Complete = false
	mustNil(t, "RecordReceived", u.RecordReceived(5*mib, false, now))
	checkReady(t, u, now) // part 1 might be the last one
	mustNil(t, "RecordReceived", u.RecordReceived(5*mib+1, false, now))
	checkReady(t, u, now, 1)
	mustNil(t, "Deliver 1", u.Deliver(1, "vi1", store.Assets{}, now))
	mustNil(t, "RecordReceived", u.RecordReceived(10*mib, false, now))
	checkReady(t, u, now)
	if got := u.TotalParts(); got != 0 {
		t.Errorf("TotalParts while deferred = %d, want 0", got)
	}
	mustNil(t, "RecordReceived", u.RecordReceived(10*mib+1, false, now))
	checkReady(t, u, now, 2)

	wantConflict(t, "DeclareSize below received", u.DeclareSize(10*mib, now))
	mustNil(t, "DeclareSize", u.DeclareSize(12*mib, now))
	mustNil(t, "RecordReceived", u.RecordReceived(12*mib, true, now))
	checkReady(t, u, now, 2, 3)
	mustNil(t, "DeclareSize again", u.DeclareSize(12*mib, now))
	wantConflict(t, "DeclareSize change", u.DeclareSize(13*mib, now))
}

func TestRecordReceived(t *testing.T) {
	u := newUpload(12*mib, 0)
	mustNil(t, "RecordReceived", u.RecordReceived(8*mib, false, now))
	mustNil(t, "RecordReceived backwards", u.RecordReceived(3*mib, false, now))
	if u.Received != 8*mib {
		t.Errorf("Received = %d, want %d (offsets never go back)", u.Received, 8*mib)
	}
	mustNil(t, "Terminate", u.Terminate(now))
	wantConflict(t, "RecordReceived on terminated", u.RecordReceived(12*mib, true, now))
}

func TestClaim(t *testing.T) {
	until := now.Add(time.Minute)
	u := newUpload(12*mib, 12*mib)

	was, err := u.Claim(1, "a", until, now)
	mustNil(t, "Claim", err)
	if was || u.State != store.StateForwarding || u.InFlight[1] != (store.Lease{Owner: "a", Until: until}) {
		t.Errorf("after Claim: wasInFlight %t, state %s, lease %+v; want false, forwarding, a until %v", was, u.State, u.InFlight[1], until)
	}
	was, err = u.Claim(1, "a", until.Add(time.Minute), now)
	mustNil(t, "Claim by the same owner", err)
	if !was {
		t.Errorf("re-Claim by the owner: wasInFlight false, want true")
	}
	_, err = u.Claim(1, "b", until, now)
	wantConflict(t, "Claim of a live lease", err)
	was, err = u.Claim(1, "b", until.Add(time.Hour), until.Add(time.Minute))
	mustNil(t, "Claim of an expired lease", err)
	if !was || u.InFlight[1].Owner != "b" {
		t.Errorf("after taking over: wasInFlight %t, owner %q; want true, b", was, u.InFlight[1].Owner)
	}

	_, err = u.Claim(2, "a", until, now)
	wantConflict(t, "Claim of part 2 before part 1", err)
	mustNil(t, "Deliver 1", u.Deliver(1, "vi1", store.Assets{}, now))
	_, err = u.Claim(1, "a", until, now)
	wantConflict(t, "Claim of a delivered part", err)

	partial := newUpload(12*mib, 5*mib-1)
	_, err = partial.Claim(1, "a", until, now)
	wantConflict(t, "Claim of an incomplete part", err)

	mustNil(t, "Terminate", u.Terminate(now))
	_, err = u.Claim(2, "a", until, now)
	wantConflict(t, "Claim on a terminated upload", err)
}

func TestRenewRelease(t *testing.T) {
	until := now.Add(time.Minute)
	u := newUpload(12*mib, 12*mib)
	_, err := u.Claim(1, "a", until, now)
	mustNil(t, "Claim", err)
	mustNil(t, "Renew", u.Renew(1, "a", until.Add(time.Minute), now))
	if got := u.InFlight[1].Until; !got.Equal(until.Add(time.Minute)) {
		t.Errorf("lease until %v after Renew, want %v", got, until.Add(time.Minute))
	}
	wantConflict(t, "Renew by another owner", u.Renew(1, "b", until, now))
	wantConflict(t, "Renew of an unleased part", u.Renew(2, "a", until, now))

	mustNil(t, "Release by another owner", u.Release(1, "b", "b failed", now))
	if u.InFlight[1].Owner != "a" {
		t.Errorf("Release by b dropped a's lease")
	}
	mustNil(t, "Release", u.Release(1, "a", "503 from api.video", now))
	if _, ok := u.InFlight[1]; ok || u.Attempts != 2 || u.LastError != "503 from api.video" {
		t.Errorf("after Release: lease held %t, attempts %d, last error %q; want false, 2, the message", ok, u.Attempts, u.LastError)
	}
	checkReady(t, u, now, 1)
}

func TestDeliver(t *testing.T) {
	u := newUpload(12*mib, 12*mib)
	assets := store.Assets{Player: "https://embed.api.video/vod/vi1", HLS: "https://vod.api.video/vod/vi1/hls/manifest.m3u8"}
	u.Attempts, u.LastError = 3, "boom"
	_, err := u.Claim(1, "a", now.Add(time.Minute), now)
	mustNil(t, "Claim", err)

	wantConflict(t, "Deliver of part 1 without a video id", u.Deliver(1, "", assets, now))
	at := now.Add(time.Second)
	mustNil(t, "Deliver 1", u.Deliver(1, "vi1", assets, at))
	if u.VideoID != "vi1" || u.Assets != assets || len(u.InFlight) != 0 || u.Attempts != 0 || u.LastError != "" {
		t.Errorf("after Deliver 1: video %q, assets %+v, leases %v, attempts %d, last error %q",
			u.VideoID, u.Assets, u.InFlight, u.Attempts, u.LastError)
	}
	if want := at.Add(24 * time.Hour); !u.CompletionDeadline.Equal(want) {
		t.Errorf("CompletionDeadline = %v, want %v", u.CompletionDeadline, want)
	}
	mustNil(t, "Deliver 1 again", u.Deliver(1, "vi1", store.Assets{}, now.Add(time.Hour)))
	if u.DeliveredBytes != 5*mib || u.Assets != assets || !u.CompletionDeadline.Equal(at.Add(24*time.Hour)) {
		t.Errorf("a repeated Deliver changed the record: bytes %d, assets %+v, deadline %v", u.DeliveredBytes, u.Assets, u.CompletionDeadline)
	}

	mustNil(t, "Deliver 3", u.Deliver(3, "", store.Assets{}, now))
	if u.State != store.StateForwarding || !slices.Equal(u.Delivered, []int{1, 3}) {
		t.Errorf("after parts 1, 3: state %s, delivered %v; want forwarding, [1 3]", u.State, u.Delivered)
	}
	_, err = u.Claim(2, "a", now.Add(time.Minute), now)
	mustNil(t, "Claim 2", err)
	mustNil(t, "Deliver 2", u.Deliver(2, "", store.Assets{}, now))
	if u.State != store.StateDelivered || u.DeliveredBytes != 12*mib || u.InFlight != nil {
		t.Errorf("after the last part: state %s, bytes %d, leases %v; want delivered, %d, none", u.State, u.DeliveredBytes, u.InFlight, 12*mib)
	}
	wantConflict(t, "Deliver on a delivered upload", u.Deliver(2, "", store.Assets{}, now))
}

func TestDeliverSinglePart(t *testing.T) {
	u := newUpload(1234, 1234)
	mustNil(t, "Deliver", u.Deliver(1, "vi1", store.Assets{}, now))
	if u.State != store.StateDelivered || u.DeliveredBytes != 1234 {
		t.Errorf("state %s, bytes %d; want delivered, 1234", u.State, u.DeliveredBytes)
	}
}

func TestFailTerminate(t *testing.T) {
	tests := []struct {
		name           string
		from           store.State
		failOK, termOK bool
	}{
		{"receiving", store.StateReceiving, true, true},
		{"forwarding", store.StateForwarding, true, true},
		{"delivered", store.StateDelivered, false, false},
		{"failed", store.StateFailed, false, true},
		{"terminated", store.StateTerminated, false, false},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			u := newUpload(12*mib, 12*mib)
			u.State = tt.from
			u.InFlight = map[int]store.Lease{1: {Owner: "a", Until: now.Add(time.Minute)}}
			f := u.Clone()
			err := f.Fail(store.ReasonTokenRejected, "401", now)
			if tt.failOK {
				mustNil(t, "Fail", err)
				if f.State != store.StateFailed || *f.Error != (store.Failure{Reason: store.ReasonTokenRejected, Message: "401"}) || f.InFlight != nil {
					t.Errorf("after Fail: state %s, error %+v, leases %v", f.State, f.Error, f.InFlight)
				}
			} else {
				wantConflict(t, "Fail", err)
			}
			err = u.Terminate(now)
			if tt.termOK {
				mustNil(t, "Terminate", err)
				if u.State != store.StateTerminated || u.InFlight != nil {
					t.Errorf("after Terminate: state %s, leases %v", u.State, u.InFlight)
				}
			} else {
				wantConflict(t, "Terminate", err)
			}
		})
	}
}

func TestStateTerminal(t *testing.T) {
	for s, want := range map[store.State]bool{
		store.StateReceiving: false, store.StateForwarding: false,
		store.StateDelivered: true, store.StateFailed: true, store.StateTerminated: true,
	} {
		if got := s.Terminal(); got != want {
			t.Errorf("%s.Terminal() = %t, want %t", s, got, want)
		}
	}
}

func TestClone(t *testing.T) {
	u := newUpload(12*mib, 12*mib)
	u.Delivered = []int{1}
	u.InFlight = map[int]store.Lease{2: {Owner: "a"}}
	u.Metadata = map[string]string{"k": "v"}
	u.Error = &store.Failure{Reason: "r"}
	c := u.Clone()
	c.Delivered[0], c.InFlight[2], c.Metadata["k"], c.Error.Reason = 9, store.Lease{}, "x", "x"
	if u.Delivered[0] != 1 || u.InFlight[2].Owner != "a" || u.Metadata["k"] != "v" || u.Error.Reason != "r" {
		t.Errorf("mutating a clone changed the original: %+v", u)
	}
}

func TestSecretRedacted(t *testing.T) {
	const token = "to1tcmSFHeYY5KzyhOqVKMKb"
	u := newUpload(1, 1)
	u.Token = token
	for _, verb := range []string{"%v", "%s", "%+v", "%#v"} {
		for _, arg := range []any{u, *u, u.Token} {
			got := fmt.Sprintf(verb, arg)
			if strings.Contains(got, token) || !strings.Contains(got, "[REDACTED]") {
				t.Errorf("Sprintf(%q, %T) = %s; want [REDACTED] and no token", verb, arg, got)
			}
		}
	}
	for _, verb := range []string{"%q", "%x", "%X"} {
		if got := fmt.Sprintf(verb, u.Token); strings.Contains(got, token) || strings.Contains(got, fmt.Sprintf(verb, token)) {
			t.Errorf("Sprintf(%q, token) = %s reveals the token", verb, got)
		}
	}
	if got := u.Token.Reveal(); got != token {
		t.Errorf("Reveal() = %q, want the token", got)
	}
	if got := store.Secret("").String(); got != "" {
		t.Errorf("empty Secret prints %q, want empty", got)
	}
	// Stores persist records as JSON, so JSON keeps the value.
	data, err := json.Marshal(u)
	mustNil(t, "Marshal", err)
	var back store.Upload
	mustNil(t, "Unmarshal", json.Unmarshal(data, &back))
	if back.Token != u.Token {
		t.Errorf("JSON round trip lost the token")
	}
}
