package activation

import (
	"bufio"
	"errors"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"testing"
)

// placeFDs duplicates files onto consecutive free descriptors and returns
// the first; the duplicates are closed when the test ends (unless
// listeners took them over).
func placeFDs(t *testing.T, files ...*os.File) int {
	t.Helper()
	first := 0
	for cand := 300; cand < 1000 && first == 0; cand += 10 {
		free := true
		for i := range files {
			var st syscall.Stat_t
			if err := syscall.Fstat(cand+i, &st); !errors.Is(err, syscall.EBADF) {
				free = false
			}
		}
		if free {
			first = cand
		}
	}
	if first == 0 {
		t.Fatal("no free descriptors")
	}
	for i, f := range files {
		if err := syscall.Dup3(int(f.Fd()), first+i, syscall.O_CLOEXEC); err != nil {
			t.Fatal(err)
		}
		fd := first + i
		t.Cleanup(func() { _ = syscall.Close(fd) })
	}
	return first
}

func tcpListenerFile(t *testing.T) (*os.File, string) {
	t.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	f, err := File(l)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = f.Close() })
	return f, l.Addr().String()
}

func TestListenersEnv(t *testing.T) {
	self := os.Getpid()
	for _, tt := range []struct {
		name, pid, fds, names string
		want                  string // error substring; "" for no listeners, no error
	}{
		{"unset", "", "", "", ""},
		{"zero", "", "0", "", ""},
		{"other process", "1", "1", "grpc", ""},
		{"bad pid", "x", "1", "grpc", `LISTEN_PID="x" is not a process id`},
		{"bad count", "", "two", "grpc", `LISTEN_FDS="two" is not a number`},
		{"negative", "", "-1", "grpc", `LISTEN_FDS="-1"`},
		{"too many", "", "1000", "grpc", `LISTEN_FDS="1000"`},
		{"no names", "", "1", "", "LISTEN_FDNAMES is not set"},
		{"count mismatch", "", "2", "grpc", "names 1 sockets"},
		{"empty name", "", "2", "grpc:", "is empty"},
		{"repeated name", "", "2", "grpc:grpc", `names descriptors`},
	} {
		t.Run(tt.name, func(t *testing.T) {
			// Descriptors that are surely not open: these cases fail or
			// return before looking at them.
			ls, err := listeners(tt.pid, tt.fds, tt.names, self, 900)
			if tt.want == "" {
				if err != nil || ls != nil {
					t.Fatalf("got %v, %v; want no listeners, no error", ls, err)
				}
				return
			}
			if err == nil || !strings.Contains(err.Error(), tt.want) {
				t.Fatalf("error %v, want one containing %q", err, tt.want)
			}
			if strings.Contains(err.Error(), "\n") {
				t.Errorf("error %q is not one line", err)
			}
		})
	}
}

func TestListenersDescriptors(t *testing.T) {
	self := os.Getpid()
	good, _ := tcpListenerFile(t)

	regular, err := os.Create(filepath.Join(t.TempDir(), "file"))
	if err != nil {
		t.Fatal(err)
	}
	defer regular.Close()
	udp, err := net.ListenPacket("udp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer udp.Close()
	udpFile, err := udp.(*net.UDPConn).File()
	if err != nil {
		t.Fatal(err)
	}
	defer udpFile.Close()
	// A TCP socket bound but never listening.
	sfd, err := syscall.Socket(syscall.AF_INET, syscall.SOCK_STREAM|syscall.SOCK_CLOEXEC, 0)
	if err != nil {
		t.Fatal(err)
	}
	if err := syscall.Bind(sfd, &syscall.SockaddrInet4{Addr: [4]byte{127, 0, 0, 1}}); err != nil {
		t.Fatal(err)
	}
	bound := os.NewFile(uintptr(sfd), "bound")
	defer bound.Close()

	for _, tt := range []struct {
		name string
		file *os.File
		want string
	}{
		{"regular file", regular, `descriptor %d ("raft") is not a socket`},
		{"udp", udpFile, "is not a stream"},
		{"not listening", bound, "is a socket that is not listening"},
	} {
		t.Run(tt.name, func(t *testing.T) {
			first := placeFDs(t, good, tt.file)
			_, err := listeners("", "2", "grpc:raft", self, first)
			want := strings.Replace(tt.want, "%d", strconv.Itoa(first+1), 1)
			if err == nil || !strings.Contains(err.Error(), want) {
				t.Fatalf("error %v, want one containing %q", err, want)
			}
		})
	}

	t.Run("not open", func(t *testing.T) {
		first := placeFDs(t, good)
		_, err := listeners("", "2", "grpc:raft", self, first)
		if err == nil || !strings.Contains(err.Error(), `descriptor `+strconv.Itoa(first+1)+` ("raft") is not open`) {
			t.Fatalf("error %v", err)
		}
	})
}

func TestListenersServe(t *testing.T) {
	a, aAddr := tcpListenerFile(t)
	b, bAddr := tcpListenerFile(t)
	first := placeFDs(t, a, b)
	ls, err := listeners(strconv.Itoa(os.Getpid()), "2", "grpc:raft", os.Getpid(), first)
	if err != nil {
		t.Fatal(err)
	}
	if len(ls) != 2 || ls["grpc"].Addr().String() != aAddr || ls["raft"].Addr().String() != bAddr {
		t.Fatalf("listeners %v, want grpc on %s and raft on %s", ls, aAddr, bAddr)
	}
	for _, l := range ls {
		defer l.Close()
	}
	// The passed descriptors were closed (the listeners hold duplicates).
	var st syscall.Stat_t
	if err := syscall.Fstat(first, &st); !errors.Is(err, syscall.EBADF) {
		t.Errorf("descriptor %d still open: %v", first, err)
	}
	c, err := net.Dial("tcp", aAddr)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	s, err := ls["grpc"].Accept()
	if err != nil {
		t.Fatal(err)
	}
	s.Close()
}

func TestPass(t *testing.T) {
	f, _ := tcpListenerFile(t)
	cmd := exec.Command("true")
	cmd.Env = []string{"A=1", "LISTEN_PID=7", "LISTEN_FDS=9", "LISTEN_FDNAMES=x", "B=2"}
	if err := Pass(cmd, Named{"grpc", f}, Named{"raft", f}); err != nil {
		t.Fatal(err)
	}
	want := "A=1 B=2 LISTEN_FDS=2 LISTEN_FDNAMES=grpc:raft"
	if got := strings.Join(cmd.Env, " "); got != want {
		t.Errorf("env %q, want %q", got, want)
	}
	if len(cmd.ExtraFiles) != 2 {
		t.Errorf("%d extra files", len(cmd.ExtraFiles))
	}
	if err := Pass(cmd, Named{"grpc", f}); err == nil {
		t.Error("Pass on a command with extra files: no error")
	}
	if err := Pass(exec.Command("true"), Named{"a:b", f}); err == nil {
		t.Error("name with a colon: no error")
	}
}

// TestPassToChild passes two listeners to a child process (this test
// binary, TestHelperChild) through exec the way custosd's parents do; the
// child takes them over with Listeners, checks that the variables are
// gone from its environment, and accepts one connection on each.
func TestPassToChild(t *testing.T) {
	a, aAddr := tcpListenerFile(t)
	b, bAddr := tcpListenerFile(t)
	cmd := exec.Command(os.Args[0], "-test.run=^TestHelperChild$")
	cmd.Env = append(os.Environ(), "ACTIVATION_HELPER_CHILD=1")
	if err := Pass(cmd, Named{"grpc", a}, Named{"raft", b}); err != nil {
		t.Fatal(err)
	}
	out, err := cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	cmd.Stderr = os.Stderr
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	defer func() { _ = cmd.Wait() }()
	sc := bufio.NewScanner(out)
	if !sc.Scan() || sc.Text() != "ready" {
		_ = cmd.Process.Kill()
		t.Fatalf("child said %q, want ready", sc.Text())
	}
	for _, addr := range []string{aAddr, bAddr} {
		c, err := net.Dial("tcp", addr)
		if err != nil {
			t.Fatal(err)
		}
		line, err := bufio.NewReader(c).ReadString('\n')
		c.Close()
		if err != nil {
			t.Fatal(err)
		}
		t.Logf("%s: %s", addr, strings.TrimSpace(line))
	}
	for sc.Scan() {
		if sc.Text() != "ok" {
			t.Errorf("child: %s", sc.Text())
		}
	}
}

// TestHelperChild is the child of TestPassToChild.
func TestHelperChild(t *testing.T) {
	if os.Getenv("ACTIVATION_HELPER_CHILD") != "1" {
		t.Skip("the child process of TestPassToChild")
	}
	ls, err := Listeners()
	if err != nil {
		os.Stdout.WriteString("error: " + err.Error() + "\n")
		os.Exit(1)
	}
	if len(ls) != 2 || ls["grpc"] == nil || ls["raft"] == nil {
		os.Stdout.WriteString("error: listeners " + strconv.Itoa(len(ls)) + "\n")
		os.Exit(1)
	}
	for _, k := range []string{EnvPID, EnvFDs, EnvFDNames} {
		if v, ok := os.LookupEnv(k); ok {
			os.Stdout.WriteString("error: " + k + "=" + v + " still set\n")
		}
	}
	os.Stdout.WriteString("ready\n")
	for _, name := range []string{"grpc", "raft"} {
		c, err := ls[name].Accept()
		if err != nil {
			os.Stdout.WriteString("error: " + err.Error() + "\n")
			os.Exit(1)
		}
		_, _ = c.Write([]byte("served by " + name + "\n"))
		c.Close()
	}
	os.Stdout.WriteString("ok\n")
	os.Exit(0)
}
