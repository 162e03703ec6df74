package custos_test

import (
	"bytes"
	"context"
	"crypto/rand"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	custos "github.com/custos-kms/custos/clients/go"
	"github.com/custos-kms/custos/clients/go/envelope"
	"github.com/custos-kms/custos/internal/node/nodetest"
	custosv1 "github.com/custos-kms/custos/proto/custos/v1"
)

func testCtx(t *testing.T) context.Context {
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	t.Cleanup(cancel)
	return ctx
}

func wantCode(t *testing.T, what string, err error, code codes.Code) {
	t.Helper()
	if got := status.Code(err); got != code {
		t.Errorf("%s: code = %v (%v), want %v", what, got, err, code)
	}
}

var just = custos.Justification{Reason: custosv1.Reason_REASON_CUSTOMER_INITIATED, Text: "clients/go test"}

func dial(t *testing.T, h *nodetest.Harness, addrs ...string) *custos.Client {
	t.Helper()
	if len(addrs) == 0 {
		addrs = []string{h.Addr}
	}
	c, err := custos.Dial(context.Background(), custos.Config{Addrs: addrs, TLS: h.ClientTLS(t, "app")})
	if err != nil {
		t.Fatalf("Dial: %v", err)
	}
	t.Cleanup(func() { c.Close() })
	return c
}

func randBytes(t *testing.T, n int) []byte {
	b := make([]byte, n)
	if _, err := rand.Read(b); err != nil {
		t.Fatal(err)
	}
	return b
}

// encryptBytes encrypts pt into an envelope with EncryptStream.
func encryptBytes(t *testing.T, c *custos.Client, key string, ec map[string]string, pt []byte, opts ...custos.Option) []byte {
	t.Helper()
	var buf bytes.Buffer
	w, err := c.EncryptStream(testCtx(t), &buf, key, ec, opts...)
	if err != nil {
		t.Fatalf("EncryptStream: %v", err)
	}
	if _, err := w.Write(pt); err != nil {
		t.Fatalf("Write: %v", err)
	}
	if err := w.Close(); err != nil {
		t.Fatalf("Close: %v", err)
	}
	return buf.Bytes()
}

func decryptBytes(c *custos.Client, ctx context.Context, ct []byte, opts ...custos.Option) ([]byte, *envelope.Header, error) {
	r, h, err := c.DecryptStream(ctx, bytes.NewReader(ct), just, opts...)
	if err != nil {
		return nil, h, err
	}
	pt, err := io.ReadAll(r)
	return pt, h, err
}

func writeFile(t *testing.T, dir, name string, b []byte) string {
	t.Helper()
	p := filepath.Join(dir, name)
	if err := os.WriteFile(p, b, 0o600); err != nil {
		t.Fatal(err)
	}
	return p
}

// wantNoFile fails unless path does not exist and dir holds no temporary
// file left behind.
func wantNoFile(t *testing.T, path string) {
	t.Helper()
	if _, err := os.Stat(path); !errors.Is(err, os.ErrNotExist) {
		t.Errorf("%s exists after a failed decryption (stat: %v)", path, err)
	}
	ents, _ := os.ReadDir(filepath.Dir(path))
	for _, e := range ents {
		if strings.Contains(e.Name(), ".tmp-") {
			t.Errorf("temporary file %s left behind", e.Name())
		}
	}
}

// One node serves every subtest: starting a node costs a SoftHSM token and
// a Raft election. Each subtest uses its own keys.
func TestClient(t *testing.T) {
	h := nodetest.Start(t)
	c := dial(t, h)

	t.Run("key lifecycle", func(t *testing.T) {
		ctx := testCtx(t)
		k, err := c.CreateKey(ctx, "life", "lifecycle test")
		if err != nil {
			t.Fatalf("CreateKey: %v", err)
		}
		if k.GetName() != "life" || k.GetPrimaryVersion() != 1 || k.GetState() != custosv1.KeyState_KEY_STATE_ENABLED {
			t.Errorf("CreateKey = %v", k)
		}
		_, err = c.CreateKey(ctx, "life", "")
		wantCode(t, "CreateKey again", err, codes.AlreadyExists)
		if err != nil && !strings.Contains(err.Error(), `"life"`) {
			t.Errorf("error %q does not name the key", err)
		}
		if k, err = c.GetKey(ctx, "life"); err != nil || k.GetDescription() != "lifecycle test" {
			t.Errorf("GetKey = %v, %v", k, err)
		}
		if k, err = c.RotateKey(ctx, "life"); err != nil || k.GetPrimaryVersion() != 2 {
			t.Errorf("RotateKey = %v, %v", k, err)
		}
		if k, err = c.DisableKey(ctx, "life"); err != nil || k.GetState() != custosv1.KeyState_KEY_STATE_DISABLED {
			t.Errorf("DisableKey = %v, %v", k, err)
		}
		// Re-enabling loosens access: SetKeyState is refused, a statement
		// signed by the officer quorum (2 of 3) does it.
		_, err = c.EnableKey(ctx, "life")
		wantCode(t, "EnableKey by SetKeyState", err, codes.PermissionDenied)
		enableByQuorum(t, h, c, "life")
		if k, err = c.GetKey(ctx, "life"); err != nil || k.GetState() != custosv1.KeyState_KEY_STATE_ENABLED {
			t.Errorf("after EnableKey statement: %v, %v", k, err)
		}
		if k, err = c.SetMinDecryptionVersion(ctx, "life", 2); err != nil || k.GetMinDecryptionVersion() != 2 {
			t.Errorf("SetMinDecryptionVersion = %v, %v", k, err)
		}
	})

	t.Run("list keys follows pages", func(t *testing.T) {
		ctx := testCtx(t)
		// More keys than one default page (100).
		for i := range 105 {
			if _, err := c.CreateKey(ctx, fmt.Sprintf("list-%03d", i), ""); err != nil {
				t.Fatalf("CreateKey: %v", err)
			}
		}
		keys, err := c.ListKeys(ctx)
		if err != nil {
			t.Fatalf("ListKeys: %v", err)
		}
		n := 0
		prev := ""
		for _, k := range keys {
			if k.GetName() <= prev {
				t.Errorf("ListKeys not in name order: %q after %q", k.GetName(), prev)
			}
			prev = k.GetName()
			if strings.HasPrefix(k.GetName(), "list-") {
				n++
			}
		}
		if n != 105 {
			t.Errorf("ListKeys returned %d list-* keys, want 105", n)
		}
	})

	t.Run("unknown key is NotFound", func(t *testing.T) {
		ctx := testCtx(t)
		_, err := c.GetKey(ctx, "no-such-key")
		wantCode(t, "GetKey", err, codes.NotFound)
		_, err = c.GenerateDataKey(ctx, "no-such-key", nil)
		wantCode(t, "GenerateDataKey", err, codes.NotFound)
		_, err = c.EncryptStream(ctx, io.Discard, "no-such-key", nil)
		wantCode(t, "EncryptStream", err, codes.NotFound)
		_, err = c.Keys().GetKey(ctx, &custosv1.GetKeyRequest{Name: "no-such-key"})
		wantCode(t, "Keys().GetKey", err, codes.NotFound)
	})

	t.Run("data key round trip", func(t *testing.T) {
		ctx := testCtx(t)
		if _, err := c.CreateKey(ctx, "dk", ""); err != nil {
			t.Fatal(err)
		}
		ec := map[string]string{"dept": "hr", "app": "payroll"}
		dk, err := c.GenerateDataKey(ctx, "dk", ec)
		if err != nil {
			t.Fatalf("GenerateDataKey: %v", err)
		}
		if len(dk.Plaintext) != 32 || len(dk.Wrapped) == 0 || dk.Key != "dk" || dk.Version != 1 {
			t.Fatalf("DataKey: %d-byte plaintext, %d-byte wrapped, key %q version %d", len(dk.Plaintext), len(dk.Wrapped), dk.Key, dk.Version)
		}
		want := bytes.Clone(dk.Plaintext)
		dk.Zero()
		got, err := c.DecryptDataKey(ctx, dk.Wrapped, ec, just)
		if err != nil {
			t.Fatalf("DecryptDataKey: %v", err)
		}
		if !bytes.Equal(got, want) {
			t.Error("DecryptDataKey returned a different key")
		}
		if _, err := c.DecryptDataKey(ctx, dk.Wrapped, map[string]string{"dept": "it", "app": "payroll"}, just); err == nil {
			t.Error("DecryptDataKey with the wrong context succeeded")
		}
		// BatchDecrypt: chunks of 1000, per-item errors, results in order.
		items := make([]custos.DecryptItem, 1003)
		for i := range items {
			items[i] = custos.DecryptItem{Ciphertext: dk.Wrapped, EncryptionContext: ec, Justification: just}
		}
		items[1] = custos.DecryptItem{Ciphertext: []byte("garbage"), EncryptionContext: ec, Justification: just}
		items[1001] = custos.DecryptItem{Ciphertext: dk.Wrapped, EncryptionContext: map[string]string{"dept": "it"}, Justification: just}
		res, err := c.BatchDecrypt(ctx, items)
		if err != nil || len(res) != len(items) {
			t.Fatalf("BatchDecrypt: %d results, %v", len(res), err)
		}
		for i, r := range res {
			switch i {
			case 1:
				if status.Code(r.Err) != codes.InvalidArgument || r.DecisionSeq != 0 || r.Plaintext != nil {
					t.Errorf("malformed item: %+v", r)
				}
			case 1001:
				if status.Code(r.Err) != codes.InvalidArgument || r.DecisionSeq == 0 || r.Plaintext != nil {
					t.Errorf("item under the wrong context: %+v", r)
				}
			default:
				if r.Err != nil || !bytes.Equal(r.Plaintext, want) || r.DecisionSeq == 0 || r.Key != "dk" {
					t.Fatalf("item %d: %+v", i, r)
				}
			}
		}
	})

	t.Run("small payload Encrypt/Decrypt", func(t *testing.T) {
		ctx := testCtx(t)
		if _, err := c.CreateKey(ctx, "small", ""); err != nil {
			t.Fatal(err)
		}
		ec := map[string]string{"k": "v"}
		ct, err := c.Encrypt(ctx, "small", []byte("hello"), ec)
		if err != nil {
			t.Fatalf("Encrypt: %v", err)
		}
		pt, err := c.Decrypt(ctx, ct, ec, just)
		if err != nil || string(pt) != "hello" {
			t.Errorf("Decrypt = %q, %v", pt, err)
		}
	})

	t.Run("stream round trip", func(t *testing.T) {
		if _, err := c.CreateKey(testCtx(t), "stream", ""); err != nil {
			t.Fatal(err)
		}
		ec := map[string]string{"file": "x"}
		for _, tc := range []struct {
			name string
			size int
			opts []custos.Option
		}{
			{"0 B", 0, nil},
			{"1 B", 1, nil},
			{"3 MiB", 3 << 20, nil},
			{"3 MiB in 4 KiB segments", 3 << 20, []custos.Option{custos.WithSegmentSize(4096)}},
		} {
			t.Run(tc.name, func(t *testing.T) {
				pt := randBytes(t, tc.size)
				ct := encryptBytes(t, c, "stream", ec, pt, tc.opts...)
				got, hdr, err := decryptBytes(c, testCtx(t), ct, custos.WithExpectedContext(map[string]string{"file": "x"}))
				if err != nil {
					t.Fatalf("decrypt: %v", err)
				}
				if !bytes.Equal(got, pt) {
					t.Errorf("decrypted %d bytes differ from the %d encrypted", len(got), len(pt))
				}
				if hdr.Key != "stream" || hdr.KeyVersion != 1 || hdr.Context["file"] != "x" {
					t.Errorf("header: key %q version %d context %v", hdr.Key, hdr.KeyVersion, hdr.Context)
				}
			})
		}
	})

	t.Run("expected context mismatch is refused before Decrypt", func(t *testing.T) {
		ctx := testCtx(t)
		if _, err := c.CreateKey(ctx, "ctxcheck", ""); err != nil {
			t.Fatal(err)
		}
		ct := encryptBytes(t, c, "ctxcheck", map[string]string{"dept": "hr"}, []byte("secret"))
		for _, want := range []map[string]string{{"dept": "it"}, {"tenant": "a"}} {
			_, _, err := decryptBytes(c, ctx, ct, custos.WithExpectedContext(want))
			if !errors.Is(err, custos.ErrContextMismatch) {
				t.Errorf("expected context %v: error %v, want ErrContextMismatch", want, err)
			}
		}
		dir := t.TempDir()
		in, out := writeFile(t, dir, "in.cst", ct), filepath.Join(dir, "out.txt")
		_, err := c.DecryptFile(ctx, in, out, just, custos.WithExpectedContext(map[string]string{"dept": "it"}))
		if !errors.Is(err, custos.ErrContextMismatch) {
			t.Errorf("DecryptFile: error %v, want ErrContextMismatch", err)
		}
		wantNoFile(t, out)
	})

	t.Run("wrong context in the header is refused by custos", func(t *testing.T) {
		ctx := testCtx(t)
		if _, err := c.CreateKey(ctx, "wrongctx", ""); err != nil {
			t.Fatal(err)
		}
		ct := encryptBytes(t, c, "wrongctx", map[string]string{"dept": "hr"}, []byte("secret"))
		// Same length value: the header stays well formed.
		bad := bytes.Replace(ct, []byte("hr"), []byte("it"), 1)
		if bytes.Equal(bad, ct) {
			t.Fatal("context value not found in the envelope")
		}
		if _, _, err := decryptBytes(c, ctx, bad); err == nil {
			t.Error("decrypting with a changed context succeeded")
		}
	})

	t.Run("tampered and truncated files", func(t *testing.T) {
		ctx := testCtx(t)
		if _, err := c.CreateKey(ctx, "tamper", ""); err != nil {
			t.Fatal(err)
		}
		pt := randBytes(t, 200<<10+123) // 50 full segments and a final one of 123 bytes
		ct := encryptBytes(t, c, "tamper", nil, pt, custos.WithSegmentSize(4096))
		flipped := bytes.Clone(ct)
		flipped[len(flipped)-100] ^= 1
		middle := bytes.Clone(ct)
		middle[len(middle)/2] ^= 0x80
		for _, tc := range []struct {
			name string
			ct   []byte
		}{
			{"bit flip near the end", flipped},
			{"bit flip in the middle", middle},
			{"truncated by one byte", ct[:len(ct)-1]},
			{"truncated at a segment boundary", ct[:len(ct)-(len(pt)%4096+16)]},
			{"header only", ct[:len(ct)-len(pt)-16*(len(pt)/4096+1)]},
			{"extended", append(bytes.Clone(ct), 0)},
		} {
			t.Run(tc.name, func(t *testing.T) {
				_, _, err := decryptBytes(c, ctx, tc.ct)
				if !errors.Is(err, envelope.ErrDecryption) {
					t.Errorf("DecryptStream: error %v, want envelope.ErrDecryption", err)
				}
				dir := t.TempDir()
				in, out := writeFile(t, dir, "in.cst", tc.ct), filepath.Join(dir, "out.bin")
				if _, err := c.DecryptFile(ctx, in, out, just); err == nil {
					t.Error("DecryptFile succeeded")
				}
				wantNoFile(t, out)
			})
		}
		t.Run("not an envelope", func(t *testing.T) {
			dir := t.TempDir()
			in, out := writeFile(t, dir, "in.cst", []byte("plain text, not an envelope")), filepath.Join(dir, "out.bin")
			_, err := c.DecryptFile(ctx, in, out, just)
			if !errors.Is(err, envelope.ErrMalformed) {
				t.Errorf("DecryptFile: error %v, want envelope.ErrMalformed", err)
			}
			wantNoFile(t, out)
		})
	})

	t.Run("files", func(t *testing.T) {
		ctx := testCtx(t)
		if _, err := c.CreateKey(ctx, "files", ""); err != nil {
			t.Fatal(err)
		}
		dir := t.TempDir()
		pt := randBytes(t, 1<<20+17)
		in := writeFile(t, dir, "plain.bin", pt)
		enc, dec := filepath.Join(dir, "plain.bin.cst"), filepath.Join(dir, "plain.out")
		h, err := c.EncryptFile(ctx, in, enc, "files", map[string]string{"f": "1"})
		if err != nil {
			t.Fatalf("EncryptFile: %v", err)
		}
		if h.Key != "files" || h.KeyVersion != 1 {
			t.Errorf("EncryptFile header: key %q version %d", h.Key, h.KeyVersion)
		}
		if _, err := c.DecryptFile(ctx, enc, dec, just); err != nil {
			t.Fatalf("DecryptFile: %v", err)
		}
		if got, _ := os.ReadFile(dec); !bytes.Equal(got, pt) {
			t.Error("DecryptFile output differs")
		}

		// "-" means the streams given by WithStdio.
		var ctBuf, ptBuf bytes.Buffer
		if _, err := c.EncryptFile(ctx, "-", "-", "files", nil, custos.WithStdio(bytes.NewReader(pt), &ctBuf)); err != nil {
			t.Fatalf("EncryptFile(-, -): %v", err)
		}
		if _, err := c.DecryptFile(ctx, "-", "-", just, custos.WithStdio(&ctBuf, &ptBuf)); err != nil {
			t.Fatalf("DecryptFile(-, -): %v", err)
		}
		if !bytes.Equal(ptBuf.Bytes(), pt) {
			t.Error("stdin/stdout round trip differs")
		}

		// A missing input or a failed call leaves no output file.
		missingOut := filepath.Join(dir, "never.cst")
		if _, err := c.EncryptFile(ctx, filepath.Join(dir, "nope"), missingOut, "files", nil); err == nil {
			t.Error("EncryptFile of a missing input succeeded")
		}
		wantNoFile(t, missingOut)
		if _, err := c.EncryptFile(ctx, in, missingOut, "no-such-key", nil); status.Code(err) != codes.NotFound {
			t.Errorf("EncryptFile with an unknown key: %v, want NotFound", err)
		}
		wantNoFile(t, missingOut)
		cctx, cancel := context.WithCancel(ctx)
		cancel()
		if _, err := c.EncryptFile(cctx, in, missingOut, "files", nil); err == nil {
			t.Error("EncryptFile with a cancelled context succeeded")
		}
		wantNoFile(t, missingOut)
	})

	t.Run("disable key: decrypt is FailedPrecondition", func(t *testing.T) {
		ctx := testCtx(t)
		if _, err := c.CreateKey(ctx, "dis", ""); err != nil {
			t.Fatal(err)
		}
		ct := encryptBytes(t, c, "dis", nil, []byte("data"))
		if _, err := c.DisableKey(ctx, "dis"); err != nil {
			t.Fatal(err)
		}
		_, _, err := decryptBytes(c, ctx, ct)
		wantCode(t, "decrypt under a disabled key", err, codes.FailedPrecondition)
		dir := t.TempDir()
		in, out := writeFile(t, dir, "in.cst", ct), filepath.Join(dir, "out")
		_, err = c.DecryptFile(ctx, in, out, just)
		wantCode(t, "DecryptFile under a disabled key", err, codes.FailedPrecondition)
		wantNoFile(t, out)
		_, err = c.EncryptStream(ctx, io.Discard, "dis", nil)
		wantCode(t, "EncryptStream under a disabled key", err, codes.FailedPrecondition)
		enableByQuorum(t, h, c, "dis")
		if got, _, err := decryptBytes(c, ctx, ct); err != nil || string(got) != "data" {
			t.Errorf("decrypt after EnableKey statement = %q, %v", got, err)
		}
	})

	t.Run("rotate and min decryption version", func(t *testing.T) {
		ctx := testCtx(t)
		if _, err := c.CreateKey(ctx, "rot", ""); err != nil {
			t.Fatal(err)
		}
		old := encryptBytes(t, c, "rot", nil, []byte("old"))
		if _, err := c.RotateKey(ctx, "rot"); err != nil {
			t.Fatal(err)
		}
		fresh := encryptBytes(t, c, "rot", nil, []byte("new"))
		if got, h, err := decryptBytes(c, ctx, old); err != nil || string(got) != "old" || h.KeyVersion != 1 {
			t.Errorf("old file after rotation = %q, %v (header %+v)", got, err, h)
		}
		if got, h, err := decryptBytes(c, ctx, fresh); err != nil || string(got) != "new" || h.KeyVersion != 2 {
			t.Errorf("new file = %q, %v (header version %v), want version 2", got, err, h)
		}
		if _, err := c.SetMinDecryptionVersion(ctx, "rot", 2); err != nil {
			t.Fatal(err)
		}
		_, _, err := decryptBytes(c, ctx, old)
		wantCode(t, "decrypt a version-1 file after SetMinDecryptionVersion(2)", err, codes.FailedPrecondition)
		if got, _, err := decryptBytes(c, ctx, fresh); err != nil || string(got) != "new" {
			t.Errorf("version-2 file after SetMinDecryptionVersion(2) = %q, %v", got, err)
		}
	})

	t.Run("failover past a dead address", func(t *testing.T) {
		ctx := testCtx(t)
		fc := dial(t, h, nodetest.RefusedAddr(t), h.Addr)
		// CreateKey is not repeated after Unavailable, but the dead
		// address is skipped before anything is sent.
		if _, err := fc.CreateKey(ctx, "failover", ""); err != nil {
			t.Fatalf("CreateKey with a dead first address: %v", err)
		}
		if _, err := fc.GetKey(ctx, "failover"); err != nil {
			t.Fatalf("GetKey with a dead first address: %v", err)
		}
		if _, err := fc.GenerateDataKey(ctx, "failover", nil); err != nil {
			t.Fatalf("GenerateDataKey with a dead first address: %v", err)
		}
	})

	t.Run("no address reachable is Unavailable", func(t *testing.T) {
		ctx := testCtx(t)
		a, b := nodetest.RefusedAddr(t), nodetest.RefusedAddr(t)
		dc := dial(t, h, a, b)
		_, err := dc.GetKey(ctx, "x")
		wantCode(t, "GetKey", err, codes.Unavailable)
		if err != nil && (!strings.Contains(err.Error(), a) || !strings.Contains(err.Error(), b)) {
			t.Errorf("error %q does not name both addresses", err)
		}
		_, err = dial(t, h, a).GetKey(ctx, "x")
		wantCode(t, "GetKey, one address", err, codes.Unavailable)
	})

	t.Run("client survives a node restart", func(t *testing.T) {
		ctx := testCtx(t)
		if _, err := c.CreateKey(ctx, "restart", ""); err != nil {
			t.Fatal(err)
		}
		ct := encryptBytes(t, c, "restart", nil, []byte("persisted"))
		h.Restart(t)
		var (
			got []byte
			err error
		)
		// The node may still be electing itself leader.
		for deadline := time.Now().Add(30 * time.Second); time.Now().Before(deadline); time.Sleep(200 * time.Millisecond) {
			if got, _, err = decryptBytes(c, ctx, ct); status.Code(err) != codes.Unavailable {
				break
			}
		}
		if err != nil || string(got) != "persisted" {
			t.Errorf("decrypt after restart = %q, %v", got, err)
		}
	})
}
