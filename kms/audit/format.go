// Package audit works on ledger exports offline, with no network and no
// node: the export file format (Writer, Reader), the verifier that checks an
// export's hash chain and signed checkpoints against trusted public keys
// (Verify), and the disclosure report a customer hands its supervisors
// (Summarize).
//
// # Export file format (docs/ledger.md, "Export file")
//
//	file  = magic version item*
//	magic = "CUSTOS-LEDGER-EXPORT\n"            (21 bytes)
//	version = 0x01                                (1 byte)
//	item  = uvarint(len(body)) body              (1 <= len(body) <= 16 MiB)
//	body  = deterministic protobuf encoding of a custos.v1.ExportItem
//
// The items are, in order: one header, the records (each the exact stored
// bytes of a DecisionRecord, in ledger order), and one trailer (a checkpoint
// signed at export time over the last record). The file is exactly the
// AuditService.Export stream, framed.
//
// The package is pure Go (no cgo, no PKCS#11, no network): an auditor's
// machine needs nothing of a node to verify an export.
package audit

import (
	"bufio"
	"bytes"
	"encoding/binary"
	"errors"
	"fmt"
	"io"

	"google.golang.org/protobuf/proto"

	custosv1 "github.com/custos-kms/custos/proto/custos/v1"
)

// Magic opens every export file; Version follows it.
const (
	Magic   = "CUSTOS-LEDGER-EXPORT\n"
	Version = 1
	// MaxItemSize bounds one framed item (16 MiB).
	MaxItemSize = 16 << 20
)

// ErrFormat reports bytes that are not a well-formed export file: wrong
// magic or version, a bad length, an item that does not decode, or a file
// that ends inside an item (which also matches io.ErrUnexpectedEOF).
var ErrFormat = errors.New("audit: malformed export file")

var marshal = proto.MarshalOptions{Deterministic: true}

// Writer writes an export file. It writes the magic and version before the
// first item (or at Close if there was none). It does not buffer: wrap w in
// a bufio.Writer (and flush it) for many small writes.
type Writer struct {
	w       io.Writer
	started bool
	err     error
	buf     []byte
}

// NewWriter returns a Writer on w.
func NewWriter(w io.Writer) *Writer { return &Writer{w: w} }

func (w *Writer) start() error {
	if w.started {
		return nil
	}
	w.started = true
	_, err := io.WriteString(w.w, Magic+string([]byte{Version}))
	return err
}

// WriteItem frames and writes one item. After an error every call returns
// it again.
func (w *Writer) WriteItem(it *custosv1.ExportItem) error {
	if w.err != nil {
		return w.err
	}
	if it == nil || it.Item == nil {
		return fmt.Errorf("audit: WriteItem: empty item")
	}
	if err := w.start(); err != nil {
		w.err = err
		return err
	}
	body, err := marshal.Marshal(it)
	if err != nil {
		w.err = fmt.Errorf("audit: encode item: %w", err)
		return w.err
	}
	if len(body) == 0 || len(body) > MaxItemSize {
		return fmt.Errorf("audit: item of %d bytes is outside 1..%d", len(body), MaxItemSize)
	}
	w.buf = binary.AppendUvarint(w.buf[:0], uint64(len(body)))
	w.buf = append(w.buf, body...)
	if _, err := w.w.Write(w.buf); err != nil {
		w.err = err
	}
	return w.err
}

// Close writes the magic and version if no item was written (an empty
// file would not be an export). It does not close the underlying writer.
func (w *Writer) Close() error {
	if w.err != nil {
		return w.err
	}
	if err := w.start(); err != nil {
		w.err = err
	}
	return w.err
}

// Copy writes every item recv returns to w until recv returns io.EOF, and
// returns the number of items written. recv is typically the Recv method of
// an AuditService.Export client stream.
func Copy(w io.Writer, recv func() (*custosv1.ExportItem, error)) (int, error) {
	ew := NewWriter(w)
	n := 0
	for {
		it, err := recv()
		if errors.Is(err, io.EOF) {
			return n, ew.Close()
		}
		if err != nil {
			return n, err
		}
		if err := ew.WriteItem(it); err != nil {
			return n, err
		}
		n++
	}
}

// Reader reads an export file item by item, in constant memory (one item at
// a time, at most MaxItemSize).
type Reader struct {
	r       *bufio.Reader
	started bool
	err     error
	offset  int64 // of the next item
}

// NewReader returns a Reader on r. The magic and version are checked by the
// first Next.
func NewReader(r io.Reader) *Reader { return &Reader{r: bufio.NewReader(r)} }

// Offset returns the byte offset of the next item in the file.
func (r *Reader) Offset() int64 { return r.offset }

// Next returns the next item, io.EOF after the last one, or an error
// wrapping ErrFormat (and io.ErrUnexpectedEOF for a file cut inside an
// item). After an error, every call returns it again.
func (r *Reader) Next() (*custosv1.ExportItem, error) {
	if r.err != nil {
		return nil, r.err
	}
	it, err := r.next()
	if err != nil {
		r.err = err
	}
	return it, err
}

func (r *Reader) next() (*custosv1.ExportItem, error) {
	if !r.started {
		r.started = true
		var hdr [len(Magic) + 1]byte
		n, err := io.ReadFull(r.r, hdr[:])
		if err != nil || string(hdr[:len(Magic)]) != Magic {
			if n == 0 && errors.Is(err, io.EOF) {
				return nil, fmt.Errorf("%w: empty file", ErrFormat)
			}
			return nil, fmt.Errorf("%w: not a custos ledger export (bad magic)", ErrFormat)
		}
		if hdr[len(Magic)] != Version {
			return nil, fmt.Errorf("%w: unsupported export version %d (this reader knows %d)", ErrFormat, hdr[len(Magic)], Version)
		}
		r.offset = int64(len(hdr))
	}
	start := r.offset
	cr := &countingReader{r: r.r}
	size, err := binary.ReadUvarint(cr)
	r.offset += cr.n
	switch {
	case errors.Is(cr.readErr, io.EOF) && cr.n == 0:
		return nil, io.EOF
	case errors.Is(cr.readErr, io.EOF):
		return nil, fmt.Errorf("%w: file ends inside the length of the item at offset %d: %w", ErrFormat, start, io.ErrUnexpectedEOF)
	case cr.readErr != nil:
		return nil, cr.readErr // an I/O error, not evidence about the file
	case err != nil:
		return nil, fmt.Errorf("%w: bad item length at offset %d: %v", ErrFormat, start, err)
	case size == 0 || size > MaxItemSize:
		return nil, fmt.Errorf("%w: item at offset %d has length %d, outside 1..%d", ErrFormat, start, size, MaxItemSize)
	}
	var body bytes.Buffer
	body.Grow(int(min(size, 64<<10)))
	n, err := io.CopyN(&body, r.r, int64(size))
	r.offset += n
	if err != nil {
		if errors.Is(err, io.EOF) {
			return nil, fmt.Errorf("%w: file ends inside the item at offset %d (%d of %d bytes): %w", ErrFormat, start, n, size, io.ErrUnexpectedEOF)
		}
		return nil, err
	}
	it := &custosv1.ExportItem{}
	if err := proto.Unmarshal(body.Bytes(), it); err != nil {
		return nil, fmt.Errorf("%w: item at offset %d does not decode: %v", ErrFormat, start, err)
	}
	if it.Item == nil {
		return nil, fmt.Errorf("%w: item at offset %d is empty", ErrFormat, start)
	}
	return it, nil
}

// countingReader counts the bytes ReadUvarint consumes and keeps the
// underlying read error (ReadUvarint reports only overflow or EOF).
type countingReader struct {
	r       io.ByteReader
	n       int64
	readErr error
}

func (c *countingReader) ReadByte() (byte, error) {
	b, err := c.r.ReadByte()
	if err != nil {
		c.readErr = err
		return 0, err
	}
	c.n++
	return b, nil
}
