package kmsplugin

import (
	"context"
	"crypto/rand"
	"encoding/binary"
	"sync"
	"testing"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/proto"

	custosv1 "github.com/custos-kms/custos/proto/custos/v1"
)

// fakeCustos is a KeyServiceClient with one key whose calls the tests count
// and whose errors they set. Its ciphertexts have custos's header and no
// real cryptography: the unit tests are about the plugin, not custos.
type fakeCustos struct {
	custosv1.KeyServiceClient // methods the plugin must not call panic

	mu                        sync.Mutex
	key                       *custosv1.Key
	getKeys, encrypts, decrys int
	encryptErr, decryptErr    error
	getKeyErr                 error
	lastDecrypt               *custosv1.DecryptRequest
	block                     chan struct{} // if set, GetKey waits for it
	entered                   chan struct{} // if set, GetKey sends on it first
}

func newFake(name string) *fakeCustos {
	f := &fakeCustos{key: &custosv1.Key{Name: name, State: custosv1.KeyState_KEY_STATE_ENABLED}}
	f.rotate()
	return f
}

// rotate adds a version with a random check value and makes it primary.
func (f *fakeCustos) rotate() {
	f.mu.Lock()
	defer f.mu.Unlock()
	v := uint32(len(f.key.Versions) + 1)
	kcv := make([]byte, 16)
	rand.Read(kcv)
	f.key.Versions = append(f.key.Versions, &custosv1.KeyVersion{Version: v, KeyCheckValue: kcv})
	f.key.PrimaryVersion = v
}

func (f *fakeCustos) setState(s custosv1.KeyState) {
	f.mu.Lock()
	f.key.State = s
	f.mu.Unlock()
}

func (f *fakeCustos) counts() (getKeys, encrypts, decrypts int) {
	f.mu.Lock()
	defer f.mu.Unlock()
	return f.getKeys, f.encrypts, f.decrys
}

// sealed is a ciphertext in custos's header format under key/version.
func sealed(key string, version uint32, pt []byte) []byte {
	b := []byte{wrappedV1, kindPayload, byte(len(key))}
	b = append(b, key...)
	b = binary.BigEndian.AppendUint32(b, version)
	b = append(b, make([]byte, gcmIVSize)...)
	b = append(b, pt...)
	return append(b, make([]byte, gcmTagSize)...)
}

func (f *fakeCustos) GetKey(ctx context.Context, in *custosv1.GetKeyRequest, _ ...grpc.CallOption) (*custosv1.Key, error) {
	if f.entered != nil {
		f.entered <- struct{}{}
	}
	if f.block != nil {
		select {
		case <-f.block:
		case <-ctx.Done():
			return nil, status.FromContextError(ctx.Err()).Err()
		}
	}
	f.mu.Lock()
	defer f.mu.Unlock()
	f.getKeys++
	if f.getKeyErr != nil {
		return nil, f.getKeyErr
	}
	if in.GetName() != f.key.GetName() {
		return nil, status.Errorf(codes.NotFound, "not found: key %q", in.GetName())
	}
	return proto.Clone(f.key).(*custosv1.Key), nil
}

func (f *fakeCustos) Encrypt(_ context.Context, in *custosv1.EncryptRequest, _ ...grpc.CallOption) (*custosv1.EncryptResponse, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.encrypts++
	if f.encryptErr != nil {
		return nil, f.encryptErr
	}
	if f.key.State != custosv1.KeyState_KEY_STATE_ENABLED {
		return nil, status.Errorf(codes.FailedPrecondition, "failed precondition: key %q is %s", f.key.Name, stateName(f.key.State))
	}
	v := f.key.PrimaryVersion
	return &custosv1.EncryptResponse{Key: f.key.Name, KeyVersion: v, Ciphertext: sealed(f.key.Name, v, in.GetPlaintext())}, nil
}

func (f *fakeCustos) Decrypt(_ context.Context, in *custosv1.DecryptRequest, _ ...grpc.CallOption) (*custosv1.DecryptResponse, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.decrys++
	f.lastDecrypt = in
	if f.decryptErr != nil {
		return nil, f.decryptErr
	}
	h, err := ParseHeader(in.GetCiphertext())
	if err != nil {
		return nil, status.Error(codes.InvalidArgument, err.Error())
	}
	n := len(in.GetCiphertext()) - gcmTagSize
	pt := append([]byte(nil), in.GetCiphertext()[3+len(h.Key)+4+gcmIVSize:n]...)
	return &custosv1.DecryptResponse{Key: h.Key, KeyVersion: h.Version, Plaintext: pt, DecisionSeq: 7, RequestId: "r"}, nil
}

// fakeClock is a settable clock.
type fakeClock struct {
	mu sync.Mutex
	t  time.Time
}

func (c *fakeClock) now() time.Time {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.t
}

func (c *fakeClock) add(d time.Duration) {
	c.mu.Lock()
	c.t = c.t.Add(d)
	c.mu.Unlock()
}

func newPlugin(t *testing.T, f *fakeCustos, mod func(*Config)) (*Plugin, *fakeClock) {
	t.Helper()
	clk := &fakeClock{t: time.Unix(1_800_000_000, 0)}
	cfg := Config{Keys: f, Key: f.key.GetName(), Now: clk.now}
	if mod != nil {
		mod(&cfg)
	}
	p, err := New(cfg)
	if err != nil {
		t.Fatal(err)
	}
	return p, clk
}
