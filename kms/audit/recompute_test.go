package audit_test

import (
	"bytes"
	"crypto/ecdsa"
	"crypto/rand"
	"crypto/sha256"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/hex"
	"errors"
	"math/big"
	"strings"
	"testing"
	"time"

	"google.golang.org/protobuf/proto"

	"github.com/custos-kms/custos/kms/audit"
	"github.com/custos-kms/custos/kms/governance"
	"github.com/custos-kms/custos/kms/keypolicy"
	"github.com/custos-kms/custos/kms/ledger"
	"github.com/custos-kms/custos/kms/requestsig"
	custosv1 "github.com/custos-kms/custos/proto/custos/v1"
)

// ledgerBuilder writes the records a node would write, by hand: what
// modified node code could write instead. Everything links and is signed
// (a trailer under a registered checkpoint key); only the recomputed
// state can tell a release the officers did not permit.
type ledgerBuilder struct {
	t       testing.TB
	cluster string
	officer *ecdsa.PrivateKey
	cpKey   *ecdsa.PrivateKey
	ca      [32]byte // the client authority the genesis pins (SHA-256 of caDER)
	caDER   []byte
	caKey   *ecdsa.PrivateKey
	now     time.Time
	recs    []*custosv1.DecisionRecord
}

func newLedger(t testing.TB) *ledgerBuilder {
	t.Helper()
	officer, err := governance.GenerateKey()
	if err != nil {
		t.Fatal(err)
	}
	cpKey, err := governance.GenerateKey()
	if err != nil {
		t.Fatal(err)
	}
	caKey, err := governance.GenerateKey()
	if err != nil {
		t.Fatal(err)
	}
	caTmpl := &x509.Certificate{SerialNumber: big.NewInt(1), Subject: pkix.Name{CommonName: "apps"}, IsCA: true, BasicConstraintsValid: true,
		KeyUsage: x509.KeyUsageCertSign, NotBefore: time.Now().Add(-24 * time.Hour), NotAfter: time.Now().Add(24 * time.Hour)}
	caDER, err := x509.CreateCertificate(rand.Reader, caTmpl, caTmpl, &caKey.PublicKey, caKey)
	if err != nil {
		t.Fatal(err)
	}
	b := &ledgerBuilder{t: t, cluster: "c-recompute", officer: officer, cpKey: cpKey,
		ca: sha256.Sum256(caDER), caDER: caDER, caKey: caKey, now: time.Now().Add(-time.Hour)}
	b.add(&custosv1.DecisionRecord{Operation: custosv1.Operation_OPERATION_GENESIS, Genesis: &custosv1.Genesis{
		ClusterId: b.cluster, Quorum: 1, StateMachineVersion: 4,
		Officers:          []*custosv1.Officer{{Name: "alice", PublicKey: governance.MarshalPublicKey(&officer.PublicKey)}},
		ClientAuthorities: []*custosv1.ClientAuthority{{Sha256: hex.EncodeToString(b.ca[:]), Subject: "CN=apps", Certificate: caDER}},
	}})
	der, err := x509.MarshalPKIXPublicKey(&cpKey.PublicKey)
	if err != nil {
		t.Fatal(err)
	}
	b.add(&custosv1.DecisionRecord{Operation: custosv1.Operation_OPERATION_NODE_KEY, Node: "node-1", NodePublicKey: der})
	return b
}

// add appends a record a second after the previous one (ALLOW unless it
// says otherwise).
func (b *ledgerBuilder) add(r *custosv1.DecisionRecord) *custosv1.DecisionRecord {
	b.now = b.now.Add(time.Second)
	if r.TimeUnixNano == 0 {
		r.TimeUnixNano = b.now.UnixNano()
	}
	if r.Outcome == custosv1.Outcome_OUTCOME_UNSPECIFIED {
		r.Outcome = custosv1.Outcome_OUTCOME_ALLOW
	}
	b.recs = append(b.recs, r)
	return r
}

// govern appends the record of a statement alice signed.
func (b *ledgerBuilder) govern(set func(*custosv1.Statement)) {
	b.t.Helper()
	st, err := governance.NewStatement(b.cluster, time.Hour, "test")
	if err != nil {
		b.t.Fatal(err)
	}
	set(st)
	data, err := governance.Marshal(st)
	if err != nil {
		b.t.Fatal(err)
	}
	sig, err := governance.Sign(b.officer, "alice", data)
	if err != nil {
		b.t.Fatal(err)
	}
	b.add(&custosv1.DecisionRecord{Operation: custosv1.Operation_OPERATION_GOVERNANCE, Principal: "officer:alice",
		MatchedRule: "governance:" + governance.OperationName(st),
		Signers:     []string{"alice"}, SignedStatement: &custosv1.SignedStatement{Statement: data, Signatures: []*custosv1.OfficerSignature{sig}}})
}

// cosign returns the record of witness name's cosignature (with key) of
// the last record, as a node writes it.
func (b *ledgerBuilder) cosign(key *ecdsa.PrivateKey, name string) *custosv1.DecisionRecord {
	b.t.Helper()
	cs := &custosv1.Cosignature{ClusterId: b.cluster, Witness: name, Seq: uint64(len(b.recs)), Head: make([]byte, 32),
		TimeUnixNano: b.now.Add(time.Second).UnixNano()}
	d := sha256.Sum256(ledger.CosignatureMessage(cs.ClusterId, cs.Witness, cs.Seq, cs.Head, cs.TimeUnixNano))
	sig, err := ecdsa.SignASN1(rand.Reader, key, d[:])
	if err != nil {
		b.t.Fatal(err)
	}
	cs.Signature = sig
	return &custosv1.DecisionRecord{Operation: custosv1.Operation_OPERATION_WITNESS_COSIGNATURE, MatchedRule: "witness:" + name, Cosignature: cs}
}

// keyAdmin appends a key administration record by principal.
func (b *ledgerBuilder) keyAdmin(op custosv1.Operation, principal, key string, version uint32) {
	b.add(&custosv1.DecisionRecord{Operation: op, Principal: principal, PrincipalIssuerSha256: b.ca[:], Key: key, KeyVersion: version})
}

// release appends a decrypt of key version 1 by principal for reason, under
// the rule the node would name for the policy in effect (policy; nil: the
// default policy of a key principal created).
func (b *ledgerBuilder) release(principal, key string, reason custosv1.Reason, p *custosv1.KeyPolicy) *custosv1.DecisionRecord {
	if p == nil {
		p = keypolicy.Default(principal)
	}
	_, name := keypolicy.Action(p, reason)
	return b.add(&custosv1.DecisionRecord{Operation: custosv1.Operation_OPERATION_DECRYPT, Principal: principal,
		PrincipalIssuerSha256: b.ca[:], Key: key, KeyVersion: 1, Reason: reason, MatchedRule: keypolicy.AllowRule(p, name)})
}

// verify exports the records and verifies them with the checkpoint key trusted.
func (b *ledgerBuilder) verify() (*audit.Report, error) {
	b.t.Helper()
	file := chainExport(b.t.(*testing.T), b.cluster, b.cpKey, b.recs...)
	return audit.Verify(bytes.NewReader(file), []*ecdsa.PublicKey{&b.cpKey.PublicKey})
}

// wantNotPermitted checks that the last record is reported not permitted
// with a problem that mentions want — and that the ledger without it
// verifies, with the state recomputed through it.
func (b *ledgerBuilder) wantNotPermitted(want string) {
	b.t.Helper()
	rep, err := b.verify()
	last := uint64(len(b.recs))
	if !errors.Is(err, audit.ErrBroken) || rep.Kind != audit.ProblemNotPermitted || rep.ProblemSeq != last {
		b.t.Fatalf("Verify: %v (report %+v), want not-permitted at %d", err, rep, last)
	}
	if !strings.Contains(rep.Problem, want) {
		b.t.Errorf("problem %q does not say %q", rep.Problem, want)
	}
	b.recs = b.recs[:len(b.recs)-1]
	rep, err = b.verify()
	if err != nil || !rep.Recomputed {
		b.t.Fatalf("without record %d: Verify: %v (report %+v), want verified and recomputed", last, err, rep)
	}
}

// selfSigned returns a P-256 client certificate (DER) for cn and its
// key: issued by the builder's client authority, or self-signed (by no
// authority the officers pinned) when b is nil.
func selfSigned(t *testing.T, cn string, b ...*ledgerBuilder) ([]byte, *ecdsa.PrivateKey) {
	t.Helper()
	key, err := governance.GenerateKey()
	if err != nil {
		t.Fatal(err)
	}
	tmpl := &x509.Certificate{SerialNumber: big.NewInt(2), Subject: pkix.Name{CommonName: cn},
		ExtKeyUsage: []x509.ExtKeyUsage{x509.ExtKeyUsageClientAuth},
		NotBefore:   time.Now().Add(-2 * time.Hour), NotAfter: time.Now().Add(2 * time.Hour)}
	parent, signer := tmpl, key
	if len(b) > 0 {
		ca, err := x509.ParseCertificate(b[0].caDER)
		if err != nil {
			t.Fatal(err)
		}
		parent, signer = ca, b[0].caKey
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, parent, &key.PublicKey, signer)
	if err != nil {
		t.Fatal(err)
	}
	return der, key
}

func sum256(b []byte) []byte {
	h := sha256.Sum256(b)
	return h[:]
}

func reasonRule(r custosv1.Reason, a custosv1.Action) *custosv1.ReasonRule {
	return &custosv1.ReasonRule{Reason: r, Action: a}
}

const initiated = custosv1.Reason_REASON_CUSTOMER_INITIATED

// TestRecomputedStateChecksReleases writes, for each decision the officers
// took, the release modified node code would make against it, with every
// link, digest-free record and signature intact: each is reported as not
// permitted by the state recomputed from the genesis and the statements,
// and the same ledger without it verifies.
func TestRecomputedStateChecksReleases(t *testing.T) {
	setup := func(t *testing.T) *ledgerBuilder {
		b := newLedger(t)
		b.keyAdmin(custosv1.Operation_OPERATION_CREATE_KEY, "hr-app", "payroll", 1)
		b.release("hr-app", "payroll", initiated, nil)
		rep, err := b.verify()
		if err != nil || !rep.Recomputed || rep.ReleasesChecked != 1 {
			t.Fatalf("clean ledger: %v, report %+v", err, rep)
		}
		return b
	}
	t.Run("revoked key", func(t *testing.T) {
		b := setup(t)
		b.govern(func(st *custosv1.Statement) {
			st.Operation = &custosv1.Statement_RevokeKey{RevokeKey: &custosv1.RevokeKey{Key: "payroll"}}
		})
		b.release("hr-app", "payroll", initiated, nil)
		b.wantNotPermitted("revoked by the officers (record 5)")
	})
	t.Run("disabled then re-enabled", func(t *testing.T) {
		b := setup(t)
		b.keyAdmin(custosv1.Operation_OPERATION_DISABLE_KEY, "hr-app", "payroll", 0)
		b.release("hr-app", "payroll", initiated, nil)
		b.wantNotPermitted("disabled")
		b.govern(func(st *custosv1.Statement) {
			st.Operation = &custosv1.Statement_EnableKey{EnableKey: &custosv1.EnableKey{Key: "payroll"}}
		})
		b.release("hr-app", "payroll", initiated, nil)
		if rep, err := b.verify(); err != nil || rep.ReleasesChecked != 2 {
			t.Fatalf("after enable_key: %v (%+v)", err, rep)
		}
	})
	t.Run("principal the policy no longer names", func(t *testing.T) {
		b := setup(t)
		p := &custosv1.KeyPolicy{DecryptPrincipals: []string{"batch"}, AdminPrincipals: []string{"hr-app"},
			Reasons: []*custosv1.ReasonRule{reasonRule(initiated, custosv1.Action_ACTION_ALLOW)}}
		b.govern(func(st *custosv1.Statement) {
			st.Operation = &custosv1.Statement_SetPolicy{SetPolicy: &custosv1.SetPolicy{Key: "payroll", Policy: p}}
		})
		p.Version = 2
		b.release("batch", "payroll", initiated, p) // permitted
		b.release("hr-app", "payroll", initiated, p)
		b.wantNotPermitted(`principal "hr-app" is not among the decrypt principals of key "payroll"'s policy version 2`)
	})
	t.Run("reason that needs approval, no grant", func(t *testing.T) {
		b := setup(t)
		r := b.release("hr-app", "payroll", custosv1.Reason_REASON_THIRD_PARTY_DATA_REQUEST, nil)
		r.MatchedRule = "policy/v1:reason=THIRD_PARTY_DATA_REQUEST:allow"
		b.wantNotPermitted("does not allow reason THIRD_PARTY_DATA_REQUEST without the officers' approval")
	})
	t.Run("rule names another policy version", func(t *testing.T) {
		b := setup(t)
		r := b.release("hr-app", "payroll", initiated, nil)
		r.MatchedRule = "policy/v7:reason=CUSTOMER_INITIATED:allow"
		b.wantNotPermitted(`the recomputed policy gives "policy/v1:reason=CUSTOMER_INITIATED:allow"`)
	})
	t.Run("outside the policy's time window", func(t *testing.T) {
		b := setup(t)
		now := b.now.Add(time.Second).UTC()
		minute := int32(now.Hour()*60 + now.Minute())
		// A window that closes before now (or opens after it).
		w := &custosv1.TimeWindow{StartMinute: (minute + 120) % 1380, EndMinute: (minute+120)%1380 + 30}
		p := &custosv1.KeyPolicy{DecryptPrincipals: []string{"hr-app"}, Windows: []*custosv1.TimeWindow{w},
			Reasons: []*custosv1.ReasonRule{reasonRule(initiated, custosv1.Action_ACTION_ALLOW)}}
		b.govern(func(st *custosv1.Statement) {
			st.Operation = &custosv1.Statement_SetPolicy{SetPolicy: &custosv1.SetPolicy{Key: "payroll", Policy: p}}
		})
		p.Version = 2
		b.release("hr-app", "payroll", initiated, p)
		b.wantNotPermitted("allows no use at")
	})
	t.Run("over the hourly rate limit", func(t *testing.T) {
		b := setup(t)
		p := &custosv1.KeyPolicy{DecryptPrincipals: []string{"hr-app"}, MaxDecryptsPerPrincipalPerHour: 2,
			Reasons: []*custosv1.ReasonRule{reasonRule(initiated, custosv1.Action_ACTION_ALLOW)}}
		b.govern(func(st *custosv1.Statement) {
			st.Operation = &custosv1.Statement_SetPolicy{SetPolicy: &custosv1.SetPolicy{Key: "payroll", Policy: p}}
		})
		p.Version = 2
		// Aligned inside one hour: two uses, then a third.
		b.now = b.now.Truncate(time.Hour).Add(time.Hour)
		b.release("hr-app", "payroll", initiated, p)
		b.release("hr-app", "payroll", initiated, p)
		b.release("hr-app", "payroll", initiated, p)
		b.wantNotPermitted("2 times that hour")
	})
	t.Run("witness required, none cosigned", func(t *testing.T) {
		b := setup(t)
		p := &custosv1.KeyPolicy{DecryptPrincipals: []string{"hr-app"}, WitnessMaxAgeSeconds: 60,
			Reasons: []*custosv1.ReasonRule{reasonRule(initiated, custosv1.Action_ACTION_ALLOW)}}
		b.govern(func(st *custosv1.Statement) {
			st.Operation = &custosv1.Statement_SetPolicy{SetPolicy: &custosv1.SetPolicy{Key: "payroll", Policy: p}}
		})
		p.Version = 2
		wk, err := governance.GenerateKey()
		if err != nil {
			t.Fatal(err)
		}
		b.govern(func(st *custosv1.Statement) {
			st.Operation = &custosv1.Statement_AddWitness{AddWitness: &custosv1.AddWitness{
				Witness: &custosv1.Witness{Name: "w1", PublicKey: governance.MarshalPublicKey(&wk.PublicKey)}}}
		})
		b.add(b.cosign(wk, "w1"))
		b.release("hr-app", "payroll", initiated, p) // fresh
		b.now = b.now.Add(2 * time.Minute)
		b.release("hr-app", "payroll", initiated, p)
		b.wantNotPermitted("recent witness cosignature")
	})
	t.Run("issuer the officers removed", func(t *testing.T) {
		b := setup(t)
		b.govern(func(st *custosv1.Statement) {
			st.Operation = &custosv1.Statement_RemoveClientAuthority{RemoveClientAuthority: &custosv1.RemoveClientAuthority{Sha256: hex.EncodeToString(b.ca[:])}}
		})
		b.release("hr-app", "payroll", initiated, nil)
		b.wantNotPermitted("not a client authority the officers trusted")
	})
	t.Run("version below the minimum, and a minimum lowered", func(t *testing.T) {
		b := setup(t)
		b.keyAdmin(custosv1.Operation_OPERATION_ROTATE_KEY, "hr-app", "payroll", 2)
		b.keyAdmin(custosv1.Operation_OPERATION_SET_MIN_DECRYPTION_VERSION, "hr-app", "payroll", 2)
		b.release("hr-app", "payroll", initiated, nil)
		b.wantNotPermitted("below its minimum decryption version 2")
		b.keyAdmin(custosv1.Operation_OPERATION_SET_MIN_DECRYPTION_VERSION, "hr-app", "payroll", 1)
		b.wantNotPermitted("may only raise it")
		b.govern(func(st *custosv1.Statement) {
			st.Operation = &custosv1.Statement_SetKeyMinVersion{SetKeyMinVersion: &custosv1.SetKeyMinVersion{Key: "payroll", MinDecryptionVersion: 1}}
		})
		b.release("hr-app", "payroll", initiated, nil)
		if rep, err := b.verify(); err != nil {
			t.Fatalf("after the officers lowered it: %v (%+v)", err, rep)
		}
	})
	t.Run("key administration by a key user who is no administrator", func(t *testing.T) {
		b := setup(t)
		p := &custosv1.KeyPolicy{DecryptPrincipals: []string{"hr-app", "batch"}, AdminPrincipals: []string{"hr-app"},
			Reasons: []*custosv1.ReasonRule{reasonRule(initiated, custosv1.Action_ACTION_ALLOW)}}
		b.govern(func(st *custosv1.Statement) {
			st.Operation = &custosv1.Statement_SetPolicy{SetPolicy: &custosv1.SetPolicy{Key: "payroll", Policy: p}}
		})
		b.keyAdmin(custosv1.Operation_OPERATION_ROTATE_KEY, "batch", "payroll", 2)
		b.wantNotPermitted(`principal "batch" may not administer key "payroll"`)
	})
	t.Run("scheduled for destruction", func(t *testing.T) {
		b := setup(t)
		b.govern(func(st *custosv1.Statement) {
			st.Operation = &custosv1.Statement_ScheduleKeyDestruction{ScheduleKeyDestruction: &custosv1.ScheduleKeyDestruction{Key: "payroll"}}
		})
		b.release("hr-app", "payroll", initiated, nil)
		b.wantNotPermitted("scheduled for destruction")
		b.govern(func(st *custosv1.Statement) {
			st.Operation = &custosv1.Statement_CancelKeyDestruction{CancelKeyDestruction: &custosv1.CancelKeyDestruction{Key: "payroll"}}
		})
		b.release("hr-app", "payroll", initiated, nil)
		if rep, err := b.verify(); err != nil {
			t.Fatalf("after the destruction was cancelled: %v (%+v)", err, rep)
		}
	})
	t.Run("signed requests required", func(t *testing.T) {
		b := setup(t)
		p := &custosv1.KeyPolicy{DecryptPrincipals: []string{"hr-app"}, RequireRequestSignature: true,
			Reasons: []*custosv1.ReasonRule{reasonRule(initiated, custosv1.Action_ACTION_ALLOW)}}
		b.govern(func(st *custosv1.Statement) {
			st.Operation = &custosv1.Statement_SetPolicy{SetPolicy: &custosv1.SetPolicy{Key: "payroll", Policy: p}}
		})
		p.Version = 2
		cert, key := selfSigned(t, "hr-app", b)
		signed := func(ticket string) *custosv1.DecisionRecord {
			r := b.release("hr-app", "payroll", initiated, p)
			dd, cd := sha256.Sum256([]byte("wrapped")), sha256.Sum256(nil)
			r.DataDigest, r.ContextDigest, r.Ticket = dd[:], cd[:], "T-1"
			r.PrincipalCertificate, r.PrincipalCertSha256 = cert, sum256(cert)
			sig, err := requestsig.Sign(key, requestsig.Request{Method: requestsig.MethodDecrypt,
				Header: requestsig.Headers(r.Operation, r.Key, r.KeyVersion)[0], DataDigest: dd[:], ContextDigest: cd[:],
				Reason: initiated, Ticket: ticket}, time.Unix(0, r.TimeUnixNano))
			if err != nil {
				t.Fatal(err)
			}
			r.RequestSignature = sig
			return r
		}
		signed("T-1") // permitted
		b.release("hr-app", "payroll", initiated, p)
		b.wantNotPermitted("releases only to signed requests")
		signed("T-2")
		b.wantNotPermitted(`principal "hr-app" did not sign what the record says it asked`)
		again := proto.Clone(b.recs[len(b.recs)-1]).(*custosv1.DecisionRecord)
		again.TimeUnixNano = 0
		b.add(again)
		b.wantNotPermitted("a replay")
	})
	t.Run("released while a restore waited for the officers", func(t *testing.T) {
		b := setup(t)
		b.add(&custosv1.DecisionRecord{Operation: custosv1.Operation_OPERATION_RESTORE, Node: "node-1", MatchedRule: "restore:restored"})
		b.release("hr-app", "payroll", initiated, nil)
		b.wantNotPermitted("while a restore waited for the officers' acceptance")
	})
	t.Run("key no record created", func(t *testing.T) {
		b := setup(t)
		b.release("hr-app", "shadow", initiated, nil)
		b.wantNotPermitted(`key "shadow", which no record created`)
	})
}

// The recomputation starts only at a GENESIS record of a cluster born at
// state machine version 2 or later, and stops (saying why) where records
// no longer carry what it needs; it never reports what it could not
// follow.
func TestRecomputationSaysWhereItStops(t *testing.T) {
	// From version 2 every applied statement's record carries it: one
	// that does not is reported, not skipped.
	b := newLedger(t)
	b.keyAdmin(custosv1.Operation_OPERATION_CREATE_KEY, "hr-app", "payroll", 1)
	b.add(&custosv1.DecisionRecord{Operation: custosv1.Operation_OPERATION_GOVERNANCE, Principal: "officer:alice", MatchedRule: "governance:revoke_key"})
	b.release("hr-app", "payroll", initiated, nil)
	rep, err := b.verify()
	if !errors.Is(err, audit.ErrBroken) || rep.Kind != audit.ProblemOfficers || rep.ProblemSeq != 4 {
		t.Fatalf("Verify: %v, report %+v: want officers at record 4", err, rep)
	}

	b = newLedger(t)
	b.recs[0].Genesis.StateMachineVersion = 0
	b.keyAdmin(custosv1.Operation_OPERATION_CREATE_KEY, "hr-app", "payroll", 1)
	rep, err = b.verify()
	if err != nil || rep.Recomputed || !strings.Contains(rep.NotRecomputed, "version 1") {
		t.Fatalf("version 1 genesis: %v, report %+v", err, rep)
	}
}

// BenchmarkRecomputation measures what a node's start check and `audit
// verify` spend per record on the recomputation: decoding a decision
// record and checking it against the recomputed state (a decrypt ALLOW
// under the default policy, the common record). bench/RESULTS.md has the
// figure.
func BenchmarkRecomputation(b *testing.B) {
	lb := newLedger(b)
	lb.keyAdmin(custosv1.Operation_OPERATION_CREATE_KEY, "hr-app", "payroll", 1)
	head := append([]*custosv1.DecisionRecord(nil), lb.recs...)
	rec := lb.release("hr-app", "payroll", initiated, nil)
	rec.ContextDigest, rec.DataDigest, rec.PrevHash = make([]byte, 32), make([]byte, 32), make([]byte, 32)
	rec.RequestId, rec.Node, rec.JustificationText = "0123456789abcdef0123456789abcdef", "node-1", "nightly payroll run"
	data, err := proto.MarshalOptions{Deterministic: true}.Marshal(rec)
	if err != nil {
		b.Fatal(err)
	}
	r := audit.NewRecomputation(lb.cluster)
	for i, h := range head {
		h.Seq = uint64(i + 1)
		if err := r.Add(h); err != nil {
			b.Fatal(err)
		}
	}
	seq := uint64(len(head))
	b.SetBytes(int64(len(data)))
	b.ReportAllocs()
	b.ResetTimer()
	for range b.N {
		d := &custosv1.DecisionRecord{}
		if err := proto.Unmarshal(data, d); err != nil {
			b.Fatal(err)
		}
		seq++
		d.Seq = seq
		d.TimeUnixNano = int64(seq) // one use an hour is never reached: no rate limit
		if err := r.Add(d); err != nil {
			b.Fatal(err)
		}
	}
	b.StopTimer()
	if len(r.NotPermitted) != 0 {
		b.Fatalf("not permitted: %v", r.NotPermitted)
	}
}
