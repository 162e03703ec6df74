//go:build !linux

package activation

import (
	"fmt"
	"net"
)

// listenerFD refuses: socket activation is implemented on Linux only.
func listenerFD(fd int, name string) (net.Listener, error) {
	return nil, fmt.Errorf("descriptor %d (%q): socket activation is supported on Linux only", fd, name)
}
