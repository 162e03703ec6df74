//go:build !unix

package nodetest

import (
	"fmt"
	"net"
)

// refusedAddr listens on a loopback port the system picks and closes every
// connection as soon as it is accepted: the port stays held, and a client
// sees its connection reset before any TLS handshake.
func refusedAddr() (string, func(), error) {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return "", nil, fmt.Errorf("listen: %w", err)
	}
	go func() {
		for {
			c, err := l.Accept()
			if err != nil {
				return
			}
			_ = c.Close()
		}
	}()
	return l.Addr().String(), func() { _ = l.Close() }, nil
}
