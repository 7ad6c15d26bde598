package gateway

import (
	"context"
	"errors"
	"fmt"
	"maps"
	"net/http"
	"strconv"
	"strings"
	"time"

	"github.com/tus/tusd/v2/pkg/handler"
	"go.uber.org/zap"

	"github.com/tusgate/tusgate/auth"
	"github.com/tusgate/tusgate/store"
)

// GrantVerifier checks the upload grants clients send as
// `Authorization: Bearer …` (auth.Verifier).
type GrantVerifier interface {
	Verify(raw string, now time.Time) (*auth.Grant, error)
}

// AuthChecker asks the platform whether an upload may be created
// (auth.Hook, the pre-create callback).
type AuthChecker interface {
	Check(ctx context.Context, req auth.HookRequest) error
}

// DefaultAllowedFileTypes are the `filetype` prefixes accepted when
// Config.AllowedFileTypes is empty.
var DefaultAllowedFileTypes = []string{"video/"}

// hookRetryAfter is the Retry-After (seconds) of a creation refused
// because the auth hook did not answer.
const hookRetryAfter = "10"

// grantQueryParam carries a grant for GET /uploads/{id} and its events
// stream, which browsers' EventSource cannot send headers with (RFC 6750's
// access_token).
const grantQueryParam = "access_token"

// grantFor returns the verified grant of r, or nil when grants are not
// configured. With query, a grant in the access_token query parameter is
// accepted too (status routes only). The error is a 401 tus error.
func (g *Gateway) grantFor(r *http.Request, query bool) (*auth.Grant, error) {
	if g.cfg.Grants == nil {
		return nil, nil
	}
	raw, err := auth.FromRequest(r)
	if query && errors.Is(err, auth.ErrNoGrant) {
		if q := r.URL.Query().Get(grantQueryParam); q != "" {
			raw, err = q, nil
		}
	}
	if err == nil {
		var grant *auth.Grant
		if grant, err = g.cfg.Grants.Verify(raw, g.cfg.Now()); err == nil {
			return grant, nil
		}
	}
	code := "ERR_GRANT_INVALID"
	switch {
	case errors.Is(err, auth.ErrNoGrant):
		code = "ERR_GRANT_REQUIRED"
	case errors.Is(err, auth.ErrExpiredGrant):
		code = "ERR_GRANT_EXPIRED"
	case errors.Is(err, auth.ErrGrantNotYetValid):
		code = "ERR_GRANT_NOT_YET_VALID"
	}
	msg := "a valid upload grant is required (Authorization: Bearer …)"
	if _, ok := errors.AsType[*auth.Error](err); ok {
		msg = err.Error() // safe to show: never holds the grant
	}
	e := handler.NewError(code, msg, http.StatusUnauthorized)
	e.HTTPResponse.Header["WWW-Authenticate"] = `Bearer realm="tusgate"`
	return nil, e
}

// errForbidden is the 403 of a request whose grant is for another subject
// than the one that created the upload.
var errForbidden = handler.NewError("ERR_UPLOAD_FORBIDDEN", "this upload belongs to another user: the grant's subject is not the upload's", http.StatusForbidden)

// checkOwner refuses a grant whose subject did not create rec.
func checkOwner(grant *auth.Grant, rec *store.Upload) error {
	if grant != nil && rec.Owner != grant.Subject {
		return errForbidden
	}
	return nil
}

// allowedFileTypes returns the configured filetype prefixes.
func (g *Gateway) allowedFileTypes() []string {
	if len(g.cfg.AllowedFileTypes) > 0 {
		return g.cfg.AllowedFileTypes
	}
	return DefaultAllowedFileTypes
}

// authorizeCreation applies the grant's limits and the allowed file types
// to creation c of request r, then asks the auth hook; on success it
// records the grant's subject and metadata in c.
func (g *Gateway) authorizeCreation(r *http.Request, grant *auth.Grant, c *creation) error {
	deferred := r.Header.Get("Upload-Defer-Length") != ""
	size, _ := strconv.ParseInt(r.Header.Get("Upload-Length"), 10, 64)
	if grant != nil && grant.MaxSize > 0 {
		if deferred {
			return badRequest("ERR_LENGTH_REQUIRED", "your upload grant limits the size to %d bytes: declare Upload-Length at creation (Upload-Defer-Length is not allowed)", grant.MaxSize)
		}
		if !grant.AllowsSize(size) {
			return handler.NewError("ERR_GRANT_MAX_SIZE_EXCEEDED",
				fmt.Sprintf("the upload of %d bytes is larger than your upload grant allows (%d bytes)", size, grant.MaxSize), http.StatusRequestEntityTooLarge)
		}
	}
	// A missing filetype is allowed: browsers send none for extensions they
	// do not know; api.video decides whether the bytes are a video.
	if c.filetype != "" && !grant.AllowsFileType(c.filetype, g.allowedFileTypes()) {
		return handler.NewError("ERR_FILETYPE_NOT_ALLOWED",
			fmt.Sprintf("file type %q is not allowed: allowed types start with %s", c.filetype, strings.Join(grant.EffectiveFileTypes(g.allowedFileTypes()), ", ")),
			http.StatusUnsupportedMediaType)
	}
	if grant != nil {
		c.owner = grant.Subject
		// The grant's metadata (signed by the platform) wins over the
		// client's.
		maps.Copy(c.extra, grant.Metadata)
	}
	if g.cfg.AuthHook == nil {
		return nil
	}
	req := auth.HookRequest{
		Size: size, SizeDeferred: deferred, Filename: c.filename, Filetype: c.filetype,
		ClientMetadata: c.extra, ClientAddress: g.clientAddr(r).String(), Host: r.Host,
	}
	if grant != nil {
		req.Subject, req.Metadata = grant.Subject, grant.Metadata
	}
	err := g.cfg.AuthHook.Check(r.Context(), req)
	if err == nil {
		return nil
	}
	if d, ok := errors.AsType[*auth.DeniedError](err); ok {
		e := handler.NewError("ERR_UPLOAD_DENIED", d.Message, d.Status)
		if d.RetryAfter > 0 {
			e.HTTPResponse.Header["Retry-After"] = strconv.Itoa(int((d.RetryAfter + time.Second - 1) / time.Second))
		}
		return e
	}
	g.logger(r.Context()).Warn("auth hook unavailable: creation refused", zap.Error(err))
	e := handler.NewError("ERR_AUTH_HOOK_UNAVAILABLE", "the platform could not authorize the upload right now, retry later", http.StatusServiceUnavailable)
	e.HTTPResponse.Header["Retry-After"] = hookRetryAfter
	return e
}
