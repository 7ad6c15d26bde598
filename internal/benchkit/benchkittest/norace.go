//go:build !race

package benchkittest

// RaceEnabled reports whether the test runs with the race detector, so
// Build builds the tool with it too.
const RaceEnabled = false
