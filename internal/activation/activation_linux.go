package activation

import (
	"errors"
	"fmt"
	"net"
	"os"
	"syscall"
)

// listenerFD takes over descriptor fd, passed as name, after checking that
// it is an open, listening stream socket. The descriptor itself is closed:
// the listener holds a close-on-exec duplicate, so children of this
// process do not inherit it.
func listenerFD(fd int, name string) (net.Listener, error) {
	var st syscall.Stat_t
	if err := syscall.Fstat(fd, &st); err != nil {
		if errors.Is(err, syscall.EBADF) {
			return nil, fmt.Errorf("descriptor %d (%q) is not open: %w", fd, name, err)
		}
		return nil, fmt.Errorf("descriptor %d (%q): %w", fd, name, err)
	}
	if st.Mode&syscall.S_IFMT != syscall.S_IFSOCK {
		return nil, fmt.Errorf("descriptor %d (%q) is not a socket", fd, name)
	}
	typ, err := syscall.GetsockoptInt(fd, syscall.SOL_SOCKET, syscall.SO_TYPE)
	if err != nil {
		return nil, fmt.Errorf("descriptor %d (%q): socket type: %w", fd, name, err)
	}
	if typ != syscall.SOCK_STREAM {
		return nil, fmt.Errorf("descriptor %d (%q) is not a stream (TCP or Unix stream) socket", fd, name)
	}
	acc, err := syscall.GetsockoptInt(fd, syscall.SOL_SOCKET, syscall.SO_ACCEPTCONN)
	if err != nil {
		return nil, fmt.Errorf("descriptor %d (%q): %w", fd, name, err)
	}
	if acc == 0 {
		return nil, fmt.Errorf("descriptor %d (%q) is a socket that is not listening", fd, name)
	}
	f := os.NewFile(uintptr(fd), name)
	l, err := net.FileListener(f)
	_ = f.Close()
	if err != nil {
		return nil, fmt.Errorf("descriptor %d (%q): %w", fd, name, err)
	}
	return l, nil
}
