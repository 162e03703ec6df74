package audit

import (
	"crypto/ecdsa"
	"encoding/hex"
	"errors"
	"fmt"
	"io"

	"github.com/custos-kms/custos/kms/ledger"
	custosv1 "github.com/custos-kms/custos/proto/custos/v1"
)

// Verifying with a witness key instead of checkpoint keys (docs/audit.md,
// *With only the genesis and a witness key*): the newest cosignature in an
// export that verifies under the customer's witness key anchors every
// record up to the head it cosigned (each record links to the one before),
// so the checkpoint keys that records up to there registered are the
// cluster's; Verify then checks the whole export under those keys.

// ErrNoWitnessedHead means an export holds no cosignature that verifies
// under the given witness keys.
var ErrNoWitnessedHead = errors.New("audit: the export holds no cosignature by the given witness keys")

// WitnessAnchor returns the newest head of the export's cluster that one
// of the witness keys cosigned, as the export's WITNESS_COSIGNATURE
// records carry it (the signature checked here; that the export holds that
// head is CheckHead's to check), and which witness. It reads the whole
// export.
func WitnessAnchor(r io.Reader, witnesses []*ecdsa.PublicKey) (Head, string, error) {
	rd := NewReader(r)
	var best *custosv1.Cosignature
	cluster := ""
	for {
		it, err := rd.Next()
		if errors.Is(err, io.EOF) {
			break
		}
		if err != nil {
			return Head{}, "", fmt.Errorf("audit: export: %w", err)
		}
		if hdr := it.GetHeader(); hdr != nil {
			cluster = hdr.ClusterId
			continue
		}
		data := it.GetRecord()
		if data == nil {
			continue
		}
		rec, err := decode(data)
		if err != nil || rec.Operation != custosv1.Operation_OPERATION_WITNESS_COSIGNATURE || rec.Outcome != custosv1.Outcome_OUTCOME_ALLOW {
			continue
		}
		cs := rec.GetCosignature()
		if cs == nil || cs.ClusterId != cluster || len(cs.Head) != 32 || (best != nil && cs.Seq <= best.Seq) {
			continue
		}
		msg := ledger.CosignatureMessage(cs.ClusterId, cs.Witness, cs.Seq, cs.Head, cs.TimeUnixNano)
		for _, w := range witnesses {
			if verifySignature(w, msg, cs.Signature) {
				best = cs
				break
			}
		}
	}
	if best == nil {
		return Head{}, "", ErrNoWitnessedHead
	}
	return Head{ClusterID: best.ClusterId, Seq: best.Seq, Hash: hex.EncodeToString(best.Head)}, best.Witness, nil
}

// RegisteredKeys returns the checkpoint keys that records up to seq
// through registered: NODE_KEY records and the keys a
// STATE_MACHINE_UPGRADE record names. It reads the export to there.
func RegisteredKeys(r io.Reader, through uint64) ([]*ecdsa.PublicKey, error) {
	rd := NewReader(r)
	var out []*ecdsa.PublicKey
	seen := map[string]bool{}
	add := func(der []byte) {
		if seen[string(der)] {
			return
		}
		if pub, err := parseP256(der); err == nil {
			seen[string(der)] = true
			out = append(out, pub)
		}
	}
	for {
		it, err := rd.Next()
		if errors.Is(err, io.EOF) {
			return out, nil
		}
		if err != nil {
			return nil, fmt.Errorf("audit: export: %w", err)
		}
		data := it.GetRecord()
		if data == nil {
			continue
		}
		rec, err := decode(data)
		if err != nil {
			continue // Verify reports it
		}
		if rec.Seq > through {
			return out, nil
		}
		switch rec.Operation {
		case custosv1.Operation_OPERATION_NODE_KEY:
			add(rec.NodePublicKey)
		case custosv1.Operation_OPERATION_STATE_MACHINE_UPGRADE:
			for _, k := range rec.RegisteredNodeKeys {
				add(k)
			}
		}
	}
}
