package gateway

import (
	"context"
	"encoding/json"
	"errors"
	"net/http"
	"time"

	"github.com/tus/tusd/v2/pkg/handler"
	"go.uber.org/zap"

	"github.com/tusgate/tusgate/auth"
	"github.com/tusgate/tusgate/store"
)

// readyTimeout bounds each readiness check.
const readyTimeout = 5 * time.Second

// Status is the JSON body of GET /uploads/{id}. It never holds the token.
type Status struct {
	ID    string      `json:"id"`
	State store.State `json:"state"`
	// Size is null while the length is deferred.
	Size *int64 `json:"size"`
	// Received is the number of bytes in the data store.
	Received int64 `json:"received"`
	// Delivered is the number of bytes api.video accepted.
	Delivered          int64          `json:"delivered"`
	Parts              StatusParts    `json:"parts"`
	VideoID            *string        `json:"videoId"`
	Assets             StatusAssets   `json:"assets"`
	TokenDeadline      *time.Time     `json:"tokenDeadline"`
	CompletionDeadline *time.Time     `json:"completionDeadline"`
	Error              *store.Failure `json:"error"`
	Filename           *string        `json:"filename"`
	CreatedAt          time.Time      `json:"createdAt"`
	UpdatedAt          time.Time      `json:"updatedAt"`
	// Stalled is true when the upload is not complete, not terminal, and no
	// byte arrived for the gateway's IdleTimeout. It can still be resumed.
	Stalled bool `json:"stalled"`
}

// StatusParts counts an upload's api.video parts.
type StatusParts struct {
	// Total is null while the length is deferred.
	Total     *int `json:"total"`
	Delivered int  `json:"delivered"`
}

// StatusAssets are the video's URLs, null until api.video returns them.
type StatusAssets = store.AssetURLs

func strOrNil(s string) *string {
	if s == "" {
		return nil
	}
	return &s
}

func timeOrNil(t time.Time) *time.Time {
	if t.IsZero() {
		return nil
	}
	t = t.UTC()
	return &t
}

// newStatus builds the status of u; live is the durable offset this
// process knows of, if any.
func newStatus(u *store.Upload, live int64, hasLive bool) Status {
	s := Status{
		ID:                 u.ID,
		State:              u.State,
		Received:           u.Received,
		Delivered:          u.DeliveredBytes,
		Parts:              StatusParts{Delivered: len(u.Delivered)},
		VideoID:            strOrNil(u.VideoID),
		TokenDeadline:      timeOrNil(u.TokenDeadline),
		CompletionDeadline: timeOrNil(u.CompletionDeadline),
		Error:              u.Error,
		Filename:           strOrNil(u.Filename),
		CreatedAt:          u.CreatedAt.UTC(),
		UpdatedAt:          u.UpdatedAt.UTC(),
		Assets:             u.Assets.URLs(),
	}
	if !u.SizeDeferred {
		size, total := u.Size, u.TotalParts()
		s.Size, s.Parts.Total = &size, &total
	}
	if hasLive && !u.State.Terminal() && live > s.Received {
		s.Received = live
	}
	if u.Complete && !u.SizeDeferred {
		s.Received = u.Size
	}
	return s
}

type jsonError struct {
	Error jsonErrorBody `json:"error"`
}

type jsonErrorBody struct {
	Code    string `json:"code"`
	Message string `json:"message"`
}

func writeJSON(w http.ResponseWriter, status int, v any) {
	w.Header().Set("Content-Type", "application/json")
	w.Header().Set("Cache-Control", "no-store")
	w.Header().Set("X-Content-Type-Options", "nosniff")
	w.WriteHeader(status)
	_ = json.NewEncoder(w).Encode(v)
}

// allowCORS adds the CORS headers of an allowed Origin to a status
// response; it reports false for a disallowed origin.
func (g *Gateway) allowCORS(w http.ResponseWriter, r *http.Request) bool {
	origin := r.Header.Get("Origin")
	if origin == "" || g.cors.Disable {
		return true
	}
	if !g.cors.AllowOrigin.MatchString(origin) {
		return false
	}
	w.Header().Set("Access-Control-Allow-Origin", origin)
	w.Header().Add("Vary", "Origin")
	return true
}

// handleStatusPreflight answers CORS preflights for the status API.
func (g *Gateway) handleStatusPreflight(w http.ResponseWriter, r *http.Request) {
	if !g.allowCORS(w, r) {
		writeJSON(w, http.StatusForbidden, jsonError{jsonErrorBody{"origin_not_allowed", "request origin is not allowed"}})
		return
	}
	w.Header().Set("Access-Control-Allow-Methods", "GET, OPTIONS")
	w.Header().Set("Access-Control-Allow-Headers", "Authorization, Content-Type, X-Request-ID")
	w.Header().Set("Access-Control-Max-Age", g.cors.MaxAge)
	w.WriteHeader(http.StatusNoContent)
}

// handleStatus serves GET /uploads/{id}, from the state store (never
// through tusd, whose HEAD would interrupt a running PATCH).
func (g *Gateway) handleStatus(w http.ResponseWriter, r *http.Request) {
	if !g.allowCORS(w, r) {
		writeJSON(w, http.StatusForbidden, jsonError{jsonErrorBody{"origin_not_allowed", "request origin is not allowed"}})
		return
	}
	grant, err := g.grantFor(r, true)
	if err != nil {
		writeStatusError(w, err)
		return
	}
	s, err := g.loadStatus(r.Context(), r.PathValue("id"), grant)
	if err != nil {
		writeStatusError(w, err)
		return
	}
	writeJSON(w, http.StatusOK, s)
}

// errStatusNotFound is loadStatus's error for an unknown upload.
var errStatusNotFound = errors.New("upload not found")

// loadStatus reads the status of upload id from the state store (and this
// process's live offset). The error is errStatusNotFound or a state-store
// failure (logged), or errForbidden when grant (non-nil with grants on) is
// not the upload owner's.
func (g *Gateway) loadStatus(ctx context.Context, id string, grant *auth.Grant) (Status, error) {
	if id == "" || len(id) > 128 {
		return Status{}, errStatusNotFound
	}
	u, err := g.st.Get(ctx, id)
	switch {
	case errors.Is(err, store.ErrNotFound):
		return Status{}, errStatusNotFound
	case err != nil:
		if ctx.Err() == nil {
			g.logger(ctx).Error("status: read upload record", zap.String("id", id), zap.Error(err))
		}
		return Status{}, err
	}
	if err := checkOwner(grant, u); err != nil {
		return Status{}, err
	}
	live, hasLive := g.liveOffset(id)
	s := newStatus(u, live, hasLive)
	s.Stalled = g.stalled(ctx, u, g.cfg.Now())
	return s, nil
}

// writeStatusError answers a grantFor or loadStatus error as JSON: 401 or
// 403 (grants), 404, or 503 with Retry-After.
func writeStatusError(w http.ResponseWriter, err error) {
	if e, ok := errors.AsType[handler.Error](err); ok {
		for k, v := range e.HTTPResponse.Header {
			w.Header().Set(k, v)
		}
		writeJSON(w, e.HTTPResponse.StatusCode, jsonError{jsonErrorBody{e.ErrorCode, e.Message}})
		return
	}
	if errors.Is(err, errStatusNotFound) {
		writeJSON(w, http.StatusNotFound, jsonError{jsonErrorBody{"not_found", "upload not found"}})
		return
	}
	w.Header().Set("Retry-After", storeRetryAfter)
	writeJSON(w, http.StatusServiceUnavailable, jsonError{jsonErrorBody{"unavailable", "state store unavailable, retry later"}})
}

// handleHealthz reports that the process is up.
func (g *Gateway) handleHealthz(w http.ResponseWriter, _ *http.Request) {
	w.Header().Set("Content-Type", "text/plain; charset=utf-8")
	w.Header().Set("Cache-Control", "no-store")
	_, _ = w.Write([]byte("ok\n"))
}

// Readiness is the JSON body of GET /readyz.
type Readiness struct {
	// Status is "ok" or "unavailable".
	Status string `json:"status"`
	// Checks maps each check ("store", "dataDir") to "ok" or what failed.
	Checks map[string]string `json:"checks"`
}

// handleReadyz reports whether the state store answers and the data
// directory is writable.
func (g *Gateway) handleReadyz(w http.ResponseWriter, r *http.Request) {
	ctx, cancel := context.WithTimeout(r.Context(), readyTimeout)
	defer cancel()
	rd := Readiness{Status: "ok", Checks: map[string]string{"store": "ok", "dataDir": "ok"}}
	if err := g.st.Ping(ctx); err != nil {
		g.logger(ctx).Warn("readiness: state store ping failed", zap.Error(err))
		rd.Status, rd.Checks["store"] = "unavailable", "state store ping failed"
	}
	if err := g.be.Check(ctx); err != nil {
		g.logger(ctx).Warn("readiness: data dir not writable", zap.Error(err))
		rd.Status, rd.Checks["dataDir"] = "unavailable", "data directory is not writable"
	}
	status := http.StatusOK
	if rd.Status != "ok" {
		status = http.StatusServiceUnavailable
	}
	writeJSON(w, status, rd)
}
