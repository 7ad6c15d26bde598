package redislock

// SetAfterAcquireHook makes l call f(id) after each successful SET NX and
// before the new holder subscribes to release requests, so tests can send a
// request into that window.
func SetAfterAcquireHook(l *Locker, f func(id string)) { l.afterAcquire = f }
