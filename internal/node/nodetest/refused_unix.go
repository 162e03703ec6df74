//go:build unix

package nodetest

import (
	"fmt"
	"net"
	"syscall"
)

// refusedAddr binds a TCP socket to 127.0.0.1 on a port the kernel picks
// and never listens on it. The bound socket holds the port: without
// SO_REUSEADDR no other socket can bind it, and the kernel never hands it
// out as an ephemeral port; with no listener, a connection attempt is
// answered with a reset (ECONNREFUSED).
func refusedAddr() (string, func(), error) {
	syscall.ForkLock.RLock()
	fd, err := syscall.Socket(syscall.AF_INET, syscall.SOCK_STREAM, 0)
	if err == nil {
		syscall.CloseOnExec(fd)
	}
	syscall.ForkLock.RUnlock()
	if err != nil {
		return "", nil, fmt.Errorf("socket: %w", err)
	}
	if err := syscall.Bind(fd, &syscall.SockaddrInet4{Addr: [4]byte{127, 0, 0, 1}}); err != nil {
		_ = syscall.Close(fd)
		return "", nil, fmt.Errorf("bind: %w", err)
	}
	sa, err := syscall.Getsockname(fd)
	if err != nil {
		_ = syscall.Close(fd)
		return "", nil, fmt.Errorf("getsockname: %w", err)
	}
	in4, ok := sa.(*syscall.SockaddrInet4)
	if !ok {
		_ = syscall.Close(fd)
		return "", nil, fmt.Errorf("getsockname: %T", sa)
	}
	addr := (&net.TCPAddr{IP: net.IPv4(127, 0, 0, 1), Port: in4.Port}).String()
	return addr, func() { _ = syscall.Close(fd) }, nil
}
