package config_test

import (
	"bytes"
	"errors"
	"flag"
	"fmt"
	"io"
	"net/netip"
	"os"
	"reflect"
	"runtime"
	"strings"
	"testing"
	"time"

	"go.uber.org/zap"
	"go.uber.org/zap/zapcore"

	"github.com/tusgate/tusgate/auth"
	"github.com/tusgate/tusgate/config"
)

const (
	mib = 1 << 20
	gib = 1 << 30
)

// env returns a getenv backed by kv ("KEY", "value", ...).
func env(kv ...string) func(string) string {
	m := map[string]string{}
	for i := 0; i+1 < len(kv); i += 2 {
		m[kv[i]] = kv[i+1]
	}
	return func(k string) string { return m[k] }
}

// mustParse parses args and env and fails the test on error.
func mustParse(tb testing.TB, args []string, getenv func(string) string) config.Config {
	tb.Helper()
	c, err := config.Parse(args, getenv, io.Discard)
	if err != nil {
		tb.Fatalf("Parse(%q): got error %v, want nil", args, err)
	}
	return c
}

func TestDefaults(t *testing.T) {
	c := mustParse(t, nil, env())
	host, _ := os.Hostname()
	checks := []struct {
		name      string
		got, want any
	}{
		{"Listen", c.Listen, ":8080"},
		{"DataDir", c.DataDir, "./data"},
		{"RedisURL", c.RedisURL, ""},
		{"APIVideoURL", c.APIVideoURL, "https://ws.api.video"},
		{"APIVideoAPIKey", c.APIVideoAPIKey, ""},
		{"PartSize", c.PartSize, int64(50 * mib)},
		{"Workers", c.Workers, max(4, 2*runtime.NumCPU())},
		{"ParallelParts", c.ParallelParts, 3},
		{"BasePath", c.BasePath, "/files/"},
		{"CORSOrigins", len(c.CORSOrigins), 0},
		{"CompletionWindow", c.CompletionWindow, 24 * time.Hour},
		{"MaxSize", c.MaxSize, int64(30 * gib)},
		{"TokenTTL", c.TokenTTL, time.Hour},
		{"ShutdownTimeout", c.ShutdownTimeout, 20 * time.Second},
		{"LeaseDuration", c.LeaseDuration, 30 * time.Second},
		{"IdleTimeout", c.IdleTimeout, time.Minute},
		{"UploadExpiry", c.UploadExpiry, 24 * time.Hour},
		{"NetworkTimeout", c.NetworkTimeout, 60 * time.Second},
		{"MaxOpenUploadsPerClient", c.MaxOpenUploadsPerClient, 100},
		{"CreateRate", c.CreateRate, 10.0},
		{"CreateBurst", c.CreateBurst, 20},
		{"MaxMetadataSize", c.MaxMetadataSize, int64(4096)},
		{"TrustedProxies", len(c.TrustedProxies), 0},
		{"InstanceID", c.InstanceID, host},
		{"LogLevel", c.LogLevel, "info"},
		{"LogFormat", c.LogFormat, "json"},
	}
	for _, tc := range checks {
		if !reflect.DeepEqual(tc.got, tc.want) {
			t.Errorf("%s: got %v, want %v", tc.name, tc.got, tc.want)
		}
	}
	if err := config.Default().Validate(); err != nil {
		t.Errorf("Default().Validate(): got %v, want nil", err)
	}
}

// settingCases sets every flag to a valid non-default value.
var settingCases = []struct {
	flag, value string
	get         func(config.Config) any
	want        any
}{
	{"listen", "127.0.0.1:0", func(c config.Config) any { return c.Listen }, "127.0.0.1:0"},
	{"data-dir", "/var/lib/tusgate", func(c config.Config) any { return c.DataDir }, "/var/lib/tusgate"},
	{"redis-url", "redis://:pw@127.0.0.1:6379/2", func(c config.Config) any { return c.RedisURL }, "redis://:pw@127.0.0.1:6379/2"},
	{"apivideo-url", "http://127.0.0.1:9000", func(c config.Config) any { return c.APIVideoURL }, "http://127.0.0.1:9000"},
	{"apivideo-api-key", "k3y", func(c config.Config) any { return c.APIVideoAPIKey }, "k3y"},
	{"part-size", "100MiB", func(c config.Config) any { return c.PartSize }, int64(100 * mib)},
	{"workers", "7", func(c config.Config) any { return c.Workers }, 7},
	{"parallel-parts", "4", func(c config.Config) any { return c.ParallelParts }, 4},
	{"base-path", "/up/", func(c config.Config) any { return c.BasePath }, "/up/"},
	{"cors-origins", "https://a.example, http://b.example:8080,*", func(c config.Config) any { return c.CORSOrigins },
		[]string{"https://a.example", "http://b.example:8080", "*"}},
	{"completion-window", "2h30m", func(c config.Config) any { return c.CompletionWindow }, 150 * time.Minute},
	{"max-size", "1GiB", func(c config.Config) any { return c.MaxSize }, int64(gib)},
	{"token-ttl", "15m", func(c config.Config) any { return c.TokenTTL }, 15 * time.Minute},
	{"shutdown-timeout", "5s", func(c config.Config) any { return c.ShutdownTimeout }, 5 * time.Second},
	{"lease-duration", "1s", func(c config.Config) any { return c.LeaseDuration }, time.Second},
	{"lock-expiry", "3s", func(c config.Config) any { return c.LockExpiry }, 3 * time.Second},
	{"idle-timeout", "90s", func(c config.Config) any { return c.IdleTimeout }, 90 * time.Second},
	{"upload-expiry", "168h", func(c config.Config) any { return c.UploadExpiry }, 168 * time.Hour},
	{"network-timeout", "2m", func(c config.Config) any { return c.NetworkTimeout }, 2 * time.Minute},
	{"max-open-uploads-per-client", "0", func(c config.Config) any { return c.MaxOpenUploadsPerClient }, 0},
	{"keep-delivered", "true", func(c config.Config) any { return c.KeepDelivered }, true},
	{"header-timeout", "5s", func(c config.Config) any { return c.HeaderTimeout }, 5 * time.Second},
	{"max-open-uploads-per-subject", "7", func(c config.Config) any { return c.MaxOpenUploadsPerSubject }, 7},
	{"create-rate", "120/m", func(c config.Config) any { return c.CreateRate }, 2.0},
	{"create-burst", "5", func(c config.Config) any { return c.CreateBurst }, 5},
	{"max-metadata-size", "16KiB", func(c config.Config) any { return c.MaxMetadataSize }, int64(16 << 10)},
	{"trusted-proxies", "10.0.0.0/8, 192.168.1.7,fd00::/8", func(c config.Config) any { return c.TrustedProxies },
		[]netip.Prefix{netip.MustParsePrefix("10.0.0.0/8"), netip.MustParsePrefix("192.168.1.7/32"), netip.MustParsePrefix("fd00::/8")}},
	{"instance-id", "gw-1", func(c config.Config) any { return c.InstanceID }, "gw-1"},
	{"log-level", "debug", func(c config.Config) any { return c.LogLevel }, "debug"},
	{"log-format", "console", func(c config.Config) any { return c.LogFormat }, "console"},
	{"redis-cluster", "true", func(c config.Config) any { return c.RedisCluster }, true},
	{"demo", "true", func(c config.Config) any { return c.Demo }, true},
	{"behind-proxy", "true", func(c config.Config) any { return c.BehindProxy }, true},
	{"grant-secret", strings.Repeat("s", 32), func(c config.Config) any { return c.GrantSecret }, strings.Repeat("s", 32)},
	{"auth-hook-url", "https://platform.example/authorize", func(c config.Config) any { return c.AuthHookURL }, "https://platform.example/authorize"},
	{"auth-hook-timeout", "2s", func(c config.Config) any { return c.AuthHookTimeout }, 2 * time.Second},
	{"auth-hook-secret", strings.Repeat("h", 40), func(c config.Config) any { return c.AuthHookSecret }, strings.Repeat("h", 40)},
	{"webhook-url", "https://platform.example/hooks", func(c config.Config) any { return c.WebhookURL }, "https://platform.example/hooks"},
	{"webhook-secret", strings.Repeat("w", 32), func(c config.Config) any { return c.WebhookSecret }, strings.Repeat("w", 32)},
	{"allowed-file-types", "video/, audio/mp4", func(c config.Config) any { return c.AllowedFileTypes }, []string{"video/", "audio/mp4"}},
	{"s3-bucket", "videos.example-1", func(c config.Config) any { return c.S3Bucket }, "videos.example-1"},
	{"s3-endpoint", "http://127.0.0.1:9000", func(c config.Config) any { return c.S3Endpoint }, "http://127.0.0.1:9000"},
	{"s3-region", "eu-west-3", func(c config.Config) any { return c.S3Region }, "eu-west-3"},
	{"s3-prefix", "tus/", func(c config.Config) any { return c.S3Prefix }, "tus/"},
}

// settingNeeds gives the settings some flags are valid only with.
var settingNeeds = map[string][]string{
	"redis-cluster":    {"--redis-url", "redis://127.0.0.1:7000?addr=127.0.0.1:7001"},
	"s3-endpoint":      {"--s3-bucket", "videos"},
	"s3-region":        {"--s3-bucket", "videos"},
	"s3-prefix":        {"--s3-bucket", "videos"},
	"auth-hook-secret": {"--auth-hook-url", "https://platform.example/authorize"},
	"webhook-url":      {"--webhook-secret", "0123456789abcdef0123456789abcdef"},
	"webhook-secret":   {"--webhook-url", "https://platform.example/hooks"},
}

func TestEachSettingByFlagAndEnv(t *testing.T) {
	covered := map[string]bool{}
	for _, tc := range settingCases {
		covered[tc.flag] = true
		t.Run(tc.flag, func(t *testing.T) {
			needs := settingNeeds[tc.flag]
			flagArgs := []string{"--" + tc.flag, tc.value}
			if _, isBool := tc.want.(bool); isBool {
				flagArgs = []string{"--" + tc.flag} // a boolean flag takes no value
			}
			byFlag := mustParse(t, append(flagArgs, needs...), env())
			if got := tc.get(byFlag); !reflect.DeepEqual(got, tc.want) {
				t.Errorf("--%s %s: got %#v, want %#v", tc.flag, tc.value, got, tc.want)
			}
			byEqualsFlag := mustParse(t, append([]string{"-" + tc.flag + "=" + tc.value}, needs...), env())
			if got := tc.get(byEqualsFlag); !reflect.DeepEqual(got, tc.want) {
				t.Errorf("-%s=%s: got %#v, want %#v", tc.flag, tc.value, got, tc.want)
			}
			name := config.EnvVar(tc.flag)
			byEnv := mustParse(t, needs, env(name, tc.value))
			if got := tc.get(byEnv); !reflect.DeepEqual(got, tc.want) {
				t.Errorf("%s=%s: got %#v, want %#v", name, tc.value, got, tc.want)
			}
		})
	}
	config.Flags(io.Discard).VisitAll(func(f *flag.Flag) {
		if !covered[f.Name] {
			t.Errorf("flag --%s has no case in settingCases", f.Name)
		}
	})
}

func TestDemo(t *testing.T) {
	c := mustParse(t, []string{"--demo"}, env())
	if !c.Demo || c.Listen != "127.0.0.1:8080" || c.MaxSize != config.DemoMaxSize || c.PartSize != config.MinPartSize || c.LogFormat != "console" {
		t.Errorf("--demo: got demo %v, listen %q, max size %d, part size %d, log format %q; want true, 127.0.0.1:8080, %d, %d, console",
			c.Demo, c.Listen, c.MaxSize, c.PartSize, c.LogFormat, config.DemoMaxSize, config.MinPartSize)
	}
	// What the user gives wins over the demo's defaults.
	c = mustParse(t, []string{"--demo", "--listen", ":9000", "--log-format", "json", "--part-size", "50MiB"}, env("TUSGATE_MAX_SIZE", "2GiB"))
	if c.Listen != ":9000" || c.MaxSize != 2*gib || c.PartSize != 50*mib || c.LogFormat != "json" {
		t.Errorf("--demo with settings: got listen %q, max size %d, part size %d, log format %q; want :9000, %d, %d, json",
			c.Listen, c.MaxSize, c.PartSize, c.LogFormat, int64(2*gib), int64(50*mib))
	}
	// Settings the demo replaces are refused, each named.
	_, err := config.Parse([]string{"--demo", "--redis-url", "redis://127.0.0.1:6379", "--s3-bucket", "b",
		"--apivideo-url", "https://ws.api.video", "--apivideo-api-key", "secret-key"}, env(), io.Discard)
	if err == nil {
		t.Fatal("--demo with --redis-url, --s3-bucket, --apivideo-url, --apivideo-api-key: got no error")
	}
	for _, want := range []string{"--redis-url", "--s3-bucket", "--apivideo-url", "--apivideo-api-key"} {
		if !strings.Contains(err.Error(), want+" ") || !strings.Contains(err.Error(), "not with --demo") {
			t.Errorf("error %q does not name %s as not allowed with --demo", err, want)
		}
	}
	if strings.Contains(err.Error(), "secret-key") {
		t.Errorf("error %q shows the API key", err)
	}
	// Without --demo the defaults stay.
	if c := mustParse(t, nil, env()); c.Listen != ":8080" || c.LogFormat != "json" {
		t.Errorf("without --demo: got listen %q, log format %q; want :8080, json", c.Listen, c.LogFormat)
	}
}

func TestEnvVar(t *testing.T) {
	if got, want := config.EnvVar("part-size"), "TUSGATE_PART_SIZE"; got != want {
		t.Errorf("EnvVar(part-size): got %q, want %q", got, want)
	}
}

func TestFlagBeatsEnv(t *testing.T) {
	getenv := env("TUSGATE_PART_SIZE", "10MiB", "TUSGATE_WORKERS", "9", "TUSGATE_REDIS_URL", "redis://127.0.0.1:6379")
	c := mustParse(t, []string{"--part-size", "20MiB", "--redis-url="}, getenv)
	if c.PartSize != 20*mib {
		t.Errorf("PartSize: got %d, want %d (flag wins)", c.PartSize, 20*mib)
	}
	if c.RedisURL != "" {
		t.Errorf("RedisURL: got %q, want empty (an empty flag still wins)", c.RedisURL)
	}
	if c.Workers != 9 {
		t.Errorf("Workers: got %d, want 9 (from env)", c.Workers)
	}
	// A bad env var overridden by a flag is not a problem.
	if _, err := config.Parse([]string{"--workers", "2"}, env("TUSGATE_WORKERS", "many"), io.Discard); err != nil {
		t.Errorf("bad env overridden by flag: got %v, want nil", err)
	}
}

func TestSizeForms(t *testing.T) {
	for _, tc := range []struct {
		in   string
		want int64
	}{
		{"5MiB", 5 * mib},
		{"50MB", 50_000_000},
		{"52428800", 52428800},
		{"5 MiB", 5 * mib},
		{"1GiB", gib},
		{"30GiB", 30 * gib},
		{"1", 1},
		{"1.5GiB", 3 * gib / 2},
	} {
		c := mustParse(t, []string{"--max-size", tc.in}, env())
		if c.MaxSize != tc.want {
			t.Errorf("--max-size %q: got %d, want %d", tc.in, c.MaxSize, tc.want)
		}
	}
}

func TestRateForms(t *testing.T) {
	for _, tc := range []struct {
		in   string
		want float64
		show string
	}{
		{"10", 10, "10/s"},
		{"10/s", 10, "10/s"},
		{" 600 / m ", 10, "10/s"},
		{"36000/h", 10, "10/s"},
		{"0.5", 0.5, "0.5/s"},
		{"0", 0, "0/s"},
		{"1/m", 1.0 / 60, "0.016666666666666666/s"},
	} {
		c := mustParse(t, []string{"--create-rate", tc.in}, env())
		if c.CreateRate != tc.want {
			t.Errorf("--create-rate %q: got %v, want %v", tc.in, c.CreateRate, tc.want)
		}
		if got := config.Flags(io.Discard).Lookup("create-rate"); got.DefValue != "10/s" {
			t.Errorf("--create-rate default shown: got %q, want 10/s", got.DefValue)
		}
		if !strings.Contains(c.String(), "create-rate="+tc.show) {
			t.Errorf("--create-rate %q: String() %q, want create-rate=%s", tc.in, c.String(), tc.show)
		}
		// What String shows parses back to the same rate.
		if back := mustParse(t, []string{"--create-rate", tc.show}, env()); back.CreateRate != c.CreateRate {
			t.Errorf("--create-rate %q: shown as %q, which parses to %v", tc.in, tc.show, back.CreateRate)
		}
	}
}

func TestTrustedProxiesForms(t *testing.T) {
	c := mustParse(t, []string{"--trusted-proxies", "10.1.2.3/8,, 2001:db8::1 ,::ffff:192.0.2.1"}, env())
	want := []netip.Prefix{netip.MustParsePrefix("10.0.0.0/8"), netip.MustParsePrefix("2001:db8::1/128"), netip.MustParsePrefix("::ffff:192.0.2.1/128")}
	if !reflect.DeepEqual(c.TrustedProxies, want) {
		t.Errorf("got %v, want %v", c.TrustedProxies, want)
	}
	if want := "trusted-proxies=10.0.0.0/8,2001:db8::1,::ffff:192.0.2.1"; !strings.Contains(c.String(), want) {
		t.Errorf("String(): got %q, want it to contain %q", c.String(), want)
	}
	bad := config.Default()
	bad.TrustedProxies = []netip.Prefix{{}}
	if err := bad.Validate(); err == nil || !strings.Contains(err.Error(), "--trusted-proxies") {
		t.Errorf("Validate with an invalid prefix: got %v, want a --trusted-proxies problem", err)
	}
}

func TestInvalid(t *testing.T) {
	for _, tc := range []struct {
		args []string
		env  []string
		want string // the whole single-line error
	}{
		{args: []string{"--listen", "8080"}, want: "--listen 8080: must be host:port"},
		{args: []string{"--listen", "localhost:http"}, want: "--listen localhost:http: must be host:port"},
		{args: []string{"--listen", ":99999"}, want: "--listen :99999: must be host:port"},
		{args: []string{"--data-dir", ""}, want: `--data-dir "": must not be empty`},
		{args: []string{"--redis-url", "http://127.0.0.1:6379"}, want: "--redis-url http://127.0.0.1:6379: scheme must be redis or rediss"},
		{args: []string{"--redis-url", "redis://"}, want: "--redis-url redis://: missing host"},
		{args: []string{"--redis-url", "redis://h:x/0"}, want: "--redis-url: not a valid URL"},
		{args: []string{"--apivideo-url", "ws.api.video"}, want: "--apivideo-url ws.api.video: must be an absolute http(s) URL"},
		{args: []string{"--apivideo-url", "ftp://ws.api.video"}, want: "--apivideo-url ftp://ws.api.video: must be an absolute http(s) URL"},
		{args: []string{"--apivideo-api-key", "a b"}, want: "--apivideo-api-key [REDACTED]: must not contain spaces"},
		{args: []string{"--part-size", "1MiB"}, want: "--part-size 1MiB: must be between 5MiB and 200MiB"},
		{args: []string{"--part-size", "201MiB"}, want: "--part-size 201MiB: must be between 5MiB and 200MiB"},
		{args: []string{"--part-size", "lots"}, want: `--part-size "lots": not a size (try 50MiB or 52428800)`},
		{env: []string{"TUSGATE_PART_SIZE", "lots"}, want: "TUSGATE_PART_SIZE=lots: not a size (try 50MiB or 52428800)"},
		{env: []string{"TUSGATE_PART_SIZE", "1MiB"}, want: "TUSGATE_PART_SIZE=1MiB: must be between 5MiB and 200MiB"},
		{args: []string{"--part-size", "-5MiB"}, want: `--part-size "-5MiB": not a size`},
		{args: []string{"--workers", "0"}, want: "--workers 0: must be at least 1"},
		{args: []string{"--workers", "four"}, want: `--workers "four": not a whole number`},
		{args: []string{"--parallel-parts", "0"}, want: "--parallel-parts 0: must be at least 1"},
		{args: []string{"--parallel-parts", "1.5"}, want: `--parallel-parts "1.5": not a whole number`},
		{args: []string{"--base-path", "files/"}, want: "--base-path files/: must start and end with"},
		{args: []string{"--base-path", "/files"}, want: "--base-path /files: must start and end with"},
		{args: []string{"--cors-origins", "example.com"}, want: `--cors-origins example.com: "example.com" is not an origin`},
		{args: []string{"--cors-origins", "https://a.example/"}, want: `--cors-origins https://a.example/: "https://a.example/" is not an origin`},
		{args: []string{"--cors-origins", "https://u@a.example"}, want: `is not an origin`},
		{args: []string{"--completion-window", "0s"}, want: "--completion-window 0s: must be positive"},
		{args: []string{"--completion-window", "1 day"}, want: `--completion-window "1 day": not a duration`},
		{args: []string{"--completion-window", "200h"}, want: "--completion-window 200h: must be positive and at most 168h"},
		{args: []string{"--max-size", "0"}, want: "--max-size 0: must be between 1 byte and 30GiB"},
		{args: []string{"--max-size", "31GiB"}, want: "--max-size 31GiB: must be between 1 byte and 30GiB"},
		{args: []string{"--max-size", "huge"}, want: `--max-size "huge": not a size`},
		{args: []string{"--token-ttl", "-1h"}, want: "--token-ttl -1h: must be positive"},
		{args: []string{"--token-ttl", "1"}, want: `--token-ttl "1": not a duration`},
		{args: []string{"--shutdown-timeout", "0"}, want: "--shutdown-timeout 0: must be positive"},
		{args: []string{"--lease-duration", "500ms"}, want: "--lease-duration 500ms: must be at least 1s"},
		{args: []string{"--idle-timeout", "0s"}, want: "--idle-timeout 0s: must be positive"},
		{args: []string{"--lock-expiry", "500ms"}, want: "--lock-expiry 500ms: must be at least 1s"},
		{args: []string{"--redis-cluster"}, want: "--redis-cluster true: needs --redis-url"},
		{args: []string{"--grant-secret", "short"}, want: "--grant-secret [REDACTED]: must be at least 32 bytes"},
		{args: []string{"--auth-hook-url", "platform.example"}, want: "--auth-hook-url platform.example: must be an absolute http(s) URL"},
		{args: []string{"--auth-hook-secret", strings.Repeat("h", 40)}, want: "--auth-hook-secret [REDACTED]: needs --auth-hook-url"},
		{args: []string{"--webhook-url", "https://platform.example/hooks"}, want: "--webhook-url https://platform.example/hooks: needs --webhook-secret"},
		{args: []string{"--webhook-secret", "short", "--webhook-url", "https://p.example/h"}, want: "--webhook-secret [REDACTED]: must be at least 32 bytes"},
		{args: []string{"--webhook-secret", strings.Repeat("w", 32)}, want: "--webhook-secret [REDACTED]: needs --webhook-url"},
		{args: []string{"--webhook-url", "ftp://p.example/h", "--webhook-secret", strings.Repeat("w", 32)}, want: "--webhook-url ftp://p.example/h: must be an absolute http(s) URL"},
		{args: []string{"--header-timeout", "100ms"}, want: "--header-timeout 100ms: must be at least 1s"},
		{args: []string{"--auth-hook-timeout", "0s"}, want: "--auth-hook-timeout 0s: must be positive"},
		{args: []string{"--allowed-file-types", " , "}, want: `--allowed-file-types " , ": must list at least one prefix`},
		{args: []string{"--allowed-file-types", "video/,a b"}, want: `must be printable ASCII without spaces`},
		{env: []string{"TUSGATE_REDIS_CLUSTER", "yes"}, want: "TUSGATE_REDIS_CLUSTER=yes: not a boolean (true or false)"},
		{args: []string{"--s3-region", "eu-west-3"}, want: "--s3-region eu-west-3: needs --s3-bucket"},
		{args: []string{"--s3-endpoint", "http://127.0.0.1:9000"}, want: "--s3-endpoint http://127.0.0.1:9000: needs --s3-bucket"},
		{args: []string{"--s3-bucket", "Videos"}, want: "--s3-bucket Videos: must be an S3 bucket name"},
		{args: []string{"--s3-bucket", "-videos"}, want: "--s3-bucket -videos: must be an S3 bucket name"},
		{args: []string{"--s3-bucket", "ab"}, want: "--s3-bucket ab: must be an S3 bucket name"},
		{args: []string{"--s3-endpoint", "127.0.0.1:9000", "--s3-bucket", "videos"}, want: "--s3-endpoint: must be an absolute http(s) URL"},
		{args: []string{"--s3-endpoint", "http://key:secret@127.0.0.1:9000", "--s3-bucket", "videos"}, want: "must be an absolute http(s) URL without credentials"},
		{args: []string{"--s3-prefix", "/tus/", "--s3-bucket", "videos"}, want: `--s3-prefix /tus/: must not start with "/"`},
		{args: []string{"--upload-expiry", "-1h"}, want: "--upload-expiry -1h: must be positive"},
		{args: []string{"--lease-duration", "soon"}, want: `--lease-duration "soon": not a duration`},
		{args: []string{"--network-timeout", "500ms"}, want: "--network-timeout 500ms: must be at least 1s"},
		{args: []string{"--network-timeout", "long"}, want: `--network-timeout "long": not a duration`},
		{args: []string{"--max-open-uploads-per-client", "-1"}, want: "--max-open-uploads-per-client -1: must be 0 (no limit) or more"},
		{env: []string{"TUSGATE_MAX_OPEN_UPLOADS_PER_CLIENT", "lots"}, want: "TUSGATE_MAX_OPEN_UPLOADS_PER_CLIENT=lots: not a whole number"},
		{args: []string{"--create-rate", "-1/s"}, want: "--create-rate -1/s: must be 0 (no limit) or more"},
		{args: []string{"--create-rate", "10/d"}, want: `--create-rate "10/d": not a rate (try 10, 10/s, 600/m or 36000/h)`},
		{args: []string{"--create-rate", "NaN"}, want: `--create-rate "NaN": not a rate`},
		{args: []string{"--create-rate", "Inf/s"}, want: `--create-rate "Inf/s": not a rate`},
		{env: []string{"TUSGATE_CREATE_RATE", "fast"}, want: "TUSGATE_CREATE_RATE=fast: not a rate"},
		{args: []string{"--create-burst", "0"}, want: "--create-burst 0: must be at least 1"},
		{args: []string{"--max-metadata-size", "100"}, want: "--max-metadata-size 100: must be between 256 bytes and 1MiB"},
		{args: []string{"--max-metadata-size", "2MiB"}, want: "--max-metadata-size 2MiB: must be between 256 bytes and 1MiB"},
		{args: []string{"--trusted-proxies", "10.0.0.1,proxy.internal"}, want: `--trusted-proxies "10.0.0.1,proxy.internal": "proxy.internal" is not an IP address or CIDR prefix (e.g. 10.0.0.1 or 10.0.0.0/8)`},
		{args: []string{"--trusted-proxies", "10.0.0.0/33"}, want: `"10.0.0.0/33" is not an IP address or CIDR prefix`},
		{env: []string{"TUSGATE_TRUSTED_PROXIES", "fe80::1%eth0"}, want: `TUSGATE_TRUSTED_PROXIES=fe80::1%eth0: "fe80::1%eth0" is not an IP address`},
		{args: []string{"--instance-id", ""}, want: `--instance-id "": must be non-empty`},
		{args: []string{"--instance-id", "gw 1"}, want: `--instance-id "gw 1": must be non-empty without spaces`},
		{args: []string{"--log-level", "verbose"}, want: "--log-level verbose: must be debug, info, warn or error"},
		{env: []string{"TUSGATE_LOG_LEVEL", "trace"}, want: "TUSGATE_LOG_LEVEL=trace: must be debug, info, warn or error"},
		{args: []string{"--log-format", "text"}, want: "--log-format text: must be json or console"},
	} {
		name := strings.Join(append(tc.args, tc.env...), " ")
		t.Run(name, func(t *testing.T) {
			_, err := config.Parse(tc.args, env(tc.env...), io.Discard)
			if err == nil {
				t.Fatalf("got nil error, want %q", tc.want)
			}
			msg := err.Error()
			if !strings.Contains(msg, tc.want) {
				t.Errorf("got %q, want it to contain %q", msg, tc.want)
			}
			if strings.Contains(msg, "\n") {
				t.Errorf("got %q, want one line", msg)
			}
			setting := ""
			if len(tc.env) > 0 {
				setting = tc.env[0]
			} else {
				setting = tc.args[0]
			}
			if !strings.HasPrefix(msg, setting) {
				t.Errorf("got %q, want it to start with the setting %q", msg, setting)
			}
		})
	}
}

func TestSeveralProblemsAtOnce(t *testing.T) {
	_, err := config.Parse(
		[]string{"--part-size", "1MiB", "--workers", "x", "--log-format", "xml", "--base-path", "up"},
		env("TUSGATE_LEASE_DURATION", "1ms"), io.Discard)
	if err == nil {
		t.Fatal("got nil error, want 5 problems")
	}
	lines := strings.Split(err.Error(), "\n")
	if len(lines) != 5 {
		t.Fatalf("got %d lines %q, want 5", len(lines), lines)
	}
	for _, want := range []string{"--part-size 1MiB:", `--workers "x":`, "--log-format xml:", "--base-path up:", "TUSGATE_LEASE_DURATION=1ms:"} {
		if !strings.Contains(err.Error(), want) {
			t.Errorf("got %q, want a line with %q", err, want)
		}
	}
}

func TestValidateHandBuilt(t *testing.T) {
	c := config.Default()
	c.PartSize = mib
	c.RedisURL = "ftp://user:hunter2@h"
	err := c.Validate()
	if err == nil {
		t.Fatal("got nil, want errors")
	}
	want := "--redis-url ftp://user:REDACTED@h: scheme must be redis or rediss (want redis://[user:password@]host:port[/db] or rediss://…)\n--part-size 1MiB: must be between 5MiB and 200MiB"
	if got := err.Error(); got != want || strings.Contains(got, "hunter2") {
		t.Errorf("got %q, want %q", got, want)
	}
	if err := (config.Config{}).Validate(); err == nil || strings.Count(err.Error(), "\n") < 10 {
		t.Errorf("zero Config: got %v, want one line per missing setting", err)
	}
}

func TestArgumentErrors(t *testing.T) {
	for _, args := range [][]string{{"--no-such-flag"}, {"serve"}, {"--part-size"}} {
		if _, err := config.Parse(args, env(), io.Discard); err == nil {
			t.Errorf("Parse(%q): got nil error, want one", args)
		}
	}
}

func TestHelp(t *testing.T) {
	for _, arg := range []string{"--help", "-h"} {
		var out bytes.Buffer
		_, err := config.Parse([]string{arg}, env("TUSGATE_APIVIDEO_API_KEY", "s3cret"), &out)
		if !errors.Is(err, flag.ErrHelp) {
			t.Errorf("%s: got %v, want flag.ErrHelp", arg, err)
		}
		help := out.String()
		n := 0
		config.Flags(io.Discard).VisitAll(func(f *flag.Flag) {
			n++
			for _, want := range []string{"--" + f.Name + " ", config.EnvVar(f.Name), f.Usage} {
				if !strings.Contains(help, want) {
					t.Errorf("%s: help lacks %q", arg, want)
				}
			}
			if f.DefValue != "" && !strings.Contains(help, "default "+f.DefValue+")") {
				t.Errorf("%s: help lacks default %q of --%s", arg, f.DefValue, f.Name)
			}
		})
		if n < 26 {
			t.Errorf("got %d flags, want at least 26", n)
		}
		for _, want := range []string{"default 50MiB", "default 30GiB", "default 24h", "default 10/s", "default 4KiB", "default 100)"} {
			if !strings.Contains(help, want) {
				t.Errorf("%s: help lacks %q", arg, want)
			}
		}
		if strings.Contains(help, "s3cret") {
			t.Errorf("%s: help shows the API key", arg)
		}
	}
}

func TestRedacted(t *testing.T) {
	c := mustParse(t, []string{"--apivideo-api-key", "s3cret-key", "--redis-url", "rediss://user:hunter2@redis.internal:6380/1"}, env())
	r := c.Redacted()
	if r.APIVideoAPIKey != "[REDACTED]" {
		t.Errorf("Redacted().APIVideoAPIKey: got %q, want [REDACTED]", r.APIVideoAPIKey)
	}
	if want := "rediss://user:REDACTED@redis.internal:6380/1"; r.RedisURL != want {
		t.Errorf("Redacted().RedisURL: got %q, want %q", r.RedisURL, want)
	}
	if c.APIVideoAPIKey != "s3cret-key" {
		t.Errorf("original changed: got %q, want s3cret-key", c.APIVideoAPIKey)
	}
	if empty := config.Default().Redacted(); empty.APIVideoAPIKey != "" || empty.RedisURL != "" {
		t.Errorf("unset secrets: got %q and %q, want empty", empty.APIVideoAPIKey, empty.RedisURL)
	}

	var logged bytes.Buffer
	logger := zap.New(zapcore.NewCore(zapcore.NewJSONEncoder(zap.NewProductionEncoderConfig()), zapcore.AddSync(&logged), zap.InfoLevel))
	logger.Info("starting", c.Fields()...)
	printed := map[string]string{
		"%v":     fmt.Sprintf("%v", c),
		"%+v":    fmt.Sprintf("%+v", c),
		"%#v":    fmt.Sprintf("%#v", c),
		"Fields": logged.String(),
	}
	for how, s := range printed {
		if strings.Contains(s, "s3cret") || strings.Contains(s, "hunter2") {
			t.Errorf("%s: got %q, want secrets redacted", how, s)
		}
		if !strings.Contains(s, "redis.internal") {
			t.Errorf("%s: got %q, want the Redis host", how, s)
		}
	}
	config.Flags(io.Discard).VisitAll(func(f *flag.Flag) {
		if key := `"` + strings.ReplaceAll(f.Name, "-", "_") + `"`; !strings.Contains(logged.String(), key) {
			t.Errorf("Fields: got %s, want key %s", logged.String(), key)
		}
	})
}

func TestMinSecretLengthMatchesAuth(t *testing.T) {
	if config.MinSecretLength != auth.MinSecretLength {
		t.Errorf("config.MinSecretLength %d, auth.MinSecretLength %d", config.MinSecretLength, auth.MinSecretLength)
	}
}

// Every setting documented as a secret is redacted in String and Fields,
// whatever its name: a new secret cannot be forgotten.
func TestEverySecretRedacted(t *testing.T) {
	var args []string
	var markers []string
	config.Flags(io.Discard).VisitAll(func(f *flag.Flag) {
		if !strings.Contains(f.Usage, "(secret)") {
			return
		}
		m := "marker-" + f.Name + "-0123456789abcdefghijklmnop"
		args = append(args, "--"+f.Name, m)
		args = append(args, settingNeeds[f.Name]...)
		markers = append(markers, m)
	})
	if len(markers) < 3 {
		t.Fatalf("found %d secret settings, want at least the API key, the grant secret and the hook secret", len(markers))
	}
	c := mustParse(t, args, env())
	var fields strings.Builder
	enc := zapcore.NewJSONEncoder(zap.NewProductionEncoderConfig())
	buf, err := enc.EncodeEntry(zapcore.Entry{Message: "starting"}, c.Fields())
	if err != nil {
		t.Fatal(err)
	}
	fields.Write(buf.Bytes())
	for _, m := range markers {
		for name, s := range map[string]string{"String": c.String(), "Fields": fields.String(), "%v": fmt.Sprintf("%v", c)} {
			if strings.Contains(s, m) {
				t.Errorf("%s reveals %s", name, m)
			}
		}
	}
}
