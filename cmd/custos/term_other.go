//go:build !linux

package main

import (
	"errors"
	"io"
	"os"
)

// readPassword is only implemented on Linux; elsewhere use a passphrase
// file or the environment.
func readPassword(_ *os.File, _ io.Writer, _ string) ([]byte, error) {
	return nil, errors.New("terminal prompts are not supported on this system")
}
