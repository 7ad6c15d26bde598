package redislock

import (
	"context"
	"sync"
	"time"

	"go.uber.org/zap"
)

// lease is this process's hold on one upload's lock in Redis: the key set
// to its token, renewed, its release channel subscribed. Successive locks
// of the process for the upload share it: one holds it at a time, and
// between them it lingers (no holder) for the linger time.
//
// A lease runs no goroutine of its own: two timers (renewal and linger)
// call it back, and a release request runs in a short-lived goroutine.
// Each such callback registers in running under locker.mu while the lease
// is not dropping, so once dropping is set no new callback starts, and
// running.Wait returns when the ones already started have returned.
type lease struct {
	locker  *Locker
	id      string
	key     string
	reqKey  string
	channel string
	token   string

	ctx     context.Context // cancelled when the lease ends
	cancel  context.CancelFunc
	gone    chan struct{}  // closed when drop is done
	running sync.WaitGroup // callbacks running (renewal, linger end, release request)
	session *session       // set and read by the hub under its mutex

	// Guarded by locker.mu.
	holder     *holding    // nil while lingering
	idleSince  time.Time   // when the lease began to linger
	validUntil time.Time   // the lock surely lives until then (last renewal's send time + expiry)
	wanted     bool        // someone else asked for the lock: never linger again
	lost       bool        // the lock is not ours any more, or may not be
	dropping   bool        // the lease is ending (drop runs or ran)
	started    bool        // hold is done: timers armed, requests handled
	reqPending bool        // a release request waits for (or is in) onRequest's start
	renewDue   time.Time   // when the renewal timer is due
	renewTimer *time.Timer // calls renewTick every renew interval
	lingerT    *time.Timer // calls lingerEnd when the linger time passed; nil until first armed
}

// requested records a release request from the requester with token from
// (a Pub/Sub payload). It never blocks on Redis: it takes locker.mu
// briefly, and the request is handled in its own goroutine.
func (ls *lease) requested(from string) {
	if from == ls.token {
		return
	}
	l := ls.locker
	l.mu.Lock()
	ls.requestLocked()
	l.mu.Unlock()
}

// requestLocked records a release request (or a loss found at renewal) and
// starts onRequest in a goroutine unless one is already pending; before
// hold is done it only records it, and hold starts it. Requests that come
// while one is pending are coalesced into it. The caller holds locker.mu.
func (ls *lease) requestLocked() {
	if ls.dropping || ls.reqPending {
		return
	}
	ls.reqPending = true
	if ls.started {
		ls.running.Add(1)
		go ls.onRequest()
	}
}

// start arms the renewal timer and starts a release request recorded
// while hold was subscribing. The caller holds locker.mu.
func (ls *lease) start() {
	ls.started = true
	ls.renewDue = time.Now().Add(ls.locker.opts.renew)
	ls.renewTimer = time.AfterFunc(ls.locker.opts.renew, ls.renewTick)
	if ls.reqPending && !ls.dropping {
		ls.running.Add(1)
		go ls.onRequest()
	}
}

// armLinger arms the linger timer (the lease lingers) or disarms it (it is
// held or ending), as the holder just changed. The caller holds locker.mu.
func (ls *lease) armLinger() {
	if ls.holder != nil || ls.dropping {
		if ls.lingerT != nil {
			ls.lingerT.Stop()
		}
		return
	}
	d := time.Until(ls.idleSince.Add(ls.locker.opts.linger))
	if ls.lingerT == nil {
		ls.lingerT = time.AfterFunc(d, ls.lingerEnd)
		return
	}
	ls.lingerT.Reset(d)
}

// lingerEnd ends the lease when it lingered for the linger time. A stale
// firing (the lease was taken over, or re-armed, meanwhile) does nothing.
func (ls *lease) lingerEnd() {
	l := ls.locker
	l.mu.Lock()
	end := ls.holder == nil && !ls.dropping && time.Since(ls.idleSince) >= l.opts.linger
	if end {
		ls.dropping = true
		ls.running.Add(1)
	}
	l.mu.Unlock()
	if end {
		defer ls.running.Done()
		ls.dropLogged("release lingering lock")
	}
}

// renewTick renews the lease (unless it was lost) and re-arms the renewal
// timer for the next renew interval, until the lease ends or is lost. Only
// one renewal runs at a time: the timer is re-armed after it.
func (ls *lease) renewTick() {
	l := ls.locker
	l.mu.Lock()
	if ls.dropping || ls.lost {
		l.mu.Unlock()
		return
	}
	ls.running.Add(1)
	l.mu.Unlock()
	defer ls.running.Done()

	ls.renew()

	l.mu.Lock()
	defer l.mu.Unlock()
	if ls.dropping || ls.lost {
		return // a lost lease is not renewed again
	}
	// Keep a ticker's cadence: due times a renew interval apart, and at
	// once when a renewal took longer than that.
	now := time.Now()
	ls.renewDue = ls.renewDue.Add(l.opts.renew)
	if ls.renewDue.Before(now) {
		ls.renewDue = now
	}
	ls.renewTimer.Reset(ls.renewDue.Sub(now))
}

// onRequest handles a release request (or a loss found at renewal): it asks
// the holder to release, or ends the lease at once while it lingers. It
// runs in its own goroutine, registered in running by requestLocked.
func (ls *lease) onRequest() {
	defer ls.running.Done()
	l := ls.locker
	l.mu.Lock()
	ls.reqPending = false // a request from now on starts another onRequest
	if ls.dropping {
		l.mu.Unlock()
		return
	}
	ls.wanted = true
	l.markContended(ls.key, time.Now())
	h := ls.holder
	if h == nil {
		ls.dropping = true
	}
	l.mu.Unlock()
	if h == nil {
		ls.dropLogged("release lingering lock on request")
		return
	}
	h.release()
}

// renew extends the lock and checks for a release request; it is called by
// hold before the renewal timer is armed and then only by renewTick.
func (ls *lease) renew() {
	l := ls.locker
	o := &l.opts
	ctx, cancel := context.WithTimeout(ls.ctx, o.renew)
	defer cancel()
	sent := time.Now()
	status, err := renewScript.Run(ctx, l.client, []string{ls.key, ls.reqKey}, ls.token, o.expiry.Milliseconds()).Int()
	if err != nil && ls.ctx.Err() != nil {
		return // the lease is ending
	}
	l.mu.Lock()
	defer l.mu.Unlock()
	switch {
	case err != nil:
		if !time.Now().Add(o.renew).Before(ls.validUntil) {
			o.logger.Warn("lock lost: cannot renew in time", zap.String("id", ls.id), zap.Error(err))
			ls.lost = true
			ls.requestLocked()
			return
		}
		o.logger.Warn("renew lock", zap.String("id", ls.id), zap.Error(err))
	case status == renewLost:
		o.logger.Warn("lock lost: taken over or expired", zap.String("id", ls.id))
		ls.lost = true
		ls.requestLocked()
	case status == renewRequested:
		ls.validUntil = sent.Add(o.expiry)
		ls.requestLocked()
	case status == renewOK:
		ls.validUntil = sent.Add(o.expiry)
	default:
		o.logger.Error("renew lock: unexpected reply", zap.String("id", ls.id), zap.Int("reply", status))
	}
}

// drop ends the lease; its caller set dropping (so no new callback
// starts). It stops the timers, cancels the lease's context (a renewal in
// flight gives up), deletes the key if it still holds the lease's token,
// leaves the release channel, and lets the local locks waiting for the
// lease go to Redis. It returns the delete's error (the key then expires on
// its own). It does not wait for the running callbacks, as it may be
// called from one of them (directly, or through requestRelease calling
// Unlock); Close waits for them.
func (ls *lease) drop() error {
	l := ls.locker
	ls.cancel()
	l.mu.Lock()
	if ls.renewTimer != nil {
		ls.renewTimer.Stop()
	}
	if ls.lingerT != nil {
		ls.lingerT.Stop()
	}
	closed := l.closed
	l.mu.Unlock()
	ctx, cancel := context.WithTimeout(context.WithoutCancel(ls.ctx), l.opts.renew)
	err := deleteIfOursScript.Run(ctx, l.client, []string{ls.key}, ls.token).Err()
	cancel()
	l.hub.unsubscribe(ls, closed)
	l.mu.Lock()
	if l.leases[ls.key] == ls {
		delete(l.leases, ls.key)
	}
	l.mu.Unlock()
	close(ls.gone)
	return err
}

// dropLogged drops the lease and logs a failed delete.
func (ls *lease) dropLogged(what string) {
	if err := ls.drop(); err != nil {
		ls.locker.opts.logger.Warn(what, zap.String("id", ls.id), zap.Error(err))
	}
}
