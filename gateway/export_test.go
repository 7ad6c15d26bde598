package gateway

import "time"

// ParseMetadata exposes the strict Upload-Metadata parser to the external
// tests (fuzzing).
var ParseMetadata = parseMetadata

// LowWaterStats reports how many body reads waited on a raised socket
// low-water mark, and how many of those the stall timer cut short.
func LowWaterStats(g *Gateway) (raised, stalls int64) {
	return g.lowWater.raised.Load(), g.lowWater.stalls.Load()
}

// StallAfter sets how long a batched body read waits before the stall
// timer lowers its socket's mark.
func StallAfter(c *Config, d time.Duration) { c.stallAfter = d }

// BuffersHeld reports how many copy buffers PATCH bodies hold now.
func BuffersHeld(g *Gateway) int64 { return g.bufsHeld.Load() }
