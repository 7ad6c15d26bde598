//go:build !race

package main_test

// raceEnabled reports whether the tests run with the race detector, so the
// benchmark binary is built with it too.
const raceEnabled = false
