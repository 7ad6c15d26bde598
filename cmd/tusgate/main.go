// Command tusgate runs the upload gateway: a tus 1.0 endpoint whose uploads
// are forwarded to api.video. Run `tusgate --help` for its settings.
package main

import (
	"cmp"
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"os/signal"
	"path/filepath"
	"sync"
	"syscall"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"
	"github.com/tus/tusd/v2/pkg/handler"
	"go.uber.org/zap"
	"go.uber.org/zap/zapcore"

	"github.com/tusgate/tusgate/apivideo"
	"github.com/tusgate/tusgate/auth"
	"github.com/tusgate/tusgate/config"
	"github.com/tusgate/tusgate/demo"
	"github.com/tusgate/tusgate/forwarder"
	"github.com/tusgate/tusgate/gateway"
	"github.com/tusgate/tusgate/gateway/s3data"
	"github.com/tusgate/tusgate/store"
	"github.com/tusgate/tusgate/store/boltstore"
	"github.com/tusgate/tusgate/store/redislock"
	"github.com/tusgate/tusgate/store/redisstore"
	"github.com/tusgate/tusgate/webhook"
)

// version is set at build time with -ldflags "-X main.version=…".
var version = "dev"

func main() {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	go func() {
		// After the first signal, a second one ends the process at once.
		<-ctx.Done()
		stop()
	}()
	if err := run(ctx, os.Args, os.Getenv, os.Stdout, os.Stderr); err != nil {
		fmt.Fprintln(os.Stderr, "tusgate:", err)
		os.Exit(1)
	}
}

// run is the whole program: it returns when ctx is done (after a graceful
// shutdown) or when the gateway cannot start.
func run(ctx context.Context, args []string, getenv func(string) string, stdout, stderr io.Writer) error {
	if len(args) > 1 && args[1] == "healthcheck" {
		return healthcheck(ctx, args[2:], getenv, stdout)
	}
	cfg, err := config.Parse(args[1:], getenv, stdout)
	if errors.Is(err, flag.ErrHelp) {
		return nil
	}
	if err != nil {
		return err
	}
	log, err := newLogger(cfg, stderr)
	if err != nil {
		return err
	}
	defer func() { _ = log.Sync() }()
	log.Info("starting tusgate", zap.String("version", version), zap.Dict("config", cfg.Fields()...))

	st, locker, err := openStore(ctx, cfg, log)
	if err != nil {
		return err
	}
	defer st.Close()
	if c, ok := locker.(io.Closer); ok {
		// After every request ended, before the store's client closes:
		// releases the upload locks kept lingering after their last request
		// (store/redislock), which would otherwise block those uploads on
		// other instances until they expire.
		defer func() {
			if err := c.Close(); err != nil {
				log.Warn("release lingering upload locks", zap.Error(err))
			}
		}()
	}

	be, err := openBackend(ctx, cfg, log)
	if err != nil {
		return err
	}

	reg := prometheus.NewRegistry()
	reg.MustRegister(collectors.NewGoCollector(), collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}))
	if s3, ok := be.(*s3data.Store); ok {
		s3.RegisterMetrics(reg)
	}
	var dm *demo.Demo
	if cfg.Demo {
		if dm, err = demo.Start(ctx, log.Named("demo")); err != nil {
			return err
		}
		defer dm.Close() // after the forwarder stopped: run waits for it
		cfg.APIVideoURL = dm.APIVideoURL()
	}
	client := apivideo.New(cfg.APIVideoURL, apivideo.WithVersion(version), apivideo.WithAPIKey(cfg.APIVideoAPIKey))
	var tokens gateway.TokenInspector
	if cfg.APIVideoAPIKey != "" {
		tokens = tokenInspector{client}
	}
	grants, hook, err := openAuth(cfg, log)
	if err != nil {
		return err
	}
	// The dispatcher runs even without --webhook-url: it drops the events
	// of records created while webhooks were on, once they are too old.
	hooks, err := webhook.New(webhook.Config{
		URL:        cfg.WebhookURL,
		Secret:     []byte(cfg.WebhookSecret),
		Owner:      cfg.InstanceID,
		Registerer: reg,
		Logger:     log.Named("webhook"),
	}, st)
	if err != nil {
		return fmt.Errorf("webhooks: %w", err)
	}
	var fwd *forwarder.Forwarder
	gw, err := gateway.New(gateway.Config{
		Webhooks:         cfg.WebhookURL != "",
		KeepDelivered:    cfg.KeepDelivered,
		Grants:           grants,
		AuthHook:         hook,
		AllowedFileTypes: cfg.AllowedFileTypes,
		BasePath:         cfg.BasePath,
		Backend:          be,
		DataDir:          filepath.Join(cfg.DataDir, "uploads"),
		MaxSize:          cfg.MaxSize,
		Plan:             store.Plan{FirstPartSize: store.MinPartSize, PartSize: cfg.PartSize},
		CompletionWindow: cfg.CompletionWindow,
		TokenRequired:    cfg.APIVideoAPIKey == "",
		CORSOrigins:      cfg.CORSOrigins,
		Tokens:           tokens,
		Locker:           locker,
		IdleTimeout:      cfg.IdleTimeout,
		UploadExpiry:     cfg.UploadExpiry,
		NetworkTimeout:   cfg.NetworkTimeout,
		// In config 0 means "no limit"; the gateway's zero is its default.
		MaxOpenUploadsPerClient:  cmp.Or(cfg.MaxOpenUploadsPerClient, -1),
		MaxOpenUploadsPerSubject: cmp.Or(cfg.MaxOpenUploadsPerSubject, -1),
		CreateRate:               cmp.Or(cfg.CreateRate, -1),
		CreateBurst:              cfg.CreateBurst,
		MaxMetadataSize:          int(cfg.MaxMetadataSize),
		TrustedProxies:           cfg.TrustedProxies,
		RespectForwardedHeaders:  cfg.BehindProxy || len(cfg.TrustedProxies) > 0,
		Registerer:               reg,
		Gatherer:                 reg,
		Logger:                   log.Named("gateway"),
	}, st, notifyFunc(func(id string) {
		fwd.Notify(id)
		hooks.Notify(id)
	}))
	if err != nil {
		return err
	}
	// fwdCtx runs the background work: forwarder, webhooks, janitor and
	// the removal of delivered uploads' bytes (purges).
	fwdCtx, stopFwd := context.WithCancel(context.WithoutCancel(ctx))
	defer stopFwd()
	var purges sync.WaitGroup
	fcfg := forwarder.Config{
		Workers:       cfg.Workers,
		ParallelParts: cfg.ParallelParts,
		LeaseDuration: cfg.LeaseDuration,
		Owner:         cfg.InstanceID,
		TokenTTL:      cfg.TokenTTL,
		Registerer:    reg,
		Logger:        log.Named("forwarder"),
		Changed: func(id string) {
			hooks.Notify(id)
			purges.Go(func() {
				if err := gw.PurgeDelivered(fwdCtx, id); err != nil && fwdCtx.Err() == nil {
					log.Warn("remove the bytes of a delivered upload", zap.String("id", id), zap.Error(err))
				}
			})
		},
	}
	if cfg.APIVideoAPIKey != "" {
		fcfg.Minter = client
	}
	fwd = forwarder.New(fcfg, st, gw.Source(), client)

	// Catch up with what a crash left behind (bytes tusd wrote that the
	// store never recorded, completions, lost files) before serving.
	if err := gw.Reconcile(ctx); err != nil {
		return fmt.Errorf("reconcile uploads with the state store: %w", err)
	}

	ln, err := net.Listen("tcp", cfg.Listen)
	if err != nil {
		return fmt.Errorf("--listen %s: %w", cfg.Listen, err)
	}
	// tusd ends running PATCHes with ErrServerShutdown (the client gets a 503
	// it can resume from) when Shutdown cancels the requests' base context.
	handler := gw.Handler()
	if dm != nil {
		handler = dm.Wrap(handler, cfg.BasePath)
	}
	srv := &http.Server{
		Handler:           handler,
		ReadHeaderTimeout: cfg.HeaderTimeout,
		IdleTimeout:       2 * time.Minute,
		BaseContext:       gw.BaseContext(context.WithoutCancel(ctx)),
		ConnContext:       gw.ConnContext,
		ErrorLog:          zap.NewStdLog(log.Named("http")),
	}
	srv.RegisterOnShutdown(gw.Shutdown)

	var wg sync.WaitGroup
	wg.Add(5)
	go func() {
		defer wg.Done()
		_ = fwd.Run(fwdCtx)
	}()
	go func() {
		defer wg.Done()
		_ = hooks.Run(fwdCtx)
	}()
	go func() {
		defer wg.Done()
		gw.RunJanitor(fwdCtx, time.Minute)
	}()
	go func() {
		defer wg.Done()
		watchStore(fwdCtx, st, log.Named("store"))
	}()
	serveErr := make(chan error, 1)
	go func() {
		defer wg.Done()
		serveErr <- srv.Serve(ln)
	}()
	log.Info("listening", zap.String("addr", ln.Addr().String()), zap.String("basePath", cfg.BasePath))
	if dm != nil {
		log.Info("demo: open the upload page in your browser", zap.String("url", demoURL(ln.Addr())))
	}

	select {
	case <-ctx.Done():
		log.Info("shutting down", zap.Duration("timeout", cfg.ShutdownTimeout))
	case err = <-serveErr:
		stopFwd()
		wg.Wait()
		purges.Wait()
		return fmt.Errorf("serve: %w", err)
	}
	shutCtx, cancel := context.WithTimeout(context.WithoutCancel(ctx), cfg.ShutdownTimeout)
	defer cancel()
	if err := srv.Shutdown(shutCtx); err != nil {
		log.Warn("http shutdown incomplete", zap.Error(err))
		_ = srv.Close()
	}
	stopFwd()
	// The forwarder hands in-flight parts back at once, but recording a part
	// api.video just accepted is retried through a store outage; that must
	// not hold the process past --shutdown-timeout.
	stopped := make(chan struct{})
	go func() {
		wg.Wait()
		purges.Wait()
		close(stopped)
	}()
	select {
	case <-stopped:
		log.Info("stopped")
	case <-shutCtx.Done():
		log.Error("forwarder did not stop within --shutdown-timeout; exiting anyway (a part api.video accepted may be unrecorded and will be sent again)")
	}
	return nil
}

// demoURL is the demo page's URL for a browser on this machine.
func demoURL(addr net.Addr) string {
	host, port, err := net.SplitHostPort(addr.String())
	if err != nil {
		return "http://" + addr.String() + "/"
	}
	if ip := net.ParseIP(host); ip == nil || ip.IsUnspecified() {
		host = "localhost"
	}
	return "http://" + net.JoinHostPort(host, port) + "/"
}

// tokenInspector adapts the api.video client to the gateway's token lookup.
type tokenInspector struct{ c *apivideo.Client }

func (ti tokenInspector) TokenDeadline(ctx context.Context, token string) (time.Time, error) {
	t, err := ti.c.GetUploadToken(ctx, token)
	var apiErr *apivideo.Error
	if errors.As(err, &apiErr) && apiErr.StatusCode == http.StatusNotFound {
		return time.Time{}, fmt.Errorf("%w: %v", gateway.ErrUnknownToken, err)
	}
	if err != nil {
		return time.Time{}, err
	}
	if t.ExpiresAt == nil {
		return time.Time{}, nil
	}
	return *t.ExpiresAt, nil
}

type notifyFunc func(id string)

func (f notifyFunc) Notify(id string) { f(id) }

// openStore opens the state store, and with Redis the distributed tusd
// locker on the same connections (nil: the gateway's in-process locker).
func openStore(ctx context.Context, cfg config.Config, log *zap.Logger) (store.Store, handler.Locker, error) {
	if cfg.RedisURL != "" {
		open := redisstore.Open
		if cfg.RedisCluster {
			open = redisstore.OpenCluster
		}
		st, err := open(ctx, cfg.RedisURL, redisstore.DefaultPrefix)
		if err != nil {
			return nil, nil, fmt.Errorf("--redis-url: %w", err)
		}
		return st, redislock.New(st.Client(), redislock.WithExpiry(cfg.LockExpiry), redislock.WithLogger(log.Named("lock"))), nil
	}
	st, err := boltstore.Open(filepath.Join(cfg.DataDir, "state.db"))
	if err != nil {
		return nil, nil, fmt.Errorf("--data-dir %s: %w", cfg.DataDir, err)
	}
	return st, nil, nil
}

// openAuth returns the grant verifier (--grant-secret) and the auth hook
// (--auth-hook-url), each nil when not configured.
func openAuth(cfg config.Config, log *zap.Logger) (gateway.GrantVerifier, gateway.AuthChecker, error) {
	var grants gateway.GrantVerifier
	if cfg.GrantSecret != "" {
		v, err := auth.NewVerifier([]byte(cfg.GrantSecret))
		if err != nil {
			return nil, nil, fmt.Errorf("--grant-secret: %w", err)
		}
		grants = v
	} else {
		log.Warn("no --grant-secret: upload grants are not required, anyone who reaches the gateway may upload")
	}
	var hook gateway.AuthChecker
	if cfg.AuthHookURL != "" {
		var opts []auth.HookOption
		if cfg.AuthHookSecret != "" {
			opts = append(opts, auth.WithHookSecret([]byte(cfg.AuthHookSecret)))
		}
		h, err := auth.NewHook(cfg.AuthHookURL, cfg.AuthHookTimeout, nil, opts...)
		if err != nil {
			return nil, nil, fmt.Errorf("--auth-hook-url: %w", err)
		}
		hook = h
	}
	return grants, hook, nil
}

// openBackend returns the S3 backend with --s3-bucket, else nil (the
// gateway's disk store in --data-dir).
func openBackend(ctx context.Context, cfg config.Config, log *zap.Logger) (gateway.Backend, error) {
	if cfg.S3Bucket == "" {
		return nil, nil
	}
	tmp := filepath.Join(cfg.DataDir, "s3-tmp")
	if err := os.MkdirAll(tmp, 0o750); err != nil {
		return nil, fmt.Errorf("--data-dir %s: %w", cfg.DataDir, err)
	}
	be, err := s3data.New(ctx, s3data.Config{
		Bucket:            cfg.S3Bucket,
		Endpoint:          cfg.S3Endpoint,
		Region:            cfg.S3Region,
		Prefix:            cfg.S3Prefix,
		PreferredPartSize: cfg.PartSize,
		TempDir:           tmp,
		Logger:            log.Named("s3"),
	})
	if err != nil {
		return nil, fmt.Errorf("--s3-bucket %s: %w", cfg.S3Bucket, err)
	}
	return be, nil
}

// watchStore pings the state store every few seconds and logs when it
// becomes unreachable or comes back, and why (e.g. Redis lost its data).
func watchStore(ctx context.Context, st store.Store, log *zap.Logger) {
	tick := time.NewTicker(5 * time.Second)
	defer tick.Stop()
	var failing bool
	for {
		select {
		case <-ctx.Done():
			return
		case <-tick.C:
		}
		pctx, cancel := context.WithTimeout(ctx, 3*time.Second)
		err := st.Ping(pctx)
		cancel()
		switch {
		case err != nil && ctx.Err() == nil && !failing:
			failing = true
			if errors.Is(err, store.ErrDatasetLost) {
				log.Error("state store lost its data: readiness fails until it is fixed", zap.Error(err))
			} else {
				log.Error("state store unreachable: uploads answer 503 until it is back", zap.Error(err))
			}
		case err == nil && failing:
			failing = false
			log.Info("state store reachable again")
		}
	}
}

func newLogger(cfg config.Config, w io.Writer) (*zap.Logger, error) {
	level, err := zapcore.ParseLevel(cfg.LogLevel)
	if err != nil {
		return nil, fmt.Errorf("--log-level %s: %w", cfg.LogLevel, err)
	}
	enc := zap.NewProductionEncoderConfig()
	enc.EncodeTime = zapcore.ISO8601TimeEncoder
	var encoder zapcore.Encoder = zapcore.NewJSONEncoder(enc)
	if cfg.LogFormat == "console" {
		encoder = zapcore.NewConsoleEncoder(enc)
	}
	return zap.New(zapcore.NewCore(encoder, zapcore.AddSync(w), level)), nil
}

// healthcheck asks a gateway on this machine (at the configured --listen
// port) whether it is up, for container HEALTHCHECKs in images without curl.
func healthcheck(ctx context.Context, args []string, getenv func(string) string, stdout io.Writer) error {
	cfg, err := config.Parse(args, getenv, stdout)
	if err != nil {
		return err
	}
	_, port, err := net.SplitHostPort(cfg.Listen)
	if err != nil {
		return fmt.Errorf("--listen %s: %w", cfg.Listen, err)
	}
	ctx, cancel := context.WithTimeout(ctx, 3*time.Second)
	defer cancel()
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, "http://127.0.0.1:"+port+"/healthz", nil)
	if err != nil {
		return err
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		return fmt.Errorf("healthcheck: %w", err)
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		return fmt.Errorf("healthcheck: /healthz answered %s", resp.Status)
	}
	fmt.Fprintln(stdout, "ok")
	return nil
}
