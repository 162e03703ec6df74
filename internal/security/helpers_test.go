package security

import (
	"bytes"
	"context"
	"errors"
	"log/slog"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	p11 "github.com/miekg/pkcs11"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	"github.com/custos-kms/custos/internal/node"
	"github.com/custos-kms/custos/internal/node/nodetest"
	custosv1 "github.com/custos-kms/custos/proto/custos/v1"
	"github.com/custos-kms/custos/softhsm"
)

var (
	customer = &custosv1.Justification{Reason: custosv1.Reason_REASON_CUSTOMER_INITIATED, Text: "security test"}
	provider = &custosv1.Justification{Reason: custosv1.Reason_REASON_THIRD_PARTY_DATA_REQUEST, Text: "subpoena"}
)

// ctx returns a context bounded well within the test timeout.
func ctx(t *testing.T) context.Context {
	t.Helper()
	c, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	t.Cleanup(cancel)
	return c
}

func wantCode(t *testing.T, what string, err error, code codes.Code) {
	t.Helper()
	if got := status.Code(err); got != code {
		t.Errorf("%s: code %v (err %v), want %v", what, got, err, code)
	}
}

// syncBuffer is a bytes.Buffer safe for concurrent writes by the node's
// goroutines and reads by the test.
type syncBuffer struct {
	mu  sync.Mutex
	buf bytes.Buffer
}

func (b *syncBuffer) Write(p []byte) (int, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.Write(p)
}

func (b *syncBuffer) Bytes() []byte {
	b.mu.Lock()
	defer b.mu.Unlock()
	return bytes.Clone(b.buf.Bytes())
}

// startLogged starts a node whose logs, at debug level in JSON, go to the
// returned buffer (and to stderr too when CUSTOS_TEST_LOG is set).
func startLogged(t *testing.T, mod func(*node.Config)) (*nodetest.Harness, *syncBuffer) {
	t.Helper()
	buf := &syncBuffer{}
	h := nodetest.StartWith(t, func(c *node.Config) {
		var w interface{ Write([]byte) (int, error) } = buf
		if os.Getenv("CUSTOS_TEST_LOG") != "" {
			w = teeWriter{buf, os.Stderr}
		}
		c.Logger = slog.New(slog.NewJSONHandler(w, &slog.HandlerOptions{Level: slog.LevelDebug}))
		if mod != nil {
			mod(c)
		}
	})
	return h, buf
}

type teeWriter struct {
	a *syncBuffer
	b *os.File
}

func (w teeWriter) Write(p []byte) (int, error) {
	_, _ = w.b.Write(p)
	return w.a.Write(p)
}

// tokenDir returns the SoftHSM2 directory holding tok: the directory under
// <conf>/tokens whose token.object names its label.
func tokenDir(t *testing.T, tok *softhsm.Token) string {
	t.Helper()
	root := filepath.Join(tok.Dir.Path, "tokens")
	ents, err := os.ReadDir(root)
	if err != nil {
		t.Fatal(err)
	}
	for _, e := range ents {
		b, err := os.ReadFile(filepath.Join(root, e.Name(), "token.object"))
		if err != nil {
			continue
		}
		if bytes.Contains(b, []byte(tok.Label)) {
			return filepath.Join(root, e.Name())
		}
	}
	t.Fatalf("no token directory under %s holds label %q", root, tok.Label)
	return ""
}

// withModule runs f with a second handle on the PKCS#11 module (the same
// SoftHSM instance as the node's when the node has it loaded) and the slot
// of the token labelled label. It finalizes the module only if it was the
// one that initialised it, so that it never pulls the module from under a
// running node.
func withModule(t *testing.T, module, label string, f func(c *p11.Ctx, slot uint)) {
	t.Helper()
	c := p11.New(module)
	if c == nil {
		t.Fatalf("cannot load %s", module)
	}
	defer c.Destroy()
	owned := true
	if err := c.Initialize(); err != nil {
		if !errors.Is(err, p11.Error(p11.CKR_CRYPTOKI_ALREADY_INITIALIZED)) {
			t.Fatal(err)
		}
		owned = false
	}
	if owned {
		defer func() { _ = c.Finalize() }()
	}
	slots, err := c.GetSlotList(true)
	if err != nil {
		t.Fatal(err)
	}
	for _, s := range slots {
		ti, err := c.GetTokenInfo(s)
		if err == nil && strings.TrimRight(ti.Label, " \x00") == label {
			f(c, s)
			return
		}
	}
	t.Fatalf("no token labelled %q", label)
}
