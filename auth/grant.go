package auth

import (
	"errors"
	"fmt"
	"net/http"
	"strings"
	"time"
	"unicode"
	"unicode/utf8"

	"github.com/golang-jwt/jwt/v5"
)

// Limits of grants and their verification.
const (
	// Algorithm is the only JWS algorithm a grant may be signed with.
	Algorithm = "HS256"
	// MinSecretLength is the shortest grant secret accepted, in bytes (256
	// bits, the output size of HMAC-SHA256).
	MinSecretLength = 32
	// DefaultLeeway is the clock skew tolerated on exp, nbf and iat.
	DefaultLeeway = 30 * time.Second
	// DefaultMaxTokenLength is the longest grant Verify parses, in bytes.
	DefaultMaxTokenLength = 8 << 10
	// MaxSubjectLength bounds the sub claim, in bytes.
	MaxSubjectLength = 256
	// MaxFileTypes bounds the entries of the file_types claim.
	MaxFileTypes = 32
	// MaxFileTypeLength bounds each entry of the file_types claim, in bytes.
	MaxFileTypeLength = 128
	// MaxMetadataEntries bounds the entries of the metadata claim.
	MaxMetadataEntries = 32
	// MaxMetadataKeyLength bounds each key of the metadata claim, in bytes
	// (the tus metadata key limit of the gateway).
	MaxMetadataKeyLength = 64
	// MaxMetadataValueLength bounds each value of the metadata claim, in
	// bytes.
	MaxMetadataValueLength = 1024
)

// Kinds of refusal, matched with errors.Is on the *Error that Verify and
// FromRequest return.
var (
	// ErrNoGrant: the request carries no grant at all.
	ErrNoGrant = errors.New("no upload grant")
	// ErrInvalidGrant: the grant is malformed, not signed with HS256 and
	// the grant secret, or carries a claim that breaks the contract.
	ErrInvalidGrant = errors.New("invalid upload grant")
	// ErrExpiredGrant: the grant's exp (plus the leeway) has passed.
	ErrExpiredGrant = errors.New("expired upload grant")
	// ErrGrantNotYetValid: the grant's nbf or iat is in the future (beyond
	// the leeway), usually a clock problem on the platform's server.
	ErrGrantNotYetValid = errors.New("upload grant not yet valid")
)

// Error is why a request's grant was refused. Kind is one of ErrNoGrant,
// ErrInvalidGrant, ErrExpiredGrant and ErrGrantNotYetValid (errors.Is
// matches it); Message is meant for the person uploading (a browser may
// show it) and never contains the grant itself.
type Error struct {
	Kind    error
	Message string
}

// Error returns Message.
func (e *Error) Error() string { return e.Message }

// Unwrap returns Kind.
func (e *Error) Unwrap() error { return e.Kind }

func refuse(kind error, format string, args ...any) *Error {
	return &Error{Kind: kind, Message: fmt.Sprintf(format, args...)}
}

// Grant is a platform's permission for one person (Subject) to upload,
// until ExpiresAt. See the package documentation for its JWT claims.
type Grant struct {
	// Subject identifies the person uploading on the platform (claim sub),
	// required. Every tus request on an upload must carry a grant with the
	// subject of the grant that created it.
	Subject string
	// ExpiresAt is when the grant stops being accepted (claim exp, whole
	// seconds), required.
	ExpiresAt time.Time
	// NotBefore is when the grant starts being accepted (claim nbf); zero
	// means at once.
	NotBefore time.Time
	// IssuedAt is when the platform signed the grant (claim iat); zero
	// means unknown. A grant issued in the future is refused.
	IssuedAt time.Time
	// MaxSize is the largest upload the grant allows, in bytes (claim
	// max_size); 0 means no per-grant limit (the gateway's --max-size
	// still applies).
	MaxSize int64
	// FileTypes lists the filetype prefixes the grant allows, matched
	// case-insensitively ("video/", "video/mp4"; "*" allows any type, even
	// none) (claim file_types). Empty means the gateway's default list.
	FileTypes []string
	// Metadata is the platform's own metadata, recorded with the upload
	// (claim metadata). Keys are printable ASCII without spaces or commas.
	Metadata map[string]string
}

// claims is the JWT claims set of a grant: the contract with platforms.
// Registered claims other than sub, exp, nbf and iat (iss, aud, jti) and
// unknown claims are accepted and ignored.
type claims struct {
	jwt.RegisteredClaims
	MaxSize   int64             `json:"max_size,omitempty"`
	FileTypes []string          `json:"file_types,omitempty"`
	Metadata  map[string]string `json:"metadata,omitempty"`
}

// EffectiveFileTypes returns the filetype prefixes that apply to an upload
// under g: g's FileTypes, or defaults when g is nil or lists none.
func (g *Grant) EffectiveFileTypes(defaults []string) []string {
	if g != nil && len(g.FileTypes) > 0 {
		return g.FileTypes
	}
	return defaults
}

// AllowsFileType reports whether an upload whose filetype metadata is ft
// may be created under g (nil g: no grant, defaults apply). The
// effective list (see EffectiveFileTypes) is matched by case-insensitive
// prefix, so "video/" allows "video/mp4" and "VIDEO/webm"; an empty list
// allows everything, and "*" allows any type, even none. An empty ft (the
// client sent no filetype; browsers do so for extensions they do not
// know) matches only "*".
func (g *Grant) AllowsFileType(ft string, defaults []string) bool {
	allowed := g.EffectiveFileTypes(defaults)
	if len(allowed) == 0 {
		return true
	}
	ft = strings.ToLower(strings.TrimSpace(ft))
	for _, p := range allowed {
		p = strings.ToLower(strings.TrimSpace(p))
		switch {
		case p == "*":
			return true
		case p != "" && ft != "" && strings.HasPrefix(ft, p):
			return true
		}
	}
	return false
}

// AllowsSize reports whether an upload of n bytes is within g's MaxSize
// (always true for a nil g or a MaxSize of 0). The gateway's own maximum
// is checked separately.
func (g *Grant) AllowsSize(n int64) bool {
	return g == nil || g.MaxSize <= 0 || n <= g.MaxSize
}

// Option configures a Verifier.
type Option func(*Verifier) error

// WithLeeway sets the clock skew tolerated on exp, nbf and iat (default
// DefaultLeeway; 0 for none).
func WithLeeway(d time.Duration) Option {
	return func(v *Verifier) error {
		if d < 0 {
			return fmt.Errorf("grant leeway %v is negative", d)
		}
		v.leeway = d
		return nil
	}
}

// WithMaxTokenLength sets the longest grant Verify parses, in bytes
// (default DefaultMaxTokenLength, at least 256).
func WithMaxTokenLength(n int) Option {
	return func(v *Verifier) error {
		if n < 256 {
			return fmt.Errorf("maximum grant length %d is below 256 bytes", n)
		}
		v.maxLen = n
		return nil
	}
}

// Verifier checks grants signed with one secret. It is safe for concurrent
// use.
type Verifier struct {
	secret []byte
	leeway time.Duration
	maxLen int
}

// NewVerifier returns a Verifier of grants signed with secret (HS256). The
// secret must be at least MinSecretLength bytes; its bytes are the HMAC key
// as given (a string secret is used as its UTF-8 bytes, as JWT libraries
// do), and it is copied.
func NewVerifier(secret []byte, opts ...Option) (*Verifier, error) {
	if err := checkSecret(secret); err != nil {
		return nil, err
	}
	v := &Verifier{secret: append([]byte(nil), secret...), leeway: DefaultLeeway, maxLen: DefaultMaxTokenLength}
	for _, o := range opts {
		if err := o(v); err != nil {
			return nil, err
		}
	}
	return v, nil
}

func checkSecret(secret []byte) error {
	if len(secret) < MinSecretLength {
		return fmt.Errorf("the grant secret is %d bytes long: it must be at least %d bytes (e.g. `openssl rand -base64 48`)",
			len(secret), MinSecretLength)
	}
	return nil
}

// Verify checks the grant raw (the compact JWT, without "Bearer ") at time
// now and returns what it grants. It accepts only HS256 signatures made
// with the Verifier's secret (alg none, RS*, ES*, HS384, HS512 are
// refused), requires exp and a non-empty sub, honours nbf and iat, and
// checks the grant's claims against the package limits. It returns an
// *Error: ErrNoGrant for an empty raw, ErrExpiredGrant past exp plus the
// leeway, ErrGrantNotYetValid before nbf or iat minus the leeway, and
// ErrInvalidGrant for everything else.
func (v *Verifier) Verify(raw string, now time.Time) (*Grant, error) {
	if raw == "" {
		return nil, refuse(ErrNoGrant, "an upload grant is required: send it as `Authorization: Bearer <grant>`")
	}
	if len(raw) > v.maxLen {
		return nil, refuse(ErrInvalidGrant, "the upload grant is %d bytes long, more than the %d bytes allowed", len(raw), v.maxLen)
	}
	p := jwt.NewParser(
		jwt.WithValidMethods([]string{Algorithm}),
		jwt.WithExpirationRequired(),
		jwt.WithIssuedAt(),
		jwt.WithLeeway(v.leeway),
		jwt.WithTimeFunc(func() time.Time { return now }),
		jwt.WithStrictDecoding(),
	)
	var c claims
	tok, err := p.ParseWithClaims(raw, &c, func(t *jwt.Token) (any, error) {
		if t.Method != jwt.SigningMethodHS256 {
			return nil, errors.New("unexpected signing method")
		}
		return v.secret, nil
	})
	if err != nil {
		return nil, v.parseError(tok, &c, err)
	}
	if _, ok := tok.Header["crit"]; ok {
		return nil, refuse(ErrInvalidGrant, "the upload grant's header has a `crit` parameter, which this gateway does not support")
	}
	g := &Grant{
		Subject:   c.Subject,
		ExpiresAt: c.ExpiresAt.Time.UTC(),
		MaxSize:   c.MaxSize,
		FileTypes: c.FileTypes,
		Metadata:  c.Metadata,
	}
	if len(g.FileTypes) == 0 {
		g.FileTypes = nil
	}
	if len(g.Metadata) == 0 {
		g.Metadata = nil
	}
	if c.NotBefore != nil {
		g.NotBefore = c.NotBefore.Time.UTC()
	}
	if c.IssuedAt != nil {
		g.IssuedAt = c.IssuedAt.Time.UTC()
	}
	if err := checkGrant(g); err != nil {
		return nil, err
	}
	return g, nil
}

// parseError turns an error of ParseWithClaims into a *Error. The claims
// in c are trusted only when the error is about them (the signature was
// checked first).
func (v *Verifier) parseError(tok *jwt.Token, c *claims, err error) *Error {
	const stamp = time.RFC3339
	switch {
	case errors.Is(err, jwt.ErrTokenMalformed):
		return refuse(ErrInvalidGrant, "the upload grant is not a well-formed JWT (three base64url parts: header, claims, signature)")
	case errors.Is(err, jwt.ErrTokenUnverifiable):
		return refuse(ErrInvalidGrant, "the upload grant must be signed with %s", Algorithm)
	case errors.Is(err, jwt.ErrTokenSignatureInvalid):
		if tok != nil && tok.Method != nil && tok.Method.Alg() != Algorithm {
			// Alg is one of the names the JWT library registers.
			return refuse(ErrInvalidGrant, "the upload grant is signed with %s: only %s is accepted", tok.Method.Alg(), Algorithm)
		}
		return refuse(ErrInvalidGrant, "the upload grant's signature does not match: it was not signed with this gateway's grant secret")
	case errors.Is(err, jwt.ErrTokenExpired) && c.ExpiresAt != nil:
		return refuse(ErrExpiredGrant, "the upload grant expired at %s: ask the platform for a new one",
			c.ExpiresAt.UTC().Format(stamp))
	case errors.Is(err, jwt.ErrTokenNotValidYet) && c.NotBefore != nil:
		return refuse(ErrGrantNotYetValid, "the upload grant is not valid before %s (is the platform server's clock right?)",
			c.NotBefore.UTC().Format(stamp))
	case errors.Is(err, jwt.ErrTokenUsedBeforeIssued) && c.IssuedAt != nil:
		return refuse(ErrGrantNotYetValid, "the upload grant was issued in the future, at %s (is the platform server's clock right?)",
			c.IssuedAt.UTC().Format(stamp))
	case errors.Is(err, jwt.ErrTokenRequiredClaimMissing):
		return refuse(ErrInvalidGrant, "the upload grant has no expiry: the `exp` claim is required")
	default:
		return refuse(ErrInvalidGrant, "the upload grant is invalid")
	}
}

// checkGrant checks g against the contract (what Verify and Sign enforce
// beyond the signature and the times).
func checkGrant(g *Grant) *Error {
	switch {
	case g.Subject == "":
		return refuse(ErrInvalidGrant, "the upload grant has no subject: the `sub` claim (the user id) is required")
	case len(g.Subject) > MaxSubjectLength:
		return refuse(ErrInvalidGrant, "the upload grant's `sub` is longer than %d bytes", MaxSubjectLength)
	case !printableUTF8(g.Subject):
		return refuse(ErrInvalidGrant, "the upload grant's `sub` must be valid UTF-8 without control characters")
	case g.ExpiresAt.IsZero():
		return refuse(ErrInvalidGrant, "the upload grant has no expiry: the `exp` claim is required")
	case g.MaxSize < 0:
		return refuse(ErrInvalidGrant, "the upload grant's `max_size` is negative")
	case len(g.FileTypes) > MaxFileTypes:
		return refuse(ErrInvalidGrant, "the upload grant's `file_types` has %d entries, more than the %d allowed", len(g.FileTypes), MaxFileTypes)
	case len(g.Metadata) > MaxMetadataEntries:
		return refuse(ErrInvalidGrant, "the upload grant's `metadata` has %d entries, more than the %d allowed", len(g.Metadata), MaxMetadataEntries)
	}
	for i, ft := range g.FileTypes {
		if ft == "" || len(ft) > MaxFileTypeLength || !tokenASCII(ft) {
			return refuse(ErrInvalidGrant, "the upload grant's `file_types` entry %d must be 1 to %d bytes of printable ASCII without spaces (e.g. \"video/\")",
				i+1, MaxFileTypeLength)
		}
	}
	for k, val := range g.Metadata {
		if k == "" || len(k) > MaxMetadataKeyLength || !tokenASCII(k) || strings.Contains(k, ",") {
			return refuse(ErrInvalidGrant, "the upload grant's `metadata` keys must be 1 to %d bytes of printable ASCII without spaces or commas",
				MaxMetadataKeyLength)
		}
		if len(val) > MaxMetadataValueLength {
			return refuse(ErrInvalidGrant, "the upload grant's `metadata` value of %q is longer than %d bytes", k, MaxMetadataValueLength)
		}
		if !printableUTF8(val) {
			return refuse(ErrInvalidGrant, "the upload grant's `metadata` value of %q must be valid UTF-8 without control characters", k)
		}
	}
	return nil
}

// tokenASCII reports whether s is printable ASCII without spaces.
func tokenASCII(s string) bool {
	for i := 0; i < len(s); i++ {
		if c := s[i]; c <= ' ' || c >= 0x7f {
			return false
		}
	}
	return true
}

// printableUTF8 reports whether s is valid UTF-8 without control characters.
func printableUTF8(s string) bool {
	if !utf8.ValidString(s) {
		return false
	}
	for _, r := range s {
		if unicode.IsControl(r) {
			return false
		}
	}
	return true
}

// Sign returns g as a grant signed with secret (HS256): the compact JWT a
// client sends as `Authorization: Bearer <grant>`. It checks g as Verify
// would (a non-empty Subject, a non-zero ExpiresAt, the package limits);
// times are truncated to whole seconds, and NotBefore and IssuedAt are
// left out when zero. It is meant for tests, demos and Go platforms:
// production platforms usually sign grants in their own backend with any
// JWT library (see the package documentation).
func Sign(secret []byte, g Grant) (string, error) {
	if err := checkSecret(secret); err != nil {
		return "", err
	}
	if err := checkGrant(&g); err != nil {
		return "", fmt.Errorf("sign upload grant: %w", err)
	}
	c := claims{
		RegisteredClaims: jwt.RegisteredClaims{Subject: g.Subject, ExpiresAt: jwt.NewNumericDate(g.ExpiresAt)},
		MaxSize:          g.MaxSize,
		FileTypes:        g.FileTypes,
		Metadata:         g.Metadata,
	}
	if !g.NotBefore.IsZero() {
		c.NotBefore = jwt.NewNumericDate(g.NotBefore)
	}
	if !g.IssuedAt.IsZero() {
		c.IssuedAt = jwt.NewNumericDate(g.IssuedAt)
	}
	s, err := jwt.NewWithClaims(jwt.SigningMethodHS256, c).SignedString(secret)
	if err != nil {
		return "", fmt.Errorf("sign upload grant: %w", err)
	}
	return s, nil
}

// FromRequest returns the grant of r: the token of its `Authorization:
// Bearer <grant>` header (scheme case-insensitive, exactly one header and
// one token of the RFC 6750 b64token syntax). It returns an *Error:
// ErrNoGrant without an Authorization header (or with an empty one), and
// ErrInvalidGrant for any other scheme or a malformed header. Messages never
// echo the header.
func FromRequest(r *http.Request) (string, error) {
	vals := r.Header.Values("Authorization")
	switch {
	case len(vals) == 0 || (len(vals) == 1 && strings.TrimSpace(vals[0]) == ""):
		return "", refuse(ErrNoGrant, "an upload grant is required: send it as `Authorization: Bearer <grant>`")
	case len(vals) > 1:
		return "", refuse(ErrInvalidGrant, "send one Authorization header, not %d", len(vals))
	}
	f := strings.FieldsFunc(vals[0], func(r rune) bool { return r == ' ' || r == '\t' })
	switch {
	case !strings.EqualFold(f[0], "Bearer"):
		return "", refuse(ErrInvalidGrant, "the Authorization header must use the Bearer scheme: `Authorization: Bearer <grant>`")
	case len(f) == 1:
		return "", refuse(ErrInvalidGrant, "the Authorization header has no upload grant after `Bearer`")
	case len(f) > 2:
		return "", refuse(ErrInvalidGrant, "the Authorization header must carry exactly one upload grant after `Bearer`")
	case !b64token(f[1]):
		return "", refuse(ErrInvalidGrant, "the upload grant in the Authorization header has characters a JWT cannot have")
	}
	return f[1], nil
}

// b64token reports whether s matches RFC 6750's b64token:
// 1*( ALPHA / DIGIT / "-" / "." / "_" / "~" / "+" / "/" ) *"=".
func b64token(s string) bool {
	body := strings.TrimRight(s, "=")
	if body == "" {
		return false
	}
	for i := 0; i < len(body); i++ {
		c := body[i]
		switch {
		case c >= 'a' && c <= 'z', c >= 'A' && c <= 'Z', c >= '0' && c <= '9':
		case c == '-', c == '.', c == '_', c == '~', c == '+', c == '/':
		default:
			return false
		}
	}
	return true
}
