package audit_test

import (
	"bytes"
	"encoding/binary"
	"errors"
	"io"
	"testing"

	"google.golang.org/protobuf/proto"

	"github.com/custos-kms/custos/kms/audit"
	custosv1 "github.com/custos-kms/custos/proto/custos/v1"
)

var errEOF = io.EOF

// sample is a small synthetic export: a header, three records, a trailer.
func sample(t testing.TB) ([]*custosv1.ExportItem, []byte) {
	items := []*custosv1.ExportItem{
		{Item: &custosv1.ExportItem_Header{Header: &custosv1.ExportHeader{ClusterId: "c1", FirstSeq: 1, TimeUnixNano: 42}}},
		{Item: &custosv1.ExportItem_Record{Record: []byte("\x08\x01")}},
		{Item: &custosv1.ExportItem_Record{Record: bytes.Repeat([]byte{0x5a}, 300)}},
		{Item: &custosv1.ExportItem_Record{Record: []byte{}}},
		{Item: &custosv1.ExportItem_Trailer{Trailer: &custosv1.Checkpoint{ClusterId: "c1", Seq: 3, Head: make([]byte, 32)}}},
	}
	var b bytes.Buffer
	w := audit.NewWriter(&b)
	for _, it := range items {
		if err := w.WriteItem(it); err != nil {
			t.Fatal(err)
		}
	}
	if err := w.Close(); err != nil {
		t.Fatal(err)
	}
	return items, b.Bytes()
}

func TestFormatRoundTrip(t *testing.T) {
	items, file := sample(t)
	if !bytes.HasPrefix(file, []byte("CUSTOS-LEDGER-EXPORT\n\x01")) {
		t.Fatalf("file starts %q", file[:30])
	}
	// The first item: uvarint length, then the deterministic encoding.
	body, _ := proto.MarshalOptions{Deterministic: true}.Marshal(items[0])
	want := append(binary.AppendUvarint(nil, uint64(len(body))), body...)
	if !bytes.Equal(file[22:22+len(want)], want) {
		t.Errorf("first item framed as %x, want %x", file[22:22+len(want)], want)
	}
	rd := audit.NewReader(bytes.NewReader(file))
	for i, w := range items {
		it, err := rd.Next()
		if err != nil {
			t.Fatalf("item %d: %v", i, err)
		}
		if !proto.Equal(it, w) {
			t.Errorf("item %d = %v, want %v", i, it, w)
		}
	}
	if _, err := rd.Next(); !errors.Is(err, io.EOF) {
		t.Errorf("after the last item: %v, want io.EOF", err)
	}
	if rd.Offset() != int64(len(file)) {
		t.Errorf("Offset = %d, want %d", rd.Offset(), len(file))
	}

	// An export of no items is the magic and version alone.
	var empty bytes.Buffer
	if err := audit.NewWriter(&empty).Close(); err != nil || empty.String() != audit.Magic+"\x01" {
		t.Errorf("empty export = %q, %v", empty.String(), err)
	}
	if err := audit.NewWriter(io.Discard).WriteItem(&custosv1.ExportItem{}); err == nil {
		t.Error("WriteItem accepted an empty item")
	}
}

func TestReaderRejects(t *testing.T) {
	_, file := sample(t)
	head := []byte(audit.Magic + "\x01")
	huge := append(bytes.Clone(head), binary.AppendUvarint(nil, audit.MaxItemSize+1)...)
	tests := []struct {
		name       string
		data       []byte
		unexpected bool // io.ErrUnexpectedEOF too
	}{
		{"empty", nil, false},
		{"bad magic", []byte("CUSTOS-LEDGER-EXPORX\n\x01"), false},
		{"short magic", []byte("CUSTOS"), false},
		{"version 2", []byte(audit.Magic + "\x02"), false},
		{"zero length", append(bytes.Clone(head), 0), false},
		{"length over 16 MiB", huge, false},
		{"length overflows", append(bytes.Clone(head), bytes.Repeat([]byte{0xff}, 11)...), false},
		{"cut inside the length", append(bytes.Clone(head), 0x80), true},
		{"cut inside an item", file[:len(file)-3], true},
		{"not protobuf", append(bytes.Clone(head), 2, 0xff, 0xff), false},
		{"empty oneof", append(bytes.Clone(head), 2, 0x20, 0x01), false},
	}
	for _, tt := range tests {
		rd := audit.NewReader(bytes.NewReader(tt.data))
		var err error
		for err == nil {
			_, err = rd.Next()
		}
		if !errors.Is(err, audit.ErrFormat) || errors.Is(err, io.ErrUnexpectedEOF) != tt.unexpected {
			t.Errorf("%s: err = %v, want ErrFormat (unexpected EOF %v)", tt.name, err, tt.unexpected)
		}
		if _, again := rd.Next(); again != err {
			t.Errorf("%s: the error is not sticky: %v then %v", tt.name, err, again)
		}
	}
}

// FuzzReader feeds arbitrary bytes to the Reader and the verifier: they
// must return errors, never panic, and never read an item over 16 MiB.
func FuzzReader(f *testing.F) {
	_, file := sample(f)
	f.Add(file)
	f.Add(file[:len(file)/2])
	f.Add([]byte(audit.Magic + "\x01"))
	f.Add([]byte(audit.Magic + "\x01\x02\x20\x01"))
	f.Add(append([]byte(audit.Magic+"\x01"), binary.AppendUvarint(nil, audit.MaxItemSize+1)...))
	f.Add([]byte("garbage"))
	f.Fuzz(func(t *testing.T, data []byte) {
		rd := audit.NewReader(bytes.NewReader(data))
		for range len(data) + 1 {
			it, err := rd.Next()
			if err != nil {
				if !errors.Is(err, io.EOF) && !errors.Is(err, audit.ErrFormat) {
					t.Fatalf("error %v is neither io.EOF nor ErrFormat", err)
				}
				break
			}
			if it == nil || it.Item == nil {
				t.Fatal("Next returned an empty item without an error")
			}
			if rd.Offset() > int64(len(data)) {
				t.Fatalf("Offset %d beyond the input (%d bytes)", rd.Offset(), len(data))
			}
		}
		rep, err := audit.Verify(bytes.NewReader(data), nil)
		if rep == nil {
			t.Fatal("Verify returned no report")
		}
		if err == nil && rep.Records > 0 {
			t.Fatalf("Verify accepted %d records without a trusted key", rep.Records)
		}
		if err != nil && !errors.Is(err, audit.ErrBroken) {
			t.Fatalf("Verify: %v is not ErrBroken", err)
		}
		_, _ = audit.ReadRecords(audit.NewReader(bytes.NewReader(data)))
	})
}
