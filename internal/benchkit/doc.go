// Package benchkit holds what the benchmark tools cmd/tusgate-bench and
// cmd/tusgate-scalebench share: child processes with captured output and a
// readiness check, their resource use read from /proc, the api.video
// emulator run as a subcommand, tusgate's upload status and metrics as the
// tools read them, statistics and number formatting for the reports, flag
// values, and the tools' main function.
//
// The process pieces are Linux only (parent-death signal, /proc, process
// CPU-time clocks), like the tools.
package benchkit
