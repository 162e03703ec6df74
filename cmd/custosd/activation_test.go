package main

import (
	"bytes"
	"errors"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"testing"

	"github.com/custos-kms/custos/internal/activation"
	"github.com/custos-kms/custos/internal/node"
	"github.com/custos-kms/custos/internal/pki"
)

// helperArgsEnv makes TestHelperServe run custosd with these arguments
// (newline-separated) in a child process of the test binary.
const helperArgsEnv = "CUSTOSD_TEST_HELPER_ARGS"

// TestHelperServe is custosd itself, in a child process started by the
// tests below (it skips otherwise).
func TestHelperServe(t *testing.T) {
	args := os.Getenv(helperArgsEnv)
	if args == "" {
		t.Skip("custosd in a child process of the socket activation tests")
	}
	os.Exit(run(strings.Split(args, "\n"), os.Stdout, os.Stderr))
}

// activationConfig writes a configuration that loadConfig accepts (the
// PKCS#11 module is an empty file: the tests below fail before the HSM).
func activationConfig(t *testing.T, extra string) string {
	t.Helper()
	dir := t.TempDir()
	if err := pki.CreateDevPKI(filepath.Join(dir, "pki"), nil); err != nil {
		t.Fatal(err)
	}
	for name, data := range map[string]string{"module.so": "", "pin": "1234\n"} {
		if err := os.WriteFile(filepath.Join(dir, name), []byte(data), 0o600); err != nil {
			t.Fatal(err)
		}
	}
	cfg := `{"id":"n1","data_dir":"data","listen":"127.0.0.1:0",
		"pkcs11":{"module":"module.so","token_label":"t","pin_file":"pin"},
		"tls":{"ca":"pki/ca.pem","cert":"pki/server.pem","key":"pki/server-key.pem"}` + extra + `}`
	p := filepath.Join(dir, "custosd.json")
	if err := os.WriteFile(p, []byte(cfg), 0o600); err != nil {
		t.Fatal(err)
	}
	return p
}

func listenerFile(t *testing.T) (*os.File, string) {
	t.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	f, err := activation.File(l)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = f.Close() })
	return f, l.Addr().String()
}

// TestServeActivationErrors: bad socket activation input makes custosd
// serve exit 1 with one line saying what is wrong, never a panic.
func TestServeActivationErrors(t *testing.T) {
	config := activationConfig(t, "")
	regular, err := os.Create(filepath.Join(t.TempDir(), "not-a-socket"))
	if err != nil {
		t.Fatal(err)
	}
	defer regular.Close()
	sock, _ := listenerFile(t)

	for _, tt := range []struct {
		name  string
		env   []string
		files []*os.File
		want  []string // one of these in the error line
	}{
		{"malformed LISTEN_FDS", []string{"LISTEN_FDS=three"}, nil, []string{`LISTEN_FDS="three" is not a number`}},
		{"malformed LISTEN_PID", []string{"LISTEN_PID=me", "LISTEN_FDS=1", "LISTEN_FDNAMES=grpc"}, nil, []string{`LISTEN_PID="me"`}},
		{"names missing", []string{"LISTEN_FDS=1"}, []*os.File{sock}, []string{"LISTEN_FDNAMES is not set"}},
		{"not a socket", []string{"LISTEN_FDS=1", "LISTEN_FDNAMES=grpc"}, []*os.File{regular}, []string{`descriptor 3 ("grpc") is not a socket`}},
		// fd 4 is not passed: closed, or something the child's runtime
		// opened since (never a listening socket).
		{"named fd missing", []string{"LISTEN_FDS=2", "LISTEN_FDNAMES=grpc:raft"}, []*os.File{sock},
			[]string{`descriptor 4 ("raft") is not open`, `descriptor 4 ("raft") is not a socket`, `descriptor 4 ("raft") is not a stream`}},
		{"unknown name", []string{"LISTEN_FDS=1", "LISTEN_FDNAMES=admin"}, []*os.File{sock}, []string{`names a socket "admin"; custosd serve takes grpc, raft, xks, metrics and console`}},
		{"raft without raft_tls", []string{"LISTEN_FDS=1", "LISTEN_FDNAMES=raft"}, []*os.File{sock}, []string{`a "raft" socket was passed but raft_tls is off`}},
		{"xks without xks", []string{"LISTEN_FDS=1", "LISTEN_FDNAMES=xks"}, []*os.File{sock}, []string{`a "xks" socket was passed but the configuration has no xks section`}},
	} {
		t.Run(tt.name, func(t *testing.T) {
			cmd := exec.Command(os.Args[0], "-test.run=^TestHelperServe$")
			cmd.Env = append(os.Environ(), helperArgsEnv+"="+strings.Join([]string{"serve", "--config", config}, "\n"))
			cmd.Env = append(cmd.Env, tt.env...)
			cmd.ExtraFiles = tt.files
			var stdout, stderr bytes.Buffer
			cmd.Stdout, cmd.Stderr = &stdout, &stderr
			err := cmd.Run()
			var ee *exec.ExitError
			if !errors.As(err, &ee) || ee.ExitCode() != 1 {
				t.Fatalf("exit: %v, want status 1; stderr:\n%s", err, stderr.String())
			}
			out := strings.TrimRight(stderr.String(), "\n")
			if strings.Contains(out, "\n") || !strings.HasPrefix(out, "custosd: socket activation: ") {
				t.Fatalf("stderr %q, want one line custosd: socket activation: …", out)
			}
			found := false
			for _, w := range tt.want {
				found = found || strings.Contains(out, w)
			}
			if !found {
				t.Errorf("stderr %q, want one of %q", out, tt.want)
			}
		})
	}
}

func TestUseListeners(t *testing.T) {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	port := l.Addr().(*net.TCPAddr).Port
	addr := l.Addr().String()

	cfg := node.Config{Listen: addr, RaftTLS: true, RaftAddr: addr, MetricsListen: "127.0.0.1:0", XKS: &node.XKSConfig{Listen: ":0"}}
	if err := useListeners(&cfg, map[string]net.Listener{"grpc": l, "raft": l, "metrics": l, "xks": l}); err != nil {
		t.Fatal(err)
	}
	if cfg.Listener != l || cfg.RaftListener != l || cfg.MetricsListener != l || cfg.XKS.Listener != l {
		t.Errorf("listeners not all set: %+v", cfg)
	}
	if err := useListeners(&node.Config{Listen: "0.0.0.0:1"}, map[string]net.Listener{"grpc": l}); err == nil ||
		!strings.Contains(err.Error(), `the "grpc" socket listens on `+addr+` but listen is "0.0.0.0:1"`) {
		t.Errorf("another port: %v", err)
	}
	if err := useListeners(&node.Config{Listen: ":" + strconv.Itoa(port)}, map[string]net.Listener{"grpc": l}); err != nil {
		t.Errorf("same port, other host: %v", err)
	}
	if err := useListeners(&node.Config{Listen: addr}, map[string]net.Listener{"metrics": l}); err == nil || !strings.Contains(err.Error(), "metrics_listen is not set") {
		t.Errorf("metrics without metrics_listen: %v", err)
	}
	if err := useListeners(&node.Config{Listen: addr}, nil); err != nil {
		t.Errorf("no sockets: %v", err)
	}
}
