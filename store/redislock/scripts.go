package redislock

import "github.com/redis/go-redis/v9"

// acquireScript takes the lock or asks its holder to release it.
//
//	KEYS[1] lock key, KEYS[2] request key
//	ARGV[1] token, ARGV[2] lock TTL (ms), ARGV[3] request TTL (ms),
//	ARGV[4] release channel, ARGV[5] holder seen last ("" for none),
//	ARGV[6] "1" to send a request even to the holder seen last
//
// It returns {1, ""} when the lock was taken, else {0, holder token}. A lock
// that already holds the caller's token counts as taken (an earlier attempt
// succeeded but its reply was lost). A request is sent (request key set, then
// PUBLISH) when the holder is new to this waiter or when forced.
var acquireScript = redis.NewScript(`
local ok = redis.call("SET", KEYS[1], ARGV[1], "NX", "PX", ARGV[2])
local holder = ""
if not ok then
  holder = redis.call("GET", KEYS[1]) or ""
  if holder == ARGV[1] then
    redis.call("PEXPIRE", KEYS[1], ARGV[2])
    ok = true
  end
end
if ok then
  if redis.call("GET", KEYS[2]) == ARGV[1] then
    redis.call("DEL", KEYS[2])
  end
  return {1, ""}
end
if holder ~= ARGV[5] or ARGV[6] == "1" then
  redis.call("SET", KEYS[2], ARGV[1], "PX", ARGV[3])
  redis.call("PUBLISH", ARGV[4], ARGV[1])
end
return {0, holder}
`)

// Replies of renewScript.
const (
	renewLost      = 0 // the lock is not ours any more
	renewOK        = 1 // extended
	renewRequested = 2 // extended, and someone else asked for it
)

// renewScript extends the lock if it is ours and reports a pending request.
//
//	KEYS[1] lock key, KEYS[2] request key
//	ARGV[1] token, ARGV[2] lock TTL (ms)
var renewScript = redis.NewScript(`
if redis.call("GET", KEYS[1]) ~= ARGV[1] then
  return 0
end
redis.call("PEXPIRE", KEYS[1], ARGV[2])
local req = redis.call("GET", KEYS[2])
if req and req ~= ARGV[1] then
  return 2
end
return 1
`)

// deleteIfOursScript deletes each of KEYS whose value is ARGV[1] and returns
// how many it deleted.
var deleteIfOursScript = redis.NewScript(`
local n = 0
for i = 1, #KEYS do
  if redis.call("GET", KEYS[i]) == ARGV[1] then
    n = n + redis.call("DEL", KEYS[i])
  end
end
return n
`)
