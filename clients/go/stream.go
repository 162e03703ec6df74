package custos

import (
	"context"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"path/filepath"
	"sort"
	"strings"
	"time"

	"github.com/custos-kms/custos/clients/go/envelope"
)

// ErrContextMismatch reports an envelope whose encryption context lacks a
// pair required by WithExpectedContext. It is returned before custos is
// asked for the data key, so no decision is recorded.
var ErrContextMismatch = errors.New("custos: encryption context does not match")

// ErrKeyMismatch reports an envelope whose header names a different key or
// version than the wrapped data key it carries.
var ErrKeyMismatch = errors.New("custos: envelope header does not match its wrapped data key")

// Option adjusts EncryptStream, DecryptStream, EncryptFile, DecryptFile and
// WaitForApproval.
// Options that do not apply to a call are ignored.
type Option func(*options)

type options struct {
	segmentSize int
	expected    map[string]string
	rand        io.Reader
	stdin       io.Reader
	stdout      io.Writer
	// pollInterval is WaitForApproval's polling interval.
	pollInterval time.Duration
	// noOverwrite: a file output must not exist (WithNoOverwrite).
	noOverwrite bool
}

func collect(opts []Option) *options {
	o := &options{stdin: os.Stdin, stdout: os.Stdout}
	for _, f := range opts {
		f(o)
	}
	return o
}

// WithSegmentSize sets the plaintext bytes per envelope segment when
// encrypting (envelope.MinSegmentSize..envelope.MaxSegmentSize; default
// envelope.DefaultSegmentSize). Memory: the envelope writer gathers segments
// into batches of up to 1 MiB and the reader holds up to two batches (for
// segments over 512 KiB, two and four segments; docs/envelope-format.md).
func WithSegmentSize(n int) Option { return func(o *options) { o.segmentSize = n } }

// WithExpectedContext makes decryption refuse an envelope whose encryption
// context does not contain every pair of want (extra pairs are allowed),
// with ErrContextMismatch, before custos is asked for the data key.
func WithExpectedContext(want map[string]string) Option {
	return func(o *options) { o.expected = want }
}

// WithRand sets the source of the envelope salt (default crypto/rand).
// For tests.
func WithRand(r io.Reader) Option { return func(o *options) { o.rand = r } }

// WithStdio sets what the path "-" means for EncryptFile and DecryptFile
// (default os.Stdin and os.Stdout).
func WithStdio(stdin io.Reader, stdout io.Writer) Option {
	return func(o *options) { o.stdin, o.stdout = stdin, stdout }
}

// WithNoOverwrite makes EncryptFile and DecryptFile refuse an output file
// that exists, with an error wrapping fs.ErrExist: before the input is
// read or custos is asked for anything, and again when the finished output
// is moved into place, which never replaces a file that appeared meanwhile
// (a hard link, not a rename). Without it an existing output file is
// replaced.
func WithNoOverwrite() Option { return func(o *options) { o.noOverwrite = true } }

// EncryptStream returns a writer that encrypts everything written to it into
// dst in the envelope format (see package envelope), under a fresh data key
// from one GenerateDataKey call on key with encryption context encCtx. The
// header is written to dst at once. Close is mandatory: it writes the final
// segment; it does not close dst. Memory use is constant whatever the size.
//
// The plaintext data key is zeroed before EncryptStream returns: the writer
// keeps only its derived segment key, which it drops on Close.
func (c *Client) EncryptStream(ctx context.Context, dst io.Writer, key string, encCtx map[string]string, opts ...Option) (io.WriteCloser, error) {
	w, _, err := c.encryptStream(ctx, dst, key, encCtx, collect(opts))
	return w, err
}

func (c *Client) encryptStream(ctx context.Context, dst io.Writer, key string, encCtx map[string]string, o *options) (io.WriteCloser, *envelope.Header, error) {
	if s := o.segmentSize; s != 0 && (s < envelope.MinSegmentSize || s > envelope.MaxSegmentSize) {
		return nil, nil, fmt.Errorf("custos: encrypt: segment size %d out of range %d..%d", s, envelope.MinSegmentSize, envelope.MaxSegmentSize)
	}
	dk, err := c.GenerateDataKey(ctx, key, encCtx)
	if err != nil {
		return nil, nil, err
	}
	defer dk.Zero()
	h := envelope.Header{
		Suite:       envelope.SuiteAES256GCMHMACSHA256,
		Key:         dk.Key,
		KeyVersion:  dk.Version,
		WrappedKey:  dk.Wrapped,
		Context:     encCtx,
		SegmentSize: o.segmentSize,
	}
	if h.Key == "" {
		h.Key = key
	}
	if h.SegmentSize == 0 {
		h.SegmentSize = envelope.DefaultSegmentSize
	}
	w, err := envelope.NewWriter(dst, h, dk.Plaintext, o.rand)
	if err != nil {
		return nil, nil, fmt.Errorf("custos: encrypt: %w", err)
	}
	return w, &h, nil
}

// DecryptStream reads an envelope header from src, asks custos to unwrap its
// data key with the header's encryption context and justification j (a
// decision recorded in the ledger), and returns a reader of the plaintext
// together with the header. The reader returns only authenticated plaintext,
// one segment at a time, and an error wrapping envelope.ErrDecryption (never
// io.EOF) for a modified, truncated or extended body; a consumer must treat
// everything it read as invalid unless it reached io.EOF. Memory use is
// constant whatever the size. ctx bounds the Decrypt call only.
//
// With WithExpectedContext, an envelope whose context does not contain the
// expected pairs is refused with ErrContextMismatch before custos is asked.
func (c *Client) DecryptStream(ctx context.Context, src io.Reader, j Justification, opts ...Option) (io.Reader, *envelope.Header, error) {
	return c.decryptStream(ctx, src, j, collect(opts))
}

func (c *Client) decryptStream(ctx context.Context, src io.Reader, j Justification, o *options) (io.Reader, *envelope.Header, error) {
	h, err := envelope.ReadHeader(src)
	if err != nil {
		return nil, nil, fmt.Errorf("custos: decrypt: %w", err)
	}
	if err := checkContext(h.Context, o.expected); err != nil {
		return nil, h, err
	}
	resp, err := c.decrypt(ctx, h.WrappedKey, h.Context, j)
	if err != nil {
		return nil, h, fmt.Errorf("custos: decrypt data key of key %q version %d: %w", h.Key, h.KeyVersion, err)
	}
	dataKey := resp.GetPlaintext()
	defer clear(dataKey)
	if (resp.GetKey() != "" && resp.GetKey() != h.Key) || (resp.GetKeyVersion() != 0 && resp.GetKeyVersion() != h.KeyVersion) {
		return nil, h, fmt.Errorf("%w: header names %q version %d, data key is from %q version %d",
			ErrKeyMismatch, h.Key, h.KeyVersion, resp.GetKey(), resp.GetKeyVersion())
	}
	r, err := envelope.NewReader(src, h, dataKey)
	if err != nil {
		return nil, h, fmt.Errorf("custos: decrypt: %w", err)
	}
	return r, h, nil
}

// checkContext reports whether got contains every pair of want.
func checkContext(got, want map[string]string) error {
	var bad []string
	for k, v := range want {
		if g, ok := got[k]; !ok {
			bad = append(bad, fmt.Sprintf("%q missing (want %q)", k, v))
		} else if g != v {
			bad = append(bad, fmt.Sprintf("%q is %q (want %q)", k, g, v))
		}
	}
	if len(bad) == 0 {
		return nil
	}
	sort.Strings(bad)
	return fmt.Errorf("%w: %s", ErrContextMismatch, strings.Join(bad, ", "))
}

// EncryptFile encrypts the file inPath into outPath with EncryptStream. "-"
// means standard input or output (see WithStdio). A file output is written
// to a temporary file in the destination directory (mode 0600) and renamed
// over outPath only once everything succeeded; on any failure no output
// file is left behind.
func (c *Client) EncryptFile(ctx context.Context, inPath, outPath, key string, encCtx map[string]string, opts ...Option) (*envelope.Header, error) {
	o := collect(opts)
	in, closeIn, err := openInput(inPath, o)
	if err != nil {
		return nil, fmt.Errorf("custos: encrypt: %w", err)
	}
	defer closeIn()
	var h *envelope.Header
	err = writeOutput(outPath, o, func(out io.Writer) error {
		w, hdr, err := c.encryptStream(ctx, out, key, encCtx, o)
		if err != nil {
			return err
		}
		h = hdr
		if _, err := copyCtx(ctx, w, in); err != nil {
			w.Close()
			return fmt.Errorf("custos: encrypt: %s: %w", inPath, err)
		}
		if err := w.Close(); err != nil {
			return fmt.Errorf("custos: encrypt: %w", err)
		}
		return nil
	})
	if err != nil {
		return nil, err
	}
	return h, nil
}

// DecryptFile decrypts the envelope file inPath into outPath with
// DecryptStream. "-" means standard input or output (see WithStdio). A file
// output is written to a temporary file in the destination directory (mode
// 0600) and renamed over outPath only once the whole ciphertext has been
// authenticated; on any failure (refused decision, tampering, truncation) no
// output file is left behind.
//
// Standard output cannot be made atomic: authenticated segments are written
// as they are decrypted, so when DecryptFile returns an error after some
// output, that output must be discarded.
func (c *Client) DecryptFile(ctx context.Context, inPath, outPath string, j Justification, opts ...Option) (*envelope.Header, error) {
	o := collect(opts)
	in, closeIn, err := openInput(inPath, o)
	if err != nil {
		return nil, fmt.Errorf("custos: decrypt: %w", err)
	}
	defer closeIn()
	var h *envelope.Header
	err = writeOutput(outPath, o, func(out io.Writer) error {
		r, hdr, err := c.decryptStream(ctx, in, j, o)
		h = hdr
		if err != nil {
			return err
		}
		if _, err := copyCtx(ctx, out, r); err != nil {
			return fmt.Errorf("custos: decrypt: %s: %w", inPath, err)
		}
		return nil
	})
	return h, err
}

func openInput(path string, o *options) (io.Reader, func(), error) {
	if path == "-" {
		return o.stdin, func() {}, nil
	}
	f, err := os.Open(path)
	if err != nil {
		return nil, nil, err
	}
	return f, func() { f.Close() }, nil
}

// writeOutput runs fill on the output. For a file, fill writes to a
// temporary file next to path, which replaces path only if fill, Sync and
// Close all succeed; otherwise it is removed.
func writeOutput(path string, o *options, fill func(io.Writer) error) (err error) {
	if path == "-" {
		return fill(o.stdout)
	}
	if o.noOverwrite {
		if _, err := os.Lstat(path); err == nil {
			return fmt.Errorf("custos: %s already exists: %w", path, fs.ErrExist)
		}
	}
	tmp, err := os.CreateTemp(filepath.Dir(path), "."+filepath.Base(path)+".tmp-*")
	if err != nil {
		return fmt.Errorf("custos: %w", err)
	}
	defer func() {
		if err != nil {
			tmp.Close()
			os.Remove(tmp.Name())
		}
	}()
	if err := fill(tmp); err != nil {
		return err
	}
	if err := tmp.Sync(); err != nil {
		return fmt.Errorf("custos: %w", err)
	}
	if err := tmp.Close(); err != nil {
		return fmt.Errorf("custos: %w", err)
	}
	if o.noOverwrite {
		return placeNoReplace(tmp.Name(), path)
	}
	if err := os.Rename(tmp.Name(), path); err != nil {
		return fmt.Errorf("custos: %w", err)
	}
	return nil
}

// placeNoReplace moves the finished temporary file tmp to path unless path
// exists: a hard link, which never replaces path, then tmp is removed; on
// a file system without hard links, a rename after checking again. On
// error tmp is left for the caller to remove.
func placeNoReplace(tmp, path string) error {
	err := os.Link(tmp, path)
	if err != nil && !errors.Is(err, fs.ErrExist) {
		if _, serr := os.Lstat(path); serr == nil {
			err = fs.ErrExist
		} else {
			err = os.Rename(tmp, path)
			tmp = ""
		}
	}
	if errors.Is(err, fs.ErrExist) {
		return fmt.Errorf("custos: %s already exists: %w", path, fs.ErrExist)
	}
	if err != nil {
		return fmt.Errorf("custos: %w", err)
	}
	if tmp != "" {
		os.Remove(tmp)
	}
	return nil
}

// copyCtx copies src to dst until src ends, checking ctx before every read
// of src and every write to dst. With the envelope on one side it adds no
// copy of its own: the envelope writer reads plaintext straight into its
// batches (io.ReaderFrom, preferred when dst has it: encrypting) and the
// envelope reader writes authenticated plaintext straight from them
// (io.WriterTo: decrypting). Otherwise it copies through a buffer that it
// clears afterwards, since it may have held plaintext.
func copyCtx(ctx context.Context, dst io.Writer, src io.Reader) (int64, error) {
	cr, cw := ctxReader{ctx, src}, ctxWriter{ctx, dst}
	if rf, ok := dst.(envelopeReaderFrom); ok {
		return rf.ReadFrom(cr)
	}
	if wt, ok := src.(io.WriterTo); ok {
		return wt.WriteTo(cw)
	}
	buf := make([]byte, 64<<10)
	defer clear(buf)
	return io.CopyBuffer(cw, cr, buf)
}

// envelopeReaderFrom is what the envelope writer implements besides
// io.WriteCloser. (*os.File has ReadFrom too, but its generic path would
// read through an extra buffer, so the decrypting side — src the envelope
// reader, dst a file — goes through the reader's WriteTo instead.)
type envelopeReaderFrom interface {
	io.ReaderFrom
	io.Closer
}

// ctxReader is a reader that fails with ctx's error once ctx is done. It
// has no WriteTo, so io.CopyBuffer uses the buffer given.
type ctxReader struct {
	ctx context.Context
	r   io.Reader
}

func (c ctxReader) Read(p []byte) (int, error) {
	if err := c.ctx.Err(); err != nil {
		return 0, err
	}
	return c.r.Read(p)
}

// ctxWriter is a writer that fails with ctx's error once ctx is done. It
// has no ReadFrom.
type ctxWriter struct {
	ctx context.Context
	w   io.Writer
}

func (c ctxWriter) Write(p []byte) (int, error) {
	if err := c.ctx.Err(); err != nil {
		return 0, err
	}
	return c.w.Write(p)
}
