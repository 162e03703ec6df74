package main

import (
	"bytes"
	"context"
	"encoding/base64"
	"encoding/hex"
	"io"
	"io/fs"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"k8s.io/apiserver/pkg/storage/value/encrypt/envelope/kmsv2"
	kmsservice "k8s.io/kms/pkg/service"

	custos "github.com/custos-kms/custos/clients/go"
	"github.com/custos-kms/custos/internal/node/nodetest"
	"github.com/custos-kms/custos/internal/pki"
)

func TestFlags(t *testing.T) {
	base := []string{"--listen", "unix:///run/kms.sock", "--custos-key", "k"}
	for _, c := range []struct {
		args []string
		want string
	}{
		{[]string{"--custos-key", "k"}, "--listen and --custos-key are required"},
		{[]string{"--listen", "/run/kms.sock"}, "--listen and --custos-key are required"},
		{append(base, "extra"), "unexpected argument"},
		{append(base, "--socket-mode", "rw"), "--socket-mode"},
		{append(base, "--socket-mode", "01777"), "--socket-mode"},
		{append(base, "--reason", "because"), "--reason"},
		{append(base, "--context", "cluster"), "--context"},
		{append(base, "--context", "purpose=x"), "plugin's own"},
		{append(base, "--log-level", "loud"), "--log-level"},
	} {
		err := run(context.Background(), c.args, io.Discard, nil)
		if err == nil || !strings.Contains(err.Error(), c.want) {
			t.Errorf("run(%q) = %v, want an error containing %q", c.args, err, c.want)
		}
	}
	o, err := parse(append(base, "--socket-mode", "0660", "--reason", "customer-initiated", "--context", "cluster=prod, env=tokyo"), io.Discard)
	if err != nil {
		t.Fatal(err)
	}
	cc, pc, mode, err := o.config(nil)
	if err != nil || mode != 0o660 || pc.Reason.String() != "REASON_CUSTOMER_INITIATED" ||
		len(pc.Context) != 2 || pc.Context["env"] != "tokyo" || cc.CallTimeout != o.timeout {
		t.Errorf("config: %v, mode %o, %+v", err, mode, pc)
	}
}

// syncBuffer is a bytes.Buffer safe for the plugin's logger and the test.
type syncBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (s *syncBuffer) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.Write(p)
}

func (s *syncBuffer) String() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.String()
}

// TestRunServesKMSv2 runs the command against a real custos node, with the
// key created by the plugin's own certificate (docs/kubernetes.md, the
// development path), and talks to it with the API server's KMS v2 client.
func TestRunServesKMSv2(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	h := nodetest.Start(t)
	const cn = "kube-apiserver"
	c, err := custos.Dial(ctx, custos.Config{Addrs: []string{h.Addr}, TLS: h.ClientTLS(t, cn)})
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	if _, err := c.CreateKey(ctx, "k8s-secrets", ""); err != nil {
		t.Fatal(err)
	}
	certFile, keyFile := pki.ClientFiles(filepath.Dir(h.CAFile), cn)
	dir, err := os.MkdirTemp("", "kms")
	if err != nil {
		t.Fatal(err)
	}
	defer os.RemoveAll(dir)
	sock := filepath.Join(dir, "kms.sock")

	var logs syncBuffer
	ready := make(chan string, 1)
	runCtx, stop := context.WithCancel(ctx)
	done := make(chan error, 1)
	go func() {
		done <- run(runCtx, []string{"--listen", "unix://" + sock, "--custos-key", "k8s-secrets",
			"--addr", h.Addr, "--ca", h.CAFile, "--cert", certFile, "--key", keyFile,
			"--ticket", "CHG-7", "--context", "cluster=test", "--log-level", "debug"}, &logs, func(p string) { ready <- p })
	}()
	select {
	case p := <-ready:
		if p != sock {
			t.Errorf("socket %s, want %s", p, sock)
		}
	case err := <-done:
		t.Fatalf("run: %v\n%s", err, logs.String())
	}
	if fi, err := os.Lstat(sock); err != nil || fi.Mode()&fs.ModeSocket == 0 || fi.Mode().Perm() != 0o600 {
		t.Errorf("socket: %v, %v; want a socket of mode 0600", fi.Mode(), err)
	}

	svc, err := kmsv2.NewGRPCService(ctx, "unix://"+sock, "custos", 10*time.Second)
	if err != nil {
		t.Fatal(err)
	}
	st, err := svc.Status(ctx)
	if err != nil || st.Healthz != "ok" || st.Version != "v2" || !strings.HasPrefix(st.KeyID, "custos/k8s-secrets/v1/") {
		t.Fatalf("Status = %+v, %v\n%s", st, err, logs.String())
	}
	seed := bytes.Repeat([]byte{0xa7, 0x3c}, 16)
	enc, err := svc.Encrypt(ctx, "uid-enc", bytes.Clone(seed))
	if err != nil || enc.KeyID != st.KeyID {
		t.Fatalf("Encrypt = %+v, %v", enc, err)
	}
	pt, err := svc.Decrypt(ctx, "uid-dec", &kmsservice.DecryptRequest{Ciphertext: enc.Ciphertext, KeyID: enc.KeyID})
	if err != nil || !bytes.Equal(pt, seed) {
		t.Fatalf("Decrypt: %v", err)
	}

	stop()
	if err := <-done; err != nil {
		t.Errorf("run after stop: %v", err)
	}
	if _, err := os.Lstat(sock); !os.IsNotExist(err) {
		t.Errorf("socket left after stop: %v", err)
	}
	out := logs.String()
	for _, want := range []string{`"msg":"serving KMS v2"`, `"msg":"encrypt"`, `"msg":"decrypt"`, `"decision_seq"`, `"uid":"uid-dec"`} {
		if !strings.Contains(out, want) {
			t.Errorf("log lacks %s:\n%s", want, out)
		}
	}
	for _, secret := range []string{hex.EncodeToString(seed), base64.StdEncoding.EncodeToString(seed), string(seed)} {
		if strings.Contains(out, secret) {
			t.Errorf("the seed is in the log:\n%s", out)
		}
	}
}
