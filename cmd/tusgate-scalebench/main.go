// Command tusgate-scalebench measures how tusgate's ingest scales out: the
// aggregate throughput of 1, 2 and 3 instances on this machine sharing one
// Redis and one S3 bucket, with every PATCH of an upload sent to another
// instance (no sticky sessions).
//
// Each run starts everything fresh: a private redis-server (so its command
// counter sees only this run), a gofakes3 S3 server with an empty bucket in
// memory, the api.video emulator, and N tusgate processes (--redis-url,
// --s3-bucket, each with its own --instance-id, --listen and temporary
// --data-dir). Then U concurrent uploads of S bytes are created and sent in
// PATCHes: PATCH k of upload u goes to instance (u+k) mod N, so consecutive
// PATCHes of one upload always change instance when N > 1, and the
// concurrent uploads start on different instances. The benchmark waits
// until tusgate reports every upload delivered, checks every byte the
// emulator received against the source (SHA-256 of every api.video part),
// checks from each instance's tusd metrics that it served exactly the
// PATCHes sent to it, and reads the CPU time of every process from /proc. The instance counts
// are interleaved run by run (1 2 3, 2 3 1, 3 1 2, …) so that drift on a
// shared machine spreads over all of them.
//
// The emulator runs in a child process (this executable re-run with the
// hidden serve-emulator subcommand), like every other server: its CPU time
// is then measured apart from the client's and from tusgate's, and its
// garbage collector does not run in the client process that times the
// uploads.
//
// Usage:
//
//	go run ./cmd/tusgate-scalebench
//	go run ./cmd/tusgate-scalebench --quick
//	go run ./cmd/tusgate-scalebench --runs 5 --uploads 8 --size 64MiB --json
//
// Run with --help for every setting. Linux only (it reads /proc). It needs
// redis-server on PATH (or --redis-server) and the go command (it builds
// cmd/tusgate and gofakes3 unless --tusgate and --gofakes3 are given).
package main

import (
	"context"
	"io"
	"os"

	"github.com/tusgate/tusgate/internal/benchkit"
)

func main() {
	os.Exit(benchkit.Main("tusgate-scalebench", run))
}

// run is the whole program; args[0] is the program name.
func run(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	if len(args) > 1 && args[1] == benchkit.ServeEmulatorCommand {
		return serveEmulator(ctx, args[2:], stdout, stderr)
	}
	cfg, err := parseConfig(args, stderr)
	if err != nil {
		return err
	}
	if cfg == nil { // --help
		return nil
	}
	return benchmark(ctx, cfg, stdout, stderr)
}
