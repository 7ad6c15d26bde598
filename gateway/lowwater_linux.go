package gateway

import "syscall"

// setRcvLowat sets a socket's SO_RCVLOWAT. Linux wakes a reader whose
// mark is lowered below what the socket holds, which lowWater.stall needs.
func setRcvLowat(fd uintptr, v int) error {
	return syscall.SetsockoptInt(int(fd), syscall.SOL_SOCKET, syscall.SO_RCVLOWAT, v)
}
