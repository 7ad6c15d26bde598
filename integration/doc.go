// Package integration holds tusgate's end-to-end tests. They build the real
// cmd/tusgate binary once, run it against the api.video emulator
// (apivideo/apivideotest) with both state stores (embedded bbolt and Redis),
// and drive it with the project's tus client (internal/tusclient).
//
// Redis: the tests use the server at TUSGATE_TEST_REDIS_ADDR (default
// 127.0.0.1:6379). The binary's key prefix is fixed ("tusgate") and its
// forwarder lists every active upload under that prefix, so each test claims
// a logical database of its own (1..15, never 0) with a lock key, and clears
// the tusgate:* keys of that database before and after.
package integration
