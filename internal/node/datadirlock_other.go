//go:build !unix

package node

import (
	"errors"
	"os"
)

var errWouldBlock = errors.New("would block")

// flockExclusive does nothing where flock is not available: the data
// directory is not locked there.
func flockExclusive(*os.File) error { return nil }
