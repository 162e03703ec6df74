package node_test

import (
	"context"
	"errors"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/custos-kms/custos/hsm/pkcs11"
	"github.com/custos-kms/custos/internal/node"
	"github.com/custos-kms/custos/internal/node/nodetest"
	"github.com/custos-kms/custos/kms"
	custosv1 "github.com/custos-kms/custos/proto/custos/v1"
	"github.com/custos-kms/custos/softhsm"
)

func ctx(t *testing.T) context.Context {
	c, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	t.Cleanup(cancel)
	return c
}

func TestStartRestartKeepsKeys(t *testing.T) {
	h := nodetest.Start(t)
	if h.Addr == "" || h.Node.ClusterID() == "" {
		t.Fatalf("Addr = %q, ClusterID = %q", h.Addr, h.Node.ClusterID())
	}
	cluster := h.Node.ClusterID()
	kc := custosv1.NewKeyServiceClient(h.Conn(t, "app"))
	if _, err := kc.CreateKey(ctx(t), &custosv1.CreateKeyRequest{Name: "payroll"}); err != nil {
		t.Fatal(err)
	}
	enc, err := kc.Encrypt(ctx(t), &custosv1.EncryptRequest{Key: "payroll", Plaintext: []byte("hello"),
		EncryptionContext: map[string]string{"dept": "hr"}})
	if err != nil {
		t.Fatal(err)
	}

	just := &custosv1.Justification{Reason: custosv1.Reason_REASON_CUSTOMER_INITIATED}
	before, err := kc.Decrypt(ctx(t), &custosv1.DecryptRequest{Ciphertext: enc.GetCiphertext(),
		EncryptionContext: map[string]string{"dept": "hr"}, Justification: just})
	if err != nil {
		t.Fatal(err)
	}

	// Officers are recorded at initialisation; a later start needs none
	// and cannot change them.
	h.Config.Officers, h.Config.Quorum = nil, 0
	h.Restart(t)

	if got := h.Node.ClusterID(); got != cluster {
		t.Errorf("cluster id after restart = %q, want %q", got, cluster)
	}
	k, err := kc.GetKey(ctx(t), &custosv1.GetKeyRequest{Name: "payroll"})
	if err != nil {
		t.Fatalf("GetKey after restart: %v", err)
	}
	if k.GetName() != "payroll" {
		t.Errorf("key = %v", k)
	}
	dec, err := kc.Decrypt(ctx(t), &custosv1.DecryptRequest{
		Ciphertext:        enc.GetCiphertext(),
		EncryptionContext: map[string]string{"dept": "hr"},
		Justification:     just,
	})
	if err != nil {
		t.Fatalf("Decrypt after restart: %v", err)
	}
	if string(dec.GetPlaintext()) != "hello" {
		t.Errorf("plaintext = %q", dec.GetPlaintext())
	}
	gov, err := custosv1.NewGovernanceServiceClient(h.Conn(t, "app")).GetGovernance(ctx(t), &custosv1.GetGovernanceRequest{})
	if err != nil {
		t.Fatalf("GetGovernance after restart: %v", err)
	}
	if len(gov.GetOfficers()) != nodetest.NumOfficers || gov.GetQuorum() != nodetest.Quorum {
		t.Errorf("governance after restart = %v, want the %d officers and quorum %d of the first start", gov, nodetest.NumOfficers, nodetest.Quorum)
	}
	// The ledger continues where it was: decision numbers keep growing.
	if dec.GetDecisionSeq() <= before.GetDecisionSeq() {
		t.Errorf("decision seq after restart = %d, before = %d; want it to grow", dec.GetDecisionSeq(), before.GetDecisionSeq())
	}
}

func TestCloseIdempotent(t *testing.T) {
	h := nodetest.Start(t)
	if err := h.Node.Close(); err != nil {
		t.Fatal(err)
	}
	if err := h.Node.Close(); err != nil {
		t.Fatalf("second Close: %v", err)
	}
}

// startErr starts a node with cfg changed by edit and returns the error.
func startErr(t *testing.T, edit func(*node.Config)) error {
	t.Helper()
	return startErrOn(t, softhsm.TestToken(t), edit)
}

func startErrOn(t *testing.T, tok *softhsm.Token, edit func(*node.Config)) error {
	t.Helper()
	dir := t.TempDir()
	cfg := nodetest.Config(t, dir, tok)
	nodetest.SetOfficers(t, &cfg, dir)
	edit(&cfg)
	n, err := node.Start(ctx(t), cfg)
	if err == nil {
		n.Close()
		t.Fatal("Start succeeded")
	}
	return err
}

func TestStartErrors(t *testing.T) {
	t.Run("wrong PIN", func(t *testing.T) {
		err := startErr(t, func(c *node.Config) { c.PKCS11.PIN = "9999" })
		if !errors.Is(err, pkcs11.ErrPIN) || !strings.Contains(err.Error(), "PIN") {
			t.Errorf("err = %v, want ErrPIN naming the PIN", err)
		}
		if strings.Contains(err.Error(), "9999") {
			t.Errorf("error shows the PIN: %v", err)
		}
	})
	t.Run("missing token", func(t *testing.T) {
		err := startErr(t, func(c *node.Config) { c.PKCS11.TokenLabel = "no-such-token" })
		if !errors.Is(err, pkcs11.ErrTokenNotFound) || !strings.Contains(err.Error(), `"no-such-token"`) ||
			!strings.Contains(err.Error(), "--init-token") {
			t.Errorf("err = %v, want ErrTokenNotFound naming the label and how to create it", err)
		}
	})
	t.Run("missing module", func(t *testing.T) {
		err := startErr(t, func(c *node.Config) { c.PKCS11.Module = "/nonexistent/libpkcs11.so" })
		if !errors.Is(err, pkcs11.ErrModule) || !strings.Contains(err.Error(), "softhsm/install.sh") {
			t.Errorf("err = %v, want ErrModule with the install hint", err)
		}
	})
	t.Run("missing TLS files", func(t *testing.T) {
		err := startErr(t, func(c *node.Config) { c.TLS.Cert = filepath.Join(t.TempDir(), "nope.pem") })
		if !strings.Contains(err.Error(), "TLS") {
			t.Errorf("err = %v, want a TLS error", err)
		}
	})
	t.Run("no officers on a new cluster", func(t *testing.T) {
		err := startErr(t, func(c *node.Config) { c.Officers, c.Quorum = nil, 0 })
		if !errors.Is(err, kms.ErrInvalidArgument) || !strings.Contains(err.Error(), "officers") {
			t.Errorf("err = %v, want InvalidArgument naming the officers", err)
		}
	})
	t.Run("quorum larger than the officers", func(t *testing.T) {
		err := startErr(t, func(c *node.Config) { c.Quorum = uint32(len(c.Officers) + 1) })
		if err == nil || !strings.Contains(err.Error(), "quorum") {
			t.Errorf("err = %v, want it to name the quorum", err)
		}
	})
	t.Run("listen address in use", func(t *testing.T) {
		// SoftHSM sees only the tokens that existed when the module was
		// loaded: create the second token before the first node starts.
		tok := softhsm.TestToken(t)
		h := nodetest.Start(t)
		err := startErrOn(t, tok, func(c *node.Config) { c.Listen = h.Addr })
		if !strings.Contains(err.Error(), h.Addr) {
			t.Errorf("err = %v, want it to name %s", err, h.Addr)
		}
	})
}
