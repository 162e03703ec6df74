package kmsplugin

import (
	"bytes"
	"context"
	"strings"
	"sync"
	"testing"
	"time"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
	kmsapi "k8s.io/kms/apis/v2"

	"github.com/custos-kms/custos/kms"
	custosv1 "github.com/custos-kms/custos/proto/custos/v1"
)

func seed() []byte { return bytes.Repeat([]byte{0x5e}, 32) }

func status0(t *testing.T, p *Plugin) *kmsapi.StatusResponse {
	t.Helper()
	r, err := p.Status(context.Background(), &kmsapi.StatusRequest{})
	if err != nil {
		t.Fatalf("Status: %v", err)
	}
	return r
}

func TestEncryptDecryptThroughCustos(t *testing.T) {
	f := newFake("k8s-secrets")
	p, _ := newPlugin(t, f, func(c *Config) {
		c.Ticket = "CHG-1"
		c.Context = map[string]string{"cluster": "prod-tokyo"}
	})
	ctx := context.Background()
	pt := seed()
	enc, err := p.Encrypt(ctx, &kmsapi.EncryptRequest{Plaintext: append([]byte(nil), pt...), Uid: "u-1"})
	if err != nil {
		t.Fatalf("Encrypt: %v", err)
	}
	if want := KeyID("k8s-secrets", 1, f.key.Versions[0].KeyCheckValue); enc.KeyId != want {
		t.Errorf("key_id = %q, want %q", enc.KeyId, want)
	}
	if !strings.HasPrefix(enc.KeyId, "custos/k8s-secrets/v1/") || len(enc.Annotations) != 0 {
		t.Errorf("key_id %q, annotations %v", enc.KeyId, enc.Annotations)
	}
	dec, err := p.Decrypt(ctx, &kmsapi.DecryptRequest{Ciphertext: enc.Ciphertext, KeyId: enc.KeyId, Uid: "u-2"})
	if err != nil {
		t.Fatalf("Decrypt: %v", err)
	}
	if !bytes.Equal(dec.Plaintext, pt) {
		t.Error("Decrypt returned another seed")
	}
	d := f.lastDecrypt
	if got := d.GetEncryptionContext(); len(got) != 2 || got[PurposeContextKey] != PurposeContextValue || got["cluster"] != "prod-tokyo" {
		t.Errorf("decrypt context = %v", got)
	}
	j := d.GetJustification()
	if j.GetReason() != custosv1.Reason_REASON_CUSTOMER_WORKFLOW || j.GetText() != DefaultText+" (uid u-2)" || j.GetTicket() != "CHG-1" {
		t.Errorf("justification = %v", j)
	}
}

func TestEncryptRefusesWhatIsNoSeed(t *testing.T) {
	f := newFake("k")
	p, _ := newPlugin(t, f, nil)
	for _, n := range []int{0, 16, 31, 65, 4096} {
		_, err := p.Encrypt(context.Background(), &kmsapi.EncryptRequest{Plaintext: make([]byte, n)})
		if status.Code(err) != codes.InvalidArgument {
			t.Errorf("Encrypt of %d bytes: %v, want InvalidArgument", n, err)
		}
	}
	if _, e, _ := f.counts(); e != 0 {
		t.Errorf("custos Encrypt called %d times for refused plaintexts", e)
	}
	// The seed is cleared once sealed.
	s := seed()
	if _, err := p.Encrypt(context.Background(), &kmsapi.EncryptRequest{Plaintext: s}); err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(s, make([]byte, len(s))) {
		t.Error("the request's seed was not cleared after Encrypt")
	}
}

func TestDecryptRefusesOtherKeysWithoutAskingCustos(t *testing.T) {
	f := newFake("k8s-secrets")
	p, _ := newPlugin(t, f, nil)
	for name, ct := range map[string][]byte{
		"other key": sealed("payroll", 1, seed()),
		"garbage":   []byte("not a ciphertext"),
		"empty":     nil,
		"data key":  append([]byte{wrappedV1, 0x01}, sealed("k8s-secrets", 1, seed())[2:]...),
	} {
		_, err := p.Decrypt(context.Background(), &kmsapi.DecryptRequest{Ciphertext: ct})
		want := codes.InvalidArgument
		if name == "other key" {
			want = codes.FailedPrecondition
		}
		if status.Code(err) != want {
			t.Errorf("%s: %v, want %v", name, err, want)
		}
	}
	if _, _, d := f.counts(); d != 0 {
		t.Errorf("custos Decrypt called %d times", d)
	}
}

func TestNewRefusesBadConfig(t *testing.T) {
	f := newFake("k")
	if _, err := New(Config{Keys: f, Key: "k", Context: map[string]string{PurposeContextKey: "x"}}); err == nil {
		t.Error("New accepted a context that overrides the purpose")
	}
	if _, err := New(Config{Keys: f}); err == nil {
		t.Error("New accepted no key name")
	}
	if _, err := New(Config{Key: "k"}); err == nil {
		t.Error("New accepted no key service")
	}
}

// Status probes custos with GetKey and Encrypt, never Decrypt (every
// custos decrypt is a ledger record), and reuses its answer for the TTL.
func TestStatusProbesWithoutDecryptingAndIsCached(t *testing.T) {
	f := newFake("k")
	p, clk := newPlugin(t, f, func(c *Config) { c.StatusTTL = 20 * time.Second })
	r := status0(t, p)
	if r.Version != "v2" || r.Healthz != "ok" || r.KeyId != KeyID("k", 1, f.key.Versions[0].KeyCheckValue) {
		t.Fatalf("Status = %v", r)
	}
	for range 10 {
		status0(t, p)
		clk.add(time.Second)
	}
	if g, e, d := f.counts(); g != 1 || e != 1 || d != 0 {
		t.Errorf("11 Status calls in 10 s: %d GetKey, %d Encrypt, %d Decrypt; want 1, 1, 0", g, e, d)
	}
	clk.add(10 * time.Second)
	status0(t, p)
	if g, e, d := f.counts(); g != 2 || e != 2 || d != 0 {
		t.Errorf("after the TTL: %d GetKey, %d Encrypt, %d Decrypt; want 2, 2, 0", g, e, d)
	}
}

func TestStatusKeyIDChangesAfterRotation(t *testing.T) {
	f := newFake("k")
	p, clk := newPlugin(t, f, nil)
	id1 := status0(t, p).KeyId
	f.rotate()
	if id := status0(t, p).KeyId; id != id1 {
		t.Errorf("within the TTL Status changed its key_id: %q", id)
	}
	clk.add(DefaultStatusTTL)
	id2 := status0(t, p).KeyId
	if id2 == id1 || id2 != KeyID("k", 2, f.key.Versions[1].KeyCheckValue) {
		t.Errorf("after rotation and the TTL: key_id %q (before %q)", id2, id1)
	}
	// Encrypt learns of a rotation before the TTL ends: the next Status
	// probes again, so that Status and Encrypt agree on the key_id.
	f.rotate()
	enc, err := p.Encrypt(context.Background(), &kmsapi.EncryptRequest{Plaintext: seed()})
	if err != nil {
		t.Fatal(err)
	}
	if id3 := status0(t, p).KeyId; id3 != enc.KeyId || id3 == id2 {
		t.Errorf("after Encrypt under v3: Status key_id %q, Encrypt's %q", id3, enc.KeyId)
	}
}

// An unhealthy Status carries no key_id: the API server extends its write
// DEK's life whenever Status repeats the key_id it holds, healthy or not.
func TestStatusUnhealthyHasNoKeyID(t *testing.T) {
	f := newFake("k")
	p, clk := newPlugin(t, f, nil)
	if r := status0(t, p); r.Healthz != "ok" {
		t.Fatal(r)
	}
	f.setState(custosv1.KeyState_KEY_STATE_REVOKED)
	clk.add(DefaultStatusTTL)
	r := status0(t, p)
	if r.Healthz == "ok" || r.KeyId != "" || !strings.Contains(r.Healthz, "REVOKED") || r.Version != "v2" {
		t.Errorf("revoked key: Status = %v", r)
	}
	// Unhealthy answers are reused for StatusErrorTTL only.
	clk.add(DefaultStatusErrorTTL - time.Millisecond)
	status0(t, p)
	g, _, _ := f.counts()
	clk.add(time.Millisecond)
	f.setState(custosv1.KeyState_KEY_STATE_ENABLED)
	if r := status0(t, p); r.Healthz != "ok" {
		t.Errorf("re-enabled: %v", r)
	}
	if g2, _, _ := f.counts(); g2 != g+1 {
		t.Errorf("GetKey calls %d then %d: the unhealthy answer was not reused, or not only for its TTL", g, g2)
	}

	f.getKeyErr = status.Error(codes.Unavailable, "no custos node answered")
	clk.add(DefaultStatusTTL)
	if r := status0(t, p); r.KeyId != "" || !strings.Contains(r.Healthz, "no custos node answered (Unavailable)") {
		t.Errorf("custos down: Status = %v", r)
	}
	f.getKeyErr = nil

	// A refusal seen by Decrypt drops a healthy cached answer at once.
	clk.add(DefaultStatusTTL)
	if r := status0(t, p); r.Healthz != "ok" {
		t.Fatal(r)
	}
	f.decryptErr = status.Error(codes.FailedPrecondition, `key "k" is disabled`)
	f.setState(custosv1.KeyState_KEY_STATE_DISABLED)
	if _, err := p.Decrypt(context.Background(), &kmsapi.DecryptRequest{Ciphertext: sealed("k", 1, seed())}); status.Code(err) != codes.FailedPrecondition {
		t.Fatalf("Decrypt: %v", err)
	}
	if r := status0(t, p); r.Healthz == "ok" {
		t.Errorf("after a refused Decrypt Status still says ok: %v", r)
	}
}

// Concurrent Status calls share one probe.
func TestConcurrentStatusShareOneProbe(t *testing.T) {
	f := newFake("k")
	f.block = make(chan struct{})
	f.entered = make(chan struct{}, 8)
	p, _ := newPlugin(t, f, nil)
	var wg sync.WaitGroup
	call := func() {
		if r, err := p.Status(context.Background(), &kmsapi.StatusRequest{}); err != nil || r.Healthz != "ok" {
			t.Errorf("Status = %v, %v", r, err)
		}
	}
	wg.Go(call)
	<-f.entered // the probe is in flight
	for range 7 {
		wg.Go(call)
	}
	// A caller that gives up does not cut the shared probe short.
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	if _, err := p.Status(ctx, &kmsapi.StatusRequest{}); status.Code(err) != codes.Canceled {
		t.Errorf("cancelled caller: %v", err)
	}
	close(f.block)
	wg.Wait()
	if g, e, _ := f.counts(); g != 1 || e != 1 {
		t.Errorf("9 concurrent Status calls made %d GetKey and %d Encrypt calls, want 1 and 1", g, e)
	}
}

func TestJustificationText(t *testing.T) {
	p, _ := newPlugin(t, newFake("k"), func(c *Config) { c.Text = "t" })
	if got := p.text(""); got != "t" {
		t.Errorf("no uid: %q", got)
	}
	long := strings.Repeat("é", 100) // 200 bytes
	got := p.text(long + "\xff")
	if !strings.HasPrefix(got, "t (uid ") || len(got) > len("t (uid )")+maxUIDInText || !strings.HasSuffix(got, "é)") {
		t.Errorf("long uid: %q", got)
	}
}

// ParseHeader reads what custos's own parser reads, and refuses what it
// refuses.
func TestParseHeaderAgreesWithCustos(t *testing.T) {
	good := (&kms.Wrapped{Kind: kms.KindPayload, Key: "k8s.secrets-1", KeyVersion: 4294967295,
		IV: make([]byte, 12), Ciphertext: make([]byte, 48)}).Marshal()
	h, err := ParseHeader(good)
	w, werr := kms.ParseWrapped(good)
	if err != nil || werr != nil || h.Key != w.Key || h.Version != w.KeyVersion {
		t.Fatalf("ParseHeader = %v, %v; kms.ParseWrapped = %v, %v", h, err, w, werr)
	}
	for name, b := range map[string][]byte{
		"truncated":  good[:len(good)-40],
		"version 2":  append([]byte{2}, good[1:]...),
		"no name":    {1, 2, 0, 0, 0, 0, 1},
		"long name":  append([]byte{1, 2, 65}, bytes.Repeat([]byte{'a'}, 200)...),
		"version 0":  append(append([]byte{1, 2, 1, 'k'}, 0, 0, 0, 0), make([]byte, 64)...),
		"over 1 KiB": append(bytes.Clone(good), make([]byte, 1024)...),
	} {
		if _, err := ParseHeader(b); err == nil {
			t.Errorf("%s: ParseHeader accepted it", name)
		}
	}
}

// FuzzParseHeader: ParseHeader never panics, and what it accepts custos's
// own parser accepts as a payload of the same key and version.
func FuzzParseHeader(f *testing.F) {
	f.Add(sealed("k8s-secrets", 1, seed()))
	f.Add(sealed("k", 4294967295, make([]byte, 64)))
	f.Add([]byte{1, 2, 0})
	f.Add([]byte{})
	f.Fuzz(func(t *testing.T, b []byte) {
		h, err := ParseHeader(b)
		if err != nil {
			return
		}
		w, werr := kms.ParseWrapped(b)
		if werr != nil {
			// ParseHeader does not check the key name's characters: a
			// name custos refuses is refused by custos, and by the
			// plugin unless it is the plugin's own key's.
			if kms.ValidateKeyName(h.Key) != nil {
				return
			}
			t.Fatalf("ParseHeader accepted what custos refuses: %v", werr)
		}
		if w.Kind != kms.KindPayload || w.Key != h.Key || w.KeyVersion != h.Version {
			t.Fatalf("ParseHeader %+v, custos %v/%v/%v", h, w.Kind, w.Key, w.KeyVersion)
		}
	})
}
