package kms_test

import (
	"bytes"
	"crypto/rand"
	"crypto/rsa"
	"crypto/x509"
	"encoding/binary"
	"errors"
	"strings"
	"testing"
	"time"

	"google.golang.org/protobuf/proto"

	"github.com/custos-kms/custos/hsm"
	"github.com/custos-kms/custos/kms"
	"github.com/custos-kms/custos/kms/governance"
	custosv1 "github.com/custos-kms/custos/proto/custos/v1"
	raftlogv1 "github.com/custos-kms/custos/proto/raftlog/v1"
	"github.com/custos-kms/custos/raft"
)

// The admission state machine (admissionstate.go) on replicas driven with
// hand-built commands: every step's rules, the same on every replica,
// including what its snapshot restores. The HSM half runs on real nodes
// (internal/node TestAdmission*).

// from is a command proposed by node.
func from(node string, at time.Time, op any) *raftlogv1.Command {
	c := &raftlogv1.Command{TimeUnixNano: at.UnixNano(), Node: node, Principal: "custosd"}
	switch o := op.(type) {
	case *raftlogv1.OfferTransportKey:
		c.Op = &raftlogv1.Command_OfferTransportKey{OfferTransportKey: o}
	case *raftlogv1.TransportDomainKey:
		c.Op = &raftlogv1.Command_TransportDomainKey{TransportDomainKey: o}
	case *raftlogv1.ConfirmAdmission:
		c.Op = &raftlogv1.Command_ConfirmAdmission{ConfirmAdmission: o}
	case *raftlogv1.RegisterNodeKey:
		c.Op = &raftlogv1.Command_RegisterNodeKey{RegisterNodeKey: o}
	default:
		panic("from: unknown op")
	}
	return c
}

// transportKeyDER returns a fresh RSA-3072 public key (PKIX DER) and its
// fingerprint.
func transportKeyDER(t *testing.T) ([]byte, string) {
	t.Helper()
	k, err := rsa.GenerateKey(rand.Reader, hsm.TransportKeyBits)
	if err != nil {
		t.Fatal(err)
	}
	der, err := x509.MarshalPKIXPublicKey(&k.PublicKey)
	if err != nil {
		t.Fatal(err)
	}
	fp, err := hsm.TransportFingerprint(&k.PublicKey)
	if err != nil {
		t.Fatal(err)
	}
	return der, fp
}

// wantErr checks that res failed with kind and a message containing part.
func wantErr(t *testing.T, what string, res any, kind error, part string) {
	t.Helper()
	err := resultErr(res)
	if !errors.Is(err, kind) || !strings.Contains(err.Error(), part) {
		t.Fatalf("%s: %v, want %v containing %q", what, err, kind, part)
	}
}

func admitStatement(node, fp, identity string, h custosv1.KeyTransportHash) func(*custosv1.Statement) {
	return func(st *custosv1.Statement) {
		st.Operation = &custosv1.Statement_AdmitNode{AdmitNode: &custosv1.AdmitNode{
			Node: node, TransportKeyFingerprint: fp, IdentityKeyFingerprint: identity, Hash: h}}
	}
}

func TestAdmissionStateMachine(t *testing.T) {
	r := newReplicas(t, 2) // initialised by node-2: its first custodian
	at := t0.Add(time.Minute)
	st := r.states[0]
	if a := st.Admission("node-2"); a.GetState() != custosv1.AdmissionState_ADMISSION_STATE_ADMITTED {
		t.Fatalf("the initialising node's admission: %v", a)
	}
	if p := st.Profile(); p != "" {
		t.Fatalf("profile %q, want production", p)
	}
	der, fp := transportKeyDER(t)
	idKey, err := governance.GenerateKey()
	if err != nil {
		t.Fatal(err)
	}
	identity := governance.Fingerprint(&idKey.PublicKey)
	r.mustApply(from("node-3", at, &raftlogv1.RegisterNodeKey{Node: "node-3", PublicKey: governance.MarshalPublicKey(&idKey.PublicKey)}))

	// Offers: only a node's own, only an RSA-3072 key.
	wantErr(t, "offer for another node", r.apply(from("node-2", at, &raftlogv1.OfferTransportKey{Node: "node-3", PublicKey: der}))[0],
		kms.ErrPermissionDenied, "only its own")
	small, err := rsa.GenerateKey(rand.Reader, 2048)
	if err != nil {
		t.Fatal(err)
	}
	smallDER, _ := x509.MarshalPKIXPublicKey(&small.PublicKey)
	wantErr(t, "RSA-2048 offer", r.apply(from("node-3", at, &raftlogv1.OfferTransportKey{Node: "node-3", PublicKey: smallDER}))[0],
		kms.ErrInvalidArgument, "2048 bits")
	wantErr(t, "approval before an offer", r.apply(governAt(at, r.sign(at.Add(time.Hour), admitStatement("node-3", fp, identity,
		custosv1.KeyTransportHash_KEY_TRANSPORT_HASH_SHA256))))[0], kms.ErrFailedPrecondition, "offered no transport key")
	wantErr(t, "offer by an admitted node", r.apply(from("node-2", at, &raftlogv1.OfferTransportKey{Node: "node-2", PublicKey: der}))[0],
		kms.ErrFailedPrecondition, "already admitted")
	r.mustApply(from("node-3", at, &raftlogv1.OfferTransportKey{Node: "node-3", PublicKey: der}))
	if a := st.Admission("node-3"); a.GetState() != custosv1.AdmissionState_ADMISSION_STATE_OFFERED || a.TransportKeyFingerprint != fp {
		t.Fatalf("after the offer: %v", a)
	}

	// Approval: the officers' fingerprints must be the node's, SHA-1 only
	// in the development profile, and the quorum signs.
	otherDER, otherFP := transportKeyDER(t)
	for _, tc := range []struct {
		name, fp, identity string
		hash               custosv1.KeyTransportHash
		part               string
	}{
		{"another transport key", otherFP, identity, custosv1.KeyTransportHash_KEY_TRANSPORT_HASH_SHA256, "not the approved"},
		{"another identity key", fp, strings.Repeat("ab", 16), custosv1.KeyTransportHash_KEY_TRANSPORT_HASH_SHA256, "HSM identity key"},
		{"SHA-1 in production", fp, identity, custosv1.KeyTransportHash_KEY_TRANSPORT_HASH_SHA1, "not CRYPTREC"},
	} {
		wantErr(t, tc.name, r.apply(governAt(at, r.sign(at.Add(time.Hour), admitStatement("node-3", tc.fp, tc.identity, tc.hash))))[0],
			kms.ErrFailedPrecondition, tc.part)
	}
	one := r.sign(at.Add(time.Hour), admitStatement("node-3", fp, identity, custosv1.KeyTransportHash_KEY_TRANSPORT_HASH_SHA256))
	one.Signatures = one.Signatures[:1]
	wantErr(t, "one officer admits", r.apply(governAt(at, one))[0], kms.ErrPermissionDenied, "signature")
	r.mustApply(governAt(at, r.sign(at.Add(time.Hour), admitStatement("node-3", fp, identity, custosv1.KeyTransportHash_KEY_TRANSPORT_HASH_SHA256))))
	if a := st.Admission("node-3"); a.GetState() != custosv1.AdmissionState_ADMISSION_STATE_APPROVED || a.ApprovedFingerprint != fp {
		t.Fatalf("after approval: %v", a)
	}

	// The domain key comes from a custodian, to the approved key only.
	blob := bytes.Repeat([]byte{1}, hsm.TransportKeyBits/8)
	wantErr(t, "sent by a node that is no custodian", r.apply(from("node-4", at, &raftlogv1.TransportDomainKey{Node: "node-3",
		TransportKeyFingerprint: fp, WrappedDomainKey: blob}))[0], kms.ErrPermissionDenied, "not a custodian")
	wantErr(t, "sent to another key", r.apply(from("node-2", at, &raftlogv1.TransportDomainKey{Node: "node-3",
		TransportKeyFingerprint: otherFP, WrappedDomainKey: blob}))[0], kms.ErrFailedPrecondition, "approved transport key")
	wantErr(t, "short blob", r.apply(from("node-2", at, &raftlogv1.TransportDomainKey{Node: "node-3",
		TransportKeyFingerprint: fp, WrappedDomainKey: blob[:100]}))[0], kms.ErrInvalidArgument, "100 bytes")
	wantErr(t, "confirm before anything was sent", r.apply(from("node-3", at, &raftlogv1.ConfirmAdmission{Node: "node-3",
		TransportKeyFingerprint: fp}))[0], kms.ErrFailedPrecondition, "no domain key was sent")
	seq, _ := st.LedgerHead()
	r.mustApply(from("node-2", at, &raftlogv1.TransportDomainKey{Node: "node-3", TransportKeyFingerprint: fp, WrappedDomainKey: blob}))
	wantErr(t, "sent twice", r.apply(from("node-2", at, &raftlogv1.TransportDomainKey{Node: "node-3",
		TransportKeyFingerprint: fp, WrappedDomainKey: blob}))[0], kms.ErrFailedPrecondition, "not waiting")
	if a := st.Admission("node-3"); a.GetState() != custosv1.AdmissionState_ADMISSION_STATE_SENT || !bytes.Equal(a.WrappedDomainKey, blob) || a.SentBy != "node-2" {
		t.Fatalf("after sending: %v", a)
	}
	for _, a := range st.Admissions(false) {
		if len(a.WrappedDomainKey) != 0 {
			t.Fatal("Admissions(false) shows a wrapped domain key")
		}
	}
	wantErr(t, "confirm for another node", r.apply(from("node-2", at, &raftlogv1.ConfirmAdmission{Node: "node-3",
		TransportKeyFingerprint: fp}))[0], kms.ErrPermissionDenied, "only its own")
	r.mustApply(from("node-3", at, &raftlogv1.ConfirmAdmission{Node: "node-3", TransportKeyFingerprint: fp}))
	if a := st.Admission("node-3"); a.GetState() != custosv1.AdmissionState_ADMISSION_STATE_ADMITTED || len(a.WrappedDomainKey) != 0 {
		t.Fatalf("after confirming: %v", a)
	}
	// Both steps are in the ledger.
	for i, rule := range []string{"admission:domain-key-sent", "admission:admitted"} {
		rec, err := st.DecisionRecord(seq + 1 + uint64(i))
		if err != nil || rec.Operation != custosv1.Operation_OPERATION_ADMISSION || rec.MatchedRule != rule {
			t.Fatalf("record %d: %v %v, want %s", seq+1+uint64(i), rec, err, rule)
		}
	}
	wantErr(t, "offer once admitted", r.apply(from("node-3", at, &raftlogv1.OfferTransportKey{Node: "node-3", PublicKey: otherDER}))[0],
		kms.ErrFailedPrecondition, "already admitted")

	// The admissions survive a snapshot.
	restored, _ := emptyState(t)
	if err := restored.Restore(bytes.NewReader(snapshotBytes(t, st))); err != nil {
		t.Fatal(err)
	}
	if got, want := resultString(restored.Admission("node-3")), resultString(st.Admission("node-3")); got != want {
		t.Fatalf("restored admission %s, want %s", got, want)
	}

	// Revocation: one officer; never the last custodian.
	revoke := func(node string) *raftlogv1.Command {
		ss := r.sign(at.Add(time.Hour), func(st *custosv1.Statement) {
			st.Operation = &custosv1.Statement_RevokeAdmission{RevokeAdmission: &custosv1.RevokeAdmission{Node: node}}
		})
		ss.Signatures = ss.Signatures[:1]
		return governAt(at, ss)
	}
	r.mustApply(revoke("node-2"))
	if a := st.Admission("node-2"); a.GetState() != custosv1.AdmissionState_ADMISSION_STATE_REVOKED {
		t.Fatalf("after revoking node-2: %v", a)
	}
	wantErr(t, "revoke the last custodian", r.apply(revoke("node-3"))[0], kms.ErrFailedPrecondition, "only custodian")
	wantErr(t, "revoke twice", r.apply(revoke("node-2"))[0], kms.ErrNotFound, "no admission")
	wantErr(t, "a revoked node sends", r.apply(from("node-2", at, &raftlogv1.TransportDomainKey{Node: "node-3",
		TransportKeyFingerprint: fp, WrappedDomainKey: blob}))[0], kms.ErrPermissionDenied, "not a custodian")
	wantErr(t, "a node confirms what was never sent", r.apply(from("node-2", at, &raftlogv1.ConfirmAdmission{Node: "node-2"}))[0],
		kms.ErrFailedPrecondition, "no domain key was sent")

	// A revoked node may offer again; it stays revoked until officers
	// admit it again.
	r.mustApply(from("node-2", at, &raftlogv1.OfferTransportKey{Node: "node-2", PublicKey: otherDER}))
	if a := st.Admission("node-2"); a.GetState() != custosv1.AdmissionState_ADMISSION_STATE_REVOKED || a.TransportKeyFingerprint != otherFP {
		t.Fatalf("revoked node's new offer: %v", a)
	}
	id2, _ := governance.GenerateKey()
	r.mustApply(from("node-2", at, &raftlogv1.RegisterNodeKey{Node: "node-2", PublicKey: governance.MarshalPublicKey(&id2.PublicKey)}))
	r.mustApply(governAt(at, r.sign(at.Add(time.Hour), admitStatement("node-2", otherFP, governance.Fingerprint(&id2.PublicKey),
		custosv1.KeyTransportHash_KEY_TRANSPORT_HASH_SHA256))))
	if a := st.Admission("node-2"); a.GetState() != custosv1.AdmissionState_ADMISSION_STATE_APPROVED {
		t.Fatalf("revoked node approved again: %v", a)
	}

	// Leaving the Raft configuration revokes, but never the last custodian.
	r.applyConfig("node-2", "node-3")
	r.applyConfig("node-3")
	if a := st.Admission("node-2"); a.GetState() != custosv1.AdmissionState_ADMISSION_STATE_REVOKED {
		t.Fatalf("node-2 left the configuration: %v", a)
	}
	r.applyConfig("node-4")
	if a := st.Admission("node-3"); a.GetState() != custosv1.AdmissionState_ADMISSION_STATE_ADMITTED {
		t.Fatalf("the last custodian left the configuration and was revoked: %v", a)
	}
}

// applyConfig applies a Raft configuration entry of voters ids.
func (r *replicas) applyConfig(ids ...string) {
	r.t.Helper()
	r.index++
	cfg := &raft.Configuration{AppendedAtUnixNano: t0.Add(time.Hour).UnixNano()}
	for _, id := range ids {
		cfg.Servers = append(cfg.Servers, raft.Server{ID: id, Addr: id + ":1", Suffrage: "voter"})
	}
	for _, s := range r.states {
		s.ApplyBatch([]raft.AppliedEntry{{Index: r.index, Configuration: cfg}})
	}
}

// TestAdmissionLegacyCustodian: a cluster initialised before admission has
// no recorded custodian; its node records itself once, and nobody else can
// afterwards.
func TestAdmissionLegacyCustodian(t *testing.T) {
	s, _ := emptyState(t)
	k, _ := governance.GenerateKey()
	applyOne(s, 1, cmd(t0, &raftlogv1.Command_InitCluster{InitCluster: &raftlogv1.InitCluster{ClusterId: clockCluster,
		DomainKeyId: []byte("dk"), Officers: []*custosv1.Officer{{Name: "o", PublicKey: governance.MarshalPublicKey(&k.PublicKey)}},
		Quorum: 1, DomainKeyCheckValue: make([]byte, 16)}}))
	// What an old snapshot restores: no admissions. (Made from today's
	// state, whose records carry state digests an old snapshot's would
	// not: the check against them is not what this test is about.)
	snap := snapshotState(t, s)
	snap.Admissions = nil
	defer kms.SkipRestoreCheckForTest()()
	old, _ := emptyState(t)
	if err := old.Restore(bytes.NewReader(encodeSnapshot(t, s, snap))); err != nil {
		t.Fatal(err)
	}
	if a := old.Admissions(true); len(a) != 0 {
		t.Fatalf("admissions %v", a)
	}
	if err := resultErr(applyOne(old, 10, from("node-1", t0, &raftlogv1.ConfirmAdmission{Node: "node-1"}))); err != nil {
		t.Fatal(err)
	}
	if a := old.Admission("node-1"); a.GetState() != custosv1.AdmissionState_ADMISSION_STATE_ADMITTED {
		t.Fatalf("legacy custodian: %v", a)
	}
	if err := resultErr(applyOne(old, 11, from("node-2", t0, &raftlogv1.ConfirmAdmission{Node: "node-2"}))); !errors.Is(err, kms.ErrFailedPrecondition) {
		t.Fatalf("a second node claims custody: %v", err)
	}
}

// TestAdmissionDevelopmentProfile: only a cluster whose genesis names the
// development profile accepts RSA-OAEP-SHA1, and says so.
func TestAdmissionDevelopmentProfile(t *testing.T) {
	s, _ := emptyState(t)
	k, err := governance.GenerateKey()
	if err != nil {
		t.Fatal(err)
	}
	pub := []*custosv1.Officer{{Name: "o", PublicKey: governance.MarshalPublicKey(&k.PublicKey)}}
	initAt := func(profile string) *raftlogv1.Command {
		return cmd(t0, &raftlogv1.Command_InitCluster{InitCluster: &raftlogv1.InitCluster{ClusterId: clockCluster,
			DomainKeyId: []byte("dk"), Officers: pub, Quorum: 1, DomainKeyCheckValue: make([]byte, 16), Profile: profile}})
	}
	if err := resultErr(applyOne(s, 1, initAt("lenient"))); !errors.Is(err, kms.ErrInvalidArgument) {
		t.Fatalf("unknown profile: %v", err)
	}
	if err := resultErr(applyOne(s, 2, initAt(kms.ProfileDevelopment))); err != nil {
		t.Fatal(err)
	}
	if s.Profile() != kms.ProfileDevelopment || s.Governance().Profile != kms.ProfileDevelopment {
		t.Fatalf("profile %q / %q", s.Profile(), s.Governance().Profile)
	}
	der, fp := transportKeyDER(t)
	idKey, _ := governance.GenerateKey()
	applyOne(s, 3, from("node-3", t0, &raftlogv1.RegisterNodeKey{Node: "node-3", PublicKey: governance.MarshalPublicKey(&idKey.PublicKey)}))
	if err := resultErr(applyOne(s, 4, from("node-3", t0, &raftlogv1.OfferTransportKey{Node: "node-3", PublicKey: der}))); err != nil {
		t.Fatal(err)
	}
	st, err := governance.NewStatement(clockCluster, time.Hour, "")
	if err != nil {
		t.Fatal(err)
	}
	st.NotAfterUnix = t0.Add(time.Hour).Unix()
	admitStatement("node-3", fp, governance.Fingerprint(&idKey.PublicKey), custosv1.KeyTransportHash_KEY_TRANSPORT_HASH_SHA1)(st)
	if d := governance.Describe(st); !strings.Contains(d, "NOT CRYPTREC") {
		t.Fatalf("an officer reading the SHA-1 statement is not told: %s", d)
	}
	b, err := governance.Marshal(st)
	if err != nil {
		t.Fatal(err)
	}
	sig, err := governance.Sign(k, "o", b)
	if err != nil {
		t.Fatal(err)
	}
	res := applyOne(s, 5, governAt(t0, &custosv1.SignedStatement{Statement: b, Signatures: []*custosv1.OfficerSignature{sig}}))
	if err := resultErr(res); err != nil {
		t.Fatal(err)
	}
	if a := s.Admission("node-3"); a.GetState() != custosv1.AdmissionState_ADMISSION_STATE_APPROVED || a.Hash != custosv1.KeyTransportHash_KEY_TRANSPORT_HASH_SHA1 {
		t.Fatalf("admission %v", a)
	}
}

// applyOne applies c alone as log entry index and returns its result.
func applyOne(s *kms.State, index uint64, c *raftlogv1.Command) any {
	return s.ApplyBatch([]raft.AppliedEntry{{Index: index, Commands: []*raftlogv1.Command{c}}})[0][0]
}

// encodeSnapshot returns s's snapshot with its state replaced by st (the
// ledger tail after it unchanged).
func encodeSnapshot(t *testing.T, s *kms.State, st *raftlogv1.State) []byte {
	t.Helper()
	b := snapshotBytes(t, s)
	const magic = "custos-snapshot-v2\n"
	rest := b[len(magic):]
	n, k := binary.Uvarint(rest)
	if k <= 0 {
		t.Fatal("snapshot: bad state length")
	}
	rest = rest[k+int(n):]
	state, err := proto.MarshalOptions{Deterministic: true}.Marshal(st)
	if err != nil {
		t.Fatal(err)
	}
	out := append([]byte(magic), binary.AppendUvarint(nil, uint64(len(state)))...)
	out = append(out, state...)
	return append(out, rest...)
}
