package robustness

import (
	"crypto/sha256"
	"encoding/hex"
	"strings"
	"testing"
	"time"

	"google.golang.org/grpc/codes"

	custosv1 "github.com/custos-kms/custos/proto/custos/v1"
)

// TestCheckFindsViolations feeds the checker a small history and ledger with
// one instance of each violation, so that a passing run means something.
func TestCheckFindsViolations(t *testing.T) {
	t0 := time.Unix(1_800_000_000, 0)
	at := func(s int) time.Time { return t0.Add(time.Duration(s) * time.Second) }
	stmt := sha256.Sum256([]byte("revoke k0"))
	lost := sha256.Sum256([]byte("set policy k1"))
	allow, deny := custosv1.Outcome_OUTCOME_ALLOW, custosv1.Outcome_OUTCOME_DENY
	dk := custosv1.Operation_OPERATION_DECRYPT_DATA_KEY
	gov := custosv1.Operation_OPERATION_GOVERNANCE
	records := []*custosv1.DecisionRecord{
		{Seq: 1, Operation: gov, Outcome: allow, StatementHash: []byte("sink")},
		{Seq: 2, Operation: dk, Outcome: allow, Key: "k0", Principal: "app", RequestId: "r1", Notify: true},
		{Seq: 3, Operation: gov, Outcome: allow, StatementHash: stmt[:]},
		{Seq: 4, Operation: dk, Outcome: allow, Key: "k0", Principal: "app", RequestId: "r2"}, // (b) after the revoke
		{Seq: 5, Operation: dk, Outcome: deny, Key: "k0", Principal: "app", RequestId: "r3", Notify: true},
	}
	ops := []*Op{
		{ID: 0, Kind: OpGenerateDataKey, Key: "k0", Start: at(0), End: at(0), DataKeyHash: "aa"},
		{ID: 1, Kind: OpDecrypt, Key: "k0", Principal: "app", Start: at(1), End: at(1), DecisionSeq: 2, RequestID: "r1", DataKeyHash: "aa", Wrapped: 0},
		{ID: 2, Kind: OpRevoke, Key: "k0", Start: at(2), End: at(3), LedgerSeq: 3, StmtHash: hex.EncodeToString(stmt[:])},
		{ID: 3, Kind: OpGenerateDataKey, Key: "k0", Start: at(4), End: at(4), DataKeyHash: "bb"},                                            // (b) KI-2
		{ID: 4, Kind: OpDecrypt, Key: "k0", Principal: "app", Start: at(5), End: at(5), DecisionSeq: 9, RequestID: "r9", DataKeyHash: "aa"}, // (a) no record
		{ID: 5, Kind: OpDecrypt, Key: "k0", Principal: "app", Start: at(1), End: at(1), DecisionSeq: 2, RequestID: "r1", DataKeyHash: "cc"}, // (a) wrong key
		{ID: 6, Kind: OpSetPolicy, Key: "k1", Start: at(6), End: at(6), LedgerSeq: 4, StmtHash: hex.EncodeToString(lost[:])},                // (e)
	}
	ops[5].Wrapped = 0
	for _, o := range ops {
		o.Code = codes.OK
	}
	v := Check(Input{Ops: ops, Records: records, SinkFrom: 1, Delivered: map[uint64]bool{2: true},
		KeyStates: []map[string]string{{"k0": "ENABLED"}}})
	want := map[string][]string{
		"a": {"no ledger record 9", "returned data key cc"},
		"b": {"ledger record 4 ALLOWs", "GenerateDataKey returned a data key"},
		"d": {"1 notify records never reached"},
		"e": {"ledger 4 holds", "key k0 is ENABLED"},
	}
	for check, subs := range want {
		for _, sub := range subs {
			found := false
			for _, x := range v {
				if x.Check == check && strings.Contains(x.Detail, sub) {
					found = true
				}
			}
			if !found {
				t.Errorf("(%s) %q not reported; got:\n%v", check, sub, v)
			}
		}
	}
	for _, x := range v {
		if strings.Contains(x.Detail, "GenerateDataKey returned") && x.Known != KnownStaleDataKey {
			t.Errorf("stale data key not marked %s: %v", KnownStaleDataKey, x)
		}
	}
	if len(v) != 8 { // Decrypt #4 also broke (b) in real time
		t.Errorf("%d violations, want 8:\n%v", len(v), v)
	}
}

// Key-administration and membership records are neither key uses nor
// statements: a ledger full of them passes the checks, and a key user's
// own disable stops the key like the officers' (check (b) over the ledger,
// and the final state of check (e)).
func TestCheckKnowsKeyAdministrationAndMembership(t *testing.T) {
	allow, deny := custosv1.Outcome_OUTCOME_ALLOW, custosv1.Outcome_OUTCOME_DENY
	dk := custosv1.Operation_OPERATION_DECRYPT_DATA_KEY
	records := []*custosv1.DecisionRecord{
		{Seq: 1, Operation: custosv1.Operation_OPERATION_MEMBERSHIP, Outcome: allow, MatchedRule: "raft-configuration:add-voter", Notify: true},
		{Seq: 2, Operation: custosv1.Operation_OPERATION_CREATE_KEY, Outcome: allow, Key: "k0", Principal: "app", KeyVersion: 1},
		{Seq: 3, Operation: custosv1.Operation_OPERATION_ROTATE_KEY, Outcome: deny, Key: "k0", Principal: "intruder", KeyVersion: 2, Notify: true},
		{Seq: 4, Operation: custosv1.Operation_OPERATION_SET_MIN_DECRYPTION_VERSION, Outcome: allow, Key: "k0", Principal: "app", KeyVersion: 1},
		{Seq: 5, Operation: dk, Outcome: allow, Key: "k0", Principal: "app", RequestId: "r1"},
		{Seq: 6, Operation: custosv1.Operation_OPERATION_DISABLE_KEY, Outcome: deny, Key: "k0", Principal: "intruder"},
		{Seq: 7, Operation: dk, Outcome: allow, Key: "k0", Principal: "app", RequestId: "r2"},
	}
	in := Input{Records: records, Delivered: map[uint64]bool{1: true, 3: true}, KeyStates: []map[string]string{{"k0": "ENABLED"}}}
	if v := Check(in); len(v) != 0 {
		t.Fatalf("violations on a clean ledger: %v", v)
	}
	in.Records = append(records,
		&custosv1.DecisionRecord{Seq: 8, Operation: custosv1.Operation_OPERATION_DISABLE_KEY, Outcome: allow, Key: "k0", Principal: "app"},
		&custosv1.DecisionRecord{Seq: 9, Operation: dk, Outcome: allow, Key: "k0", Principal: "app", RequestId: "r3"})
	v := Check(in)
	var b, e bool
	for _, x := range v {
		b = b || (x.Check == "b" && strings.Contains(x.Detail, "ledger record 9 ALLOWs") && strings.Contains(x.Detail, "stopped at record 8"))
		e = e || (x.Check == "e" && strings.Contains(x.Detail, "key k0 is ENABLED") && strings.Contains(x.Detail, "DISABLED"))
	}
	if !b || !e || len(v) != 2 {
		t.Fatalf("after a key user's disable: %v, want (b) at record 9 and (e) for k0", v)
	}
}

// TestCryptoByNode: key crypto is counted per node, and what the other
// nodes served while node1 was down (kill to restart) is counted apart.
func TestCryptoByNode(t *testing.T) {
	t0 := time.Unix(1_800_000_000, 0)
	at := func(s int) time.Time { return t0.Add(time.Duration(s) * time.Second) }
	faults := []Fault{
		{At: at(10), Kind: "kill", Node: 0},
		{At: at(11), Kind: "isolate", Node: 1},
		{At: at(20), Kind: "restart", Node: 0},
		{At: at(30), Kind: "crashed", Node: 0},
		{At: at(31), Kind: "start-failed", Node: 0},
		{At: at(40), Kind: "rebuild", Node: 0},
		{At: at(50), Kind: "kill", Node: 0},
	}
	downs := DownTimes(faults, 0, at(60))
	if len(downs) != 3 || !downs[0].From.Equal(at(10)) || !downs[0].To.Equal(at(20)) ||
		!downs[1].From.Equal(at(30)) || !downs[1].To.Equal(at(40)) || !downs[2].To.Equal(at(60)) {
		t.Fatalf("downs %v", downs)
	}
	ops := []*Op{
		{Kind: OpGenerateDataKey, Node: 1, Start: at(12), End: at(13)},                  // while down
		{Kind: OpDecrypt, Node: 2, Start: at(32), End: at(33)},                          // while down
		{Kind: OpDecrypt, Node: 2, Start: at(19), End: at(21)},                          // ends after the restart
		{Kind: OpDecrypt, Node: 0, Start: at(12), End: at(13), Code: codes.Unavailable}, // node1 itself
		{Kind: OpDecrypt, Node: FailoverNode, Start: at(12), End: at(13)},               // not a node
		{Kind: OpDecrypt, Node: 1, Start: at(14), End: at(15), Code: codes.Unavailable}, // failed
		{Kind: OpRevoke, Node: 1, Start: at(14), End: at(15)},                           // not key crypto
		{Kind: OpGenerateDataKey, Node: 0, Start: at(1), End: at(2)},
	}
	if g, r := ServedWhileDown(ops, downs, 0); g != 1 || r != 1 {
		t.Errorf("served while node1 was down: %d generated, %d released; want 1, 1", g, r)
	}
	by := CryptoByNode(ops)
	if by[0] != (NodeCrypto{Calls: 2, OK: 1, Generated: 1}) || by[1] != (NodeCrypto{Calls: 2, OK: 1, Generated: 1}) ||
		by[2] != (NodeCrypto{Calls: 2, OK: 2, Released: 2}) || by[FailoverNode] != (NodeCrypto{Calls: 1, OK: 1, Released: 1}) {
		t.Errorf("by node %+v", by)
	}
}
