package gateway

// ParseMetadata exposes the strict Upload-Metadata parser to the external
// tests (fuzzing).
var ParseMetadata = parseMetadata

// Spliced returns how many PATCH body bytes the fast path moved with
// splice(2).
func (g *Gateway) Spliced() int64 { return g.spliced.Load() }
