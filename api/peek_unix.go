//go:build linux || darwin || freebsd || netbsd || openbsd || dragonfly

package api

import "syscall"

// peek looks at the receive side of a socket without waiting and without
// taking anything from it (recv with MSG_PEEK|MSG_DONTWAIT): 0 bytes is the
// client's FIN.
func peek(raw syscall.RawConn) peekResult {
	if raw == nil {
		return peerQuiet
	}
	var (
		n    int
		rerr error
		buf  [1]byte
	)
	err := raw.Read(func(fd uintptr) bool {
		n, _, rerr = syscall.Recvfrom(int(fd), buf[:], syscall.MSG_PEEK|syscall.MSG_DONTWAIT)
		return true // never wait for readability
	})
	switch {
	case err != nil:
		return peerClosed // the connection is closed
	case rerr == syscall.EAGAIN || rerr == syscall.EWOULDBLOCK || rerr == syscall.EINTR:
		return peerQuiet
	case rerr != nil:
		return peerClosed // ECONNRESET and the like
	case n == 0:
		return peerClosed
	}
	return peerSent
}
