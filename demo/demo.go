// Package demo is tusgate's one-command demo (`tusgate --demo`): an
// in-process api.video emulator ([apivideotest]) for the gateway to forward
// to, and a small upload page that shows the whole flow: a file picked in
// the browser goes to the gateway with tus-js-client (resumable, progress of
// the first leg), the gateway forwards it to the emulator in parts (progress
// of the second leg, from the gateway's status API), and the page shows the
// resulting video id and what the emulator received.
//
// The page and its assets are embedded (tus-js-client's browser bundle is
// vendored under assets/, see NOTICE), so the demo works offline.
//
// Routes served by [Demo.Handler]:
//
//	GET  /                     the upload page
//	GET  /demo/{asset}         its script, style sheet and tus-js-client
//	POST /demo/token           mints an emulator upload token (delegated mode)
//	GET  /demo/videos/{id}     what the emulator holds for a video
//
// The emulator keeps every byte it receives in memory (so the page can show
// the SHA-256 of what "api.video" received): the demo is for trying tusgate
// with files of a few hundred MB at most (see [MaxSize]), never for
// production.
package demo

import (
	"bytes"
	"context"
	"embed"
	"encoding/json"
	"fmt"
	"html/template"
	"io/fs"
	"mime"
	"net/http"
	"net/url"
	"path"
	"strings"
	"time"

	"go.uber.org/zap"

	"github.com/tusgate/tusgate/apivideo/apivideotest"
)

const (
	// MaxSize is the largest upload the demo is meant for, in bytes: the
	// emulator keeps every video in memory. Give it to the gateway as its
	// largest upload unless the user chose one.
	MaxSize int64 = 1 << 30
	// TokenTTL is the lifetime of the upload tokens the page gets.
	TokenTTL = time.Hour
)

//go:embed assets
var assets embed.FS

// Demo is a running demo: the emulator and the page's handlers. Its methods
// are safe for concurrent use.
type Demo struct {
	emu    *apivideotest.Server
	log    *zap.Logger
	static fs.FS
	page   *template.Template
}

// Start starts the api.video emulator on 127.0.0.1 (a real loopback
// listener on a free port). ctx bounds the start only: call Close to stop
// the demo, after the gateway's forwarder has stopped. log receives the
// demo's logs (name it, e.g. log.Named("demo")); nil: no logging. Upload
// tokens are never logged.
func Start(ctx context.Context, log *zap.Logger) (*Demo, error) {
	if err := ctx.Err(); err != nil {
		return nil, fmt.Errorf("demo: start: %w", err)
	}
	if log == nil {
		log = zap.NewNop()
	}
	static, err := fs.Sub(assets, "assets")
	if err != nil {
		return nil, fmt.Errorf("demo: embedded assets: %w", err)
	}
	page, err := template.ParseFS(static, "index.html")
	if err != nil {
		return nil, fmt.Errorf("demo: page template: %w", err)
	}
	d := &Demo{
		emu:    apivideotest.NewServer(),
		log:    log,
		static: static,
		page:   page,
	}
	log.Info("api.video emulator started (it keeps uploads in memory)", zap.String("url", d.emu.URL))
	return d, nil
}

// APIVideoURL returns the emulator's base URL (http://127.0.0.1:port), to
// use as the gateway's api.video URL (--apivideo-url).
func (d *Demo) APIVideoURL() string { return d.emu.URL }

// Emulator returns the emulator, for tests that check what it received.
func (d *Demo) Emulator() *apivideotest.Server { return d.emu }

// Close stops the emulator, waiting for requests in progress.
func (d *Demo) Close() { d.emu.Close() }

// Handler returns the demo's routes (the page at /, its assets under
// /demo/, POST /demo/token, GET /demo/videos/{id}); every other path is 404.
// tusEndpoint is the gateway's tus creation URL as the browser should use
// it: a path on the page's origin ("/files/") or an absolute URL. The
// gateway's status API is expected at /uploads/{id} on the endpoint's
// origin. Serve it beside the gateway with [Demo.Wrap].
func (d *Demo) Handler(tusEndpoint string) http.Handler {
	mux := http.NewServeMux()
	mux.HandleFunc("GET /{$}", d.handlePage(tusEndpoint))
	mux.HandleFunc("POST /demo/token", d.handleToken)
	mux.HandleFunc("GET /demo/token", func(w http.ResponseWriter, _ *http.Request) {
		w.Header().Set("Allow", http.MethodPost)
		http.Error(w, "method not allowed: POST to mint a token", http.StatusMethodNotAllowed)
	})
	mux.HandleFunc("GET /demo/videos/{id}", d.handleVideo)
	mux.HandleFunc("GET /demo/{asset}", d.handleAsset)
	return mux
}

// Wrap returns a handler that serves the demo's routes (GET / and /demo/)
// and passes every other request to gateway (the tus endpoint, /uploads/,
// /healthz, /readyz, /metrics):
//
//	srv.Handler = d.Wrap(gw.Handler(), cfg.BasePath)
func (d *Demo) Wrap(gateway http.Handler, tusEndpoint string) http.Handler {
	h := d.Handler(tusEndpoint)
	mux := http.NewServeMux()
	mux.Handle("/", gateway)
	mux.Handle("GET /{$}", h)
	mux.Handle("/demo/", h)
	return mux
}

// pageData fills index.html.
type pageData struct {
	Endpoint string
}

func (d *Demo) handlePage(tusEndpoint string) http.HandlerFunc {
	connect := "'self'"
	if u, err := url.Parse(tusEndpoint); err == nil && u.Scheme != "" && u.Host != "" {
		connect += " " + u.Scheme + "://" + u.Host
	}
	csp := strings.Join([]string{
		"default-src 'self'",
		"connect-src " + connect,
		"img-src 'self' data:",
		"base-uri 'none'",
		"form-action 'none'",
		"frame-ancestors 'none'",
	}, "; ")
	return func(w http.ResponseWriter, r *http.Request) {
		var buf bytes.Buffer
		if err := d.page.Execute(&buf, pageData{Endpoint: tusEndpoint}); err != nil {
			d.log.Error("render the page", zap.Error(err))
			http.Error(w, "internal error", http.StatusInternalServerError)
			return
		}
		h := w.Header()
		h.Set("Content-Type", "text/html; charset=utf-8")
		h.Set("Content-Security-Policy", csp)
		h.Set("Cache-Control", "no-cache")
		h.Set("X-Content-Type-Options", "nosniff")
		h.Set("Referrer-Policy", "no-referrer")
		_, _ = w.Write(buf.Bytes())
	}
}

// handleAsset serves one embedded file (never a directory listing).
func (d *Demo) handleAsset(w http.ResponseWriter, r *http.Request) {
	name := r.PathValue("asset")
	if name == "index.html" || !fs.ValidPath(name) {
		http.NotFound(w, r)
		return
	}
	b, err := fs.ReadFile(d.static, name)
	if err != nil {
		http.NotFound(w, r)
		return
	}
	ctype := mime.TypeByExtension(path.Ext(name))
	if ctype == "" {
		ctype = "text/plain; charset=utf-8"
	}
	h := w.Header()
	h.Set("Content-Type", ctype)
	h.Set("Cache-Control", "no-cache")
	h.Set("X-Content-Type-Options", "nosniff")
	http.ServeContent(w, r, name, time.Time{}, bytes.NewReader(b))
}

// TokenResponse is the JSON body of POST /demo/token.
type TokenResponse struct {
	// Token is an emulator upload token, for the upload's `token` metadata.
	Token string `json:"token"`
	// ExpiresAt is when the token expires, for `tokenExpiresAt`.
	ExpiresAt time.Time `json:"expiresAt"`
}

// handleToken mints an upload token, as a platform's backend would with
// api.video's POST /upload-tokens. The token is never logged.
func (d *Demo) handleToken(w http.ResponseWriter, _ *http.Request) {
	expires := time.Now().Add(TokenTTL).UTC().Truncate(time.Second)
	tok := d.emu.CreateToken(TokenTTL)
	d.log.Debug("minted an upload token for the page", zap.Time("expiresAt", expires))
	d.writeJSON(w, http.StatusOK, TokenResponse{Token: tok, ExpiresAt: expires})
}

// VideoResponse is the JSON body of GET /demo/videos/{id}: what the
// emulator holds for a video (never its token).
type VideoResponse struct {
	// VideoID is the video's id.
	VideoID string `json:"videoId"`
	// Complete reports whether every part has arrived.
	Complete bool `json:"complete"`
	// Size is the number of bytes received.
	Size int64 `json:"size"`
	// Parts is the number of chunks received.
	Parts int `json:"parts"`
	// SHA256 is the hex SHA-256 of the assembled video, once complete.
	SHA256 string `json:"sha256,omitempty"`
	// Player is the player URL api.video announces for the video.
	Player string `json:"player"`
}

func (d *Demo) handleVideo(w http.ResponseWriter, r *http.Request) {
	v, ok := d.emu.Video(r.PathValue("id"))
	if !ok {
		d.writeJSON(w, http.StatusNotFound, errorResponse{Error: "no such video"})
		return
	}
	d.writeJSON(w, http.StatusOK, VideoResponse{
		VideoID:  v.ID,
		Complete: v.Complete,
		Size:     v.Size,
		Parts:    len(v.Parts),
		SHA256:   v.SHA256,
		Player:   v.Assets.Player,
	})
}

type errorResponse struct {
	Error string `json:"error"`
}

func (d *Demo) writeJSON(w http.ResponseWriter, status int, v any) {
	b, err := json.Marshal(v)
	if err != nil {
		d.log.Error("encode a JSON answer", zap.Error(err))
		http.Error(w, "internal error", http.StatusInternalServerError)
		return
	}
	h := w.Header()
	h.Set("Content-Type", "application/json")
	h.Set("Cache-Control", "no-store")
	h.Set("X-Content-Type-Options", "nosniff")
	w.WriteHeader(status)
	_, _ = w.Write(append(b, '\n'))
}
