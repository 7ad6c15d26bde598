package gateway

import (
	"net"
	"syscall"
	"testing"
	"time"
)

// rcvLowat reads a socket's SO_RCVLOWAT.
func rcvLowat(t *testing.T, rc syscall.RawConn) int {
	t.Helper()
	var v int
	var gerr error
	if err := rc.Control(func(fd uintptr) {
		v, gerr = syscall.GetsockoptInt(int(fd), syscall.SOL_SOCKET, syscall.SO_RCVLOWAT)
	}); err != nil || gerr != nil {
		t.Fatalf("getsockopt SO_RCVLOWAT: %v %v", err, gerr)
	}
	return v
}

// The mark follows the client: each stalled read halves it, a stall at the
// smallest mark says the client is slow, a read that finds twice the mark
// waiting doubles it, it never asks for more than the body has left, a
// stall timer of an earlier read changes nothing, and off restores the
// kernel's default. The stall timer is driven by hand (stall(gen)), so the
// test does not depend on timing; the marks are read back from the kernel.
func TestLowWaterFollowsTheClientsRate(t *testing.T) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	client, err := net.Dial("tcp", ln.Addr().String())
	if err != nil {
		t.Fatal(err)
	}
	defer client.Close()
	server, err := ln.Accept()
	if err != nil {
		t.Fatal(err)
	}
	defer server.Close()
	rc, err := server.(*net.TCPConn).SyscallConn()
	if err != nil {
		t.Fatal(err)
	}
	var stats lowWaterStats
	lw := newLowWater(rc, &stats, time.Hour)
	const body = 1 << 30

	stalledRead := func(n int) bool {
		t.Helper()
		lw.arm(body)
		lw.stall(lw.gen)
		if got := rcvLowat(t, rc); got != 1 {
			t.Fatalf("mark after a stall: got %d, want 1", got)
		}
		return lw.disarm(n)
	}
	for _, want := range []int{256 << 10, 128 << 10, 64 << 10} {
		lw.arm(body)
		if got := rcvLowat(t, rc); got != want {
			t.Fatalf("mark: got %d, want %d", got, want)
		}
		lw.stall(lw.gen)
		if slow := lw.disarm(10 << 10); slow {
			t.Fatalf("a stall at mark %d reported a slow client; only the smallest mark should", want)
		}
	}
	lw.arm(body)
	if got := rcvLowat(t, rc); got != minLowWaterMark {
		t.Fatalf("mark after three stalls: got %d, want %d", got, minLowWaterMark)
	}
	lw.disarm(0)
	if !stalledRead(10 << 10) {
		t.Error("a stall at the smallest mark did not report a slow client")
	}

	// A read that finds twice the mark waiting doubles it; one that finds
	// less keeps it.
	lw.arm(body)
	lw.disarm(minLowWaterMark)
	lw.arm(body)
	if got := rcvLowat(t, rc); got != minLowWaterMark {
		t.Errorf("mark after a read of one mark: got %d, want %d", got, minLowWaterMark)
	}
	lw.disarm(2 * minLowWaterMark)
	lw.arm(body)
	if got := rcvLowat(t, rc); got != 2*minLowWaterMark {
		t.Errorf("mark after a read of two marks: got %d, want %d", got, 2*minLowWaterMark)
	}
	// A stall timer that fires after its read ended changes nothing.
	stale := lw.gen
	lw.disarm(0)
	stalls := stats.stalls.Load()
	lw.arm(body)
	lw.stall(stale)
	if got := rcvLowat(t, rc); got != 2*minLowWaterMark || stats.stalls.Load() != stalls {
		t.Errorf("a stale stall timer lowered the mark to %d (stalls %d → %d)", got, stalls, stats.stalls.Load())
	}
	lw.disarm(0)

	// Near the body's end the mark is what is left, less what net/http may
	// hold in its buffer.
	lw.arm(10 << 10)
	if got, want := rcvLowat(t, rc), 10<<10-bufferedSlack; got != want {
		t.Errorf("mark with 10 KiB left: got %d, want %d", got, want)
	}
	lw.disarm(0)
	lw.off()
	if got := rcvLowat(t, rc); got != 1 {
		t.Errorf("mark after off: got %d, want 1", got)
	}
}
