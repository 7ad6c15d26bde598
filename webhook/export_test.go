package webhook

import (
	"context"
	"time"
)

// Process runs one look at upload id (what a worker does) and returns when
// the upload must be looked at again.
func (d *Dispatcher) Process(ctx context.Context, id string) time.Time { return d.process(ctx, id) }

// Backoff exposes the retry delay after the n-th failure.
func (d *Dispatcher) Backoff(n int) time.Duration { return d.backoff(n) }

// ParseRetryAfter exposes parseRetryAfter.
var ParseRetryAfter = parseRetryAfter

// MaxRetryAfter exposes maxRetryAfter.
const MaxRetryAfter = maxRetryAfter
