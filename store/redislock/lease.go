package redislock

import (
	"context"
	"time"

	"go.uber.org/zap"
)

// lease is this process's hold on one upload's lock in Redis: the key set
// to its token, renewed, its release channel subscribed. Successive locks
// of the process for the upload share it: one holds it at a time, and
// between them it lingers (no holder) for the linger time.
type lease struct {
	locker  *Locker
	id      string
	key     string
	reqKey  string
	channel string
	token   string

	ctx      context.Context // cancelled when the lease ends
	cancel   context.CancelFunc
	requests chan struct{} // someone else asked for the lock (buffer 1)
	wake     chan struct{} // holder changed: keep re-arms its linger timer (buffer 1)
	gone     chan struct{} // closed when drop is done
	kept     chan struct{} // closed when keep returns
	session  *session      // set and read by the hub under its mutex

	// Guarded by locker.mu.
	holder     *holding  // nil while lingering
	idleSince  time.Time // when the lease began to linger
	validUntil time.Time // the lock surely lives until then (last renewal's send time + expiry)
	wanted     bool      // someone else asked for the lock: never linger again
	lost       bool      // the lock is not ours any more, or may not be
	dropping   bool      // the lease is ending (drop runs or ran)
}

// requested records a release request from the requester with token from
// (a Pub/Sub payload; "" for one seen at renewal). It never blocks.
func (ls *lease) requested(from string) {
	if from == ls.token {
		return
	}
	select {
	case ls.requests <- struct{}{}:
	default:
	}
}

// poke tells keep that the holder changed. It never blocks.
func (ls *lease) poke() {
	select {
	case ls.wake <- struct{}{}:
	default:
	}
}

// keep renews the lease until it ends, passes release requests to its
// holder, and ends it when it lingered for the linger time or is asked for
// (or lost) while lingering.
func (ls *lease) keep() {
	defer close(ls.kept)
	l := ls.locker
	ticker := time.NewTicker(l.opts.renew)
	defer ticker.Stop()
	linger := time.NewTimer(time.Hour)
	linger.Stop()
	defer linger.Stop()
	for {
		if ls.ctx.Err() != nil {
			return
		}
		var lingerC <-chan time.Time
		l.mu.Lock()
		if ls.holder == nil && !ls.dropping {
			linger.Reset(time.Until(ls.idleSince.Add(l.opts.linger)))
			lingerC = linger.C
		} else {
			linger.Stop()
		}
		lost := ls.lost
		l.mu.Unlock()

		select {
		case <-ls.ctx.Done():
			return
		case <-ls.wake:
		case <-ls.requests:
			ls.onRequest()
		case <-lingerC:
			l.mu.Lock()
			end := ls.holder == nil && !ls.dropping && time.Since(ls.idleSince) >= l.opts.linger
			if end {
				ls.dropping = true
			}
			l.mu.Unlock()
			if end {
				ls.dropLogged("release lingering lock")
			}
		case <-ticker.C:
			if !lost {
				ls.renew()
			}
		}
	}
}

// onRequest handles a release request (or a loss found at renewal): it asks
// the holder to release, or ends the lease at once while it lingers.
func (ls *lease) onRequest() {
	l := ls.locker
	l.mu.Lock()
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
// hold before keep starts and then only by keep.
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
			ls.requested("")
			return
		}
		o.logger.Warn("renew lock", zap.String("id", ls.id), zap.Error(err))
	case status == renewLost:
		o.logger.Warn("lock lost: taken over or expired", zap.String("id", ls.id))
		ls.lost = true
		ls.requested("")
	case status == renewRequested:
		ls.validUntil = sent.Add(o.expiry)
		ls.requested("")
	case status == renewOK:
		ls.validUntil = sent.Add(o.expiry)
	default:
		o.logger.Error("renew lock: unexpected reply", zap.String("id", ls.id), zap.Int("reply", status))
	}
}

// drop ends the lease; its caller set dropping. It stops keep, deletes the
// key if it still holds the lease's token, leaves the release channel, and
// lets the local locks waiting for the lease go to Redis. It returns the
// delete's error (the key then expires on its own). It does not wait for
// keep, which may be the caller or may be in requestRelease, calling
// Unlock.
func (ls *lease) drop() error {
	l := ls.locker
	ls.cancel()
	ctx, cancel := context.WithTimeout(context.WithoutCancel(ls.ctx), l.opts.renew)
	err := deleteIfOursScript.Run(ctx, l.client, []string{ls.key}, ls.token).Err()
	cancel()
	l.hub.unsubscribe(ls)
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
