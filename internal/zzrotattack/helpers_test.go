package zzrotattack_test

import (
	"context"
	"crypto/aes"
	"crypto/cipher"
	"crypto/sha256"
	"crypto/tls"
	"crypto/x509"
	"encoding/binary"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"strings"
	"testing"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials"

	"github.com/custos-kms/custos/clients/go/keyimport"
	"github.com/custos-kms/custos/hsm"
	"github.com/custos-kms/custos/hsm/pkcs11"
	"github.com/custos-kms/custos/hsm/pkcs11/pkcs11test"
	"github.com/custos-kms/custos/internal/node/nodetest"
	"github.com/custos-kms/custos/kms"
	custosv1 "github.com/custos-kms/custos/proto/custos/v1"
	raftlogv1 "github.com/custos-kms/custos/proto/raftlog/v1"
)

const childEnv = "ZZROT_CHILD"

// childOp: in a separate process with its own SOFTHSM2_CONF (a copy of the
// token directory), unwrap Blob under DK with the PIN and decrypt WDK.
type childOp struct {
	Conf, Module, Label, PIN string
	DKID, DKKCV, Blob, KCV   []byte
	WDK                      []byte
}

func TestMain(m *testing.M) {
	pkcs11test.MaybeChild()
	if raw := os.Getenv(childEnv); raw != "" {
		var op childOp
		if err := json.Unmarshal([]byte(raw), &op); err != nil {
			fmt.Println("ERR", err)
			os.Exit(2)
		}
		pt, err := childUnwrapDecrypt(op)
		if err != nil {
			fmt.Println("ERR", err)
			os.Exit(1)
		}
		fmt.Println("PLAINTEXT", hex.EncodeToString(pt))
		os.Exit(0)
	}
	os.Exit(m.Run())
}

func childUnwrapDecrypt(op childOp) ([]byte, error) {
	ctx := context.Background()
	b, err := pkcs11.Open(ctx, pkcs11.Config{Module: op.Module, TokenLabel: op.Label, PIN: op.PIN})
	if err != nil {
		return nil, err
	}
	defer b.Close()
	id := []byte("attacker/from-backup")
	kr := hsm.KeyRef{ID: id, CheckValue: op.KCV}
	if err := b.UnwrapKey(ctx, hsm.KeyRef{ID: op.DKID, CheckValue: op.DKKCV}, op.Blob, hsm.KeySpec{ID: id, Usage: hsm.UsageEncrypt, CheckValue: op.KCV}); err != nil {
		return nil, fmt.Errorf("unwrap: %w", err)
	}
	return hsmDecryptWDK(ctx, b, kr, op.WDK)
}

func runChild(t *testing.T, op childOp) (string, error) {
	raw, _ := json.Marshal(op)
	cmd := exec.Command(os.Args[0], "-test.run=^$")
	cmd.Env = append(os.Environ(), childEnv+"="+string(raw), "SOFTHSM2_CONF="+op.Conf)
	out, err := cmd.CombinedOutput()
	return string(out), err
}

// wdkParts splits a wrapped data key (docs/wrapped-data-key.md).
func wdkParts(wdk []byte) (iv, ct, aad []byte) {
	n := int(wdk[2])
	hdr := wdk[:7+n]
	iv = wdk[7+n : 19+n]
	ct = wdk[19+n:]
	d := kms.ContextDigest(nil)
	aad = append(append([]byte("custos-wdk-v1"), hdr...), d[:]...)
	return
}

func hsmDecryptWDK(ctx context.Context, b *pkcs11.Backend, kr hsm.KeyRef, wdk []byte) ([]byte, error) {
	iv, ct, aad := wdkParts(wdk)
	return b.DecryptGCM(ctx, kr, iv, ct, aad)
}

// softDecryptWDK decrypts a wrapped data key with a KEK in clear.
func softDecryptWDK(kek, wdk []byte) ([]byte, error) {
	iv, ct, aad := wdkParts(wdk)
	blk, err := aes.NewCipher(kek)
	if err != nil {
		return nil, err
	}
	g, err := cipher.NewGCM(blk)
	if err != nil {
		return nil, err
	}
	return g.Open(nil, iv, ct, aad)
}

// kwpUnwrap is RFC 5649 AES key unwrap with padding (n > 1).
func kwpUnwrap(kek, c []byte) ([]byte, error) {
	if len(c)%8 != 0 || len(c) < 24 {
		return nil, errors.New("bad length")
	}
	blk, err := aes.NewCipher(kek)
	if err != nil {
		return nil, err
	}
	n := len(c)/8 - 1
	var a [8]byte
	copy(a[:], c[:8])
	r := make([][8]byte, n+1)
	for i := 1; i <= n; i++ {
		copy(r[i][:], c[8*i:8*i+8])
	}
	var b [16]byte
	for j := 5; j >= 0; j-- {
		for i := n; i >= 1; i-- {
			t := uint64(n*j + i)
			x := binary.BigEndian.Uint64(a[:]) ^ t
			binary.BigEndian.PutUint64(b[:8], x)
			copy(b[8:], r[i][:])
			blk.Decrypt(b[:], b[:])
			copy(a[:], b[:8])
			copy(r[i][:], b[8:])
		}
	}
	if binary.BigEndian.Uint32(a[:4]) != 0xA65959A6 {
		return nil, errors.New("integrity check failed")
	}
	mli := int(binary.BigEndian.Uint32(a[4:]))
	out := make([]byte, 0, 8*n)
	for i := 1; i <= n; i++ {
		out = append(out, r[i][:]...)
	}
	if mli > len(out) {
		return nil, errors.New("bad MLI")
	}
	return out[:mli], nil
}

// wrapKCV is the check value custos computes for a wrapping key of that
// value (hsm/pkcs11/checkvalue.go), computed offline by the planter.
func wrapKCV(value []byte) []byte {
	wv := sha256.Sum256([]byte("custos/kcv/1 wrap"))
	out, err := keyimport.WrapPad(value, wv[:])
	if err != nil {
		panic(err)
	}
	sum := sha256.Sum256(append([]byte("custos/kcv/1"), out...))
	return sum[:hsm.CheckValueSize]
}

// nodeRepl is a Replication client to member `to` authenticated with member
// from's node certificate (which the operator holds).
func nodeRepl(t *testing.T, c *nodetest.Cluster, from, to int) raftlogv1.ReplicationClient {
	t.Helper()
	cfg := c.Members[from].Config
	cert, err := tls.LoadX509KeyPair(cfg.TLS.Cert, cfg.TLS.Key)
	if err != nil {
		t.Fatal(err)
	}
	caPEM, err := os.ReadFile(cfg.TLS.CA)
	if err != nil {
		t.Fatal(err)
	}
	pool := x509.NewCertPool()
	pool.AppendCertsFromPEM(caPEM)
	cc, err := grpc.NewClient(c.Members[to].Addr, grpc.WithTransportCredentials(credentials.NewTLS(&tls.Config{
		Certificates: []tls.Certificate{cert}, RootCAs: pool, ServerName: "127.0.0.1", MinVersion: tls.VersionTLS13})))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = cc.Close() })
	return raftlogv1.NewReplicationClient(cc)
}

// propose sends cmd as member from to the leader.
func propose(ctx context.Context, r raftlogv1.ReplicationClient, node string, cmd *raftlogv1.Command) (any, error) {
	cmd.TimeUnixNano = time.Now().UnixNano()
	cmd.Node = node
	cmd.Principal = "custosd"
	res, err := r.Apply(ctx, cmd)
	if err != nil {
		return nil, err
	}
	return kms.DecodeResult(res)
}

func waitFor(t *testing.T, what string, d time.Duration, cond func() bool) {
	t.Helper()
	for deadline := time.Now().Add(d); !cond(); {
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting for %s", what)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

func decryptReq(ct []byte) *custosv1.DecryptRequest {
	return &custosv1.DecryptRequest{Ciphertext: ct,
		Justification: &custosv1.Justification{Reason: custosv1.Reason_REASON_CUSTOMER_INITIATED, Text: "attack test"}}
}

func tokenHolds(t *testing.T, m *nodetest.Member, id []byte) bool {
	t.Helper()
	cfg := m.Config.PKCS11
	b, err := pkcs11.Open(context.Background(), pkcs11.Config{Module: cfg.Module, TokenLabel: cfg.TokenLabel, PIN: cfg.PIN})
	if err != nil {
		t.Fatal(err)
	}
	defer b.Close()
	has, err := b.HasKey(context.Background(), id)
	if err != nil {
		t.Fatal(err)
	}
	return has
}

func pinBackend(t *testing.T, m *nodetest.Member) *pkcs11.Backend {
	t.Helper()
	cfg := m.Config.PKCS11
	b, err := pkcs11.Open(context.Background(), pkcs11.Config{Module: cfg.Module, TokenLabel: cfg.TokenLabel, PIN: cfg.PIN})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { b.Close() })
	return b
}

var _ = strings.Contains
