package main

import (
	"bytes"
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"os"

	"github.com/custos-kms/custos/hsm"
	"github.com/custos-kms/custos/hsm/pkcs11"
	"github.com/custos-kms/custos/softhsm"
)

// hsmCeiling is a raw SoftHSM AES-256-GCM key on its own temporary token,
// opened in this process through hsm/pkcs11, as the node opens its own.
type hsmCeiling struct {
	dir     string
	backend *pkcs11.Backend
	key     hsm.KeyRef
	// One 32-byte data key encrypted under key, decrypted repeatedly.
	iv, ct, aad, plain []byte
}

// openHSMCeiling creates a token in a fresh temporary softhsm.Dir, activates
// that Dir (SoftHSM reads SOFTHSM2_CONF once per process, at the first
// C_Initialize: this must come before any other Open in the process),
// generates a key and encrypts one data key under it.
func openHSMCeiling(ctx context.Context) (_ *hsmCeiling, err error) {
	tmp, err := os.MkdirTemp("", "custos-bench-softhsm-")
	if err != nil {
		return nil, err
	}
	c := &hsmCeiling{dir: tmp}
	defer func() {
		if err != nil {
			c.close()
		}
	}()
	d, err := softhsm.OpenDir(tmp)
	if err != nil {
		return nil, err
	}
	if err := d.Activate(); err != nil {
		return nil, err
	}
	pin := randHex(8)
	tok, err := d.InitToken("custos-bench", randHex(8), pin)
	if err != nil {
		return nil, err
	}
	// The node opens its token with the default session pool; so do we.
	c.backend, err = pkcs11.Open(ctx, pkcs11.Config{Module: tok.Module, TokenLabel: tok.Label, PIN: tok.PIN})
	if err != nil {
		return nil, err
	}
	c.key.ID = []byte("bench-kek")
	if c.key.CheckValue, err = c.backend.GenerateKey(ctx, hsm.KeySpec{ID: c.key.ID, Label: "bench-kek", Usage: hsm.UsageEncrypt}); err != nil {
		return nil, err
	}
	c.plain = make([]byte, hsm.AESKeySize)
	c.iv = make([]byte, hsm.GCMIVSize)
	rand.Read(c.plain)
	rand.Read(c.iv)
	c.aad = []byte("custos-bench ceiling aad")
	if c.ct, err = c.backend.EncryptGCM(ctx, c.key, c.iv, c.plain, c.aad); err != nil {
		return nil, err
	}
	if err := c.decrypt(ctx); err != nil {
		return nil, err
	}
	return c, nil
}

// decrypt is the ceiling operation: one AES-256-GCM decrypt of the 32-byte
// data key, checked.
func (c *hsmCeiling) decrypt(ctx context.Context) error {
	out, err := c.backend.DecryptGCM(ctx, c.key, c.iv, c.ct, c.aad)
	if err != nil {
		return err
	}
	if !bytes.Equal(out, c.plain) {
		return errors.New("softhsm: decrypted data key differs")
	}
	return nil
}

func (c *hsmCeiling) close() {
	if c.backend != nil {
		if err := c.backend.Close(); err != nil {
			fmt.Fprintf(os.Stderr, "custos-bench: close SoftHSM backend: %v\n", err)
		}
	}
	_ = os.RemoveAll(c.dir)
}

func randHex(n int) string {
	b := make([]byte, n)
	rand.Read(b)
	return hex.EncodeToString(b)
}
