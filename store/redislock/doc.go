// Package redislock is a distributed tusd upload locker on Redis: a
// handler.Locker that lets several gateway instances share uploads, with
// lock-release requests forwarded between instances as tusd's in-memory
// locker does inside one process.
//
// # Why
//
// tusd takes an upload's lock for every HEAD, GET, PATCH and DELETE. When a
// second request wants a lock that is held, the holder's requestRelease
// callback is called so that the running PATCH stops and unlocks; the waiter
// then acquires. tusd ships this only in memory (pkg/memorylocker), which
// cannot work across processes.
//
// # Keys and channels
//
// With P the prefix (DefaultPrefix unless WithPrefix) and id the upload id:
//
//	P:lock:{id}     the lock: a random token of the holder, with a TTL (the expiry)
//	P:lockreq:{id}  "release requested": the token of the latest waiter, short TTL
//	P:release:{id}  the Pub/Sub channel on which waiters ask the holder to release
//
// The hash tag puts both keys of an upload into one Redis Cluster slot (the
// same slot as the state store's record of that upload), so each script below
// touches a single slot. An id that starts with '}' would leave an empty hash
// tag (Redis would then hash each whole key, and split the two keys), so such
// ids, and ids that start with '%', are tagged {%<id>} instead; tusd passes
// ids straight from request paths, so every id must work.
//
// # Protocol
//
// Acquire: one Lua script does SET P:lock NX PX expiry with a fresh token per
// Lock call (a key that already holds that token counts as taken: an
// earlier attempt whose reply was lost). On success it also deletes
// P:lockreq if that request was the caller's own. On failure it returns the current holder's token and, the
// first time the waiter sees that holder (and every request interval after
// that), sets P:lockreq to the waiter's token and PUBLISHes on P:release. The
// waiter polls with capped, jittered exponential backoff until it acquires or
// its context is done; then Lock returns handler.ErrLockTimeout and withdraws
// the waiter's request (and the lock itself, in case an acquire whose reply
// was lost did succeed).
//
// Hold: right after acquiring, the holder SUBSCRIBEs (exact channel name,
// never PSUBSCRIBE, so ids with glob characters such as '*', '?' or '[' are
// safe) and then waits for a PING sent on the same Pub/Sub connection to come
// back. Redis runs one connection's commands in order, so once the PONG
// arrives the subscription is live. Only then does the holder read
// P:lockreq: a waiter that asked in the gap between SET NX and SUBSCRIBE left
// that key behind, so its request is never lost. A holder renews its lock
// every renew interval (expiry/3 by default) with a script that extends the
// TTL only while the value is its token and that also reports a pending
// P:lockreq, so even a Pub/Sub message lost to a reconnect is seen within one
// renew interval (waiters keep the key alive while they wait).
//
// Release request: the holder's requestRelease callback is called once, from
// a short-lived goroutine that handles the request (or, for a waiter of the
// same process, from the waiter's), never while a Redis connection or the
// Locker's mutex waits on it, so the callback may call Unlock itself.
//
// Lost lock: if renewal finds another value or no key, or cannot reach Redis
// before the last successful renewal runs out, the holder calls
// requestRelease so tusd stops the PATCH. It does not renew again; Unlock then
// deletes nothing that is not its own.
//
// Release: the process leaves the channel and deletes the key only if it
// still holds its token (a compare-and-delete script).
//
// # Leases and linger
//
// What a process holds in Redis (the key with its token, the renewal, the
// subscription) is a lease, and successive locks of one upload in one
// process share it: tusd makes a lock per request, and clients such as the
// mobile tus SDKs send many small PATCHes in a row to the same instance.
//
//   - Unlock does not release at once: the lease lingers for the linger time
//     (WithLinger, DefaultLinger 2s), still renewed by its timer and still
//     subscribed. A Lock of the upload in the same process meanwhile takes
//     it over with no Redis command.
//   - A Lock while another lock of the same process holds the lease calls
//     that holder's requestRelease directly (as tusd's memorylocker does)
//     and takes the lease over at its Unlock, again with no Redis command.
//   - A release request from another process (Pub/Sub, or the request key
//     seen at renewal) ends a lingering lease at once: it is deleted by the
//     compare-and-delete script, and the waiter gets the lock at its next
//     attempt. Asked while held, the holder is asked to release as before,
//     and its Unlock releases at once instead of lingering.
//   - A lost lease (see above), or one whose renewals failed for so long
//     that it may expire before the next one, is never taken over: it is
//     released, and the next Lock goes to Redis.
//   - The linger ends when the linger time passes with no new Lock: the
//     lease is released.
//   - A process that was asked by another process for an upload's lock
//     remembers it for 30s: its locks of that upload do not linger then, so
//     requests that alternate between instances (a load balancer without
//     affinity) cost what they cost without lingering.
//   - Close releases the lingering leases and stops lingering; the locks
//     still held are released at their Unlock. When it releases the last
//     lease, it returns once Redis confirmed that the process left every
//     release channel. Call it at shutdown, after the HTTP server stopped: a
//     lingering lease left behind by a process that exits blocks its upload
//     until its expiry, as a crashed holder does.
//
// Each decision (take over, wait, end the linger) is taken under the
// Locker's mutex, so a new Lock and the end of the linger, a release request
// or a loss never both win: a lease being released is never taken over, and
// a Lock that finds one waits for the delete to finish before it goes to
// Redis.
//
// # Cost per request
//
// Redis commands sent by the locker (commands that run inside a script are
// not counted; the first call of each script in a process adds an EVAL after
// a NOSCRIPT):
//
//   - first lock of a lease: the acquire script, SUBSCRIBE and the PING that
//     confirms it (plus the HELLO of a new Pub/Sub connection when the
//     process held no other lease), one renewal that reads the request key;
//   - further locks of the lease in the same process: none;
//   - per renew interval while the lease lives (held or lingering): one
//     renewal;
//   - end of the lease: the compare-and-delete script, and UNSUBSCRIBE when
//     other leases keep the Pub/Sub connection (else it is closed; after
//     Close, it is closed after an UNSUBSCRIBE and a PING that confirms it);
//   - a waiter: one acquire script per attempt (the first one also sends
//     the release request).
//
// So a series of PATCHes of one upload on one instance costs about six
// commands in all plus one every renew interval, instead of about six per
// PATCH; requests that alternate between instances cost about six each, as
// without lingering.
//
// # Resources
//
// One Locker keeps one shared Pub/Sub connection for all the leases it holds
// or that linger (not one per lock), opened when the first lease is taken and
// closed when the last one is released, plus one goroutine that receives on
// it. A lease runs no goroutine of its own: it costs its record, a context
// and two runtime timers, one that renews it every renew interval (re-armed
// after each renewal, so renewals of one lease never overlap) and one that
// ends its linger; a goroutine runs only while a timer's callback does (a
// renewal, the release at the end of the linger) or while a release request
// is handled. When no lease is held or lingers the Locker runs no goroutine;
// Close ends the lingering leases at once and waits for their callbacks.
//
// # Guarantees and failure modes
//
//   - Mutual exclusion holds as long as each holder renews in time: the lock
//     is a lease. A holder that is paused for longer than the expiry (a long
//     GC or VM pause, a network partition) can lose its lock to another
//     instance before it notices; it then calls requestRelease at its next
//     renewal. tusd's data stores are not fenced, so such a pause can still
//     let two writers overlap briefly. Keep the expiry well above expected
//     pauses and Redis latency.
//   - A crashed holder blocks its upload for at most the expiry, and so does
//     a process that crashes (or exits without Close) while its lease
//     lingers.
//   - Release requests are delivered promptly over Pub/Sub, to a holder or
//     a lingering lease alike; if a message is lost (Pub/Sub reconnect,
//     Redis failover), the process still sees the request key within one
//     renew interval.
//   - Redis replication is asynchronous: after a failover to a replica that
//     missed the latest SET, two holders may briefly coexist (this is not
//     Redlock).
//   - Redis errors while acquiring are retried until the context is done; the
//     result is then handler.ErrLockTimeout wrapped with the last error.
//     Each Redis command is bounded by the renew interval, and runs to its
//     end even when the caller's context is cancelled, so no lock is taken
//     unknowingly; Unlock's compare-and-delete may fail when Redis is
//     unreachable, and the key then expires on its own.
//   - Clients: a single node, Sentinel (failover client) and Cluster work.
//     A Ring client is not supported: it shards channels.
//
// # Redis Cluster
//
// Each script's keys share the upload's hash tag, so each runs on the one
// master that serves the upload's slot; go-redis routes it there and follows
// MOVED and ASK redirections. Release requests use classic Pub/Sub, never
// sharded Pub/Sub: a PUBLISH (here, from the acquire script on the upload's
// master) is broadcast over the cluster bus to every node, so the shared
// Pub/Sub connection of a Locker, which go-redis opens to the master of the
// first channel it subscribed to, hears the requests for all its locks
// whatever master serves them; later SUBSCRIBEs go on that same connection.
// If that node goes away, the hub keeps retrying and go-redis reconnects to
// the master of one of the subscribed channels and subscribes again;
// requests published meanwhile are seen at the next renewal through the
// request key. A master that is down blocks the locks in its slots
// (Lock keeps retrying until its context ends; holders there lose their lock
// after the expiry and are asked to release), not the others. A master that
// restarts empty forgets its locks: two holders may then coexist until the
// old one's next renewal finds its lock gone (at most one renew interval); a
// lingering lease may be taken over locally in that window too.
package redislock
