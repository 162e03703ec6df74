package audit

import (
	"bytes"
	"encoding/hex"
	"errors"
	"fmt"
	"io"

	"github.com/custos-kms/custos/kms/ledger"
	custosv1 "github.com/custos-kms/custos/proto/custos/v1"
)

// ErrFork is wrapped by the errors Extends and CheckHead return when a
// ledger does not extend the head a witness cosigned: records the witness
// saw were removed, altered or replaced (docs/witness.md).
var ErrFork = errors.New("audit: the ledger does not extend the head the witness cosigned")

// Head is a ledger position and the chain hash of the record there: what a
// witness cosigns and remembers (its state file holds the last one).
type Head struct {
	ClusterID string `json:"cluster_id"`
	Seq       uint64 `json:"seq"`
	// Hash is the record's chain hash, lower-case hex.
	Hash string `json:"head"`
}

// Extends reads an export that starts at from.Seq (1 when from.Seq is 0:
// a witness's first look) and checks that it extends from: the record at
// from.Seq hashes to from.Hash, every later record links to the one before,
// and the trailer covers the last record. It returns the head of the last
// record. A broken link is ErrFork; a malformed or cut export another
// error (a witness cosigns neither).
func Extends(r io.Reader, from Head) (Head, error) {
	rd := NewReader(r)
	it, err := rd.Next()
	if err != nil {
		return Head{}, fmt.Errorf("audit: export: %w", err)
	}
	hdr := it.GetHeader()
	want := max(from.Seq, 1)
	if hdr == nil || hdr.FirstSeq != want {
		return Head{}, fmt.Errorf("audit: export does not start at seq %d", want)
	}
	if from.ClusterID != "" && hdr.ClusterId != from.ClusterID {
		return Head{}, fmt.Errorf("%w: the export is of cluster %s, the witness follows %s", ErrFork, hdr.ClusterId, from.ClusterID)
	}
	var fromHash []byte
	if from.Seq > 0 {
		if fromHash, err = hex.DecodeString(from.Hash); err != nil || len(fromHash) != 32 {
			return Head{}, fmt.Errorf("audit: witness head %q is not 64 hex digits", from.Hash)
		}
	}
	cur := Head{ClusterID: hdr.ClusterId}
	var prev [32]byte // ledger.ZeroHash before seq 1
	next := want
	for {
		it, err := rd.Next()
		if errors.Is(err, io.EOF) {
			return Head{}, fmt.Errorf("audit: the export ends after seq %d without a trailer", cur.Seq)
		}
		if err != nil {
			return Head{}, fmt.Errorf("audit: export: %w", err)
		}
		switch x := it.Item.(type) {
		case *custosv1.ExportItem_Record:
			rec, err := decode(x.Record)
			if err != nil || rec.Seq != next {
				return Head{}, fmt.Errorf("%w: the record at seq %d does not decode or names another position", ErrFork, next)
			}
			h := ledger.Hash(x.Record)
			switch {
			case next == from.Seq && !bytes.Equal(h[:], fromHash):
				return Head{}, fmt.Errorf("%w: the record at seq %d hashes to %x, the witness cosigned %s", ErrFork, next, h, from.Hash)
			case next > max(from.Seq, 1) || (from.Seq == 0 && next == 1):
				if !bytes.Equal(rec.PrevHash, prev[:]) {
					return Head{}, fmt.Errorf("%w: the record at seq %d does not link to the one before", ErrFork, next)
				}
			}
			prev = h
			cur.Seq, cur.Hash = next, hex.EncodeToString(h[:])
			next++
		case *custosv1.ExportItem_Trailer:
			if cur.Seq == 0 {
				if from.Seq > 0 {
					return Head{}, fmt.Errorf("%w: the ledger no longer holds seq %d", ErrFork, from.Seq)
				}
				return cur, nil // an empty ledger
			}
			if x.Trailer.GetSeq() != cur.Seq || !bytes.Equal(x.Trailer.GetHead(), prev[:]) {
				return Head{}, fmt.Errorf("audit: the export's trailer does not cover its last record %d", cur.Seq)
			}
			if from.Seq > cur.Seq {
				return Head{}, fmt.Errorf("%w: the ledger ends at seq %d, before the witnessed %d", ErrFork, cur.Seq, from.Seq)
			}
			return cur, nil
		default:
			return Head{}, fmt.Errorf("audit: unexpected item after seq %d", cur.Seq)
		}
	}
}

// CheckHead reads a full export (from seq 1) and checks that it holds the
// witnessed head: the record at w.Seq hashes to w.Hash. An export that
// ends before w.Seq was cut; one with another record there has forked.
// Both wrap ErrFork. Verify checks the export itself.
func CheckHead(r io.Reader, w Head) error {
	rd := NewReader(r)
	want, err := hex.DecodeString(w.Hash)
	if err != nil || len(want) != 32 {
		return fmt.Errorf("audit: witness head %q is not 64 hex digits", w.Hash)
	}
	var last uint64
	for {
		it, err := rd.Next()
		if errors.Is(err, io.EOF) {
			return fmt.Errorf("%w: the export ends at seq %d, before the witnessed seq %d: records were cut", ErrFork, last, w.Seq)
		}
		if err != nil {
			return fmt.Errorf("audit: export: %w", err)
		}
		if hdr := it.GetHeader(); hdr != nil && w.ClusterID != "" && hdr.ClusterId != w.ClusterID {
			return fmt.Errorf("%w: the export is of cluster %s, the witness followed %s", ErrFork, hdr.ClusterId, w.ClusterID)
		}
		data := it.GetRecord()
		if data == nil {
			continue
		}
		rec, err := decode(data)
		if err != nil {
			continue // Verify reports it
		}
		last = rec.Seq
		if rec.Seq == w.Seq {
			if h := ledger.Hash(data); !bytes.Equal(h[:], want) {
				return fmt.Errorf("%w: the record at seq %d hashes to %x, the witness cosigned %s", ErrFork, w.Seq, h, w.Hash)
			}
			return nil
		}
	}
}
