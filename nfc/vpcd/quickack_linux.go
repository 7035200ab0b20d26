//go:build linux

package vpcd

import (
	"net"
	"syscall"
)

// quickAck asks the kernel to acknowledge what arrives on conn at once.
// Debian's vpcd (0.8) sends a message's length and body in two writes
// without TCP_NODELAY, so Nagle holds the body until the length is
// acknowledged: with Linux's delayed acknowledgement that costs ~40 ms per
// APDU. TCP_QUICKACK is not sticky, so it is set before every read.
func quickAck(conn net.Conn) {
	tc, ok := conn.(*net.TCPConn)
	if !ok {
		return
	}
	raw, err := tc.SyscallConn()
	if err != nil {
		return
	}
	raw.Control(func(fd uintptr) {
		syscall.SetsockoptInt(int(fd), syscall.IPPROTO_TCP, syscall.TCP_QUICKACK, 1)
	})
}
