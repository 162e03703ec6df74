package governance_test

import (
	"bytes"
	"crypto"
	"crypto/ecdsa"
	"crypto/x509"
	"encoding/pem"
	"errors"
	"io/fs"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/custos-kms/custos/kms/governance"
	custosv1 "github.com/custos-kms/custos/proto/custos/v1"
)

func noPassphrase(t *testing.T) func() ([]byte, error) {
	return func() ([]byte, error) {
		t.Error("passphrase asked for an unencrypted key")
		return nil, errors.New("no")
	}
}

// signsLike checks that signer holds the key whose public half is want.
func signsLike(t *testing.T, signer crypto.Signer, want *ecdsa.PublicKey) {
	t.Helper()
	pub, ok := signer.Public().(*ecdsa.PublicKey)
	if !ok || !pub.Equal(want) {
		t.Fatal("loaded key has another public key")
	}
}

func TestKeyFileUnencrypted(t *testing.T) {
	dir := t.TempDir()
	path := filepath.Join(dir, "officer.pem")
	key, err := governance.GenerateKey()
	if err != nil {
		t.Fatal(err)
	}
	if err := governance.WriteKeyFile(path, key, nil); err != nil {
		t.Fatal(err)
	}
	fi, err := os.Stat(path)
	if err != nil {
		t.Fatal(err)
	}
	if fi.Mode().Perm() != 0o600 {
		t.Errorf("mode %v, want 0600", fi.Mode().Perm())
	}
	data, _ := os.ReadFile(path)
	if blk, _ := pem.Decode(data); blk == nil || blk.Type != "PRIVATE KEY" {
		t.Fatalf("not a PEM PRIVATE KEY: %q", data)
	}
	signer, err := governance.LoadKeyFile(path, noPassphrase(t))
	if err != nil {
		t.Fatal(err)
	}
	signsLike(t, signer, &key.PublicKey)
	b := mustMarshal(t, statement(&custosv1.RevokeKey{Key: "k"}))
	sig, err := governance.Sign(signer, "alice", b)
	if err != nil {
		t.Fatal(err)
	}
	set, _ := governance.NewOfficerSet([]*custosv1.Officer{{Name: "alice", PublicKey: governance.MarshalPublicKey(&key.PublicKey)}}, 1)
	if _, _, err := set.Verify(&custosv1.SignedStatement{Statement: b, Signatures: []*custosv1.OfficerSignature{sig}}, testCluster, testNow); err != nil {
		t.Fatal(err)
	}
	// No temporary files left behind.
	if ents, _ := os.ReadDir(dir); len(ents) != 1 {
		t.Errorf("directory holds %d entries", len(ents))
	}
}

func TestKeyFileEncrypted(t *testing.T) {
	t.Parallel()
	dir := t.TempDir()
	path := filepath.Join(dir, "officer.pem")
	key := deterministicKey(t, "enc")
	pass := []byte("correct horse battery staple")
	if err := governance.WriteKeyFile(path, key, pass); err != nil {
		t.Fatal(err)
	}
	fi, _ := os.Stat(path)
	if fi.Mode().Perm() != 0o600 {
		t.Errorf("mode %v, want 0600", fi.Mode().Perm())
	}
	data, _ := os.ReadFile(path)
	blk, _ := pem.Decode(data)
	if blk == nil || blk.Type != "CUSTOS ENCRYPTED PRIVATE KEY" {
		t.Fatalf("not an encrypted key file: %q", data)
	}
	if blk.Headers["KDF"] != "PBKDF2-HMAC-SHA256" || blk.Headers["KDF-Iterations"] != "600000" ||
		len(blk.Headers["KDF-Salt"]) != 32 || blk.Headers["Cipher"] != "AES-256-GCM" || len(blk.Headers["Cipher-Nonce"]) != 24 {
		t.Errorf("headers %v", blk.Headers)
	}
	der, _ := x509.MarshalPKCS8PrivateKey(key)
	if bytes.Contains(data, der[len(der)-40:]) {
		t.Fatal("key material in the clear")
	}
	// Each load runs PBKDF2 with 600,000 iterations; run them side by side.
	t.Run("right passphrase", func(t *testing.T) {
		t.Parallel()
		calls := 0
		signer, err := governance.LoadKeyFile(path, func() ([]byte, error) { calls++; return bytes.Clone(pass), nil })
		if err != nil {
			t.Fatal(err)
		}
		if calls != 1 {
			t.Errorf("passphrase asked %d times", calls)
		}
		signsLike(t, signer, &key.PublicKey)
	})
	t.Run("wrong passphrase", func(t *testing.T) {
		t.Parallel()
		_, err := governance.LoadKeyFile(path, func() ([]byte, error) { return []byte("wrong"), nil })
		if !errors.Is(err, governance.ErrWrongPassphrase) {
			t.Fatalf("wrong passphrase: %v", err)
		}
		if strings.Contains(err.Error(), "wrong\"") || strings.Contains(err.Error(), "cipher") {
			t.Errorf("error says too much: %q", err)
		}
	})
	t.Run("tampered iterations", func(t *testing.T) {
		t.Parallel()
		// Altering a KDF parameter is refused (bound into the AAD and the key).
		tampered := strings.Replace(string(data), "KDF-Iterations: 600000", "KDF-Iterations: 600001", 1)
		tp := filepath.Join(dir, "tampered.pem")
		os.WriteFile(tp, []byte(tampered), 0o600)
		// LoadKeyFile zeroes the passphrase it is given: hand it a copy, not
		// the slice the parallel subtests share.
		if _, err := governance.LoadKeyFile(tp, func() ([]byte, error) { return bytes.Clone(pass), nil }); !errors.Is(err, governance.ErrWrongPassphrase) {
			t.Errorf("tampered iterations: %v", err)
		}
	})
	t.Run("cheap refusals", func(t *testing.T) {
		if _, err := governance.LoadKeyFile(path, nil); !errors.Is(err, governance.ErrWrongPassphrase) {
			t.Errorf("no passphrase func: %v", err)
		}
		boom := errors.New("tty gone")
		if _, err := governance.LoadKeyFile(path, func() ([]byte, error) { return nil, boom }); !errors.Is(err, boom) {
			t.Errorf("passphrase error: %v", err)
		}
		weak := strings.Replace(string(data), "KDF-Iterations: 600000", "KDF-Iterations: 1000", 1)
		wp := filepath.Join(dir, "weak.pem")
		os.WriteFile(wp, []byte(weak), 0o600)
		if _, err := governance.LoadKeyFile(wp, noPassphrase(t)); !errors.Is(err, governance.ErrBadKey) {
			t.Errorf("weak iterations: %v", err)
		}
	})
}

func TestKeyFileRefusesOverwrite(t *testing.T) {
	path := filepath.Join(t.TempDir(), "officer.pem")
	os.WriteFile(path, []byte("precious"), 0o600)
	err := governance.WriteKeyFile(path, deterministicKey(t, "x"), nil)
	if !errors.Is(err, fs.ErrExist) {
		t.Fatalf("overwrite: %v", err)
	}
	if data, _ := os.ReadFile(path); string(data) != "precious" {
		t.Fatal("file was overwritten")
	}
	if err := governance.WriteKeyFile(filepath.Join(t.TempDir(), "p384.pem"), p384Key(t), nil); !errors.Is(err, governance.ErrBadKey) {
		t.Errorf("P-384 key written: %v", err)
	}
}

func TestKeyFileGarbage(t *testing.T) {
	dir := t.TempDir()
	p384der, _ := x509.MarshalPKCS8PrivateKey(p384Key(t))
	good := pem.EncodeToMemory(&pem.Block{Type: "PRIVATE KEY", Bytes: mustPKCS8(t)})
	for name, data := range map[string][]byte{
		"empty":          {},
		"garbage":        []byte("this is not a key\n"),
		"bad DER":        pem.EncodeToMemory(&pem.Block{Type: "PRIVATE KEY", Bytes: []byte{0x30, 0x03, 1, 2, 3}}),
		"P-384":          pem.EncodeToMemory(&pem.Block{Type: "PRIVATE KEY", Bytes: p384der}),
		"public key":     governance.PublicKeyPEM(&deterministicKey(t, "p").PublicKey),
		"trailing block": append(bytes.Clone(good), good...),
		"bad encrypted":  pem.EncodeToMemory(&pem.Block{Type: "CUSTOS ENCRYPTED PRIVATE KEY", Bytes: []byte{1, 2, 3}}),
	} {
		p := filepath.Join(dir, strings.ReplaceAll(name, " ", "_"))
		os.WriteFile(p, data, 0o600)
		if _, err := governance.LoadKeyFile(p, noPassphrase(t)); !errors.Is(err, governance.ErrBadKey) {
			t.Errorf("%s: err = %v, want ErrBadKey", name, err)
		}
	}
	if _, err := governance.LoadKeyFile(filepath.Join(dir, "missing"), nil); !errors.Is(err, fs.ErrNotExist) {
		t.Errorf("missing file: %v", err)
	}
	// An openssl SEC 1 key ("EC PARAMETERS" + "EC PRIVATE KEY") loads.
	k := deterministicKey(t, "sec1")
	sec1, _ := x509.MarshalECPrivateKey(k)
	data := append(pem.EncodeToMemory(&pem.Block{Type: "EC PARAMETERS", Bytes: []byte{6, 8, 0x2a, 0x86, 0x48, 0xce, 0x3d, 3, 1, 7}}),
		pem.EncodeToMemory(&pem.Block{Type: "EC PRIVATE KEY", Bytes: sec1})...)
	p := filepath.Join(dir, "sec1.pem")
	os.WriteFile(p, data, 0o600)
	signer, err := governance.LoadKeyFile(p, noPassphrase(t))
	if err != nil {
		t.Fatal(err)
	}
	signsLike(t, signer, &k.PublicKey)
}

func mustPKCS8(t *testing.T) []byte {
	der, err := x509.MarshalPKCS8PrivateKey(deterministicKey(t, "pkcs8"))
	if err != nil {
		t.Fatal(err)
	}
	return der
}

func TestPublicKeys(t *testing.T) {
	k := deterministicKey(t, "pub")
	der := governance.MarshalPublicKey(&k.PublicKey)
	pub, err := governance.ParsePublicKey(der)
	if err != nil || !pub.Equal(&k.PublicKey) {
		t.Fatalf("ParsePublicKey: %v", err)
	}
	pemb := governance.PublicKeyPEM(&k.PublicKey)
	pub2, err := governance.ParsePublicKeyPEM(pemb)
	if err != nil || !pub2.Equal(&k.PublicKey) {
		t.Fatalf("ParsePublicKeyPEM: %v", err)
	}
	if _, err := governance.ParsePublicKey(p384PublicDER(t)); !errors.Is(err, governance.ErrBadKey) {
		t.Errorf("P-384: %v", err)
	}
	if _, err := governance.ParsePublicKey(append(bytes.Clone(der), 0)); !errors.Is(err, governance.ErrBadKey) {
		t.Errorf("trailing data: %v", err)
	}
	if _, err := governance.ParsePublicKeyPEM([]byte("nope")); !errors.Is(err, governance.ErrBadKey) {
		t.Errorf("no PEM: %v", err)
	}
	fp := governance.Fingerprint(&k.PublicKey)
	if len(fp) != 32 || strings.Contains(fp, ":") || fp != governance.Fingerprint(pub) {
		t.Errorf("fingerprint %q", fp)
	}
	if governance.Fingerprint(&deterministicKey(t, "other").PublicKey) == fp {
		t.Error("two keys, one fingerprint")
	}
}
