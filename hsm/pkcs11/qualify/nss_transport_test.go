package qualify_test

import (
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/json"
	"errors"
	"math/big"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"strings"
	"testing"
	"time"
	"unsafe"

	p11 "github.com/miekg/pkcs11"
)

// Roles of the processes TestNSSTransportSHA256BetweenTokens runs: this
// test binary again, with -test.run naming the test and nssRoleEnv set.
const (
	nssRoleEnv   = "CUSTOS_NSS_TRANSPORT_ROLE"   // nssKeygen, nssHolder or nssUnwrap
	nssConfigEnv = "CUSTOS_NSS_TRANSPORT_CONFIG" // the role's NSS library parameters
	nssDirEnv    = "CUSTOS_NSS_TRANSPORT_DIR"    // where the roles exchange files
	nssKeygen    = "receiver-keygen"
	nssHolder    = "holder"
	nssUnwrap    = "receiver-unwrap"
	nssLabelA    = "custos-holder"
	nssLabelB    = "custos-receiver"
	nssPIN       = "nss-pin-1234"
	nssRSALabel  = "custos-transport"
)

// nssExchange is what the roles write for each other (and the test).
type nssExchange struct {
	Modulus, Exponent  []byte // B's transport public key
	KCV, Blob          []byte // A: domain key check value and OAEP blob; B: unwrapped key's KCV
	IV, AAD, Plain     []byte // A's AES-GCM input (when C_Encrypt works)
	Ciphertext         []byte
	GCMNote            string // why there is no GCM ciphertext
	TamperErr, SHA1Err string // B: C_UnwrapKey of the changed blob, of the blob as OAEP-SHA1
}

// TestNSSTransportSHA256BetweenTokens sends a domain key from one NSS
// softokn token to another the way custos's key transport does
// (docs/key-transport.md), with the SHA-256 mechanisms: the receiver B
// generates an RSA-3072 transport key pair (private half sensitive,
// non-extractable, unwrap only), the holder A wraps its extractable AES-256
// domain key to B's public key with CKM_RSA_PKCS_OAEP (CKM_SHA256,
// CKG_MGF1_SHA256), and B unwraps it as a sensitive, non-extractable key.
// Both tokens compute custos's key check value of the key inside the token;
// equal values prove B holds A's key. A changed blob must not unwrap, nor
// the blob with OAEP-SHA1 parameters (the hash given is the one used).
//
// It proves the mechanism path only. NSS enforces no trust or template
// attribute (CKA_WRAP_WITH_TRUSTED, CKA_TRUSTED, CKA_UNWRAP_TEMPLATE:
// TestCheckNSS), so A's key is wrapped to an untrusted key here; SoftHSM,
// which enforces them, cannot do OAEP-SHA256.
//
// softokn holds one configuration (key database) per process, so A and B
// run in processes of their own (this binary again) and exchange public key,
// blob and check values through files.
func TestNSSTransportSHA256BetweenTokens(t *testing.T) {
	if role := os.Getenv(nssRoleEnv); role != "" {
		nssRole(t, role, os.Getenv(nssConfigEnv), os.Getenv(nssDirEnv))
		return
	}
	start := time.Now()
	configA, configB := nssToken(t, nssLabelA, nssPIN), nssToken(t, nssLabelB, nssPIN)
	dir := t.TempDir()
	runNSSRole(t, nssKeygen, configB, dir)
	a := runNSSRole(t, nssHolder, configA, dir)
	b := runNSSRole(t, nssUnwrap, configB, dir)
	t.Logf("holder KCV   %x (OAEP-SHA256 blob: %d bytes)", a.KCV, len(a.Blob))
	t.Logf("receiver KCV %x", b.KCV)
	if len(a.KCV) != 16 || !bytes.Equal(a.KCV, b.KCV) {
		t.Errorf("key check values differ: holder %x, receiver %x", a.KCV, b.KCV)
	}
	if b.TamperErr == "" || b.SHA1Err == "" {
		t.Errorf("unwrapped: a blob with one byte changed (%q), the blob as OAEP-SHA1 (%q)", b.TamperErr, b.SHA1Err)
	}
	t.Logf("refused: changed blob %s; as OAEP-SHA1 %s", b.TamperErr, b.SHA1Err)
	switch {
	case a.GCMNote != "":
		t.Logf("AES-GCM not compared: %s", a.GCMNote)
	case len(a.Ciphertext) != len(a.Plain)+16 || !bytes.Equal(b.Plain, a.Plain):
		t.Errorf("AES-GCM: %d-byte ciphertext of %d bytes on A decrypts on B to %x, want %x",
			len(a.Ciphertext), len(a.Plain), b.Plain, a.Plain)
	default:
		t.Logf("AES-GCM ciphertext of A decrypts on B")
	}
	t.Logf("three processes, two key databases: %v", time.Since(start).Round(time.Millisecond))
}

// runNSSRole runs role in a new process of this test binary and returns
// what it wrote.
func runNSSRole(t *testing.T, role, config, dir string) *nssExchange {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	cmd := exec.CommandContext(ctx, os.Args[0], "-test.run=^TestNSSTransportSHA256BetweenTokens$", "-test.count=1", "-test.v")
	cmd.Env = append(os.Environ(), nssRoleEnv+"="+role, nssConfigEnv+"="+config, nssDirEnv+"="+dir)
	if out, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("%s process: %v\n%s", role, err, out)
	}
	return readNSS(t, filepath.Join(dir, role+".json"))
}

// readNSS reads what a role wrote.
func readNSS(t *testing.T, path string) *nssExchange {
	t.Helper()
	var x nssExchange
	b, err := os.ReadFile(path)
	if err == nil {
		err = json.Unmarshal(b, &x)
	}
	if err != nil {
		t.Fatal(err)
	}
	return &x
}

// nssRole is the body of one role's process: it logs in to the token of
// config, acts, and writes dir/role.json. Errors from miekg/pkcs11 print
// as "pkcs11: 0xN: CKR_NAME".
func nssRole(t *testing.T, role, config, dir string) {
	label := nssLabelB
	if role == nssHolder {
		label = nssLabelA
	}
	c, s := nssLogin(t, config, label)
	a := p11.NewAttribute
	oaep := []*p11.Mechanism{p11.NewMechanism(p11.CKM_RSA_PKCS_OAEP,
		p11.NewOAEPParams(p11.CKM_SHA256, p11.CKG_MGF1_SHA256, p11.CKZ_DATA_SPECIFIED, nil))}
	var x nssExchange
	switch role {
	case nssKeygen:
		// Token objects: the unwrap runs in a later process.
		pub, _, err := c.GenerateKeyPair(s, []*p11.Mechanism{p11.NewMechanism(p11.CKM_RSA_PKCS_KEY_PAIR_GEN, nil)},
			[]*p11.Attribute{a(p11.CKA_CLASS, p11.CKO_PUBLIC_KEY), a(p11.CKA_KEY_TYPE, p11.CKK_RSA), a(p11.CKA_TOKEN, true),
				a(p11.CKA_MODULUS_BITS, 3072), a(p11.CKA_PUBLIC_EXPONENT, []byte{1, 0, 1}), a(p11.CKA_WRAP, true),
				a(p11.CKA_LABEL, nssRSALabel)},
			[]*p11.Attribute{a(p11.CKA_CLASS, p11.CKO_PRIVATE_KEY), a(p11.CKA_KEY_TYPE, p11.CKK_RSA), a(p11.CKA_TOKEN, true),
				a(p11.CKA_PRIVATE, true), a(p11.CKA_SENSITIVE, true), a(p11.CKA_EXTRACTABLE, false),
				a(p11.CKA_UNWRAP, true), a(p11.CKA_LABEL, nssRSALabel)})
		if err != nil {
			t.Fatalf("C_GenerateKeyPair(RSA-3072): %v", err)
		}
		as, err := c.GetAttributeValue(s, pub, []*p11.Attribute{a(p11.CKA_MODULUS, nil), a(p11.CKA_PUBLIC_EXPONENT, nil)})
		if err != nil {
			t.Fatalf("C_GetAttributeValue(CKA_MODULUS): %v", err)
		}
		x.Modulus, x.Exponent = as[0].Value, as[1].Value
	case nssHolder:
		p := readNSS(t, filepath.Join(dir, nssKeygen+".json"))
		if n := new(big.Int).SetBytes(p.Modulus).BitLen(); n != 3072 {
			t.Fatalf("B's modulus has %d bits", n)
		}
		dk, err := c.GenerateKey(s, []*p11.Mechanism{p11.NewMechanism(p11.CKM_AES_KEY_GEN, nil)},
			nssAES(a(p11.CKA_VALUE_LEN, 32), a(p11.CKA_EXTRACTABLE, true), a(p11.CKA_ENCRYPT, true)))
		if err != nil {
			t.Fatalf("C_GenerateKey(AES-256 domain key): %v", err)
		}
		if x.KCV, err = nssKCV(c, s, dk); err != nil {
			t.Fatal(err)
		}
		pub, err := c.CreateObject(s, []*p11.Attribute{a(p11.CKA_CLASS, p11.CKO_PUBLIC_KEY), a(p11.CKA_KEY_TYPE, p11.CKK_RSA),
			a(p11.CKA_TOKEN, false), a(p11.CKA_MODULUS, p.Modulus), a(p11.CKA_PUBLIC_EXPONENT, p.Exponent), a(p11.CKA_WRAP, true)})
		if err != nil {
			t.Fatalf("C_CreateObject of B's public key: %v", err)
		}
		if x.Blob, err = c.WrapKey(s, oaep, pub, dk); err != nil {
			t.Fatalf("C_WrapKey(CKM_RSA_PKCS_OAEP, SHA-256): %v", err)
		}
		// Last: a failed C_Encrypt leaves the operation active.
		x.IV, x.AAD, x.Plain = bytes.Repeat([]byte{1}, 12), []byte("custos"), bytes.Repeat([]byte{2}, 32)
		gcm := p11.NewGCMParams(x.IV, x.AAD, 128)
		defer gcm.Free()
		if err := c.EncryptInit(s, []*p11.Mechanism{p11.NewMechanism(p11.CKM_AES_GCM, gcm)}, dk); err != nil {
			t.Fatalf("C_EncryptInit(CKM_AES_GCM): %v", err)
		}
		if x.Ciphertext, err = c.Encrypt(s, x.Plain); err != nil {
			// softokn 3.87 answers miekg/pkcs11's length query (C_Encrypt
			// with no output buffer) for GCM with 0 and CKR_OK, so the
			// second call fails; GCM is single-part only in softokn, so
			// C_EncryptUpdate is refused too. Decryption works. Without
			// GCM encryption on A, the check values alone show B has the
			// key (TestCheckNSS pins this code).
			var e p11.Error
			if !errors.As(err, &e) || e != p11.CKR_BUFFER_TOO_SMALL {
				t.Fatalf("C_Encrypt(CKM_AES_GCM): %v", err)
			}
			x.GCMNote = "C_Encrypt(CKM_AES_GCM) on A through miekg/pkcs11: " + err.Error()
		}
	case nssUnwrap:
		h := readNSS(t, filepath.Join(dir, nssHolder+".json"))
		if err := c.FindObjectsInit(s, []*p11.Attribute{a(p11.CKA_CLASS, p11.CKO_PRIVATE_KEY), a(p11.CKA_LABEL, nssRSALabel)}); err != nil {
			t.Fatalf("C_FindObjectsInit: %v", err)
		}
		hs, _, err := c.FindObjects(s, 2)
		_ = c.FindObjectsFinal(s)
		if err != nil || len(hs) != 1 {
			t.Fatalf("C_FindObjects of B's private key: %d objects, %v", len(hs), err)
		}
		tmpl := nssAES(a(p11.CKA_EXTRACTABLE, false), a(p11.CKA_ENCRYPT, true), a(p11.CKA_DECRYPT, true))
		bad := append([]byte(nil), h.Blob...)
		bad[len(bad)/2] ^= 0xff
		if _, err := c.UnwrapKey(s, oaep, hs[0], bad, tmpl); err != nil {
			x.TamperErr = err.Error()
		}
		sha1 := []*p11.Mechanism{p11.NewMechanism(p11.CKM_RSA_PKCS_OAEP,
			p11.NewOAEPParams(p11.CKM_SHA_1, p11.CKG_MGF1_SHA1, p11.CKZ_DATA_SPECIFIED, nil))}
		if _, err := c.UnwrapKey(s, sha1, hs[0], h.Blob, tmpl); err != nil {
			x.SHA1Err = err.Error()
		}
		k, err := c.UnwrapKey(s, oaep, hs[0], h.Blob, tmpl)
		if err != nil {
			t.Fatalf("C_UnwrapKey(CKM_RSA_PKCS_OAEP, SHA-256): %v", err)
		}
		if x.KCV, err = nssKCV(c, s, k); err != nil {
			t.Fatal(err)
		}
		if len(h.Ciphertext) > 0 {
			gcm := p11.NewGCMParams(h.IV, h.AAD, 128)
			defer gcm.Free()
			if err := c.DecryptInit(s, []*p11.Mechanism{p11.NewMechanism(p11.CKM_AES_GCM, gcm)}, k); err != nil {
				t.Fatalf("C_DecryptInit(CKM_AES_GCM): %v", err)
			}
			if x.Plain, err = c.Decrypt(s, h.Ciphertext); err != nil {
				t.Fatalf("C_Decrypt(CKM_AES_GCM) of A's ciphertext: %v", err)
			}
		}
	default:
		t.Fatalf("unknown role %q", role)
	}
	out, err := json.Marshal(&x)
	if err == nil {
		err = os.WriteFile(filepath.Join(dir, role+".json"), out, 0o600)
	}
	if err != nil {
		t.Fatal(err)
	}
}

// nssLogin initialises softokn with config and logs in to the token
// labelled label as user; the process ends with the role.
func nssLogin(t *testing.T, config, label string) (*p11.Ctx, p11.SessionHandle) {
	c := p11.New(nssModule)
	if c == nil {
		t.Fatalf("cannot load %s", nssModule)
	}
	params := append([]byte(config), 0)
	err := c.Initialize(p11.InitializeWithReserved(unsafe.Pointer(&params[0])))
	runtime.KeepAlive(params)
	if err != nil {
		t.Fatalf("C_Initialize: %v", err)
	}
	t.Cleanup(func() { _ = c.Finalize(); c.Destroy() })
	slots, err := c.GetSlotList(true)
	if err != nil {
		t.Fatalf("C_GetSlotList: %v", err)
	}
	for _, sl := range slots {
		if ti, err := c.GetTokenInfo(sl); err != nil || strings.TrimRight(ti.Label, " ") != label {
			continue
		}
		s, err := c.OpenSession(sl, p11.CKF_SERIAL_SESSION|p11.CKF_RW_SESSION)
		if err != nil {
			t.Fatalf("C_OpenSession: %v", err)
		}
		if err := c.Login(s, p11.CKU_USER, nssPIN); err != nil {
			t.Fatalf("C_Login: %v", err)
		}
		return c, s
	}
	t.Fatalf("NSS shows no token %q", label)
	return nil, 0
}

// nssAES is a session AES key, sensitive, usable as custos's domain key
// (CKA_WRAP: its check value is a wrap), with extra attributes.
func nssAES(extra ...*p11.Attribute) []*p11.Attribute {
	a := p11.NewAttribute
	return append([]*p11.Attribute{a(p11.CKA_CLASS, p11.CKO_SECRET_KEY), a(p11.CKA_KEY_TYPE, p11.CKK_AES),
		a(p11.CKA_TOKEN, false), a(p11.CKA_PRIVATE, true), a(p11.CKA_SENSITIVE, true),
		a(p11.CKA_WRAP, true), a(p11.CKA_UNWRAP, true)}, extra...)
}

// nssKCV computes a wrapping key's check value, version 1, in the token, as
// Backend.checkValue does for kindWrap (hsm/pkcs11/checkvalue.go; it is
// unexported, and Backend cannot pass softokn its library parameters):
// SHA-256("custos/kcv/1" || C_WrapKey(CKM_AES_KEY_WRAP_PAD, key,
// SHA-256("custos/kcv/1 wrap")))[:16]. softokn's CKM_AES_KEY_WRAP_PAD is
// not RFC 5649 (48 bytes, not 40), so these values differ from SoftHSM's for
// the same key; both ends here are softokn.
func nssKCV(c *p11.Ctx, s p11.SessionHandle, key p11.ObjectHandle) ([]byte, error) {
	label := []byte("custos/kcv/1")
	value := sha256.Sum256([]byte("custos/kcv/1 wrap"))
	a := p11.NewAttribute
	tmp, err := c.CreateObject(s, []*p11.Attribute{a(p11.CKA_CLASS, p11.CKO_SECRET_KEY), a(p11.CKA_KEY_TYPE, p11.CKK_AES),
		a(p11.CKA_TOKEN, false), a(p11.CKA_SENSITIVE, false), a(p11.CKA_EXTRACTABLE, true), a(p11.CKA_VALUE, value[:])})
	if err != nil {
		return nil, errors.New("C_CreateObject of the check value's key: " + err.Error())
	}
	defer func() { _ = c.DestroyObject(s, tmp) }()
	out, err := c.WrapKey(s, []*p11.Mechanism{p11.NewMechanism(p11.CKM_AES_KEY_WRAP_PAD, nil)}, key, tmp)
	if err != nil {
		return nil, errors.New("C_WrapKey(CKM_AES_KEY_WRAP_PAD) for the check value: " + err.Error())
	}
	sum := sha256.Sum256(append(label, out...))
	return sum[:16], nil
}
