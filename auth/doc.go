// Package auth decides who may upload through tusgate: signed upload
// grants (HS256 JWTs) that a platform's backend gives its users, and an
// optional pre-create HTTP hook through which the platform decides each
// upload itself.
//
// # Upload grants
//
// A grant is a compact JWT (RFC 7519) signed with HS256 and the secret the
// platform shares with the gateway (--grant-secret, at least 32 bytes; its
// bytes are the HMAC key as written, as every JWT library treats a string
// secret). The client sends it on every tus request (POST, HEAD, PATCH,
// DELETE) of an upload:
//
//	Authorization: Bearer eyJhbGciOiJIUzI1NiIsInR5cCI6IkpXVCJ9.eyJzdWIiOi…
//
// Its claims, the stable contract with platforms:
//
//	{
//	  "sub": "user-42",                      // required: the user id on the platform (1-256 bytes)
//	  "exp": 1767225600,                     // required: expiry, seconds since the epoch
//	  "iat": 1767224700,                     // optional: issued at; refused when in the future
//	  "nbf": 1767224700,                     // optional: not valid before
//	  "max_size": 2147483648,                // optional: the largest upload allowed, bytes (0 or absent: no per-grant limit)
//	  "file_types": ["video/", "audio/mp4"], // optional: allowed filetype prefixes (absent: the gateway's --allowed-file-types; "*": any)
//	  "metadata": {"courseId": "c-7"}        // optional: the platform's own metadata, recorded with the upload
//	}
//
// Rules: only HS256 is accepted ("none", HS384, HS512, RS*, ES*, PS*, EdDSA
// are refused: one algorithm, no algorithm confusion); exp, nbf and iat get
// a leeway of 30 seconds for clock skew; a grant longer than 8 KiB is
// refused before it is parsed; base64url segments must be canonical; a
// `crit` header is refused. sub must be valid UTF-8 without control
// characters. file_types: at most 32 entries of printable ASCII, matched
// as case-insensitive prefixes of the client's `filetype` metadata (end a
// prefix with "/" to allow a whole type: "video" would also allow
// "videogame/x"). metadata: at most 32 entries, keys of 1-64 bytes of
// printable ASCII without spaces or commas, values of at most 1024 bytes
// of UTF-8 without control characters. Other claims (iss, aud, jti, your
// own) are ignored.
//
// Every tus request on an upload must carry a valid grant for the subject
// whose grant created it; a grant for anyone else gets 403. Grants should be
// short-lived (minutes): a long upload then needs fresh grants as it goes,
// which tus-js-client fetches in its onBeforeRequest callback
// (req.setHeader("Authorization", "Bearer " + await getGrant())). A stolen
// grant lets its holder upload as that user until it expires, no longer.
//
// Signing a grant in the platform's backend (secret = the --grant-secret
// value; the gateway's Sign does the same in Go):
//
//	Node (jsonwebtoken): jwt.sign({sub: userId, max_size: 2 ** 31, file_types: ["video/"], metadata: {courseId}}, secret, {algorithm: "HS256", expiresIn: "15m"})
//	Python (PyJWT):      jwt.encode({"sub": user_id, "iat": int(time.time()), "exp": int(time.time()) + 900, "metadata": {"courseId": course_id}}, secret, algorithm="HS256")
//	Go (golang-jwt v5):  jwt.NewWithClaims(jwt.SigningMethodHS256, jwt.MapClaims{"sub": userID, "exp": time.Now().Add(15 * time.Minute).Unix()}).SignedString([]byte(secret))
//
// Verifier.Verify checks a grant; FromRequest extracts it from a request;
// Grant.AllowsSize and Grant.AllowsFileType apply its limits. Refusals are
// *Error values whose Kind (ErrNoGrant, ErrInvalidGrant, ErrExpiredGrant,
// ErrGrantNotYetValid) the gateway maps to a status, and whose message a
// browser may show: it never contains the grant.
//
// # Without a grant secret
//
// When --grant-secret is not set, grants are not required and NOBODY IS
// AUTHENTICATED: anyone who can reach the gateway can create uploads, and
// the gateway forwards them to api.video — in delegated mode with any
// api.video upload token the client holds, and in managed mode with upload
// tokens minted from the platform's own API key, so strangers spend the
// platform's storage, encoding and bandwidth, and can put any content in
// its api.video project. The per-address limits (--create-rate,
// --max-open-uploads-per-client) slow abuse down; they do not stop it. Run
// without a grant secret only behind something else that authenticates
// (a reverse proxy, a private network), or with an --auth-hook-url that
// decides, or for local development.
//
// # The pre-create hook
//
// With --auth-hook-url, the gateway asks the platform before creating each
// upload (after the grant, size and file type checks): a POST of JSON
//
//	{"event": "pre-create", "sentAt": "2026-01-01T00:00:00Z",
//	 "subject": "user-42", "size": 1048576, "sizeDeferred": false,
//	 "filename": "talk.mp4", "filetype": "video/mp4",
//	 "metadata": {"courseId": "c-7"}, "clientMetadata": {"title": "My talk"},
//	 "clientAddress": "203.0.113.7", "host": "upload.example.com"}
//
// signed, when a hook secret is configured, with the header
// X-Tusgate-Signature: hex(HMAC-SHA256(secret, raw body)) — check it in
// constant time over the exact bytes received (VerifyBodySignature), and
// sentAt against replays. The request never carries a grant or a token.
//
// The answer: 200 or 204 allows the upload. A 4xx refuses it: the client
// gets the same status for 400, 401, 403, 413, 415, 422 and 429 (with the
// hook's Retry-After, in seconds), 403 for any other 4xx, and the hook's
// reason when the body is JSON {"message": "…"} (printable text, at most
// 200 characters), else "the platform refused this upload". Anything else —
// no answer within the timeout (--auth-hook-timeout, default 5s), a
// network error, a redirect (never followed), a 5xx, another 2xx — refuses
// the upload too (fail closed): the client gets 503 with Retry-After and
// may retry later.
package auth
