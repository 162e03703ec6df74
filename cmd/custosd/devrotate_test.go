package main

import (
	"context"
	"os"
	"os/exec"
	"path/filepath"
	"syscall"
	"testing"
	"time"

	custos "github.com/custos-kms/custos/clients/go"
	"github.com/custos-kms/custos/kms/governance"
	custosv1 "github.com/custos-kms/custos/proto/custos/v1"
)

// TestDevNodeRotatesDomainKey: `custosd dev` (one node, a real process)
// plays the officer and the token's security officer for a domain-key
// rotation, so `custos cluster rotate-domain-key` alone rotates the key of
// `make run`'s node, and data encrypted before decrypts after.
func TestDevNodeRotatesDomainKey(t *testing.T) {
	tmp := t.TempDir()
	bin := buildCustosd(t, tmp)
	dir := filepath.Join(tmp, "dev")
	logFile := filepath.Join(tmp, "custosd.log")
	lf, err := os.Create(logFile)
	if err != nil {
		t.Fatal(err)
	}
	defer lf.Close()
	proc := exec.Command(bin, "dev", "--data-dir", dir, "--listen", "127.0.0.1:0")
	proc.Stdout, proc.Stderr = lf, lf
	if err := proc.Start(); err != nil {
		t.Fatal(err)
	}
	exited := make(chan error, 1)
	go func() { exited <- proc.Wait() }()
	t.Cleanup(func() {
		_ = proc.Process.Signal(syscall.SIGTERM)
		select {
		case <-exited:
		case <-time.After(30 * time.Second):
			_ = proc.Process.Kill()
			<-exited
		}
		if t.Failed() {
			b, _ := os.ReadFile(logFile)
			t.Logf("custosd dev output:\n%s", b)
		}
	})
	envFile := filepath.Join(dir, "client.env")
	for deadline := time.Now().Add(60 * time.Second); ; {
		if _, err := os.Stat(envFile); err == nil {
			break
		}
		select {
		case err := <-exited:
			t.Fatalf("custosd dev exited: %v", err)
		default:
		}
		if time.Now().After(deadline) {
			t.Fatal("custosd dev wrote no client.env within 60s")
		}
		time.Sleep(50 * time.Millisecond)
	}
	env := readEnv(t, envFile)
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	c, err := custos.Dial(ctx, custos.Config{Addrs: []string{env["CUSTOS_ADDR"]}, CAFile: env["CUSTOS_CA"], CertFile: env["CUSTOS_CERT"],
		KeyFile: env["CUSTOS_KEY"], CallTimeout: 15 * time.Second})
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	if _, err := c.CreateKey(ctx, "payroll", ""); err != nil {
		t.Fatal(err)
	}
	ct, err := c.Encrypt(ctx, "payroll", []byte("before the rotation"), nil)
	if err != nil {
		t.Fatal(err)
	}
	officer, err := governance.LoadKeyFile(env["CUSTOS_OFFICER_KEY"], nil)
	if err != nil {
		t.Fatal(err)
	}
	st, err := c.NewStatement(ctx, "rotate", time.Hour)
	if err != nil {
		t.Fatal(err)
	}
	st.Operation = &custosv1.Statement_RotateDomainKey{RotateDomainKey: &custosv1.RotateDomainKey{}}
	if _, err := c.SignAndSubmit(ctx, st, custos.Officer{Name: env["CUSTOS_OFFICER_NAME"], Signer: officer}); err != nil {
		t.Fatal(err)
	}
	for deadline := time.Now().Add(90 * time.Second); ; {
		cs, err := c.ClusterStatus(ctx)
		if err == nil && cs.GetDomainKeyEpoch() == 1 && cs.GetRotation() == nil && cs.GetHasDomainKey() {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("the dev node did not complete the rotation within 90s: %v, %v", cs, err)
		}
		time.Sleep(100 * time.Millisecond)
	}
	j := custos.Justification{Reason: custosv1.Reason_REASON_CUSTOMER_INITIATED, Text: "after the rotation"}
	if pt, err := c.Decrypt(ctx, ct, nil, j); err != nil || string(pt) != "before the rotation" {
		t.Fatalf("decrypt after the rotation: %q, %v", pt, err)
	}
}

// buildCustosd builds this command into dir and returns the binary's path.
func buildCustosd(t *testing.T, dir string) string {
	t.Helper()
	bin := filepath.Join(dir, "custosd")
	goTool, err := exec.LookPath("go")
	if err != nil {
		t.Fatalf("go tool: %v", err)
	}
	if out, err := exec.Command(goTool, "build", "-o", bin, ".").CombinedOutput(); err != nil {
		t.Fatalf("go build: %v\n%s", err, out)
	}
	return bin
}
