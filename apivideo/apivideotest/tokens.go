package apivideotest

import (
	"cmp"
	"encoding/json"
	"io"
	"net/http"
	"slices"
	"strconv"
	"strings"
	"time"
)

// uploadToken is a delegated upload token.
type uploadToken struct {
	token     string
	ttl       time.Duration // 0: never expires
	createdAt time.Time
	seq       int // creation order
}

// validAt reports whether t can start an upload at now; a nil token is
// invalid.
func (t *uploadToken) validAt(now time.Time) bool {
	return t != nil && (t.ttl == 0 || now.Before(t.createdAt.Add(t.ttl)))
}

type tokenJSON struct {
	Token     string  `json:"token"`
	TTL       int64   `json:"ttl"`
	CreatedAt string  `json:"createdAt"`
	ExpiresAt *string `json:"expiresAt,omitempty"`
}

func (t *uploadToken) json() tokenJSON {
	j := tokenJSON{Token: t.token, TTL: int64(t.ttl / time.Second), CreatedAt: apiTime(t.createdAt)}
	if t.ttl != 0 {
		exp := apiTime(t.createdAt.Add(t.ttl))
		j.ExpiresAt = &exp
	}
	return j
}

// CreateToken creates an upload token valid for ttl from now (by the
// server's clock) and returns it. ttl 0 means it never expires; a negative
// ttl gives a token that has already expired.
func (s *Server) CreateToken(ttl time.Duration) string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.createTokenLocked(s.now(), ttl).token
}

func (s *Server) createTokenLocked(now time.Time, ttl time.Duration) *uploadToken {
	s.tokenSeq++
	t := &uploadToken{token: newID("to", 22), ttl: ttl, createdAt: now, seq: s.tokenSeq}
	s.tokens[t.token] = t
	return t
}

// RevokeToken deletes an upload token, as DELETE /upload-tokens/{token}
// does: it stops working at once (videos it started may still complete
// within their window).
func (s *Server) RevokeToken(token string) {
	s.mu.Lock()
	defer s.mu.Unlock()
	delete(s.tokens, token)
}

// authorized reports whether r carries a valid API key (Basic, key as user
// name) or bearer access token; otherwise it answers 401.
func (s *Server) authorized(x *exchange) bool {
	h := x.r.Header.Get("Authorization")
	ok := false
	if key, _, basic := x.r.BasicAuth(); basic {
		ok = s.apiKeys[key]
	} else if bearer, found := strings.CutPrefix(h, "Bearer "); found {
		s.mu.Lock()
		exp, known := s.accessTokens[bearer]
		s.mu.Unlock()
		ok = known && x.at.Before(exp)
	}
	if ok {
		return true
	}
	drain(x.r)
	if h == "" {
		x.fail(newProblem(http.StatusUnauthorized, "authentication-missing-authorization-header",
			"The authorization header is missing.", "", ""))
	} else {
		x.fail(newProblem(http.StatusUnauthorized, "authentication-invalid-access-token",
			"The access token is invalid or expired.", "", ""))
	}
	return false
}

// readJSON decodes a small JSON request body into v, answering 400 when it
// is not valid JSON. An empty body leaves v as is when allowEmpty.
func readJSON(x *exchange, v any, allowEmpty bool) bool {
	data, err := io.ReadAll(io.LimitReader(x.r.Body, 64<<10))
	if err == nil && len(strings.TrimSpace(string(data))) == 0 && allowEmpty {
		return true
	}
	if err == nil {
		err = json.Unmarshal(data, v)
	}
	if err != nil {
		drain(x.r)
		x.fail(newProblem(http.StatusBadRequest, "invalid-payload", "The payload is invalid.", "", err.Error()))
		return false
	}
	return true
}

type authJSON struct {
	TokenType    string `json:"token_type"`
	ExpiresIn    int    `json:"expires_in"`
	AccessToken  string `json:"access_token"`
	RefreshToken string `json:"refresh_token"`
}

// issueAccessLocked creates a bearer access token and its refresh token.
func (s *Server) issueAccessLocked(now time.Time) authJSON {
	a := authJSON{
		TokenType:    "Bearer",
		ExpiresIn:    int(accessTokenTTL / time.Second),
		AccessToken:  newID("at", 40),
		RefreshToken: newID("rt", 40),
	}
	s.accessTokens[a.AccessToken] = now.Add(accessTokenTTL)
	s.refreshTokens[a.RefreshToken] = true
	return a
}

// handleAuthAPIKey serves POST /auth/api-key {"apiKey": "…"}.
func (s *Server) handleAuthAPIKey(x *exchange) {
	var in struct {
		APIKey string `json:"apiKey"`
	}
	if !readJSON(x, &in, false) {
		return
	}
	s.mu.Lock()
	var out authJSON
	ok := s.apiKeys[in.APIKey]
	if ok {
		out = s.issueAccessLocked(x.at)
	}
	s.mu.Unlock()
	if !ok {
		x.fail(newProblem(http.StatusBadRequest, "authentication-invalid-api-key", "The API key is invalid.", "apiKey", ""))
		return
	}
	x.reply(http.StatusOK, out)
}

// handleAuthRefresh serves POST /auth/refresh {"refreshToken": "…"}; the
// refresh token is spent.
func (s *Server) handleAuthRefresh(x *exchange) {
	var in struct {
		RefreshToken string `json:"refreshToken"`
	}
	if !readJSON(x, &in, false) {
		return
	}
	s.mu.Lock()
	var out authJSON
	ok := s.refreshTokens[in.RefreshToken]
	if ok {
		delete(s.refreshTokens, in.RefreshToken)
		out = s.issueAccessLocked(x.at)
	}
	s.mu.Unlock()
	if !ok {
		x.fail(newProblem(http.StatusBadRequest, "authentication-invalid-refresh-token", "The refresh token is invalid or expired.", "refreshToken", ""))
		return
	}
	x.reply(http.StatusOK, out)
}

// handleCreateToken serves POST /upload-tokens {"ttl": N}.
func (s *Server) handleCreateToken(x *exchange) {
	if !s.authorized(x) {
		return
	}
	var in struct {
		TTL *int64 `json:"ttl"`
	}
	if !readJSON(x, &in, true) {
		return
	}
	var ttl int64
	if in.TTL != nil {
		ttl = *in.TTL
	}
	if ttl < 0 || ttl > 2147483647 {
		x.fail(newProblem(http.StatusBadRequest, "invalid-attribute", "Invalid attributes.", "ttl",
			"This value should be between 0 and 2147483647."))
		return
	}
	s.mu.Lock()
	t := s.createTokenLocked(x.at, time.Duration(ttl)*time.Second).json()
	s.mu.Unlock()
	x.reply(http.StatusOK, t)
}

// handleToken serves GET and DELETE /upload-tokens/{token}. Expired and
// deleted tokens are not found.
func (s *Server) handleToken(x *exchange, token string) {
	if !s.authorized(x) {
		return
	}
	drain(x.r)
	s.mu.Lock()
	t := s.tokens[token]
	found := t.validAt(x.at)
	var out tokenJSON
	if found {
		out = t.json()
		if x.r.Method == http.MethodDelete {
			delete(s.tokens, token)
		}
	}
	s.mu.Unlock()
	switch {
	case !found:
		x.fail(newProblem(http.StatusNotFound, "resource-not-found", "The requested resource could not be found.", "uploadToken", ""))
	case x.r.Method == http.MethodDelete:
		x.reply(http.StatusNoContent, nil)
	default:
		x.reply(http.StatusOK, out)
	}
}

type paginationLink struct {
	Rel string `json:"rel"`
	URI string `json:"uri"`
}

type pagination struct {
	CurrentPage      int              `json:"currentPage"`
	CurrentPageItems int              `json:"currentPageItems"`
	PageSize         int              `json:"pageSize"`
	PagesTotal       int              `json:"pagesTotal"`
	ItemsTotal       int              `json:"itemsTotal"`
	Links            []paginationLink `json:"links"`
}

// handleListTokens serves GET /upload-tokens?currentPage=&pageSize=&sortBy=&sortOrder=:
// the active tokens, oldest first by default.
func (s *Server) handleListTokens(x *exchange) {
	if !s.authorized(x) {
		return
	}
	drain(x.r)
	q := x.r.URL.Query()
	page, pageSize := 1, 25
	bad := func(name, detail string) {
		x.fail(newProblem(http.StatusBadRequest, "invalid-query-parameter", "A query parameter is invalid.", name, detail))
	}
	if v := q.Get("currentPage"); v != "" {
		n, err := strconv.Atoi(v)
		if err != nil || n < 1 {
			bad("currentPage", "This value should be greater than or equal to 1.")
			return
		}
		page = n
	}
	if v := q.Get("pageSize"); v != "" {
		n, err := strconv.Atoi(v)
		if err != nil || n < 1 || n > 100 {
			bad("pageSize", "This value should be between 1 and 100.")
			return
		}
		pageSize = n
	}
	sortBy, order := q.Get("sortBy"), q.Get("sortOrder")
	if sortBy != "" && sortBy != "createdAt" && sortBy != "ttl" {
		bad("sortBy", `This value should be "createdAt" or "ttl".`)
		return
	}
	if order != "" && order != "asc" && order != "desc" {
		bad("sortOrder", `This value should be "asc" or "desc".`)
		return
	}

	s.mu.Lock()
	var active []*uploadToken
	for _, t := range s.tokens {
		if t.validAt(x.at) {
			active = append(active, t)
		}
	}
	slices.SortFunc(active, func(a, b *uploadToken) int {
		c := cmp.Compare(a.seq, b.seq)
		if sortBy == "ttl" {
			c = cmp.Or(cmp.Compare(a.ttl, b.ttl), c)
		}
		if order == "desc" {
			c = -c
		}
		return c
	})
	total := len(active)
	start := min((page-1)*pageSize, total)
	end := min(start+pageSize, total)
	data := make([]tokenJSON, 0, end-start)
	for _, t := range active[start:end] {
		data = append(data, t.json())
	}
	s.mu.Unlock()

	pages := max(1, (total+pageSize-1)/pageSize)
	link := func(rel string, p int) paginationLink {
		return paginationLink{Rel: rel, URI: "/upload-tokens?currentPage=" + strconv.Itoa(p) + "&pageSize=" + strconv.Itoa(pageSize)}
	}
	links := []paginationLink{link("self", page), link("first", 1)}
	if page > 1 {
		links = append(links, link("previous", page-1))
	}
	if page < pages {
		links = append(links, link("next", page+1))
	}
	links = append(links, link("last", pages))
	x.reply(http.StatusOK, struct {
		Data       []tokenJSON `json:"data"`
		Pagination pagination  `json:"pagination"`
	}{data, pagination{
		CurrentPage: page, CurrentPageItems: len(data), PageSize: pageSize,
		PagesTotal: pages, ItemsTotal: total, Links: links,
	}})
}
