package security

import (
	"bytes"
	"context"
	"crypto/rand"
	"encoding/base64"
	"encoding/hex"
	"encoding/pem"
	"os"
	"path/filepath"
	"regexp"
	"testing"

	"google.golang.org/grpc/status"

	custos "github.com/custos-kms/custos/clients/go"
	custosv1 "github.com/custos-kms/custos/proto/custos/v1"
)

// forms returns b raw, in hex (both cases) and in the four base64 forms.
func forms(b []byte) [][]byte {
	return [][]byte{b,
		[]byte(hex.EncodeToString(b)), bytes.ToUpper([]byte(hex.EncodeToString(b))),
		[]byte(base64.StdEncoding.EncodeToString(b)), []byte(base64.URLEncoding.EncodeToString(b)),
		[]byte(base64.RawStdEncoding.EncodeToString(b)), []byte(base64.RawURLEncoding.EncodeToString(b))}
}

type secret struct {
	name  string
	forms [][]byte
}

func findSecrets(t *testing.T, where string, data []byte, secrets []secret) {
	t.Helper()
	for _, s := range secrets {
		for i, f := range s.forms {
			if len(f) > 0 && bytes.Contains(data, f) {
				t.Errorf("%s contains %s (form %d)", where, s.name, i)
			}
		}
	}
}

// TestSecretsStayOut runs a workload against a node logging at debug level
// and checks that no data key, plaintext, PIN, officer private key or
// wrapped data key shows in its logs, in the errors clients get, in the
// ledger, or in the files of its data directory (Raft log, snapshots,
// ledger store).
func TestSecretsStayOut(t *testing.T) {
	h, logs := startLogged(t, nil)
	kc := custosv1.NewKeyServiceClient(h.Conn(t, "app"))
	mallory := custosv1.NewKeyServiceClient(h.Conn(t, "mallory"))
	gc := custosv1.NewGovernanceServiceClient(h.Conn(t, "app"))
	if _, err := kc.CreateKey(ctx(t), &custosv1.CreateKeyRequest{Name: "secrets"}); err != nil {
		t.Fatal(err)
	}
	ec := map[string]string{"tenant": "t1"}
	dk, err := kc.GenerateDataKey(ctx(t), &custosv1.GenerateDataKeyRequest{Key: "secrets", EncryptionContext: ec})
	if err != nil {
		t.Fatal(err)
	}
	nonce := make([]byte, 8)
	_, _ = rand.Read(nonce)
	marker := []byte("CUSTOS-PLAINTEXT-MARKER-" + hex.EncodeToString(nonce))

	var errs []error
	note := func(err error) {
		if err != nil {
			errs = append(errs, err)
		}
	}
	dec := func(c custosv1.KeyServiceClient, ct []byte, ctx2 map[string]string, j *custosv1.Justification) *custosv1.DecryptResponse {
		r, err := c.Decrypt(ctx(t), &custosv1.DecryptRequest{Ciphertext: ct, EncryptionContext: ctx2, Justification: j})
		note(err)
		return r
	}
	if r := dec(kc, dk.GetWrappedDataKey(), ec, customer); !bytes.Equal(r.GetPlaintext(), dk.GetPlaintext()) {
		t.Fatal("allowed Decrypt did not return the data key")
	}
	if r := dec(mallory, dk.GetWrappedDataKey(), ec, customer); r != nil {
		t.Fatal("denied Decrypt returned something")
	}
	if r := dec(kc, dk.GetWrappedDataKey(), ec, provider); r != nil {
		t.Fatal("pending Decrypt returned something")
	}
	if r := dec(kc, dk.GetWrappedDataKey(), map[string]string{"tenant": "t2"}, customer); r != nil {
		t.Fatal("wrong-context Decrypt returned something")
	}
	enc, err := kc.Encrypt(ctx(t), &custosv1.EncryptRequest{Key: "secrets", Plaintext: marker, EncryptionContext: ec})
	if err != nil {
		t.Fatal(err)
	}
	if r := dec(kc, enc.GetCiphertext(), ec, customer); !bytes.Equal(r.GetPlaintext(), marker) {
		t.Fatal("Decrypt of the Encrypt ciphertext did not return the marker")
	}
	dec(kc, enc.GetCiphertext(), nil, customer) // wrong context
	dec(mallory, enc.GetCiphertext(), ec, customer)
	// A tampered wrapped key.
	bad := bytes.Clone(dk.GetWrappedDataKey())
	bad[len(bad)-1] ^= 1
	dec(kc, bad, ec, customer)
	_, err = mallory.GenerateDataKey(ctx(t), &custosv1.GenerateDataKeyRequest{Key: "secrets"})
	note(err)
	setPolicy(t, h, gc, "secrets", func(p *custosv1.KeyPolicy) { p.MaxDecryptsPerPrincipalPerHour = 1000 })
	raw, recs := export(t, h, 0)
	if len(errs) < 6 || len(recs) == 0 {
		t.Fatalf("workload: %d errors, %d records", len(errs), len(recs))
	}

	secrets := []secret{
		{"the data key", forms(dk.GetPlaintext())},
		{"the plaintext marker", [][]byte{marker, []byte(hex.EncodeToString(marker)), []byte(base64.StdEncoding.EncodeToString(marker))}},
		{"the wrapped data key", forms(dk.GetWrappedDataKey())},
	}
	for _, o := range h.Officers {
		b, err := os.ReadFile(o.KeyFile)
		if err != nil {
			t.Fatal(err)
		}
		blk, _ := pem.Decode(b)
		if blk == nil {
			t.Fatalf("%s: no PEM block", o.KeyFile)
		}
		scalar, err := o.Key.Bytes()
		if err != nil {
			t.Fatalf("%s: %v", o.Name, err)
		}
		s := secret{name: o.Name + "'s private key", forms: forms(scalar)}
		s.forms = append(s.forms, blk.Bytes, []byte(base64.StdEncoding.EncodeToString(blk.Bytes))[:64])
		secrets = append(secrets, s)
	}
	// The PIN is short: look for it as a token of its own in text.
	pin := regexp.MustCompile(`(^|[^0-9A-Za-z])` + regexp.QuoteMeta(h.Token.PIN) + `($|[^0-9A-Za-z])`)

	t.Run("logs", func(t *testing.T) {
		l := logs.Bytes()
		if len(l) == 0 || !bytes.Contains(l, []byte(`"level":"DEBUG"`)) && !bytes.Contains(l, []byte(`"level":"INFO"`)) {
			t.Fatalf("no logs captured (%d bytes)", len(l))
		}
		findSecrets(t, "the node's logs", l, secrets)
		if m := pin.Find(l); m != nil {
			t.Errorf("the node's logs contain the PIN: %q", m)
		}
	})
	t.Run("errors", func(t *testing.T) {
		for _, err := range errs {
			st := status.Convert(err)
			text := []byte(err.Error())
			for _, d := range st.Details() {
				text = append(text, []byte(" "+stringOf(d))...)
			}
			findSecrets(t, "error "+st.Message(), text, secrets)
			if pin.Match(text) {
				t.Errorf("error %q contains the PIN", text)
			}
		}
	})
	t.Run("ledger", func(t *testing.T) {
		findSecrets(t, "the ledger export", bytes.Join(raw, nil), secrets)
	})
	t.Run("data directory", func(t *testing.T) {
		dataSecrets := secrets[:3] // key material, marker, wrapped key
		n := 0
		err := filepath.WalkDir(h.Config.DataDir, func(path string, d os.DirEntry, err error) error {
			if err != nil || d.IsDir() {
				return err
			}
			b, err := os.ReadFile(path)
			if err != nil {
				return err
			}
			n++
			findSecrets(t, path, b, dataSecrets)
			return nil
		})
		if err != nil {
			t.Fatal(err)
		}
		if n == 0 {
			t.Fatal("no files in the data directory")
		}
	})
	t.Run("clients/go DataKey.Zero", func(t *testing.T) {
		c, err := custos.Dial(context.Background(), custos.Config{Addrs: []string{h.Addr}, TLS: h.ClientTLS(t, "app")})
		if err != nil {
			t.Fatal(err)
		}
		defer c.Close()
		k, err := c.GenerateDataKey(ctx(t), "secrets", nil)
		if err != nil {
			t.Fatal(err)
		}
		buf := k.Plaintext
		if len(buf) != 32 || bytes.Equal(buf, make([]byte, 32)) {
			t.Fatalf("data key %d bytes, all zero: %v", len(buf), bytes.Equal(buf, make([]byte, 32)))
		}
		k.Zero()
		if !bytes.Equal(buf, make([]byte, 32)) || k.Plaintext != nil {
			t.Errorf("after Zero the buffer is %x, Plaintext %v", buf, k.Plaintext)
		}
		k.Zero() // idempotent
		var nilKey *custos.DataKey
		nilKey.Zero()
	})
}

func stringOf(v any) string {
	if s, ok := v.(interface{ String() string }); ok {
		return s.String()
	}
	return ""
}
