package kmsplugin

import (
	"errors"
	"fmt"
	"io/fs"
	"net"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"time"

	"google.golang.org/grpc"
	kmsapi "k8s.io/kms/apis/v2"
)

// DefaultSocketMode is the unix socket's mode unless configured: only the
// plugin's user (and root, as which the API server usually runs) connects.
const DefaultSocketMode fs.FileMode = 0o600

// maxSocketPath is the longest path a unix socket address holds on Linux
// (sun_path is 108 bytes, with the terminating NUL).
const maxSocketPath = 107

// SocketPath returns the file path of a KMS endpoint: "unix:///abs/path"
// (as the EncryptionConfiguration names it) or an absolute path.
func SocketPath(endpoint string) (string, error) {
	p := endpoint
	if rest, ok := strings.CutPrefix(endpoint, "unix://"); ok {
		p = rest
	} else if strings.Contains(endpoint, "://") {
		return "", fmt.Errorf("endpoint %q: only unix:// endpoints are served", endpoint)
	}
	if !filepath.IsAbs(p) {
		return "", fmt.Errorf("endpoint %q: want unix:///absolute/path", endpoint)
	}
	p = filepath.Clean(p)
	if len(p) > maxSocketPath {
		return "", fmt.Errorf("socket path %s has %d bytes, a unix socket path at most %d", p, len(p), maxSocketPath)
	}
	return p, nil
}

// Listener is a unix socket listener at a fixed path, created with its
// final mode (it never exists with a wider one) and removed on Close if the
// file there is still this socket.
type Listener struct {
	*net.UnixListener
	path string
	info os.FileInfo
	once sync.Once
}

// Listen creates the socket of endpoint with mode, and its directory (mode
// 0700) if it does not exist. A socket left there by a
// plugin that is gone (nothing accepts on it) is replaced; a socket that a
// running server accepts on, or any other kind of file, is left alone and
// Listen fails. The socket is bound in a new private directory beside its
// path, given its mode, then renamed into place.
func Listen(endpoint string, mode fs.FileMode) (*Listener, error) {
	path, err := SocketPath(endpoint)
	if err != nil {
		return nil, err
	}
	if mode&^fs.ModePerm != 0 {
		return nil, fmt.Errorf("socket mode %v: permission bits only", mode)
	}
	dir := filepath.Dir(path)
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return nil, fmt.Errorf("socket directory: %w", err)
	}
	if err := checkStale(path); err != nil {
		return nil, err
	}
	tmpDir, err := os.MkdirTemp(dir, ".kms-")
	if err != nil {
		return nil, fmt.Errorf("socket directory: %w", err)
	}
	defer os.RemoveAll(tmpDir)
	tmp := filepath.Join(tmpDir, "s")
	if len(tmp) > maxSocketPath {
		return nil, fmt.Errorf("socket directory %s: its path is too long for a unix socket (%d bytes, at most %d)", dir, len(tmp), maxSocketPath)
	}
	ul, err := net.ListenUnix("unix", &net.UnixAddr{Name: tmp, Net: "unix"})
	if err != nil {
		return nil, fmt.Errorf("listen: %w", err)
	}
	// The file is renamed away: Close removes it by path itself (below).
	ul.SetUnlinkOnClose(false)
	if err := os.Chmod(tmp, mode); err != nil {
		ul.Close()
		return nil, fmt.Errorf("socket mode: %w", err)
	}
	if err := os.Rename(tmp, path); err != nil {
		ul.Close()
		return nil, fmt.Errorf("socket %s: %w", path, err)
	}
	info, err := os.Lstat(path)
	if err != nil {
		ul.Close()
		return nil, fmt.Errorf("socket %s: %w", path, err)
	}
	return &Listener{UnixListener: ul, path: path, info: info}, nil
}

// checkStale leaves path free: nothing there, or a socket nobody accepts on,
// which it removes.
func checkStale(path string) error {
	fi, err := os.Lstat(path)
	if errors.Is(err, fs.ErrNotExist) {
		return nil
	}
	if err != nil {
		return fmt.Errorf("socket %s: %w", path, err)
	}
	if fi.Mode()&fs.ModeSocket == 0 {
		return fmt.Errorf("socket %s: a %s is there, not a socket; remove it yourself", path, kind(fi))
	}
	c, err := net.DialTimeout("unix", path, 2*time.Second)
	if err == nil {
		c.Close()
		return fmt.Errorf("socket %s: a server is accepting on it (another plugin?)", path)
	}
	if err := os.Remove(path); err != nil && !errors.Is(err, fs.ErrNotExist) {
		return fmt.Errorf("socket %s: remove stale socket: %w", path, err)
	}
	return nil
}

func kind(fi os.FileInfo) string {
	switch m := fi.Mode(); {
	case m.IsDir():
		return "directory"
	case m&fs.ModeSymlink != 0:
		return "symbolic link"
	case m.IsRegular():
		return "regular file"
	}
	return "file of mode " + fi.Mode().String()
}

// Path returns the socket's path.
func (l *Listener) Path() string { return l.path }

// Close stops listening and removes the socket file if it is still the one
// Listen made.
func (l *Listener) Close() error {
	err := l.UnixListener.Close()
	l.once.Do(func() {
		if fi, serr := os.Lstat(l.path); serr == nil && os.SameFile(fi, l.info) {
			if rerr := os.Remove(l.path); rerr != nil && err == nil {
				err = rerr
			}
		}
	})
	return err
}

// NewServer returns a gRPC server with the plugin registered on it. The API
// server connects without TLS: the socket's mode is the access control.
func NewServer(p *Plugin, opts ...grpc.ServerOption) *grpc.Server {
	s := grpc.NewServer(opts...)
	kmsapi.RegisterKeyManagementServiceServer(s, p)
	return s
}
