package redislock

import (
	"context"
	"crypto/rand"
	"errors"
	"net"
	"sync"
	"time"

	"github.com/redis/go-redis/v9"
	"go.uber.org/zap"
)

// Bounds of the Pub/Sub receive loop.
const (
	// healthInterval is how long the loop waits for a message before it
	// PINGs the connection, so a broken one is noticed and reconnected.
	healthInterval = 30 * time.Second
	// commandTimeout bounds SUBSCRIBE, UNSUBSCRIBE and PING writes.
	commandTimeout = 5 * time.Second
	minRetry       = 50 * time.Millisecond
	maxRetry       = 2 * time.Second
)

// hub multiplexes the release channels of all the leases a Locker holds or
// keeps lingering onto one Pub/Sub connection. A session (one PubSub and its receive goroutine)
// exists while at least one lease is held or lingers.
type hub struct {
	client      redis.UniversalClient
	log         *zap.Logger
	barrierWait time.Duration // longest wait for a subscription to be confirmed

	mu   sync.Mutex
	sess *session
}

// session is one Pub/Sub connection and its receive loop. Its maps are
// guarded by hub.mu.
type session struct {
	ps       *redis.PubSub
	subs     map[string]map[*lease]struct{} // channel -> leases
	barriers map[string]chan struct{}       // PING payload -> closed on PONG
	n        int                            // leases subscribed
	stop     chan struct{}                  // closed when the last lease leaves
	done     chan struct{}                  // closed when run returns
}

// subscribe adds ls to channel and returns once the server has processed the
// SUBSCRIBE (or after barrierWait, if Pub/Sub is in trouble: renewals still
// see requests then).
func (hb *hub) subscribe(ctx context.Context, channel string, ls *lease) {
	cctx, cancel := context.WithTimeout(ctx, commandTimeout)
	defer cancel()
	barrier := rand.Text()
	ready := make(chan struct{})

	hb.mu.Lock()
	s := hb.sess
	if s == nil {
		s = &session{
			ps:       hb.client.Subscribe(cctx, channel),
			subs:     make(map[string]map[*lease]struct{}),
			barriers: make(map[string]chan struct{}),
			stop:     make(chan struct{}),
			done:     make(chan struct{}),
		}
		hb.sess = s
		go hb.run(context.WithoutCancel(ctx), s)
	} else if len(s.subs[channel]) == 0 {
		if err := s.ps.Subscribe(cctx, channel); err != nil {
			hb.log.Warn("subscribe to release requests", zap.String("channel", channel), zap.Error(err))
		}
	}
	if s.subs[channel] == nil {
		s.subs[channel] = make(map[*lease]struct{})
	}
	s.subs[channel][ls] = struct{}{}
	s.n++
	ls.session = s
	// Commands on one connection run in order: the PONG to this PING
	// comes after the SUBSCRIBE took effect.
	s.barriers[barrier] = ready
	err := s.ps.Ping(cctx, barrier)
	if err != nil {
		delete(s.barriers, barrier)
	}
	hb.mu.Unlock()

	if err != nil {
		hb.log.Warn("confirm subscription to release requests", zap.String("channel", channel), zap.Error(err))
		return
	}
	timer := time.NewTimer(hb.barrierWait)
	defer timer.Stop()
	select {
	case <-ready:
	case <-timer.C:
		hb.log.Warn("subscription to release requests not confirmed in time", zap.String("channel", channel))
		hb.mu.Lock()
		delete(s.barriers, barrier)
		hb.mu.Unlock()
	}
}

// unsubscribe removes ls from its channel; the last lease to leave closes
// the session and waits for its receive loop. With confirm (the Locker is
// closed), the last one first leaves every channel and waits until the
// server confirms it, so that no node counts the process as a subscriber
// once Close returns: Redis forgets a closed connection's subscriptions only
// when it gets to process the close, a little later.
func (hb *hub) unsubscribe(ls *lease, confirm bool) {
	channel := ls.channel
	hb.mu.Lock()
	s := ls.session
	ls.session = nil
	if s == nil {
		hb.mu.Unlock()
		return
	}
	if set := s.subs[channel]; set != nil {
		delete(set, ls)
		if len(set) == 0 {
			delete(s.subs, channel)
			if s.n > 1 {
				ctx, cancel := context.WithTimeout(context.WithoutCancel(ls.ctx), commandTimeout)
				if err := s.ps.Unsubscribe(ctx, channel); err != nil {
					hb.log.Warn("unsubscribe from release requests", zap.String("channel", channel), zap.Error(err))
				}
				cancel()
			}
		}
	}
	s.n--
	last := s.n == 0
	var left chan struct{} // closed when the server confirmed the UNSUBSCRIBE
	if last {
		if hb.sess == s {
			hb.sess = nil
		}
		if confirm {
			left = hb.leaveAll(ls.ctx, s)
		}
	}
	hb.mu.Unlock()

	if last {
		if left != nil {
			hb.await(left, "unsubscription from release requests")
		}
		close(s.stop)
		_ = s.ps.Close() // unblocks the receive loop
		<-s.done
	}
}

// leaveAll sends UNSUBSCRIBE (from every channel) and a PING barrier on s,
// and returns the channel closed on its PONG (the server then left every
// channel), or nil if a write failed. The caller holds hb.mu.
func (hb *hub) leaveAll(ctx context.Context, s *session) chan struct{} {
	cctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), commandTimeout)
	defer cancel()
	err := s.ps.Unsubscribe(cctx)
	if err != nil {
		hb.log.Warn("unsubscribe from release requests", zap.Error(err))
		return nil
	}
	barrier := rand.Text()
	ready := make(chan struct{})
	s.barriers[barrier] = ready
	if err := s.ps.Ping(cctx, barrier); err != nil {
		delete(s.barriers, barrier)
		hb.log.Warn("confirm unsubscription from release requests", zap.Error(err))
		return nil
	}
	return ready
}

// await waits for ready (closed on a PING barrier's PONG) for at most
// barrierWait, and logs what was not confirmed in time.
func (hb *hub) await(ready chan struct{}, what string) {
	timer := time.NewTimer(hb.barrierWait)
	defer timer.Stop()
	select {
	case <-ready:
	case <-timer.C:
		hb.log.Warn(what + " not confirmed in time")
	}
}

// run receives release requests and PONGs for s until s.stop is closed.
func (hb *hub) run(ctx context.Context, s *session) {
	defer close(s.done)
	retry := minRetry
	for {
		msg, err := s.ps.ReceiveTimeout(ctx, healthInterval)
		select {
		case <-s.stop:
			return
		default:
		}
		if err != nil {
			if ne := net.Error(nil); errors.As(err, &ne) && ne.Timeout() {
				pctx, cancel := context.WithTimeout(ctx, commandTimeout)
				_ = s.ps.Ping(pctx) // a failed write makes go-redis reconnect
				cancel()
				continue
			}
			hb.log.Warn("receive release requests", zap.Error(err))
			timer := time.NewTimer(retry)
			select {
			case <-s.stop:
				timer.Stop()
				return
			case <-timer.C:
			}
			retry = min(2*retry, maxRetry)
			continue
		}
		retry = minRetry
		switch m := msg.(type) {
		case *redis.Message:
			hb.mu.Lock()
			for ls := range s.subs[m.Channel] {
				ls.requested(m.Payload)
			}
			hb.mu.Unlock()
		case *redis.Pong:
			hb.mu.Lock()
			if ready, ok := s.barriers[m.Payload]; ok {
				close(ready)
				delete(s.barriers, m.Payload)
			}
			hb.mu.Unlock()
		}
	}
}
