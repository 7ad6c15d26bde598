package gateway

import (
	"context"
	"crypto/rand"
	"encoding/base64"
	"encoding/hex"
	"errors"
	"fmt"
	"net/http"
	"net/url"
	"strconv"
	"strings"
	"syscall"
	"time"

	"github.com/dustin/go-humanize"
	"github.com/tus/tusd/v2/pkg/handler"
	"go.uber.org/zap"

	"github.com/tusgate/tusgate/store"
)

// Metadata keys with a meaning to the gateway.
const (
	metaToken          = "token"
	metaTokenExpiresAt = "tokenExpiresAt"
)

// msgTokenRequired is the creation error in delegated-only mode without a token.
const msgTokenRequired = "Upload-Metadata must include the api.video upload token as `token` (delegated mode)"

// requestState travels in the request context (set before tusd's
// Middleware, so tusd's contexts carry it) from the gateway's checks to
// tusd's callbacks and the data store.
type requestState struct {
	// creation is the validated creation request (POST only).
	creation *creation
	// record is the state-store record read by tusGuard (HEAD, PATCH) or
	// created by the data store (POST), as this request last saw it.
	record *store.Upload
	// header is the response's header map, where the data store sets
	// Upload-Expires before tusd writes the response.
	header http.Header
	// discard is set when a creation request ends because the state store
	// failed after the record was created: the client never learns the
	// upload's URL, so its bytes are removed once tusd is done.
	discard bool
	// client is the client address of a creation (see clientKey), and
	// reserved whether it holds an open-upload slot no upload took yet.
	client   string
	reserved bool
	// subject is the grant subject of a creation, and subjectReserved
	// whether it holds an open-upload slot no upload took yet.
	subject         string
	subjectReserved bool
	// status is the final status code of the response, once written.
	status int
	// bodyLen is the request's Content-Length (-1 when unknown), and conn
	// its connection when ConnContext recorded it (HTTP/1 only: the body
	// is the connection's next bytes).
	bodyLen int64
	conn    syscall.RawConn
}

type requestStateKey struct{}

func requestStateFrom(ctx context.Context) *requestState {
	rs, _ := ctx.Value(requestStateKey{}).(*requestState)
	return rs
}

// creation is what a validated POST asks for.
type creation struct {
	token         store.Secret
	tokenDeadline time.Time
	// managed: no token was sent and the gateway may mint one.
	managed bool
	// kept is the metadata tusd stores and echoes on HEAD (no secrets).
	kept               handler.MetaData
	filename, filetype string
	// extra is the metadata not mapped to a record field (the grant's
	// metadata included).
	extra map[string]string
	// owner is the subject of the grant that creates the upload ("" without
	// grants).
	owner string
}

// withRequestState puts an empty requestState in the request context, and
// records the response's status code in it.
func (g *Gateway) withRequestState(next http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		rs := &requestState{header: w.Header(), bodyLen: r.ContentLength}
		if r.ProtoMajor == 1 {
			rs.conn, _ = r.Context().Value(rawConnKey{}).(syscall.RawConn)
		}
		w = &statusWriter{ResponseWriter: w, rs: rs}
		next.ServeHTTP(w, r.WithContext(context.WithValue(r.Context(), requestStateKey{}, rs)))
	})
}

// statusWriter records the final status code of a response in its
// requestState. It keeps Unwrap, so http.ResponseController (tusd's read
// deadlines) still reaches the connection.
type statusWriter struct {
	http.ResponseWriter
	rs *requestState
}

// WriteHeader implements http.ResponseWriter.
func (s *statusWriter) WriteHeader(code int) {
	if s.rs.status == 0 && code >= 200 {
		s.rs.status = code
	}
	s.ResponseWriter.WriteHeader(code)
}

// Write implements http.ResponseWriter.
func (s *statusWriter) Write(b []byte) (int, error) {
	if s.rs.status == 0 {
		s.rs.status = http.StatusOK
	}
	return s.ResponseWriter.Write(b)
}

// Unwrap returns the wrapped ResponseWriter (for http.ResponseController).
func (s *statusWriter) Unwrap() http.ResponseWriter { return s.ResponseWriter }

// tusGuard runs after tusd's Middleware (so CORS and Tus-Resumable headers
// are set and OPTIONS is answered) and before tusd's handlers: it validates
// creation requests strictly, and answers HEAD and PATCH on failed or
// terminated uploads itself, failing first a delegated upload whose token
// deadline passed before part 1 reached api.video.
func (g *Gateway) tusGuard(next http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		rs := requestStateFrom(r.Context())
		if rs == nil {
			writeTusError(w, r, errInternal)
			return
		}
		id := strings.Trim(r.URL.Path, "/")
		switch {
		case id == "" && r.Method == http.MethodPost:
			key := g.clientKey(r)
			if err := g.admitCreation(key); err != nil {
				writeTusError(w, r, err)
				return
			}
			grant, err := g.grantFor(r, false)
			if err != nil {
				g.logger(r.Context()).Info("upload creation refused", zap.String("reason", err.Error()))
				writeTusError(w, r, err)
				return
			}
			c, err := g.checkCreation(r)
			if err == nil {
				err = g.authorizeCreation(r, grant, c)
			}
			if err != nil {
				g.logger(r.Context()).Info("upload creation refused", zap.String("reason", err.Error()))
				writeTusError(w, r, err)
				return
			}
			if err := g.reserveOpen(r.Context(), key); err != nil {
				writeTusError(w, r, err)
				return
			}
			rs.creation, rs.client, rs.reserved = c, key, true
			defer func() {
				if rs.reserved {
					g.open.cancel(key)
				}
			}()
			if grant != nil {
				if err := g.reserveOpenForSubject(r.Context(), grant.Subject); err != nil {
					writeTusError(w, r, err)
					return
				}
				rs.subject, rs.subjectReserved = grant.Subject, true
				defer func() {
					if rs.subjectReserved {
						g.openSubj.cancel(grant.Subject)
					}
				}()
			}
		case id != "" && r.Method == http.MethodDelete && g.cfg.Grants != nil:
			grant, err := g.grantFor(r, false)
			if err == nil {
				var rec *store.Upload
				if rec, err = g.st.Get(r.Context(), id); err != nil {
					err = storeError(err)
				} else {
					err = checkOwner(grant, rec)
				}
			}
			if err != nil {
				writeTusError(w, r, err)
				return
			}
		case id != "" && (r.Method == http.MethodHead || r.Method == http.MethodPatch):
			grant, err := g.grantFor(r, false)
			if err != nil {
				writeTusError(w, r, err)
				return
			}
			rec, err := g.st.Get(r.Context(), id)
			if err != nil {
				if !errors.Is(err, store.ErrNotFound) {
					g.logger(r.Context()).Error("read upload record", zap.String("id", id), zap.Error(err))
				}
				writeTusError(w, r, storeError(err))
				return
			}
			if err := checkOwner(grant, rec); err != nil {
				writeTusError(w, r, err)
				return
			}
			if rec.State == store.StateDelivered {
				answerDelivered(w, r, rec)
				return
			}
			if err := stateError(rec); err != nil {
				g.forget(id)
				writeTusError(w, r, *err)
				return
			}
			rec, err = g.failMissedDeadline(r.Context(), rec)
			if err != nil {
				writeTusError(w, r, err)
				return
			}
			rs.record = rec
		}
		next.ServeHTTP(w, r)
	})
}

// Errors the gateway sends through tusd or itself. Messages are safe to show.
var (
	errInternal = handler.NewError("ERR_INTERNAL", "internal error", http.StatusInternalServerError)
	errConflict = handler.NewError("ERR_UPLOAD_STATE_CONFLICT", "the upload's state does not allow this request", http.StatusConflict)
	// errTokenUnknown is 403: the request is well-formed, but api.video
	// refuses the credential it carries, and retrying cannot help.
	errTokenUnknown = handler.NewError("ERR_TOKEN_UNKNOWN", "the upload token is unknown to api.video or expired", http.StatusForbidden)
)

// Retry-After values (seconds) of the gateway's transient errors.
const (
	// tokenRetryAfter: a creation refused because the token could not be
	// looked up.
	tokenRetryAfter = "10"
	// storeRetryAfter: the state store (or the data store) failed.
	storeRetryAfter = "5"
	// diskFullRetryAfter: the data directory's filesystem is full.
	diskFullRetryAfter = "60"
)

// codeStoreUnavailable is the tus error code of errStoreUnavailable.
const codeStoreUnavailable = "ERR_STATE_STORE_UNAVAILABLE"

// errStoreUnavailable is the 503 of a request the state store failed: the
// gateway takes no byte it cannot track. Each call returns a new header map.
func errStoreUnavailable() handler.Error {
	e := handler.NewError(codeStoreUnavailable, "state store unavailable, retry later", http.StatusServiceUnavailable)
	e.HTTPResponse.Header["Retry-After"] = storeRetryAfter
	return e
}

// errDataStore is the 503 of a request the data store (the upload files)
// failed for a reason other than a full disk.
func errDataStore() handler.Error {
	e := handler.NewError("ERR_DATA_STORE", "the upload data store failed, retry later", http.StatusServiceUnavailable)
	e.HTTPResponse.Header["Retry-After"] = storeRetryAfter
	return e
}

// errDiskFull is the 507 of a request that found the data directory's
// filesystem full. The bytes written before are kept: the client resumes
// from the offset a HEAD reports once space is back.
func errDiskFull() handler.Error {
	e := handler.NewError("ERR_DISK_FULL", "the gateway's disk is full: the bytes received so far are kept, resume later", http.StatusInsufficientStorage)
	e.HTTPResponse.Header["Retry-After"] = diskFullRetryAfter
	return e
}

// isDiskFull reports whether err means the filesystem has no space left
// (or the quota is exhausted).
func isDiskFull(err error) bool {
	return errors.Is(err, syscall.ENOSPC) || errors.Is(err, syscall.EDQUOT)
}

// errTokenLookup is the 503 of a creation whose token could not be looked up.
func errTokenLookup() handler.Error {
	e := handler.NewError("ERR_TOKEN_CHECK_UNAVAILABLE", "api.video could not be asked about the upload token, try again later", http.StatusServiceUnavailable)
	e.HTTPResponse.Header["Retry-After"] = tokenRetryAfter
	return e
}

// storeError maps a state-store error to the response tus clients get.
func storeError(err error) handler.Error {
	switch {
	case errors.Is(err, store.ErrNotFound):
		return handler.ErrNotFound
	case errors.Is(err, store.ErrConflict):
		return errConflict
	default:
		return errStoreUnavailable()
	}
}

// stateError returns the response for tus requests on an upload that can
// no longer receive bytes: 410 Gone for a failed upload (so tus clients stop
// retrying), 404 for a terminated one.
func stateError(u *store.Upload) *handler.Error {
	switch u.State {
	case store.StateFailed:
		msg := "upload failed"
		if u.Error != nil {
			msg += ": " + u.Error.Reason + ": " + u.Error.Message
		}
		e := handler.NewError("ERR_UPLOAD_FAILED", msg, http.StatusGone)
		return &e
	case store.StateTerminated:
		e := handler.ErrNotFound
		return &e
	}
	return nil
}

// writeTusError writes err the way tusd does (text body "CODE: message"),
// keeping the headers tusd's Middleware already set.
// An error that is not a handler.Error is sent as a bare internal error.
func writeTusError(w http.ResponseWriter, r *http.Request, e error) {
	err, ok := errors.AsType[handler.Error](e)
	if !ok {
		err = errInternal
	}
	h := w.Header()
	for k, v := range err.HTTPResponse.Header {
		h.Set(k, v)
	}
	body := err.HTTPResponse.Body
	if r.Method == http.MethodHead {
		body = ""
	}
	if body != "" {
		h.Set("Content-Length", strconv.Itoa(len(body)))
	}
	w.WriteHeader(err.HTTPResponse.StatusCode)
	if body != "" {
		_, _ = w.Write([]byte(body))
	}
}

func badRequest(code, format string, args ...any) handler.Error {
	return handler.NewError(code, fmt.Sprintf(format, args...), http.StatusBadRequest)
}

// checkCreation validates a POST before tusd sees it: the length, the
// Upload-Metadata header (its size, and strictly its entries: tusd skips
// malformed ones silently) and the api.video token.
func (g *Gateway) checkCreation(r *http.Request) (*creation, error) {
	ctx := r.Context()
	if err := g.checkMetadataSize(r.Header); err != nil {
		return nil, err
	}
	if l := r.Header.Get("Upload-Length"); l != "" && r.Header.Get("Upload-Defer-Length") == "" {
		// An unparsable length is left to tusd, which answers 400.
		if size, err := strconv.ParseInt(l, 10, 64); err == nil {
			if size == 0 {
				return nil, badRequest("ERR_EMPTY_UPLOAD", "Upload-Length must be at least 1: api.video does not accept empty videos")
			}
			if err := g.checkSize(size); err != nil {
				return nil, err
			}
		}
	}
	meta, err := parseMetadata(r.Header.Get("Upload-Metadata"))
	if err != nil {
		return nil, err
	}
	c := &creation{kept: handler.MetaData{}, extra: map[string]string{}}
	for k, v := range meta {
		if k != metaToken && k != metaTokenExpiresAt {
			c.kept[k] = v
		}
	}
	tok, hasTok := meta[metaToken]
	switch {
	case hasTok && tok != "":
		if err := checkToken(tok); err != nil {
			return nil, err
		}
		c.token = store.Secret(tok)
	case g.cfg.TokenRequired:
		return nil, badRequest("ERR_TOKEN_REQUIRED", msgTokenRequired)
	case hasTok:
		return nil, badRequest("ERR_INVALID_TOKEN", "Upload-Metadata `token` is empty")
	default:
		c.managed = true
	}
	if c.token != "" {
		exp, hasExp := meta[metaTokenExpiresAt]
		deadline, err := g.tokenDeadline(ctx, tok, exp, hasExp)
		if err != nil {
			return nil, err
		}
		now := g.cfg.Now()
		switch {
		case deadline.IsZero():
		case !deadline.After(now):
			return nil, badRequest("ERR_TOKEN_EXPIRED", "token expired at %s", deadline.UTC().Format(time.RFC3339))
		case deadline.Sub(now) < g.cfg.TokenMinLifetime:
			return nil, badRequest("ERR_TOKEN_EXPIRED", "token expires at %s, less than %v from now: too soon to start the upload", deadline.UTC().Format(time.RFC3339), g.cfg.TokenMinLifetime)
		}
		c.tokenDeadline = deadline
	}
	nameKey, name := firstOf(c.kept, "filename", "name")
	typeKey, typ := firstOf(c.kept, "filetype", "type")
	c.filename, c.filetype = name, typ
	for k, v := range c.kept {
		if k != nameKey && k != typeKey {
			c.extra[k] = v
		}
	}
	return c, nil
}

// tokenDeadline returns the deadline of a delegated token (zero: never or
// unknown). A `tokenExpiresAt` (exp, when hasExp) must be RFC 3339 in any
// case; with a TokenInspector, api.video's answer beats it.
func (g *Gateway) tokenDeadline(ctx context.Context, tok, exp string, hasExp bool) (time.Time, error) {
	var deadline time.Time
	if hasExp {
		var err error
		if deadline, err = time.Parse(time.RFC3339Nano, exp); err != nil {
			return time.Time{}, badRequest("ERR_INVALID_TOKEN_EXPIRY", "Upload-Metadata `tokenExpiresAt` must be an RFC 3339 time such as 2006-01-02T15:04:05Z")
		}
	}
	if g.cfg.Tokens == nil {
		return deadline, nil
	}
	ctx, cancel := context.WithTimeout(ctx, g.cfg.TokenLookupTimeout)
	defer cancel()
	deadline, err := g.cfg.Tokens.TokenDeadline(ctx, tok)
	switch {
	case errors.Is(err, ErrUnknownToken):
		return time.Time{}, errTokenUnknown
	case err != nil:
		g.logger(ctx).Warn("upload creation: token lookup failed", zap.String("error", redact(err.Error(), tok)))
		return time.Time{}, errTokenLookup()
	}
	return deadline, nil
}

// redact replaces every form of secret in s (raw, path- and query-escaped).
func redact(s, secret string) string {
	if secret == "" {
		return s
	}
	for _, form := range []string{secret, url.PathEscape(secret), url.QueryEscape(secret)} {
		s = strings.ReplaceAll(s, form, "[REDACTED]")
	}
	return s
}

// errNotDue ends failMissedDeadline's update when the record changed
// meanwhile so that its token deadline no longer applies.
var errNotDue = errors.New("token deadline not missed")

// tokenDeadlineMissed reports whether u is a live delegated upload whose
// token deadline passed before part 1 reached api.video (no video id).
func tokenDeadlineMissed(u *store.Upload, now time.Time) bool {
	return !u.State.Terminal() && !u.TokenManaged && u.VideoID == "" &&
		!u.TokenDeadline.IsZero() && !now.Before(u.TokenDeadline)
}

// failMissedDeadline fails rec when its token deadline passed before part 1
// reached api.video, tells the Notifier, and returns the 410 the client gets
// (so tus clients stop retrying). The forwarder fails such uploads on its own
// timer too: an upload found failed already also gives 410, with the stored
// reason. Otherwise it returns the record the request goes on with.
func (g *Gateway) failMissedDeadline(ctx context.Context, rec *store.Upload) (*store.Upload, error) {
	now := g.cfg.Now()
	if !tokenDeadlineMissed(rec, now) {
		return rec, nil
	}
	var cur *store.Upload
	saved, err := g.st.Update(ctx, rec.ID, func(u *store.Upload) error {
		cur = u.Clone()
		if !u.State.Terminal() && !tokenDeadlineMissed(u, now) {
			return errNotDue
		}
		msg := fmt.Sprintf("the upload token expired at %s before the first part reached api.video", u.TokenDeadline.UTC().Format(time.RFC3339))
		return u.Fail(store.ReasonDeadlineMissed, msg, now)
	})
	switch {
	case err == nil:
		g.forget(rec.ID)
		g.logger(ctx).Warn("upload failed: token deadline passed before part 1", zap.String("id", rec.ID),
			zap.Time("tokenDeadline", saved.TokenDeadline))
		g.n.Notify(rec.ID)
		return nil, *stateError(saved)
	case errors.Is(err, errNotDue):
		return cur, nil
	case errors.Is(err, store.ErrConflict) && cur != nil:
		// Failed (by the forwarder, first), terminated or delivered meanwhile.
		if e := stateError(cur); e != nil {
			g.forget(rec.ID)
			return nil, *e
		}
		return cur, nil
	default:
		if !errors.Is(err, store.ErrNotFound) {
			g.logger(ctx).Error("fail upload past its token deadline", zap.String("id", rec.ID), zap.Error(err))
		}
		return nil, storeError(err)
	}
}

// firstOf returns the first of keys present in meta and its value.
func firstOf(meta handler.MetaData, keys ...string) (key, val string) {
	for _, k := range keys {
		if v, ok := meta[k]; ok {
			return k, v
		}
	}
	return "", ""
}

// checkSize refuses sizes above the configured maximum or above what
// 10,000 parts of the plan hold.
func (g *Gateway) checkSize(size int64) error {
	if size <= g.maxSize {
		return nil
	}
	if g.maxSize < g.cfg.MaxSize {
		return handler.NewError("ERR_MAX_SIZE_EXCEEDED", fmt.Sprintf(
			"Upload-Length %d exceeds the maximum upload size of %d bytes (%s): api.video takes at most %d parts of %s",
			size, g.maxSize, humanize.IBytes(uint64(g.maxSize)), store.MaxParts, humanize.IBytes(uint64(g.cfg.Plan.PartSize))),
			http.StatusRequestEntityTooLarge)
	}
	return handler.NewError("ERR_MAX_SIZE_EXCEEDED", fmt.Sprintf(
		"Upload-Length %d exceeds the maximum upload size of %d bytes (%s)", size, g.maxSize, humanize.IBytes(uint64(g.maxSize))),
		http.StatusRequestEntityTooLarge)
}

// checkMetadataSize refuses an Upload-Metadata header sent more than once
// (tusd would read only the first) or longer than Config.MaxMetadataSize.
func (g *Gateway) checkMetadataSize(h http.Header) error {
	vals := h.Values("Upload-Metadata")
	if len(vals) > 1 {
		return badRequest("ERR_INVALID_METADATA", "Upload-Metadata must be sent once, not %d times", len(vals))
	}
	if len(vals) == 1 && len(vals[0]) > g.cfg.MaxMetadataSize {
		return handler.NewError("ERR_METADATA_TOO_LARGE", fmt.Sprintf(
			"Upload-Metadata is %d bytes long, more than the %d bytes allowed", len(vals[0]), g.cfg.MaxMetadataSize),
			http.StatusRequestHeaderFieldsTooLarge)
	}
	return nil
}

// checkToken rejects token values that cannot be an api.video upload token.
// The value is never echoed.
func checkToken(tok string) error {
	if len(tok) > 256 {
		return badRequest("ERR_INVALID_TOKEN", "Upload-Metadata `token` is too long to be an api.video upload token")
	}
	for i := 0; i < len(tok); i++ {
		if c := tok[i]; c <= ' ' || c >= 0x7f {
			return badRequest("ERR_INVALID_TOKEN", "Upload-Metadata `token` contains characters an api.video upload token cannot have")
		}
	}
	return nil
}

// parseMetadata parses an Upload-Metadata header strictly: comma-separated
// entries, each `key` or `key base64value`, with a non-empty key made of
// printable ASCII without spaces or commas, a valid standard base64 value,
// and no key twice. Errors name the entry by position (and key when it is
// well-formed), never its value.
func parseMetadata(h string) (map[string]string, error) {
	meta := map[string]string{}
	if strings.TrimSpace(h) == "" {
		return meta, nil
	}
	for i, entry := range strings.Split(h, ",") {
		n := i + 1
		entry = strings.TrimSpace(entry)
		if entry == "" {
			return nil, badRequest("ERR_INVALID_METADATA", "Upload-Metadata entry %d is empty", n)
		}
		key, val, hasVal := strings.Cut(entry, " ")
		if key == "" || !validKey(key) {
			return nil, badRequest("ERR_INVALID_METADATA", "Upload-Metadata entry %d: the key must be printable ASCII without spaces or commas", n)
		}
		if len(key) > 64 {
			return nil, badRequest("ERR_INVALID_METADATA", "Upload-Metadata entry %d: the key is longer than 64 bytes", n)
		}
		if _, dup := meta[key]; dup {
			return nil, badRequest("ERR_INVALID_METADATA", "Upload-Metadata entry %d (key %q): the key appears twice", n, key)
		}
		if !hasVal {
			meta[key] = ""
			continue
		}
		if strings.Contains(val, " ") {
			return nil, badRequest("ERR_INVALID_METADATA", "Upload-Metadata entry %d (key %q): expected `key` or `key base64value`", n, key)
		}
		dec, err := base64.StdEncoding.Strict().DecodeString(val)
		if err != nil || val == "" {
			return nil, badRequest("ERR_INVALID_METADATA", "Upload-Metadata entry %d (key %q): the value is not valid standard base64", n, key)
		}
		meta[key] = string(dec)
	}
	return meta, nil
}

func validKey(k string) bool {
	for i := 0; i < len(k); i++ {
		if c := k[i]; c <= ' ' || c >= 0x7f || c == ',' {
			return false
		}
	}
	return true
}

// newID returns a new upload id: 128 random bits, lowercase hex.
func newID() (string, error) {
	var b [16]byte
	if _, err := rand.Read(b[:]); err != nil {
		return "", fmt.Errorf("read random id: %w", err)
	}
	return hex.EncodeToString(b[:]), nil
}

// preCreate is tusd's PreUploadCreateCallback: it picks the upload id and
// replaces the metadata tusd keeps with the validated one, without secrets.
// The record itself is created by the data store once the file exists.
func (g *Gateway) preCreate(hook handler.HookEvent) (handler.HTTPResponse, handler.FileInfoChanges, error) {
	rs := requestStateFrom(hook.Context)
	if rs == nil || rs.creation == nil {
		g.logger(hook.Context).Error("creation reached tusd without validation")
		return handler.HTTPResponse{}, handler.FileInfoChanges{}, errInternal
	}
	id, err := newID()
	if err != nil {
		g.logger(hook.Context).Error("new upload id", zap.Error(err))
		return handler.HTTPResponse{}, handler.FileInfoChanges{}, errInternal
	}
	return handler.HTTPResponse{}, handler.FileInfoChanges{ID: id, MetaData: rs.creation.kept}, nil
}
