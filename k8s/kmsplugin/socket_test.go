package kmsplugin

import (
	"io/fs"
	"net"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

// shortDir is a temporary directory with a path short enough for unix
// sockets (t.TempDir's can exceed 107 bytes with long test names).
func shortDir(t *testing.T) string {
	t.Helper()
	d, err := os.MkdirTemp("", "kms")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { os.RemoveAll(d) })
	return d
}

func TestListenSocket(t *testing.T) {
	dir := shortDir(t)
	path := filepath.Join(dir, "kms.sock")

	t.Run("mode and removal", func(t *testing.T) {
		for _, mode := range []fs.FileMode{DefaultSocketMode, 0o660} {
			l, err := Listen("unix://"+path, mode)
			if err != nil {
				t.Fatalf("Listen: %v", err)
			}
			fi, err := os.Lstat(path)
			if err != nil || fi.Mode()&fs.ModeSocket == 0 || fi.Mode().Perm() != mode {
				t.Errorf("socket %v, %v; want a socket of mode %v", fi.Mode(), err, mode)
			}
			if ents, _ := os.ReadDir(dir); len(ents) != 1 {
				t.Errorf("directory holds %d entries, want the socket only", len(ents))
			}
			c, err := net.Dial("unix", path)
			if err != nil {
				t.Errorf("dial: %v", err)
			} else {
				c.Close()
			}
			if err := l.Close(); err != nil {
				t.Errorf("Close: %v", err)
			}
			if _, err := os.Lstat(path); !os.IsNotExist(err) {
				t.Errorf("socket left after Close: %v", err)
			}
		}
	})

	t.Run("stale socket is replaced", func(t *testing.T) {
		stale, err := net.ListenUnix("unix", &net.UnixAddr{Name: path, Net: "unix"})
		if err != nil {
			t.Fatal(err)
		}
		stale.SetUnlinkOnClose(false)
		stale.Close() // the file stays; nothing accepts on it
		l, err := Listen(path, DefaultSocketMode)
		if err != nil {
			t.Fatalf("Listen over a stale socket: %v", err)
		}
		defer l.Close()

		t.Run("live socket is refused", func(t *testing.T) {
			if _, err := Listen(path, DefaultSocketMode); err == nil || !strings.Contains(err.Error(), "accepting") {
				t.Errorf("Listen over a live socket: %v", err)
			}
		})
	})

	t.Run("other files are left alone", func(t *testing.T) {
		file := filepath.Join(dir, "file")
		if err := os.WriteFile(file, []byte("x"), 0o600); err != nil {
			t.Fatal(err)
		}
		link := filepath.Join(dir, "link")
		if err := os.Symlink(file, link); err != nil {
			t.Fatal(err)
		}
		for _, p := range []string{file, link, dir} {
			if _, err := Listen(p, DefaultSocketMode); err == nil || !strings.Contains(err.Error(), "not a socket") {
				t.Errorf("Listen(%s): %v", p, err)
			}
		}
		if b, err := os.ReadFile(file); err != nil || string(b) != "x" {
			t.Errorf("file changed: %q, %v", b, err)
		}
	})

	t.Run("a socket replaced meanwhile is not removed", func(t *testing.T) {
		p := filepath.Join(dir, "r.sock")
		l, err := Listen(p, DefaultSocketMode)
		if err != nil {
			t.Fatal(err)
		}
		if err := os.Remove(p); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(p, nil, 0o600); err != nil {
			t.Fatal(err)
		}
		l.Close()
		if _, err := os.Lstat(p); err != nil {
			t.Errorf("Close removed a file that was not its socket: %v", err)
		}
	})

	t.Run("a missing directory is created private", func(t *testing.T) {
		sub := filepath.Join(dir, "run", "kms")
		l, err := Listen(filepath.Join(sub, "kms.sock"), DefaultSocketMode)
		if err != nil {
			t.Fatal(err)
		}
		defer l.Close()
		if fi, err := os.Stat(sub); err != nil || fi.Mode().Perm() != 0o700 {
			t.Errorf("directory %v, %v; want mode 0700", fi.Mode(), err)
		}
	})

	t.Run("bad endpoints", func(t *testing.T) {
		for _, e := range []string{"", "kms.sock", "unix://kms.sock", "tcp://127.0.0.1:1", "/" + strings.Repeat("a", 120)} {
			if _, err := Listen(e, DefaultSocketMode); err == nil {
				t.Errorf("Listen(%q) accepted", e)
			}
		}
		if _, err := Listen(filepath.Join(dir, "m.sock"), fs.ModeSetuid|0o600); err == nil {
			t.Error("Listen accepted a setuid mode")
		}
	})
}
