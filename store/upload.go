package store

import (
	"fmt"
	"maps"
	"slices"
	"time"
)

// State is where an upload stands in its life.
type State string

// The states of an upload. Delivered, Failed and Terminated are terminal.
const (
	// StateReceiving: the client is (or may resume) sending bytes; nothing is at api.video yet.
	StateReceiving State = "receiving"
	// StateForwarding: at least one part has been sent or is in flight.
	StateForwarding State = "forwarding"
	// StateDelivered: api.video accepted every part.
	StateDelivered State = "delivered"
	// StateFailed: the upload cannot be delivered; Error says why.
	StateFailed State = "failed"
	// StateTerminated: the client deleted the upload (tus termination).
	StateTerminated State = "terminated"
)

// Terminal reports whether no further transition can leave the state.
func (s State) Terminal() bool {
	return s == StateDelivered || s == StateFailed || s == StateTerminated
}

// Machine-readable failure reasons recorded in Failure.Reason.
const (
	ReasonTokenExpired       = "token_expired"
	ReasonTokenRejected      = "token_rejected"
	ReasonRejectedByAPIVideo = "rejected_by_apivideo"
	ReasonDeadlineMissed     = "deadline_missed"
	ReasonEmptyUpload        = "empty_upload"
	ReasonDataLost           = "data_lost"
)

// Secret is a string that never prints: fmt verbs and zap's Stringer show
// "[REDACTED]". JSON encoding keeps the value, so stores can persist it;
// never marshal a record to anything a client or a log can see.
type Secret string

// String implements fmt.Stringer without revealing the value.
func (s Secret) String() string {
	if s == "" {
		return ""
	}
	return "[REDACTED]"
}

// GoString implements fmt.GoStringer without revealing the value.
func (s Secret) GoString() string { return s.String() }

// Reveal returns the secret value, for the one place that must send it.
func (s Secret) Reveal() string { return string(s) }

// Failure is the machine-readable reason and the human message of a failed upload.
type Failure struct {
	Reason  string `json:"reason"`
	Message string `json:"message"`
}

// Assets are the URLs api.video returns for a video.
type Assets struct {
	Player    string `json:"player,omitempty"`
	HLS       string `json:"hls,omitempty"`
	Thumbnail string `json:"thumbnail,omitempty"`
	MP4       string `json:"mp4,omitempty"`
}

// AssetURLs are Assets as the status API and webhooks show them: null,
// not "", for a URL api.video has not returned.
type AssetURLs struct {
	Player    *string `json:"player"`
	HLS       *string `json:"hls"`
	Thumbnail *string `json:"thumbnail"`
	MP4       *string `json:"mp4"`
}

// URLs returns a as AssetURLs.
func (a Assets) URLs() AssetURLs {
	orNil := func(s string) *string {
		if s == "" {
			return nil
		}
		return &s
	}
	return AssetURLs{Player: orNil(a.Player), HLS: orNil(a.HLS), Thumbnail: orNil(a.Thumbnail), MP4: orNil(a.MP4)}
}

// Lease marks a part in flight: Owner is sending it until Until, unless renewed.
type Lease struct {
	Owner string    `json:"owner"`
	Until time.Time `json:"until"`
}

// Upload is the state store's record of one upload (key: the tus upload id).
type Upload struct {
	ID    string `json:"id"`
	State State  `json:"state"`
	// Size is the upload's total length in bytes; meaningless while SizeDeferred.
	Size         int64 `json:"size"`
	SizeDeferred bool  `json:"sizeDeferred,omitempty"`
	// Received is the number of bytes durably in the data store, as last
	// recorded (at part boundaries and on completion, not per network read).
	Received int64 `json:"received"`
	// Complete is true once every byte of the upload is in the data store.
	Complete bool `json:"complete,omitempty"`
	Plan     Plan `json:"plan"`
	// Delivered lists, in ascending order, the parts api.video accepted.
	Delivered []int `json:"delivered,omitempty"`
	// DeliveredBytes is the number of bytes api.video accepted.
	DeliveredBytes int64 `json:"deliveredBytes"`
	// InFlight holds the lease of every part being sent.
	InFlight map[int]Lease `json:"inFlight,omitempty"`
	// Uncertain lists, in ascending order, undelivered parts whose last send
	// ended without an answer: api.video may have them.
	Uncertain []int  `json:"uncertain,omitempty"`
	VideoID   string `json:"videoId,omitempty"`
	Assets    Assets `json:"assets,omitzero"`
	// Token is the api.video upload token; never returned by any API.
	Token Secret `json:"token,omitempty"`
	// TokenDeadline is when the token expires; zero when unknown or never.
	TokenDeadline time.Time `json:"tokenDeadline,omitzero"`
	// TokenManaged is true when the gateway mints the token (managed mode):
	// the client sent none, and a token that expires or is refused before
	// part 1 is accepted is replaced rather than failing the upload.
	TokenManaged bool `json:"tokenManaged,omitempty"`
	// TokenMints counts the tokens minted for this upload.
	TokenMints int `json:"tokenMints,omitempty"`
	// CompletionWindow is how long after part 1's acceptance the rest may take.
	CompletionWindow time.Duration `json:"completionWindow"`
	// CompletionDeadline is set when part 1 is accepted.
	CompletionDeadline time.Time `json:"completionDeadline,omitzero"`
	// Attempts counts failed sends since the last successful one.
	Attempts  int               `json:"attempts,omitempty"`
	LastError string            `json:"lastError,omitempty"`
	Error     *Failure          `json:"error,omitempty"`
	Filename  string            `json:"filename,omitempty"`
	Filetype  string            `json:"filetype,omitempty"`
	Metadata  map[string]string `json:"metadata,omitempty"`
	Owner     string            `json:"owner,omitempty"`
	CreatedAt time.Time         `json:"createdAt"`
	UpdatedAt time.Time         `json:"updatedAt"`
	// Webhooks is true when the upload reports its progress to the
	// platform's webhook (EnableWebhooks): its transitions then queue events
	// in Outbox.
	Webhooks bool `json:"webhooks,omitempty"`
	// Outbox holds, oldest first, the webhook events not yet acknowledged
	// by the platform. A record with events stays listed by
	// Store.ListActive even when its state is terminal (Active).
	Outbox []Event `json:"outbox,omitempty"`
}

// Clone returns a deep copy.
func (u *Upload) Clone() *Upload {
	c := *u
	c.Delivered = slices.Clone(u.Delivered)
	c.Uncertain = slices.Clone(u.Uncertain)
	c.InFlight = maps.Clone(u.InFlight)
	c.Metadata = maps.Clone(u.Metadata)
	c.Outbox = slices.Clone(u.Outbox)
	if u.Error != nil {
		e := *u.Error
		c.Error = &e
	}
	return &c
}

// TotalParts returns the number of parts, or 0 while the size is deferred.
func (u *Upload) TotalParts() int {
	if u.SizeDeferred {
		return 0
	}
	return u.Plan.Parts(u.Size)
}

// IsDelivered reports whether api.video accepted part k.
func (u *Upload) IsDelivered(k int) bool {
	_, ok := slices.BinarySearch(u.Delivered, k)
	return ok
}

// PartRange returns the byte range [start, end) of part k. While the size is
// deferred, the range is the planned one.
func (u *Upload) PartRange(k int) (start, end int64) {
	if u.SizeDeferred {
		return u.Plan.Start(k), u.Plan.End(k)
	}
	return u.Plan.Range(k, u.Size)
}

// IsLastPart reports whether k is known to be the last part.
func (u *Upload) IsLastPart(k int) bool {
	return !u.SizeDeferred && k == u.TotalParts()
}

// partReady reports whether every byte of part k is in the data store, and,
// while the size is deferred, that the part is provably not the last (at least
// one byte beyond it was received), so it can be sent as "part k/*".
func (u *Upload) partReady(k int) bool {
	_, end := u.PartRange(k)
	if u.SizeDeferred {
		return u.Received > end
	}
	return u.Received >= end
}

// ReadyParts returns, in ascending order, the parts that can be sent now:
// their bytes are received, they are not delivered and no live lease holds
// them. Until part 1 is delivered only part 1 can be ready, because every
// later part needs its videoId.
func (u *Upload) ReadyParts(now time.Time) []int { return u.ReadyPartsFor("", now) }

// ReadyPartsFor is ReadyParts for one lease owner: parts leased by owner
// itself count as ready (the owner knows what it is sending; after a restart
// its old leases are stale).
func (u *Upload) ReadyPartsFor(owner string, now time.Time) []int {
	if u.State.Terminal() || u.Received == 0 {
		return nil
	}
	var ready []int
	last := u.TotalParts()
	if u.SizeDeferred {
		last = u.Plan.PartOf(u.Received)
	}
	for k := 1; k <= last; k++ {
		if k > 1 && !u.IsDelivered(1) {
			break
		}
		if u.IsDelivered(k) || u.leasedByOther(k, owner, now) || !u.partReady(k) {
			continue
		}
		ready = append(ready, k)
	}
	return ready
}

func (u *Upload) leasedByOther(k int, owner string, now time.Time) bool {
	l, ok := u.InFlight[k]
	return ok && (owner == "" || l.Owner != owner) && now.Before(l.Until)
}

func (u *Upload) touch(now time.Time) { u.UpdatedAt = now }

// RecordReceived notes that the data store holds offset bytes. Offsets never
// go backwards. complete says every byte of the upload is in; the first time
// it is, upload.received is queued.
func (u *Upload) RecordReceived(offset int64, complete bool, now time.Time) error {
	if u.State.Terminal() {
		return fmt.Errorf("record received on %s upload: %w", u.State, ErrConflict)
	}
	if offset > u.Received {
		u.Received = offset
	}
	if complete && !u.Complete {
		u.Complete = true
		u.queue(EventUploadReceived, now)
	}
	u.touch(now)
	return nil
}

// DeclareSize fixes the size of a deferred-length upload.
func (u *Upload) DeclareSize(size int64, now time.Time) error {
	if !u.SizeDeferred {
		if u.Size == size {
			return nil
		}
		return fmt.Errorf("declare size %d: size already %d: %w", size, u.Size, ErrConflict)
	}
	if size < u.Received {
		return fmt.Errorf("declare size %d: %d bytes already received: %w", size, u.Received, ErrConflict)
	}
	u.Size, u.SizeDeferred = size, false
	u.touch(now)
	return nil
}

// Claim puts a lease on part k for owner until until. A lease held by the
// same owner is replaced. It returns whether the part may already be at
// api.video: it had a lease before (expired, or the owner's own from before a
// restart) or its last send ended without an answer (Uncertain).
func (u *Upload) Claim(k int, owner string, until, now time.Time) (wasInFlight bool, err error) {
	switch {
	case u.State.Terminal():
		return false, fmt.Errorf("claim part %d of %s upload: %w", k, u.State, ErrConflict)
	case u.IsDelivered(k):
		return false, fmt.Errorf("claim part %d: already delivered: %w", k, ErrConflict)
	case k > 1 && u.VideoID == "":
		return false, fmt.Errorf("claim part %d: part 1 not delivered: %w", k, ErrConflict)
	case !u.partReady(k):
		return false, fmt.Errorf("claim part %d: bytes not received: %w", k, ErrConflict)
	}
	prev, had := u.InFlight[k]
	if had && prev.Owner != owner && now.Before(prev.Until) {
		return false, fmt.Errorf("claim part %d: leased by another owner: %w", k, ErrConflict)
	}
	_, uncertain := slices.BinarySearch(u.Uncertain, k)
	if u.InFlight == nil {
		u.InFlight = map[int]Lease{}
	}
	u.InFlight[k] = Lease{Owner: owner, Until: until}
	if u.State == StateReceiving {
		u.State = StateForwarding
	}
	u.touch(now)
	return had || uncertain, nil
}

// Renew extends owner's lease on part k.
func (u *Upload) Renew(k int, owner string, until, now time.Time) error {
	l, ok := u.InFlight[k]
	if !ok || l.Owner != owner || u.State.Terminal() {
		return fmt.Errorf("renew lease on part %d: not held by %s: %w", k, owner, ErrConflict)
	}
	u.InFlight[k] = Lease{Owner: owner, Until: until}
	u.touch(now)
	return nil
}

// Deliver records api.video's acceptance of part k. Part 1 fixes the video id
// and starts the completion window. When every part is in, the upload is
// delivered and video.delivered is queued.
func (u *Upload) Deliver(k int, videoID string, assets Assets, now time.Time) error {
	if u.State.Terminal() {
		return fmt.Errorf("deliver part %d of %s upload: %w", k, u.State, ErrConflict)
	}
	delete(u.InFlight, k)
	if u.IsDelivered(k) {
		return nil
	}
	if u.VideoID == "" {
		if videoID == "" {
			return fmt.Errorf("deliver part %d: no video id: %w", k, ErrConflict)
		}
		u.VideoID = videoID
		u.CompletionDeadline = now.Add(u.CompletionWindow)
	}
	if assets != (Assets{}) {
		u.Assets = assets
	}
	i, _ := slices.BinarySearch(u.Delivered, k)
	u.Delivered = slices.Insert(u.Delivered, i, k)
	if i, ok := slices.BinarySearch(u.Uncertain, k); ok {
		u.Uncertain = slices.Delete(u.Uncertain, i, i+1)
	}
	start, end := u.PartRange(k)
	u.DeliveredBytes += end - start
	u.Attempts, u.LastError = 0, ""
	if u.State == StateReceiving {
		u.State = StateForwarding
	}
	if u.Complete && !u.SizeDeferred && len(u.Delivered) == u.TotalParts() {
		u.State = StateDelivered
		u.InFlight = nil
		u.queue(EventVideoDelivered, now)
	}
	u.touch(now)
	return nil
}

// Release gives up owner's lease on part k after a failed send; msg is kept
// as the last error (it must not contain secrets).
func (u *Upload) Release(k int, owner, msg string, now time.Time) error {
	if l, ok := u.InFlight[k]; ok && l.Owner == owner {
		delete(u.InFlight, k)
	}
	u.Attempts++
	u.LastError = msg
	u.touch(now)
	return nil
}

// SetToken records a token minted for a managed upload and its deadline
// (zero: none).
func (u *Upload) SetToken(token string, deadline, now time.Time) error {
	if u.State.Terminal() || !u.TokenManaged {
		return fmt.Errorf("set token on %s upload (managed %v): %w", u.State, u.TokenManaged, ErrConflict)
	}
	if u.VideoID != "" {
		return fmt.Errorf("set token: part 1 already accepted: %w", ErrConflict)
	}
	u.Token, u.TokenDeadline = Secret(token), deadline
	u.TokenMints++
	u.touch(now)
	return nil
}

// MarkUncertain records that a send of part k ended without an answer, so
// api.video may have it: a later "part already sent" collision then means
// delivered.
func (u *Upload) MarkUncertain(k int) {
	if i, ok := slices.BinarySearch(u.Uncertain, k); !ok && !u.IsDelivered(k) {
		u.Uncertain = slices.Insert(u.Uncertain, i, k)
	}
}

// Fail ends the upload with a reason and queues upload.failed; a terminal
// upload is left as it is.
func (u *Upload) Fail(reason, msg string, now time.Time) error {
	if u.State.Terminal() {
		return fmt.Errorf("fail %s upload: %w", u.State, ErrConflict)
	}
	u.State = StateFailed
	u.Error = &Failure{Reason: reason, Message: msg}
	u.InFlight = nil
	u.queue(EventUploadFailed, now)
	u.touch(now)
	return nil
}

// Terminate records a tus DELETE and queues upload.terminated.
func (u *Upload) Terminate(now time.Time) error {
	if u.State.Terminal() && u.State != StateFailed {
		return fmt.Errorf("terminate %s upload: %w", u.State, ErrConflict)
	}
	u.State = StateTerminated
	u.InFlight = nil
	u.queue(EventUploadTerminated, now)
	u.touch(now)
	return nil
}
