package gateway

import "syscall"

// setRcvLowat sets a socket's SO_RCVLOWAT. Linux wakes a reader whose
// mark is lowered below what the socket holds, which lowWater.stall needs.
func setRcvLowat(fd uintptr, v int) error {
	return syscall.SetsockoptInt(int(fd), syscall.SOL_SOCKET, syscall.SO_RCVLOWAT, v)
}

// socketReadable reports whether a read of the socket would not block: it
// holds bytes, has reached its end or has failed (peeking moves nothing).
func socketReadable(fd uintptr) bool {
	var b [1]byte
	_, _, err := syscall.Recvfrom(int(fd), b[:], syscall.MSG_PEEK|syscall.MSG_DONTWAIT)
	return err != syscall.EAGAIN
}
