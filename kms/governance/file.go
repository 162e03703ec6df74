package governance

import (
	"bytes"
	"encoding/json"
	"fmt"
	"io"
	"os"

	custosv1 "github.com/custos-kms/custos/proto/custos/v1"
)

// maxFileSize bounds an offline statement file.
const maxFileSize = 1 << 20

// File is an offline statement file (JSON), passed from officer to officer
// by `custos officer sign` and finally sent by `custos officer submit`.
// Statement holds the statement's exact bytes (base64 in JSON). Description
// is informational only: tools show Describe of the parsed bytes, never this
// field.
type File struct {
	Statement   []byte          `json:"statement"`
	Description string          `json:"description"`
	Signatures  []FileSignature `json:"signatures"`
}

// FileSignature is one officer's signature in a File (base64 in JSON).
type FileSignature struct {
	Officer   string `json:"officer"`
	Signature []byte `json:"signature"`
}

// NewFile returns a File for statement bytes that Parse accepts, with their
// description and no signatures.
func NewFile(statement []byte) (*File, error) {
	st, err := Parse(statement)
	if err != nil {
		return nil, err
	}
	return &File{Statement: bytes.Clone(statement), Description: Describe(st), Signatures: []FileSignature{}}, nil
}

// ReadFile reads an offline statement file. It refuses files over 1 MiB,
// unknown JSON fields, trailing data and an empty statement; the statement
// itself is checked by Parse or Verify.
func ReadFile(path string) (*File, error) {
	fh, err := os.Open(path)
	if err != nil {
		return nil, fmt.Errorf("governance: reading statement file: %w", err)
	}
	defer fh.Close()
	data, err := io.ReadAll(io.LimitReader(fh, maxFileSize+1))
	if err != nil {
		return nil, fmt.Errorf("governance: reading statement file %s: %w", path, err)
	}
	if len(data) > maxFileSize {
		return nil, fmt.Errorf("%w: statement file %s is larger than %d bytes", ErrMalformed, path, maxFileSize)
	}
	dec := json.NewDecoder(bytes.NewReader(data))
	dec.DisallowUnknownFields()
	f := &File{}
	if err := dec.Decode(f); err != nil {
		return nil, fmt.Errorf("%w: statement file %s: %v", ErrMalformed, path, err)
	}
	if dec.More() {
		return nil, fmt.Errorf("%w: statement file %s: data after the JSON object", ErrMalformed, path)
	}
	if len(f.Statement) == 0 {
		return nil, fmt.Errorf("%w: statement file %s has no statement", ErrMalformed, path)
	}
	return f, nil
}

// WriteFile writes f as indented JSON to path (mode 0644), atomically: a
// temporary file in the same directory, synced, renamed over path.
func WriteFile(path string, f *File) error {
	if f == nil || len(f.Statement) == 0 {
		return fmt.Errorf("%w: no statement to write", ErrMalformed)
	}
	out := *f
	if out.Signatures == nil {
		out.Signatures = []FileSignature{}
	}
	data, err := json.MarshalIndent(&out, "", "  ")
	if err != nil {
		return fmt.Errorf("governance: encoding statement file: %w", err)
	}
	return writeAtomic(path, append(data, '\n'), 0o644, true)
}

// Signed returns the SignedStatement to submit: the statement bytes and the
// signatures, in file order.
func (f *File) Signed() *custosv1.SignedStatement {
	ss := &custosv1.SignedStatement{Statement: bytes.Clone(f.Statement)}
	for _, s := range f.Signatures {
		ss.Signatures = append(ss.Signatures, &custosv1.OfficerSignature{Officer: s.Officer, Signature: bytes.Clone(s.Signature)})
	}
	return ss
}

// AddSignature adds sig, replacing an earlier signature by the same officer.
// A nil sig is ignored.
func (f *File) AddSignature(sig *custosv1.OfficerSignature) {
	if sig == nil {
		return
	}
	fs := FileSignature{Officer: sig.GetOfficer(), Signature: bytes.Clone(sig.GetSignature())}
	for i := range f.Signatures {
		if f.Signatures[i].Officer == fs.Officer {
			f.Signatures[i] = fs
			return
		}
	}
	f.Signatures = append(f.Signatures, fs)
}
