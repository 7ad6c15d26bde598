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
// Release request: the holder calls its requestRelease callback once, from its
// own goroutine (never while a Redis connection waits on it), so the callback
// may call Unlock itself.
//
// Lost lock: if renewal finds another value or no key, or cannot reach Redis
// before the last successful renewal runs out, the holder calls
// requestRelease so tusd stops the PATCH. It does not renew again; Unlock then
// deletes nothing that is not its own.
//
// Unlock stops the renewal, leaves the channel and deletes the key only if it
// still holds the holder's token (a compare-and-delete script).
//
// # Resources
//
// One Locker keeps one shared Pub/Sub connection for all the locks it holds
// (not one per lock), opened when the first lock is held and closed when the
// last one is released, plus one goroutine for it and one renewal goroutine
// per held lock. When no lock is held the Locker runs no goroutine, so it
// needs no Close.
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
//   - A crashed holder blocks its upload for at most the expiry.
//   - Release requests are delivered promptly over Pub/Sub; if a message is
//     lost (Pub/Sub reconnect, Redis failover), the holder still sees the
//     request key within one renew interval.
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
// old one's next renewal finds its lock gone (at most one renew interval).
package redislock
