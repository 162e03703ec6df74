package kms_test

import (
	"bytes"
	"errors"
	"testing"

	"github.com/custos-kms/custos/kms"
	"github.com/custos-kms/custos/kms/audit"
	custosv1 "github.com/custos-kms/custos/proto/custos/v1"
)

// exportOf exports e's ledger from seq 1 as the auditor.
func exportOf(t *testing.T, e *env) []byte {
	t.Helper()
	var buf bytes.Buffer
	w := audit.NewWriter(&buf)
	if err := e.svc.Export(bg, auditor, &custosv1.ExportRequest{}, w.WriteItem); err != nil {
		t.Fatal(err)
	}
	if err := w.Close(); err != nil {
		t.Fatal(err)
	}
	return buf.Bytes()
}

// checkpointDigest signs a checkpoint and returns its record's state digest.
func checkpointDigest(t *testing.T, e *env) []byte {
	t.Helper()
	if _, err := e.svc.Checkpoint(bg); err != nil {
		t.Fatal(err)
	}
	rec := lastRecord(t, e)
	if rec.Operation != custosv1.Operation_OPERATION_CHECKPOINT || len(rec.StateDigest) != 32 {
		t.Fatalf("last record is not a checkpoint with a state digest: %v", rec)
	}
	return rec.StateDigest
}

// Checkpoint records carry a digest of the governed state: decisions do
// not change it, governance does, and a state changed outside the log (an
// edited snapshot: a revoked key re-enabled) changes it with no record to
// account for it, which audit.Verify reports.
func TestStateDigestShowsEditsOutsideTheLog(t *testing.T) {
	e := newEnv(t)
	if err := e.svc.EnsureCheckpointKey(bg); err != nil {
		t.Fatal(err)
	}
	createKey(t, e, "k")
	dk := dataKey(t, e, "k", nil)
	if _, err := e.govern(revokeKey("k"), 2); err != nil {
		t.Fatal(err)
	}
	d1 := checkpointDigest(t, e)
	if _, err := decrypt(e, dk.WrappedDataKey, nil); !errors.Is(err, kms.ErrFailedPrecondition) {
		t.Fatalf("decrypt under a revoked key: %v", err)
	}
	d2 := checkpointDigest(t, e)
	if !bytes.Equal(d1, d2) {
		t.Fatal("a decision changed the state digest")
	}
	keys, err := audit.ParseKeys(func() [][]byte {
		r, err := e.svc.GetCheckpoint(bg, auditor, &custosv1.GetCheckpointRequest{})
		if err != nil {
			t.Fatal(err)
		}
		return r.PublicKeys
	}())
	if err != nil {
		t.Fatal(err)
	}
	if rep, err := audit.Verify(bytes.NewReader(exportOf(t, e)), keys); err != nil {
		t.Fatalf("the untouched ledger: %v (%+v)", err, rep)
	}
	// The officers re-enable it: a governance record accounts for the
	// change.
	if _, err := e.govern(enableKey("k"), 0, 1); err != nil {
		t.Fatal(err)
	}
	d3 := checkpointDigest(t, e)
	if bytes.Equal(d2, d3) {
		t.Fatal("re-enabling a key did not change the state digest")
	}
	if _, err := audit.Verify(bytes.NewReader(exportOf(t, e)), keys); err != nil {
		t.Fatalf("a state changed by a statement: %v", err)
	}
	// The operator revokes... no: re-enables a key the officers revoke,
	// outside the log.
	if _, err := e.govern(revokeKey("k"), 2); err != nil {
		t.Fatal(err)
	}
	checkpointDigest(t, e)
	e.state.EditKeyForTest("k", func(enabled, revoked *bool) { *enabled, *revoked = true, false })
	if _, err := decrypt(e, dk.WrappedDataKey, nil); err != nil {
		t.Fatalf("decrypt after the edit (what the edit buys the operator): %v", err)
	}
	edited := checkpointDigest(t, e)
	rep, err := audit.Verify(bytes.NewReader(exportOf(t, e)), keys)
	if !errors.Is(err, audit.ErrBroken) || rep.Kind != audit.ProblemStateEdited || rep.ProblemSeq != lastRecord(t, e).Seq {
		t.Fatalf("the edited state: %v (%+v), want %s at the last checkpoint", err, rep, audit.ProblemStateEdited)
	}
	if !bytes.Equal(edited, e.state.StateDigest()) {
		t.Fatal("StateDigest differs from the last checkpoint's")
	}
}
