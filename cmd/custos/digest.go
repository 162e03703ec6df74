package main

import (
	"bufio"
	"context"
	"crypto/sha256"
	"fmt"
	"io"
	"os"

	"github.com/custos-kms/custos/clients/go/envelope"
)

// maxRawCiphertext bounds a file digest takes as a bare ciphertext (a
// wrapped data key or a small Encrypt result), not an envelope file.
const maxRawCiphertext = 64 << 10

// runDigest prints the data digest a decrypt of FILE records
// (DecisionRecord.data_digest): SHA-256 of the wrapped data key in an
// envelope file's header, or of a bare ciphertext file. Officers name it in
// a grant (`officer grant --data-digest`) to cover that file only.
func runDigest(_ context.Context, a *app, args []string) error {
	fs := a.flags("digest")
	pos, err := a.parse("digest", fs, args, 1, 1)
	if err != nil {
		return err
	}
	f, err := os.Open(pos[0])
	if err != nil {
		return err
	}
	defer f.Close()
	if h, herr := envelope.ReadHeader(bufio.NewReader(f)); herr == nil {
		sum := sha256.Sum256(h.WrappedKey)
		_, err = fmt.Fprintf(a.stdout, "%x  %s (envelope: the wrapped data key of key %s version %d)\n", sum, pos[0], h.Key, h.KeyVersion)
		return err
	}
	if _, err := f.Seek(0, io.SeekStart); err != nil {
		return err
	}
	raw, err := io.ReadAll(io.LimitReader(f, maxRawCiphertext+1))
	if err != nil {
		return err
	}
	if len(raw) == 0 || len(raw) > maxRawCiphertext {
		return fmt.Errorf("%s is neither an envelope file nor a ciphertext of at most %d bytes", pos[0], maxRawCiphertext)
	}
	sum := sha256.Sum256(raw)
	_, err = fmt.Fprintf(a.stdout, "%x  %s (ciphertext)\n", sum, pos[0])
	return err
}
