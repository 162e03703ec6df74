package notify

import (
	"bytes"
	"fmt"
	"os"

	custosv1 "github.com/custos-kms/custos/proto/custos/v1"
)

// appendFile appends one JSON line per record to the sink's file (created
// 0600), in one write, and fsyncs before acknowledging. A failed write is
// cut back off the file so that a retry does not leave a torn line.
func (n *Notifier) appendFile(sk *custosv1.Sink, items []item) (err error) {
	var b bytes.Buffer
	for _, it := range items {
		b.Write(it.json)
		b.WriteByte('\n')
	}
	n.fileMu.Lock()
	defer n.fileMu.Unlock()
	f, err := os.OpenFile(sk.Path, os.O_WRONLY|os.O_APPEND|os.O_CREATE, 0o600)
	if err != nil {
		return fmt.Errorf("sink %q: open: %w", sk.Name, err)
	}
	defer func() {
		if cerr := f.Close(); err == nil && cerr != nil {
			err = fmt.Errorf("sink %q: close: %w", sk.Name, cerr)
		}
	}()
	fi, err := f.Stat()
	if err != nil {
		return fmt.Errorf("sink %q: stat: %w", sk.Name, err)
	}
	if !fi.Mode().IsRegular() {
		return fmt.Errorf("sink %q: path is not a regular file", sk.Name)
	}
	if _, err := f.Write(b.Bytes()); err != nil {
		_ = f.Truncate(fi.Size())
		return fmt.Errorf("sink %q: write: %w", sk.Name, err)
	}
	if err := f.Sync(); err != nil {
		_ = f.Truncate(fi.Size())
		return fmt.Errorf("sink %q: fsync: %w", sk.Name, err)
	}
	return nil
}
