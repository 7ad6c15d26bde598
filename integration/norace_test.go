//go:build !race

package integration_test

// raceEnabled reports whether the tests run with the race detector; the
// gateway binary is then built with it too.
const raceEnabled = false
