package gateway

import (
	"context"
	"sync"

	"github.com/tus/tusd/v2/pkg/handler"
)

// tusd v2.9.1 has a data race: a PATCH sets its context's body reader on the
// request goroutine just before calling WriteChunk, and a goroutine of tusd's
// reads that field, unsynchronised, as soon as the request is cancelled with
// ErrUploadInterrupted — which is what a lock's requestRelease callback does
// when another request (a HEAD or a resumed PATCH, possibly on another
// instance) wants the upload.
//
// releaseGate orders the two: a release request is passed on only once the
// holder's WriteChunk has started (the body field is written before, on the
// same goroutine, and the start is published under mu), or, if the holder has
// not reached WriteChunk yet, by WriteChunk itself when it starts, on the
// request goroutine. A holder that never writes (HEAD, DELETE, an empty
// PATCH) unlocks on its own shortly, so its release request is dropped.
type releaseGate struct {
	mu      sync.Mutex
	holders map[string]*holder // upload id → the current lock holder
}

// holder is one Lock call's state.
type holder struct {
	writing bool   // its WriteChunk has started
	pending func() // a release request that arrived before that
}

func newReleaseGate() *releaseGate { return &releaseGate{holders: map[string]*holder{}} }

// locker wraps l so its locks' release requests go through the gate.
func (rg *releaseGate) locker(l handler.Locker) handler.Locker { return gatedLocker{l, rg} }

type gatedLocker struct {
	handler.Locker
	rg *releaseGate
}

func (l gatedLocker) NewLock(id string) (handler.Lock, error) {
	lk, err := l.Locker.NewLock(id)
	if err != nil {
		return nil, err
	}
	return &gatedLock{inner: lk, rg: l.rg, id: id}, nil
}

type gatedLock struct {
	inner handler.Lock
	rg    *releaseGate
	id    string
	h     *holder
}

// Lock implements handler.Lock.
func (l *gatedLock) Lock(ctx context.Context, requestRelease func()) error {
	h := &holder{}
	err := l.inner.Lock(ctx, func() { l.rg.requestRelease(h, requestRelease) })
	if err != nil {
		return err
	}
	l.h = h
	l.rg.mu.Lock()
	l.rg.holders[l.id] = h
	l.rg.mu.Unlock()
	return nil
}

// Unlock implements handler.Lock.
func (l *gatedLock) Unlock() error {
	l.rg.mu.Lock()
	if l.h != nil && l.rg.holders[l.id] == l.h {
		delete(l.rg.holders, l.id)
	}
	l.rg.mu.Unlock()
	return l.inner.Unlock()
}

// requestRelease passes a release request on now if h is writing, or keeps
// it for h's WriteChunk.
func (rg *releaseGate) requestRelease(h *holder, release func()) {
	rg.mu.Lock()
	writing := h.writing
	if !writing {
		h.pending = release
	}
	rg.mu.Unlock()
	if writing {
		release()
	}
}

// writeStarted is called by WriteChunk on the request goroutine before it
// reads the body; it runs a release request that arrived earlier.
func (rg *releaseGate) writeStarted(id string) {
	rg.mu.Lock()
	h := rg.holders[id]
	var pending func()
	if h != nil {
		h.writing = true
		pending, h.pending = h.pending, nil
	}
	rg.mu.Unlock()
	if pending != nil {
		pending()
	}
}
