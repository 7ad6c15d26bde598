package boltstore

import (
	"errors"
	"fmt"
	"slices"
	"sync"

	bolt "go.etcd.io/bbolt"
)

// groupCommit runs write transactions so that concurrent writes share one
// (group commit). Every bbolt commit ends with two fdatasyncs, and each
// upload costs several writes (creation, each part received, each part
// delivered): with many uploads at once the syncs were a visible share of
// tusgate's CPU. A write that finds no commit in progress starts one at
// once; writes that arrive meanwhile wait for it and then go together in
// the next transaction, so a batch grows with the time a commit takes
// rather than with a timer. (bbolt's own Batch holds every write, a lone
// one too, for MaxBatchDelay first.)
//
// When one write of a batch fails, the transaction is rolled back, that
// write is run again alone by its caller, and the rest are committed
// without it: a write's fn may therefore run more than once, which
// store.Store's Update contract allows.
type groupCommit struct {
	db *bolt.DB

	mu      sync.Mutex
	queue   []*pendingWrite
	running bool // a goroutine is committing the queue
}

type pendingWrite struct {
	fn   func(*bolt.Tx) error
	done chan error // receives the outcome, or errRunAlone
}

// errRunAlone tells a write that its fn failed inside a shared
// transaction: the caller runs it again in a transaction of its own.
var errRunAlone = errors.New("boltstore: run the write alone")

// do runs fn in a write transaction and returns once it is committed (or
// has failed).
func (g *groupCommit) do(fn func(*bolt.Tx) error) error {
	w := &pendingWrite{fn: fn, done: make(chan error, 1)}
	g.mu.Lock()
	g.queue = append(g.queue, w)
	if !g.running {
		g.running = true
		go g.run()
	}
	g.mu.Unlock()
	if err := <-w.done; err != errRunAlone {
		return err
	}
	return g.db.Update(fn)
}

// run commits the queue, batch after batch, until it is empty.
func (g *groupCommit) run() {
	for {
		g.mu.Lock()
		batch := g.queue
		g.queue = nil
		if len(batch) == 0 {
			g.running = false
			g.mu.Unlock()
			return
		}
		g.mu.Unlock()
		g.commit(batch)
	}
}

// commit runs the batch's writes in one transaction, taking out those that
// fail (their callers run them alone).
func (g *groupCommit) commit(batch []*pendingWrite) {
	for len(batch) > 0 {
		failed := -1
		err := g.db.Update(func(tx *bolt.Tx) error {
			for i, w := range batch {
				if err := callSafely(w.fn, tx); err != nil {
					failed = i
					return err
				}
			}
			return nil
		})
		if failed >= 0 {
			batch[failed].done <- errRunAlone
			batch = slices.Delete(batch, failed, failed+1)
			continue
		}
		for _, w := range batch {
			w.done <- err
		}
		return
	}
}

// callSafely calls fn, turning a panic into an error: the write is then
// run alone in its caller's goroutine, where the panic happens again.
func callSafely(fn func(*bolt.Tx) error, tx *bolt.Tx) (err error) {
	defer func() {
		if p := recover(); p != nil {
			err = fmt.Errorf("write panicked: %v", p)
		}
	}()
	return fn(tx)
}
