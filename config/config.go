// Package config parses tusgate's settings from command-line flags and
// TUSGATE_* environment variables. It knows nothing of HTTP.
//
// Every setting is a flag (--part-size) and an environment variable
// (TUSGATE_PART_SIZE); a flag given on the command line wins. Parse applies
// both and validates the result; Validate reports every problem at once, one
// line per problem, each naming the setting as the user wrote it.
package config

import (
	"crypto/rand"
	"errors"
	"flag"
	"fmt"
	"io"
	"math"
	"net"
	"net/netip"
	"net/url"
	"os"
	"runtime"
	"slices"
	"strconv"
	"strings"
	"time"
	"unicode"

	"github.com/dustin/go-humanize"
	"go.uber.org/zap"
)

const (
	kib = 1 << 10
	mib = 1 << 20
	gib = 1 << 30

	// MinPartSize is the smallest allowed --part-size: api.video's minimum
	// chunk size.
	MinPartSize = 5 * mib
	// MaxPartSize is the largest allowed --part-size: api.video's maximum
	// chunk size.
	MaxPartSize = 200 * mib
	// MaxUploadSize is the largest allowed --max-size: api.video's limit on a
	// video file.
	MaxUploadSize = 30 * gib

	// DemoMaxSize is the default --max-size with --demo: its api.video
	// emulator keeps every upload in memory.
	DemoMaxSize = 1 * gib

	// EnvPrefix starts the name of every environment variable tusgate reads.
	EnvPrefix = "TUSGATE_"

	redacted = "[REDACTED]"
)

// Config holds every tusgate setting. Build one with Parse (flags and
// environment) or Default; a Config built by hand should be checked with
// Validate. Printing a Config with fmt redacts its secrets.
type Config struct {
	// Listen is the TCP address the HTTP server listens on, host:port.
	// Flag --listen, default ":8080".
	Listen string
	// DataDir is the directory holding upload bytes and the embedded state
	// store. Flag --data-dir, default "./data".
	DataDir string
	// RedisURL selects the Redis state store (redis:// or rediss://; may carry
	// a password, so log Redacted). Flag --redis-url, default "" = embedded
	// store in DataDir.
	RedisURL string
	// RedisCluster makes RedisURL the seed of a Redis Cluster: the URL's
	// host plus any addr= query parameters
	// (redis://host1:6379?addr=host2:6379&addr=host3:6379). Flag
	// --redis-cluster, default false.
	RedisCluster bool
	// S3Bucket stores upload bytes in this S3 bucket (tusd's S3 store)
	// instead of DataDir, so several instances share them. Flag --s3-bucket,
	// default "" = the disk store in DataDir.
	S3Bucket string
	// S3Endpoint is the URL of an S3-compatible server (path-style
	// requests); empty = AWS S3. Flag --s3-endpoint.
	S3Endpoint string
	// S3Region is the bucket's region; empty = the AWS chain's (AWS_REGION,
	// the shared config file). Flag --s3-region.
	S3Region string
	// S3Prefix is prepended to every object key tusgate writes. Flag
	// --s3-prefix, default "".
	S3Prefix string
	// BehindProxy says a reverse proxy (often terminating TLS) is the only
	// way to the gateway: upload URLs (Location) are built from its
	// X-Forwarded-Proto/-Host or Forwarded headers. Also implied by
	// TrustedProxies. Flag --behind-proxy, default false.
	BehindProxy bool
	// GrantSecret, when set, requires signed upload grants (HS256 JWTs
	// signed with it, at least 32 bytes) on every tus request. A secret.
	// Flag --grant-secret, default "" = no grant needed.
	GrantSecret string
	// AuthHookURL, when set, is POSTed each creation for a decision. May
	// carry credentials: log Redacted. Flag --auth-hook-url.
	AuthHookURL string
	// AuthHookTimeout bounds each auth hook call. Flag --auth-hook-timeout,
	// default 5s.
	AuthHookTimeout time.Duration
	// AuthHookSecret signs auth hook requests (X-Tusgate-Signature). A
	// secret, at least 32 bytes. Flag --auth-hook-secret.
	AuthHookSecret string
	// AllowedFileTypes are the filetype prefixes accepted when a grant names
	// none; "*" = any. Flag --allowed-file-types, default video/.
	AllowedFileTypes []string
	// WebhookURL receives the upload events (upload.created, …) as signed
	// JSON POSTs. May carry credentials: log Redacted. Flag --webhook-url,
	// default "" = no webhooks.
	WebhookURL string
	// WebhookSecret signs webhook bodies (X-Tusgate-Signature). A secret,
	// required with WebhookURL, at least 32 bytes. Flag --webhook-secret.
	WebhookSecret string
	// APIVideoURL is the base URL of the api.video API, an absolute http(s)
	// URL. Flag --apivideo-url, default "https://ws.api.video".
	APIVideoURL string
	// APIVideoAPIKey is the api.video API key enabling managed mode. A secret:
	// log Redacted. Flag --apivideo-api-key, default "" = delegated mode only.
	APIVideoAPIKey string
	// PartSize is the size in bytes of each part sent to api.video, between
	// MinPartSize and MaxPartSize. Flag --part-size, default 50MiB.
	PartSize int64
	// Workers is the number of parts forwarded concurrently across all
	// uploads, at least 1. Flag --workers, default max(4, 2*runtime.NumCPU()).
	Workers int
	// ParallelParts is the number of parts of one upload forwarded
	// concurrently, at least 1. Flag --parallel-parts, default 3.
	ParallelParts int
	// BasePath is the URL path of the tus endpoint; it starts and ends with
	// "/". Flag --base-path, default "/files/".
	BasePath string
	// CORSOrigins lists the browser origins (scheme://host[:port]) allowed to
	// upload, or "*" for any. Flag --cors-origins (comma-separated), default
	// empty = same origin only.
	CORSOrigins []string
	// CompletionWindow is how long an upload may take to finish after
	// api.video accepted its first part, positive. Flag --completion-window,
	// default 24h.
	CompletionWindow time.Duration
	// MaxSize is the largest upload accepted, in bytes, between 1 and
	// MaxUploadSize. Flag --max-size, default 30GiB.
	MaxSize int64
	// TokenTTL is the lifetime of the upload tokens minted in managed mode,
	// positive. Flag --token-ttl, default 1h.
	TokenTTL time.Duration
	// ShutdownTimeout bounds the graceful drain on SIGTERM, positive. Flag
	// --shutdown-timeout, default 20s.
	ShutdownTimeout time.Duration
	// LeaseDuration is how long a forwarder's claim on a part lasts unless
	// renewed, at least 1s. Flag --lease-duration, default 30s.
	LeaseDuration time.Duration
	// LockExpiry is how long the Redis tusd lock of an upload outlives a
	// crashed holder (it is renewed every third of it while held), at least
	// 1s; used with --redis-url. Flag --lock-expiry, default 10s.
	LockExpiry time.Duration
	// IdleTimeout is how long an incomplete upload may go without new bytes
	// before its status reports it stalled (it stays resumable), positive.
	// Flag --idle-timeout, default 1m.
	IdleTimeout time.Duration
	// UploadExpiry is how long an incomplete upload may go without new bytes
	// before it is abandoned: its bytes and record are removed. Advertised
	// with the tus Upload-Expires header; positive. Flag --upload-expiry,
	// default 24h.
	UploadExpiry time.Duration
	// NetworkTimeout bounds each read of an upload's request body: a client
	// that sends nothing for this long mid-PATCH is cut off (the bytes
	// received are kept), at least 1s. Flag --network-timeout, default 60s.
	NetworkTimeout time.Duration
	// MaxOpenUploadsPerClient is how many incomplete uploads one client
	// address may have at a time (counted in memory per instance), 0 = no
	// limit. Flag --max-open-uploads-per-client, default 100.
	MaxOpenUploadsPerClient int
	// MaxOpenUploadsPerSubject is how many incomplete uploads one grant
	// subject (user) may have at a time, per instance; 0 = no limit. Flag
	// --max-open-uploads-per-subject, default 100.
	MaxOpenUploadsPerSubject int
	// HeaderTimeout is how long a client may take to send a request's
	// headers before the connection is closed (slow-header clients). Flag
	// --header-timeout, default 30s, at least 1s.
	HeaderTimeout time.Duration
	// KeepDelivered keeps the bytes of uploads api.video has every part of;
	// by default they are removed at delivery. Flag --keep-delivered.
	KeepDelivered bool
	// CreateRate is how many upload creations per second one client address
	// may make after its burst (counted in memory per instance), 0 = no
	// limit. Flag --create-rate (10, 10/s, 600/m, 36000/h), default 10/s.
	CreateRate float64
	// CreateBurst is how many creations one client address may make at once
	// before CreateRate applies, at least 1. Flag --create-burst, default 20.
	CreateBurst int
	// MaxMetadataSize is the largest Upload-Metadata header accepted at
	// creation, in bytes, between 256 bytes and 1MiB. Flag
	// --max-metadata-size, default 4KiB.
	MaxMetadataSize int64
	// TrustedProxies lists the reverse proxies (addresses or CIDR prefixes)
	// whose X-Forwarded-For names the client for the per-client limits.
	// Flag --trusted-proxies (comma-separated), default empty =
	// X-Forwarded-For is never trusted, the connection's peer is the client.
	TrustedProxies []netip.Prefix
	// InstanceID identifies this process's leases in the state store; it must
	// be unique among instances sharing a store and contain no spaces. Flag
	// --instance-id, default the host name.
	InstanceID string
	// LogLevel is the minimum level logged: debug, info, warn or error. Flag
	// --log-level, default "info".
	LogLevel string
	// LogFormat is the log encoding: json or console. Flag --log-format,
	// default "json" ("console" with --demo).
	LogFormat string
	// Demo runs tusgate's demo (package demo): an in-process api.video
	// emulator replaces api.video (it keeps uploads in memory) and an upload
	// page is served at /, on the embedded state store. It changes the
	// defaults of --listen (127.0.0.1:8080), --max-size (1GiB), --part-size
	// (5MiB) and --log-format (console), and excludes --redis-url,
	// --s3-bucket, --apivideo-url and --apivideo-api-key. Flag --demo,
	// default false.
	Demo bool

	// given maps a flag name to how the user set it ("--part-size 1MiB" or
	// "TUSGATE_PART_SIZE=1MiB", secrets redacted), for error messages.
	given map[string]string
}

// Default returns the configuration used when no flag or environment variable
// is set. InstanceID is the host name (or a random name if it is unknown).
func Default() Config {
	host, err := os.Hostname()
	if err != nil || host == "" {
		host = "tusgate-" + rand.Text()[:8]
	}
	return Config{
		Listen:                   ":8080",
		DataDir:                  "./data",
		APIVideoURL:              "https://ws.api.video",
		PartSize:                 50 * mib,
		Workers:                  max(4, 2*runtime.NumCPU()),
		ParallelParts:            3,
		BasePath:                 "/files/",
		CompletionWindow:         24 * time.Hour,
		MaxSize:                  MaxUploadSize,
		TokenTTL:                 time.Hour,
		ShutdownTimeout:          20 * time.Second,
		LeaseDuration:            30 * time.Second,
		LockExpiry:               10 * time.Second,
		AuthHookTimeout:          5 * time.Second,
		AllowedFileTypes:         []string{"video/"},
		IdleTimeout:              time.Minute,
		UploadExpiry:             24 * time.Hour,
		NetworkTimeout:           60 * time.Second,
		InstanceID:               host,
		MaxOpenUploadsPerClient:  100,
		MaxOpenUploadsPerSubject: 100,
		HeaderTimeout:            30 * time.Second,
		CreateRate:               10,
		CreateBurst:              20,
		MaxMetadataSize:          4 * kib,
		LogLevel:                 "info",
		LogFormat:                "json",
	}
}

// setting binds one flag to one Config field.
type setting struct {
	name, arg, usage string
	// set parses raw into the field; its error says what is wrong without
	// repeating the value.
	set func(raw string) error
	// get formats the field as a user would write it.
	get func() string
	// display, if set, replaces show for values that may hold secrets; ""
	// means "do not show the value at all".
	display func(raw string) string
	// isBool makes the flag take no value (--name alone means true).
	isBool bool
}

// settings lists every setting, in help order, bound to c's fields.
func (c *Config) settings() []setting {
	return []setting{
		str("listen", "ADDR", "address the HTTP server listens on, host:port", &c.Listen),
		str("data-dir", "DIR", "directory for upload bytes and the embedded state store", &c.DataDir),
		withDisplay(str("redis-url", "URL", "Redis state store, redis://[user:password@]host:port[/db] or rediss://…; empty = embedded store in --data-dir", &c.RedisURL), displayURL),
		boolean("redis-cluster", "with --redis-url: the URL seeds a Redis Cluster, redis://host1:port?addr=host2:port&addr=host3:port", &c.RedisCluster),
		str("s3-bucket", "BUCKET", "keep upload bytes in this S3 bucket (shared by every instance) instead of --data-dir; credentials from the standard AWS chain", &c.S3Bucket),
		withDisplay(str("s3-endpoint", "URL", "with --s3-bucket: URL of an S3-compatible server (path-style requests); empty = AWS S3", &c.S3Endpoint), displayURL),
		str("s3-region", "REGION", "with --s3-bucket: the bucket's region; empty = from the AWS chain (AWS_REGION, ~/.aws/config)", &c.S3Region),
		str("s3-prefix", "PREFIX", "with --s3-bucket: prefix of every object key tusgate writes, e.g. uploads/", &c.S3Prefix),
		withDisplay(str("apivideo-url", "URL", "base URL of the api.video API", &c.APIVideoURL), displayURL),
		withDisplay(str("apivideo-api-key", "KEY", "api.video API key enabling managed mode (secret); empty = delegated mode only", &c.APIVideoAPIKey), displaySecret),
		size("part-size", "size of each part sent to api.video, 5MiB..200MiB", &c.PartSize),
		integer("workers", "parts forwarded concurrently across all uploads, at least 1", &c.Workers),
		integer("parallel-parts", "parts of one upload forwarded concurrently, at least 1", &c.ParallelParts),
		str("base-path", "PATH", "URL path of the tus endpoint; starts and ends with /", &c.BasePath),
		list("cors-origins", "comma-separated browser origins allowed to upload (scheme://host[:port]), or * for any; empty = same origin only", &c.CORSOrigins),
		duration("completion-window", "time allowed to finish an upload after api.video accepted its first part", &c.CompletionWindow),
		size("max-size", "largest upload accepted, 1 byte..30GiB", &c.MaxSize),
		duration("token-ttl", "lifetime of the upload tokens minted in managed mode", &c.TokenTTL),
		duration("shutdown-timeout", "time allowed to drain in-flight requests on SIGTERM", &c.ShutdownTimeout),
		duration("lease-duration", "how long a forwarder's claim on a part lasts unless renewed, at least 1s", &c.LeaseDuration),
		duration("lock-expiry", "with --redis-url: how long an upload's lock outlives a crashed instance (renewed while held), at least 1s", &c.LockExpiry),
		duration("idle-timeout", "an incomplete upload with no new bytes for this long is reported stalled (still resumable)", &c.IdleTimeout),
		duration("upload-expiry", "an incomplete upload with no new bytes for this long is abandoned and deleted (tus Upload-Expires)", &c.UploadExpiry),
		duration("network-timeout", "a client that sends no byte of an upload for this long is cut off (the bytes received are kept), at least 1s", &c.NetworkTimeout),
		integer("max-open-uploads-per-client", "incomplete uploads one client address may have at a time (per instance); 0 = no limit", &c.MaxOpenUploadsPerClient),
		boolean("keep-delivered", "keep the bytes of delivered uploads in the data store (default: removed once api.video has every part)", &c.KeepDelivered),
		duration("header-timeout", "a client that takes longer to send a request's headers is disconnected, at least 1s", &c.HeaderTimeout),
		integer("max-open-uploads-per-subject", "with --grant-secret: incomplete uploads one user (grant subject) may have at a time (per instance); 0 = no limit", &c.MaxOpenUploadsPerSubject),
		rate("create-rate", "upload creations per second one client address may make after its burst (per instance): 10, 10/s, 600/m; 0 = no limit", &c.CreateRate),
		integer("create-burst", "upload creations one client address may make at once before --create-rate applies, at least 1", &c.CreateBurst),
		size("max-metadata-size", "largest Upload-Metadata header accepted at creation, 256 bytes..1MiB", &c.MaxMetadataSize),
		prefixes("trusted-proxies", "comma-separated addresses or CIDR prefixes of reverse proxies whose X-Forwarded-For names the client; empty = never trust X-Forwarded-For", &c.TrustedProxies),
		boolean("behind-proxy", "a reverse proxy (e.g. terminating TLS) is the only way in: build upload URLs from its X-Forwarded-Proto/-Host or Forwarded headers (implied by --trusted-proxies)", &c.BehindProxy),
		withDisplay(str("grant-secret", "SECRET", "require signed upload grants (HS256 JWT, Authorization: Bearer) signed with this secret, at least 32 bytes (secret); empty = anyone who reaches the gateway may upload", &c.GrantSecret), displaySecret),
		withDisplay(str("auth-hook-url", "URL", "POST each upload creation to this URL for a decision (2xx allows, 4xx refuses with its message, no answer refuses with 503)", &c.AuthHookURL), displayURL),
		duration("auth-hook-timeout", "time allowed to each auth hook call", &c.AuthHookTimeout),
		withDisplay(str("auth-hook-secret", "SECRET", "sign auth hook requests with this secret (X-Tusgate-Signature: hex HMAC-SHA256 of the body), at least 32 bytes (secret)", &c.AuthHookSecret), displaySecret),
		withDisplay(str("webhook-url", "URL", "send upload events (upload.created, upload.received, video.delivered, upload.failed, upload.terminated) as signed JSON POSTs to this URL; empty = no webhooks", &c.WebhookURL), displayURL),
		withDisplay(str("webhook-secret", "SECRET", "sign webhook bodies with this secret (X-Tusgate-Signature: hex HMAC-SHA256 of the body), at least 32 bytes, required with --webhook-url (secret)", &c.WebhookSecret), displaySecret),
		list("allowed-file-types", "comma-separated filetype prefixes accepted when the grant names none, e.g. video/,audio/mp4; * = any", &c.AllowedFileTypes),
		str("instance-id", "ID", "identifies this process's leases in the state store; unique per instance", &c.InstanceID),
		str("log-level", "LEVEL", "minimum level logged: debug, info, warn or error", &c.LogLevel),
		str("log-format", "FORMAT", "log encoding: json or console", &c.LogFormat),
		boolean("demo", "try tusgate on this machine: an in-process api.video emulator (uploads kept in memory) and an upload page at /; listens on 127.0.0.1:8080 unless --listen is set", &c.Demo),
	}
}

func str(name, arg, usage string, p *string) setting {
	return setting{name: name, arg: arg, usage: usage,
		set: func(raw string) error { *p = raw; return nil },
		get: func() string { return *p }}
}

// boolean is a flag that takes no value (--name means true); its
// environment variable takes true/false, 1/0.
func boolean(name, usage string, p *bool) setting {
	return setting{name: name, usage: usage, isBool: true,
		set: func(raw string) error {
			b, err := strconv.ParseBool(strings.TrimSpace(raw))
			if err != nil {
				return errors.New("not a boolean (true or false)")
			}
			*p = b
			return nil
		},
		get: func() string { return strconv.FormatBool(*p) }}
}

func withDisplay(s setting, display func(string) string) setting {
	s.display = display
	return s
}

func size(name, usage string, p *int64) setting {
	return setting{name: name, arg: "SIZE", usage: usage,
		set: func(raw string) error {
			n, err := humanize.ParseBytes(strings.TrimSpace(raw))
			if err != nil || n > 1<<62 {
				return errors.New("not a size (try 50MiB or 52428800)")
			}
			*p = int64(n)
			return nil
		},
		get: func() string { return formatSize(*p) }}
}

func integer(name, usage string, p *int) setting {
	return setting{name: name, arg: "N", usage: usage,
		set: func(raw string) error {
			n, err := strconv.Atoi(strings.TrimSpace(raw))
			if err != nil {
				return errors.New("not a whole number")
			}
			*p = n
			return nil
		},
		get: func() string { return strconv.Itoa(*p) }}
}

func duration(name, usage string, p *time.Duration) setting {
	return setting{name: name, arg: "DURATION", usage: usage,
		set: func(raw string) error {
			d, err := time.ParseDuration(strings.TrimSpace(raw))
			if err != nil {
				return errors.New("not a duration (try 30s, 90m or 24h)")
			}
			*p = d
			return nil
		},
		get: func() string { return formatDuration(*p) }}
}

func list(name, usage string, p *[]string) setting {
	return setting{name: name, arg: "LIST", usage: usage,
		set: func(raw string) error {
			var items []string
			for item := range strings.SplitSeq(raw, ",") {
				if item = strings.TrimSpace(item); item != "" {
					items = append(items, item)
				}
			}
			*p = items
			return nil
		},
		get: func() string { return strings.Join(*p, ",") }}
}

// rate parses a rate per second: "10", "10/s", "600/m" or "36000/h".
func rate(name, usage string, p *float64) setting {
	return setting{name: name, arg: "RATE", usage: usage,
		set: func(raw string) error {
			num, unit, _ := strings.Cut(strings.TrimSpace(raw), "/")
			per := map[string]float64{"": 1, "s": 1, "m": 60, "h": 3600}[strings.TrimSpace(unit)]
			n, err := strconv.ParseFloat(strings.TrimSpace(num), 64)
			if err != nil || per == 0 || math.IsNaN(n) || math.IsInf(n, 0) {
				return errors.New("not a rate (try 10, 10/s, 600/m or 36000/h)")
			}
			*p = n / per
			return nil
		},
		get: func() string { return strconv.FormatFloat(*p, 'f', -1, 64) + "/s" }}
}

// prefixes parses a comma-separated list of IP addresses and CIDR prefixes.
func prefixes(name, usage string, p *[]netip.Prefix) setting {
	return setting{name: name, arg: "LIST", usage: usage,
		set: func(raw string) error {
			var items []netip.Prefix
			for item := range strings.SplitSeq(raw, ",") {
				if item = strings.TrimSpace(item); item == "" {
					continue
				}
				pfx, err := parsePrefix(item)
				if err != nil {
					return fmt.Errorf("%q is not an IP address or CIDR prefix (e.g. 10.0.0.1 or 10.0.0.0/8)", item)
				}
				items = append(items, pfx)
			}
			*p = items
			return nil
		},
		get: func() string { return formatPrefixes(*p) }}
}

// formatPrefixes writes prefixes as --trusted-proxies reads them, single
// addresses without their /32 or /128.
func formatPrefixes(ps []netip.Prefix) string {
	shown := make([]string, len(ps))
	for i, p := range ps {
		shown[i] = p.String()
		if p.IsValid() && p.IsSingleIP() {
			shown[i] = p.Addr().String()
		}
	}
	return strings.Join(shown, ",")
}

// parsePrefix parses "10.0.0.0/8" (masked) or a single address.
func parsePrefix(s string) (netip.Prefix, error) {
	if strings.Contains(s, "/") {
		p, err := netip.ParsePrefix(s)
		return p.Masked(), err
	}
	a, err := netip.ParseAddr(s)
	if err != nil || a.Zone() != "" {
		return netip.Prefix{}, errors.New("not an address")
	}
	return netip.PrefixFrom(a, a.BitLen()), nil
}

// value is the flag.Value of one setting. Set never fails: it remembers the
// raw text and the parse error so Parse can report every problem at once.
type value struct {
	setting
	raw string
	err error
}

func (v *value) Set(raw string) error {
	v.raw, v.err = raw, v.set(raw)
	return nil
}

// IsBoolFlag tells package flag that a boolean setting takes no value.
func (v *value) IsBoolFlag() bool { return v.isBool }

func (v *value) String() string {
	if v == nil || v.get == nil {
		return ""
	}
	return v.get()
}

// EnvVar returns the environment variable read for a flag:
// EnvVar("part-size") == "TUSGATE_PART_SIZE".
func EnvVar(flagName string) string {
	return EnvPrefix + strings.ToUpper(strings.ReplaceAll(flagName, "-", "_"))
}

// Flags returns a FlagSet defining every setting, with defaults, for
// inspection (documentation, tests). Parse uses the same definitions.
func Flags(output io.Writer) *flag.FlagSet {
	c := Default()
	return c.flagSet(output)
}

func (c *Config) flagSet(output io.Writer) *flag.FlagSet {
	fs := flag.NewFlagSet("tusgate", flag.ContinueOnError)
	fs.SetOutput(output)
	settings := c.settings()
	for _, s := range settings {
		fs.Var(&value{setting: s}, s.name, s.usage)
	}
	fs.Usage = func() {
		w := fs.Output()
		fmt.Fprint(w, "Usage: tusgate [flags]\n\n"+
			"Every flag can also be set with the environment variable shown; a flag on\n"+
			"the command line wins. Sizes: 50MiB, 50MB, 52428800. Durations: 30s, 1h30m.\n\n")
		for _, s := range settings {
			f := fs.Lookup(s.name)
			def := f.DefValue
			if def == "" {
				def = "empty"
			}
			fmt.Fprintf(w, "  --%s %s  (env %s, default %s)\n    \t%s\n", f.Name, s.arg, EnvVar(f.Name), def, f.Usage)
		}
	}
	return fs
}

// Parse reads the settings from args (without the program name) and from
// environment variables looked up with getenv, then validates them. A flag on
// the command line wins over its environment variable; an empty environment
// variable counts as unset. output receives usage and flag errors.
//
// On --help or -h, Parse prints the usage and returns an error satisfying
// errors.Is(err, flag.ErrHelp). Otherwise an error lists every problem found,
// one per line, each naming the setting.
func Parse(args []string, getenv func(string) string, output io.Writer) (Config, error) {
	c := Default()
	fs := c.flagSet(output)
	if err := fs.Parse(args); err != nil {
		return Config{}, err // flag already printed the problem and the usage
	}
	if fs.NArg() > 0 {
		return Config{}, fmt.Errorf("unexpected argument %q: tusgate takes only flags (see --help)", fs.Arg(0))
	}
	onCommandLine := map[string]bool{}
	fs.Visit(func(f *flag.Flag) { onCommandLine[f.Name] = true })

	var problems []error
	c.given = map[string]string{}
	for _, s := range c.settings() { // definition order keeps messages stable
		v := fs.Lookup(s.name).Value.(*value)
		env := ""
		if !onCommandLine[s.name] {
			raw := getenv(EnvVar(s.name))
			if raw == "" {
				continue
			}
			env = EnvVar(s.name)
			_ = v.Set(raw)
		}
		c.given[s.name] = label(s, v.raw, env, false)
		if v.err != nil {
			problems = append(problems, fmt.Errorf("%s: %w", label(s, v.raw, env, true), v.err))
		}
	}
	if c.Demo {
		c.demoDefaults()
	}
	if err := errors.Join(append(problems, c.problems()...)...); err != nil {
		return Config{}, err
	}
	return c, nil
}

// demoDefaults applies --demo's defaults to the settings the user did not
// give: a loopback listener (the page mints upload tokens for anyone who
// reaches it), uploads the in-memory emulator can hold, small parts (so the
// page's api.video leg follows the browser's closely), readable logs.
func (c *Config) demoDefaults() {
	if _, ok := c.given["part-size"]; !ok {
		c.PartSize = MinPartSize
	}
	if _, ok := c.given["listen"]; !ok {
		c.Listen = "127.0.0.1:8080"
	}
	if _, ok := c.given["max-size"]; !ok {
		c.MaxSize = DemoMaxSize
	}
	if _, ok := c.given["log-format"]; !ok {
		c.LogFormat = "console"
	}
}

// label names a setting and its value as the user wrote it: "--part-size
// 1MiB" or "TUSGATE_PART_SIZE=1MiB" (env non-empty). quote forces quoting of
// a flag's value, for values that do not parse.
func label(s setting, raw, env string, quote bool) string {
	shown := show(raw)
	switch {
	case s.display != nil:
		shown = s.display(raw)
	case quote && env == "":
		shown = strconv.Quote(raw)
	}
	switch {
	case shown == "" && env != "":
		return env
	case shown == "":
		return "--" + s.name
	case env != "":
		return env + "=" + shown
	default:
		return "--" + s.name + " " + shown
	}
}

// show quotes raw when it is empty or holds spaces or control characters, so
// that every problem stays on one line.
func show(raw string) string {
	if raw == "" || strings.ContainsFunc(raw, func(r rune) bool { return unicode.IsSpace(r) || !unicode.IsGraphic(r) }) {
		return strconv.Quote(raw)
	}
	return raw
}

func displaySecret(raw string) string {
	if raw == "" {
		return `""`
	}
	return redacted
}

// displayURL shows a URL with its password redacted, or nothing at all when
// it does not parse (the password cannot be located then).
func displayURL(raw string) string {
	if _, err := url.Parse(raw); err != nil {
		return ""
	}
	return show(redactURL(raw))
}

// redactURL replaces the password of a URL with REDACTED; a URL that does
// not parse is replaced entirely.
func redactURL(raw string) string {
	u, err := url.Parse(raw)
	if err != nil {
		return redacted
	}
	if _, ok := u.User.Password(); !ok {
		return raw
	}
	u.User = url.UserPassword(u.User.Username(), "REDACTED")
	return u.String()
}

// Validate reports every problem of c at once (joined with errors.Join), one
// line per problem of the form "--part-size 1MiB: must be between 5MiB and
// 200MiB". It returns nil if c is usable.
func (c Config) Validate() error {
	return errors.Join(c.problems()...)
}

func (c Config) problems() []error {
	var errs []error
	bad := func(name, current, problem string) {
		shown, ok := c.given[name]
		if !ok {
			shown = label(setting{name: name}, current, "", false)
		}
		errs = append(errs, fmt.Errorf("%s: %s", shown, problem))
	}
	if c.Demo {
		for _, s := range []struct{ name, why string }{
			{"redis-url", "the demo uses the embedded state store"},
			{"s3-bucket", "the demo keeps upload bytes in --data-dir"},
			{"apivideo-url", "the demo forwards to its own api.video emulator"},
			{"apivideo-api-key", "the demo's page sends delegated upload tokens from its emulator"},
		} {
			if shown, ok := c.given[s.name]; ok {
				errs = append(errs, fmt.Errorf("%s: not with --demo (%s)", shown, s.why))
			}
		}
	}
	if host, port, err := net.SplitHostPort(c.Listen); err != nil || !validPort(port) || strings.ContainsAny(host, " /") {
		bad("listen", c.Listen, "must be host:port with a numeric port, e.g. :8080 or 127.0.0.1:8080")
	}
	if c.DataDir == "" {
		bad("data-dir", c.DataDir, "must not be empty")
	}
	if c.RedisURL != "" {
		if problem := redisURLProblem(c.RedisURL); problem != "" {
			bad("redis-url", displayURL(c.RedisURL), problem)
		}
	}
	if c.RedisCluster && c.RedisURL == "" {
		bad("redis-cluster", "true", "needs --redis-url, the cluster's seed (redis://host1:port?addr=host2:port)")
	}
	if c.S3Bucket == "" {
		for _, s := range []struct{ name, raw, shown string }{
			{"s3-endpoint", c.S3Endpoint, displayURL(c.S3Endpoint)},
			{"s3-region", c.S3Region, c.S3Region},
			{"s3-prefix", c.S3Prefix, c.S3Prefix},
		} {
			if s.raw != "" {
				bad(s.name, s.shown, "needs --s3-bucket")
			}
		}
	} else if !validBucket(c.S3Bucket) {
		bad("s3-bucket", c.S3Bucket, "must be an S3 bucket name: 3-63 characters of a-z, 0-9, '.' and '-', starting and ending with a letter or digit")
	}
	if c.S3Endpoint != "" {
		if u, err := url.Parse(c.S3Endpoint); err != nil || (u.Scheme != "http" && u.Scheme != "https") || u.Host == "" || u.User != nil {
			bad("s3-endpoint", displayURL(c.S3Endpoint), "must be an absolute http(s) URL without credentials, e.g. http://127.0.0.1:9000 (credentials come from the AWS chain)")
		}
	}
	if strings.HasPrefix(c.S3Prefix, "/") {
		bad("s3-prefix", c.S3Prefix, `must not start with "/"`)
	}
	if c.GrantSecret != "" && len(c.GrantSecret) < MinSecretLength {
		bad("grant-secret", displaySecret(c.GrantSecret), fmt.Sprintf("must be at least %d bytes (use e.g. openssl rand -hex 32)", MinSecretLength))
	}
	if c.AuthHookSecret != "" && len(c.AuthHookSecret) < MinSecretLength {
		bad("auth-hook-secret", displaySecret(c.AuthHookSecret), fmt.Sprintf("must be at least %d bytes (use e.g. openssl rand -hex 32)", MinSecretLength))
	}
	if c.AuthHookURL != "" {
		if u, err := url.Parse(c.AuthHookURL); err != nil || (u.Scheme != "http" && u.Scheme != "https") || u.Host == "" {
			bad("auth-hook-url", displayURL(c.AuthHookURL), "must be an absolute http(s) URL, e.g. https://platform.example/tusgate/authorize")
		}
	} else if c.AuthHookSecret != "" {
		bad("auth-hook-secret", displaySecret(c.AuthHookSecret), "needs --auth-hook-url")
	}
	switch {
	case c.WebhookURL != "":
		if u, err := url.Parse(c.WebhookURL); err != nil || (u.Scheme != "http" && u.Scheme != "https") || u.Host == "" {
			bad("webhook-url", displayURL(c.WebhookURL), "must be an absolute http(s) URL, e.g. https://platform.example/hooks/tusgate")
		}
		if c.WebhookSecret == "" {
			bad("webhook-url", displayURL(c.WebhookURL), "needs --webhook-secret, so the platform can verify the events")
		} else if len(c.WebhookSecret) < MinSecretLength {
			bad("webhook-secret", displaySecret(c.WebhookSecret), fmt.Sprintf("must be at least %d bytes (use e.g. openssl rand -hex 32)", MinSecretLength))
		}
	case c.WebhookSecret != "":
		bad("webhook-secret", displaySecret(c.WebhookSecret), "needs --webhook-url")
	}
	if c.AuthHookTimeout <= 0 {
		bad("auth-hook-timeout", formatDuration(c.AuthHookTimeout), "must be positive")
	}
	if len(c.AllowedFileTypes) == 0 {
		bad("allowed-file-types", "", `must list at least one prefix, e.g. video/ (or * for any)`)
	}
	for _, ft := range c.AllowedFileTypes {
		if strings.ContainsFunc(ft, func(r rune) bool { return r <= ' ' || r > '~' }) {
			bad("allowed-file-types", strings.Join(c.AllowedFileTypes, ","), fmt.Sprintf("%q must be printable ASCII without spaces", ft))
			break
		}
	}
	if u, err := url.Parse(c.APIVideoURL); err != nil || (u.Scheme != "http" && u.Scheme != "https") || u.Host == "" {
		bad("apivideo-url", displayURL(c.APIVideoURL), "must be an absolute http(s) URL, e.g. https://ws.api.video")
	}
	if strings.ContainsFunc(c.APIVideoAPIKey, func(r rune) bool { return unicode.IsSpace(r) || !unicode.IsGraphic(r) }) {
		bad("apivideo-api-key", displaySecret(c.APIVideoAPIKey), "must not contain spaces or control characters")
	}
	if c.PartSize < MinPartSize || c.PartSize > MaxPartSize {
		bad("part-size", formatSize(c.PartSize), "must be between 5MiB and 200MiB")
	}
	if c.Workers < 1 {
		bad("workers", strconv.Itoa(c.Workers), "must be at least 1")
	}
	if c.ParallelParts < 1 {
		bad("parallel-parts", strconv.Itoa(c.ParallelParts), "must be at least 1")
	}
	if !strings.HasPrefix(c.BasePath, "/") || !strings.HasSuffix(c.BasePath, "/") {
		bad("base-path", c.BasePath, `must start and end with "/", e.g. /files/`)
	}
	for _, origin := range c.CORSOrigins {
		if !validOrigin(origin) {
			bad("cors-origins", strings.Join(c.CORSOrigins, ","), fmt.Sprintf("%q is not an origin (want scheme://host[:port] without a path, or *)", origin))
		}
	}
	if c.CompletionWindow <= 0 || c.CompletionWindow > maxCompletionWindow {
		bad("completion-window", formatDuration(c.CompletionWindow), "must be positive and at most 168h (api.video keeps an unfinished upload at most 7 days)")
	}
	if c.MaxSize < 1 || c.MaxSize > MaxUploadSize {
		bad("max-size", formatSize(c.MaxSize), "must be between 1 byte and 30GiB")
	}
	if c.TokenTTL <= 0 {
		bad("token-ttl", formatDuration(c.TokenTTL), "must be positive")
	}
	if c.ShutdownTimeout <= 0 {
		bad("shutdown-timeout", formatDuration(c.ShutdownTimeout), "must be positive")
	}
	if c.LeaseDuration < time.Second {
		bad("lease-duration", formatDuration(c.LeaseDuration), "must be at least 1s")
	}
	if c.LockExpiry < time.Second {
		bad("lock-expiry", formatDuration(c.LockExpiry), "must be at least 1s")
	}
	if c.IdleTimeout <= 0 {
		bad("idle-timeout", formatDuration(c.IdleTimeout), "must be positive")
	}
	if c.UploadExpiry <= 0 {
		bad("upload-expiry", formatDuration(c.UploadExpiry), "must be positive")
	}
	if c.NetworkTimeout < time.Second {
		bad("network-timeout", formatDuration(c.NetworkTimeout), "must be at least 1s")
	}
	if c.HeaderTimeout < time.Second {
		bad("header-timeout", formatDuration(c.HeaderTimeout), "must be at least 1s")
	}
	if c.MaxOpenUploadsPerSubject < 0 {
		bad("max-open-uploads-per-subject", strconv.Itoa(c.MaxOpenUploadsPerSubject), "must be 0 (no limit) or more")
	}
	if c.MaxOpenUploadsPerClient < 0 {
		bad("max-open-uploads-per-client", strconv.Itoa(c.MaxOpenUploadsPerClient), "must be 0 (no limit) or more")
	}
	if !(c.CreateRate >= 0) || math.IsInf(c.CreateRate, 0) {
		bad("create-rate", strconv.FormatFloat(c.CreateRate, 'f', -1, 64)+"/s", "must be 0 (no limit) or more")
	}
	if c.CreateBurst < 1 {
		bad("create-burst", strconv.Itoa(c.CreateBurst), "must be at least 1")
	}
	if c.MaxMetadataSize < 256 || c.MaxMetadataSize > mib {
		bad("max-metadata-size", formatSize(c.MaxMetadataSize), "must be between 256 bytes and 1MiB")
	}
	for _, p := range c.TrustedProxies {
		if !p.IsValid() {
			bad("trusted-proxies", formatPrefixes(c.TrustedProxies), "holds an invalid prefix")
			break
		}
	}
	if c.InstanceID == "" || strings.ContainsFunc(c.InstanceID, func(r rune) bool { return unicode.IsSpace(r) || !unicode.IsGraphic(r) }) {
		bad("instance-id", c.InstanceID, "must be non-empty without spaces or control characters")
	}
	if !slices.Contains([]string{"debug", "info", "warn", "error"}, c.LogLevel) {
		bad("log-level", c.LogLevel, "must be debug, info, warn or error")
	}
	if !slices.Contains([]string{"json", "console"}, c.LogFormat) {
		bad("log-format", c.LogFormat, "must be json or console")
	}
	return errs
}

func validPort(port string) bool {
	n, err := strconv.Atoi(port)
	return err == nil && n >= 0 && n <= 65535
}

// redisURLProblem says what is wrong with a Redis URL, never quoting it.
func redisURLProblem(raw string) string {
	const want = " (want redis://[user:password@]host:port[/db] or rediss://…)"
	u, err := url.Parse(raw)
	switch {
	case err != nil:
		return "not a valid URL" + want
	case u.Scheme != "redis" && u.Scheme != "rediss":
		return "scheme must be redis or rediss" + want
	case u.Hostname() == "":
		return "missing host" + want
	case u.Port() != "" && !validPort(u.Port()):
		return "invalid port" + want
	}
	return ""
}

// MinSecretLength is the shortest grant or hook secret accepted, in bytes
// (the auth package's minimum: a 256-bit HMAC key).
const MinSecretLength = 32

// validBucket reports whether s follows S3's bucket naming rules (the
// common subset every S3-compatible server accepts).
func validBucket(s string) bool {
	if len(s) < 3 || len(s) > 63 || strings.Contains(s, "..") {
		return false
	}
	for i, r := range s {
		alnum := (r >= 'a' && r <= 'z') || (r >= '0' && r <= '9')
		if !alnum && ((r != '.' && r != '-') || i == 0 || i == len(s)-1) {
			return false
		}
	}
	return true
}

// validOrigin reports whether s is "*" or a browser origin,
// scheme://host[:port].
func validOrigin(s string) bool {
	if s == "*" {
		return true
	}
	u, err := url.Parse(s)
	return err == nil && u.Scheme != "" && u.Hostname() != "" && u.User == nil &&
		u.Path == "" && u.RawQuery == "" && !u.ForceQuery && u.Fragment == "" &&
		(u.Port() == "" || validPort(u.Port())) && !strings.HasSuffix(s, ":")
}

// formatSize writes n as briefly as ParseBytes reads it back: 50MiB, 30GiB,
// 5000000.
func formatSize(n int64) string {
	for _, u := range []struct {
		size int64
		name string
	}{{gib, "GiB"}, {mib, "MiB"}, {kib, "KiB"}} {
		if n != 0 && n%u.size == 0 {
			return strconv.FormatInt(n/u.size, 10) + u.name
		}
	}
	return strconv.FormatInt(n, 10)
}

// formatDuration drops zero minutes and seconds: 24h, 1h30m, 20s.
func formatDuration(d time.Duration) string {
	s := d.String()
	if strings.HasSuffix(s, "m0s") {
		s = s[:len(s)-2]
	}
	if strings.HasSuffix(s, "h0m") {
		s = s[:len(s)-2]
	}
	return s
}

// Redacted returns a copy of c safe to log: a set API key becomes
// "[REDACTED]" and passwords in RedisURL and APIVideoURL become "REDACTED".
func (c Config) Redacted() Config {
	c.CORSOrigins = slices.Clone(c.CORSOrigins)
	c.TrustedProxies = slices.Clone(c.TrustedProxies)
	c.AllowedFileTypes = slices.Clone(c.AllowedFileTypes)
	// Every setting that may hold a secret has a display function (secrets:
	// [REDACTED]; URLs: the password replaced): the copy keeps only that.
	for _, s := range c.settings() {
		if s.display == nil {
			continue
		}
		if v := s.get(); v != "" {
			_ = s.set(redactedValue(s, v))
		}
	}
	return c
}

// redactedValue is what Redacted keeps of value v of setting s.
func redactedValue(s setting, v string) string {
	if shown := s.display(v); shown != "" {
		return shown
	}
	return redacted
}

// Fields returns one zap field per setting, secrets redacted, for the single
// startup log line: logger.Info("starting", cfg.Fields()...). Keys are the
// flag names in snake case (part_size); values are written as a user would
// write them (50MiB, 24h).
func (c Config) Fields() []zap.Field {
	r := c.Redacted()
	var fields []zap.Field
	for _, s := range r.settings() {
		fields = append(fields, zap.String(strings.ReplaceAll(s.name, "-", "_"), s.get()))
	}
	return fields
}

// String returns the settings as name=value pairs with secrets redacted, so
// that printing a Config never reveals them.
func (c Config) String() string {
	r := c.Redacted()
	var b strings.Builder
	for i, s := range r.settings() {
		if i > 0 {
			b.WriteByte(' ')
		}
		b.WriteString(s.name + "=" + show(s.get()))
	}
	return b.String()
}

// GoString is String, so that %#v redacts secrets too.
func (c Config) GoString() string { return c.String() }

// maxCompletionWindow is the longest api.video documents for finishing an
// upload after its first chunk (7 days).
const maxCompletionWindow = 7 * 24 * time.Hour
