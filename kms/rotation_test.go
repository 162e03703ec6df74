package kms_test

import (
	"bytes"
	"crypto/sha256"
	"encoding/binary"
	"sort"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/custos-kms/custos/kms"
	"github.com/custos-kms/custos/kms/governance"
	custosv1 "github.com/custos-kms/custos/proto/custos/v1"
	raftlogv1 "github.com/custos-kms/custos/proto/raftlog/v1"
)

// rotationCmd is a rotation command proposed by node.
func rotationCmd(node string, at time.Time, op any) *raftlogv1.Command {
	c := &raftlogv1.Command{TimeUnixNano: at.UnixNano(), Node: node, Principal: "custosd"}
	switch o := op.(type) {
	case *raftlogv1.BeginDomainKeyRotation:
		c.Op = &raftlogv1.Command_BeginDomainKeyRotation{BeginDomainKeyRotation: o}
	case *raftlogv1.RewrapKeks:
		c.Op = &raftlogv1.Command_RewrapKeks{RewrapKeks: o}
	case *raftlogv1.CompleteDomainKeyRotation:
		c.Op = &raftlogv1.Command_CompleteDomainKeyRotation{CompleteDomainKeyRotation: o}
	default:
		return from(node, at, op)
	}
	return c
}

// rotatedDigest is the digest a confirmation names for blobs by
// "key/version" (one key, versions in order).
func rotatedDigest(blobs map[string][]byte) []byte {
	h := sha256.New()
	var n [4]byte
	for _, kv := range sortedStrings(blobs) {
		key, v, _ := strings.Cut(kv, "/")
		ver, _ := strconv.Atoi(v)
		binary.BigEndian.PutUint32(n[:], uint32(len(key)))
		h.Write(n[:])
		h.Write([]byte(key))
		binary.BigEndian.PutUint32(n[:], uint32(ver))
		h.Write(n[:])
		binary.BigEndian.PutUint32(n[:], uint32(len(blobs[kv])))
		h.Write(n[:])
		h.Write(blobs[kv])
	}
	return h.Sum(nil)
}

func sortedStrings(m map[string][]byte) []string {
	var out []string
	for k := range m {
		out = append(out, k)
	}
	sort.Strings(out)
	return out
}

// oneOfficer keeps only the first signature of ss.
func oneOfficer(ss *custosv1.SignedStatement) *custosv1.SignedStatement {
	ss.Signatures = ss.Signatures[:1]
	return ss
}

// TestDomainKeyRotationStateMachine: every rule of a rotation
// (rotation.go) on replicas driven with hand-built commands; the HSM half
// runs on real nodes (internal/node TestDomainKeyRotationErasesDestroyedKeys).
func TestDomainKeyRotationStateMachine(t *testing.T) {
	r := newReplicas(t, 2) // initialised by node-2; key k, version 1
	at := t0.Add(time.Minute)
	st := r.states[0]
	// node-3 becomes a second custodian.
	idKey, err := governance.GenerateKey()
	if err != nil {
		t.Fatal(err)
	}
	identity := governance.Fingerprint(&idKey.PublicKey)
	r.mustApply(from("node-3", at, &raftlogv1.RegisterNodeKey{Node: "node-3", PublicKey: governance.MarshalPublicKey(&idKey.PublicKey)}))
	der, fp := transportKeyDER(t)
	sha := custosv1.KeyTransportHash_KEY_TRANSPORT_HASH_SHA256
	blob := bytes.Repeat([]byte{1}, 384)
	r.mustApply(from("node-3", at, &raftlogv1.OfferTransportKey{Node: "node-3", PublicKey: der}))
	r.mustApply(governAt(at, r.sign(at.Add(time.Hour), admitStatement("node-3", fp, identity, sha))))
	r.mustApply(from("node-2", at, &raftlogv1.TransportDomainKey{Node: "node-3", TransportKeyFingerprint: fp, WrappedDomainKey: blob}))
	r.mustApply(from("node-3", at, &raftlogv1.ConfirmAdmission{Node: "node-3", TransportKeyFingerprint: fp}))
	oldDK := st.DomainKey()
	k, _ := st.Key("k")
	oldBlob := k.Versions[0].WrappedKek

	rotate := func(setOp func(*custosv1.Statement)) *raftlogv1.Command {
		return governAt(at, oneOfficer(r.sign(at.Add(time.Hour), setOp)))
	}
	start := func(s *custosv1.Statement) {
		s.Operation = &custosv1.Statement_RotateDomainKey{RotateDomainKey: &custosv1.RotateDomainKey{}}
	}
	cancel := func(s *custosv1.Statement) {
		s.Operation = &custosv1.Statement_CancelDomainKeyRotation{CancelDomainKeyRotation: &custosv1.CancelDomainKeyRotation{}}
	}
	wantErr(t, "cancel without a rotation", r.apply(rotate(cancel))[0], kms.ErrFailedPrecondition, "no domain-key rotation")
	r.mustApply(rotate(start)) // one officer suffices
	wantErr(t, "a second rotation", r.apply(rotate(start))[0], kms.ErrFailedPrecondition, "already running")
	wantErr(t, "key creation meanwhile", r.apply(cmd(at, &raftlogv1.Command_CreateKey{CreateKey: &raftlogv1.CreateKey{Name: "new",
		WrappedKek: []byte("kek"), KekId: []byte("kek-2"), KekCheckValue: make([]byte, 16)}}))[0], kms.ErrFailedPrecondition, "being rotated")

	newID, newKCV := []byte(kms.RotationKeyPrefix(clockCluster, 1)+"new"), bytes.Repeat([]byte{7}, 16)
	begin := &raftlogv1.BeginDomainKeyRotation{Epoch: 1, NewDomainKeyId: newID, NewDomainKeyCheckValue: newKCV}
	wantErr(t, "begun by a node that is no custodian", r.apply(rotationCmd("node-4", at, begin))[0], kms.ErrPermissionDenied, "not a custodian")
	wantErr(t, "begun for another epoch", r.apply(rotationCmd("node-2", at, &raftlogv1.BeginDomainKeyRotation{Epoch: 2,
		NewDomainKeyId: newID, NewDomainKeyCheckValue: newKCV}))[0], kms.ErrFailedPrecondition, "epoch 2")
	wantErr(t, "the old key's id again", r.apply(rotationCmd("node-2", at, &raftlogv1.BeginDomainKeyRotation{Epoch: 1,
		NewDomainKeyId: oldDK.ID, NewDomainKeyCheckValue: newKCV}))[0], kms.ErrInvalidArgument, "was a domain key")
	wantErr(t, "another object's id", r.apply(rotationCmd("node-2", at, &raftlogv1.BeginDomainKeyRotation{Epoch: 1,
		NewDomainKeyId: []byte("custos/checkpoint/node-2"), NewDomainKeyCheckValue: newKCV}))[0], kms.ErrInvalidArgument, "starts with")
	r.mustApply(rotationCmd("node-2", at, begin))
	wantErr(t, "begun twice", r.apply(rotationCmd("node-3", at, begin))[0], kms.ErrFailedPrecondition, "already generated")

	// Transport keys: offered by each custodian, approved by the quorum.
	der2, fp2 := transportKeyDER(t)
	der3, fp3 := transportKeyDER(t)
	r.mustApply(from("node-2", at, &raftlogv1.OfferTransportKey{Node: "node-2", PublicKey: der2, Rotation: true}))
	r.mustApply(from("node-3", at, &raftlogv1.OfferTransportKey{Node: "node-3", PublicKey: der3, Rotation: true}))
	wantErr(t, "offer by a node that is no custodian", r.apply(from("node-4", at, &raftlogv1.OfferTransportKey{Node: "node-4", PublicKey: der3, Rotation: true}))[0],
		kms.ErrFailedPrecondition, "not a custodian")
	approve := func(node, fp, id string) func(*custosv1.Statement) {
		return func(s *custosv1.Statement) {
			s.Operation = &custosv1.Statement_AdmitNode{AdmitNode: &custosv1.AdmitNode{Node: node, TransportKeyFingerprint: fp,
				IdentityKeyFingerprint: id, Hash: sha, DomainKeyRotation: true}}
		}
	}
	idKey2, err := governance.GenerateKey()
	if err != nil {
		t.Fatal(err)
	}
	r.mustApply(from("node-2", at, &raftlogv1.RegisterNodeKey{Node: "node-2", PublicKey: governance.MarshalPublicKey(&idKey2.PublicKey)}))
	id2 := st.IdentityFingerprint("node-2")
	wantErr(t, "one officer approves", r.apply(rotate(approve("node-3", fp3, identity)))[0], kms.ErrPermissionDenied, "signature")
	wantErr(t, "another key approved", r.apply(governAt(at, r.sign(at.Add(time.Hour), approve("node-3", fp2, identity))))[0],
		kms.ErrFailedPrecondition, "not the approved")
	r.mustApply(governAt(at, r.sign(at.Add(time.Hour), approve("node-3", fp3, identity))))
	r.mustApply(governAt(at, r.sign(at.Add(time.Hour), approve("node-2", fp2, id2))))
	wantErr(t, "an admission meanwhile", r.apply(governAt(at, r.sign(at.Add(time.Hour), admitStatement("node-4", fp, identity, sha))))[0],
		kms.ErrFailedPrecondition, "being rotated")

	// The generator sends the new key; only it.
	send := &raftlogv1.TransportDomainKey{Node: "node-3", TransportKeyFingerprint: fp3, WrappedDomainKey: blob, Rotation: true}
	wantErr(t, "sent by another node", r.apply(from("node-3", at, send))[0], kms.ErrPermissionDenied, "generator")
	r.mustApply(from("node-2", at, send))
	wantErr(t, "completed too early", r.apply(rotationCmd("node-2", at, &raftlogv1.CompleteDomainKeyRotation{Epoch: 1}))[0],
		kms.ErrFailedPrecondition, "not re-wrapped")

	// The generator re-wraps, then confirms; node-3 confirms.
	confirm2 := &raftlogv1.ConfirmAdmission{Node: "node-2", TransportKeyFingerprint: fp2, Rotation: true}
	wantErr(t, "generator confirms before re-wrapping", r.apply(from("node-2", at, confirm2))[0], kms.ErrFailedPrecondition, "not re-wrapped")
	confirm3 := &raftlogv1.ConfirmAdmission{Node: "node-3", TransportKeyFingerprint: fp3, Rotation: true}
	newBlob := bytes.Repeat([]byte{9}, 40)
	rewrap := &raftlogv1.RewrapKeks{Epoch: 1, Keks: []*raftlogv1.RewrappedKek{{Key: "k", Version: 1, WrappedKek: newBlob}}}
	wantErr(t, "re-wrapped by another node", r.apply(rotationCmd("node-3", at, rewrap))[0], kms.ErrPermissionDenied, "generator")
	wantErr(t, "re-wrapped unknown version", r.apply(rotationCmd("node-2", at, &raftlogv1.RewrapKeks{Epoch: 1,
		Keks: []*raftlogv1.RewrappedKek{{Key: "k", Version: 9, WrappedKek: newBlob}}}))[0], kms.ErrNotFound, "version 9")
	r.mustApply(rotationCmd("node-2", at, rewrap))
	// A confirmation names the blobs the node checked: another set is
	// refused (a blob changed after the check).
	confirm2.RotatedDigest = bytes.Repeat([]byte{1}, 32)
	wantErr(t, "generator confirms other blobs", r.apply(from("node-2", at, confirm2))[0], kms.ErrFailedPrecondition, "other re-wrapped KEKs")
	digest := rotatedDigest(map[string][]byte{"k/1": newBlob})
	confirm3.RotatedDigest = digest
	wantErr(t, "a custodian confirms before the generator", r.apply(from("node-3", at, confirm3))[0], kms.ErrFailedPrecondition, "generator has not confirmed")
	confirm2.RotatedDigest = digest
	r.mustApply(from("node-2", at, confirm2))
	wantErr(t, "re-wrapped after the generator confirmed", r.apply(rotationCmd("node-2", at, rewrap))[0], kms.ErrFailedPrecondition, "final")
	complete := rotationCmd("node-2", at, &raftlogv1.CompleteDomainKeyRotation{Epoch: 1})
	wantErr(t, "completed before node-3 holds the key", r.apply(complete)[0], kms.ErrFailedPrecondition, "node-3")
	r.mustApply(from("node-3", at, confirm3))
	wantErr(t, "completed by another node", r.apply(rotationCmd("node-3", at, &raftlogv1.CompleteDomainKeyRotation{Epoch: 1}))[0],
		kms.ErrPermissionDenied, "generator")
	seq, _ := st.LedgerHead()
	r.mustApply(complete)
	if dk := st.DomainKey(); !bytes.Equal(dk.ID, newID) || !bytes.Equal(dk.CheckValue, newKCV) {
		t.Fatalf("domain key after the rotation: %q", dk.ID)
	}
	if epoch, running := st.DomainKeyEpoch(false); epoch != 1 || running != nil {
		t.Fatalf("epoch %d, rotation %v", epoch, running)
	}
	if k, _ := st.Key("k"); !bytes.Equal(k.Versions[0].WrappedKek, newBlob) || bytes.Equal(k.Versions[0].WrappedKek, oldBlob) {
		t.Fatalf("version 1's blob after the rotation: %x", k.Versions[0].WrappedKek)
	}
	rec, err := st.DecisionRecord(seq + 1)
	if err != nil || rec.Operation != custosv1.Operation_OPERATION_DOMAIN_KEY_ROTATION || rec.MatchedRule != "domain-key-rotation:completed" ||
		!strings.Contains(rec.Detail, string(oldDK.ID)) {
		t.Fatalf("completion record %v, %v", rec, err)
	}
	// The retired key survives a snapshot (a node back later destroys it).
	restored, _ := emptyState(t)
	if err := restored.Restore(bytes.NewReader(snapshotBytes(t, st))); err != nil {
		t.Fatal(err)
	}
	if epoch, _ := restored.DomainKeyEpoch(false); epoch != 1 || !bytes.Equal(restored.DomainKey().ID, newID) {
		t.Fatalf("restored epoch %d, key %q", epoch, restored.DomainKey().ID)
	}
	r.mustApply(cmd(at, &raftlogv1.Command_CreateKey{CreateKey: &raftlogv1.CreateKey{Name: "new",
		WrappedKek: []byte("kek"), KekId: []byte("kek-2"), KekCheckValue: make([]byte, 16)}}))

	// A second rotation, cancelled by one officer: the new key is retired
	// and the re-wrapped blobs forgotten; the domain key stays.
	r.mustApply(rotate(start))
	r.mustApply(rotationCmd("node-3", at, &raftlogv1.BeginDomainKeyRotation{Epoch: 2, NewDomainKeyId: []byte(kms.RotationKeyPrefix(clockCluster, 2) + "third"), NewDomainKeyCheckValue: newKCV}))
	r.mustApply(rotate(cancel))
	if epoch, running := st.DomainKeyEpoch(false); epoch != 1 || running != nil || !bytes.Equal(st.DomainKey().ID, newID) {
		t.Fatalf("after the cancellation: epoch %d, rotation %v, key %q", epoch, running, st.DomainKey().ID)
	}
	wantErr(t, "the cancelled key's id again", r.apply(rotate(start), rotationCmd("node-3", at, &raftlogv1.BeginDomainKeyRotation{Epoch: 2,
		NewDomainKeyId: []byte(kms.RotationKeyPrefix(clockCluster, 2) + "third"), NewDomainKeyCheckValue: newKCV}))[1], kms.ErrInvalidArgument, "was a domain key")
	// Revoking the generator abandons the rotation.
	r.mustApply(rotationCmd("node-3", at, &raftlogv1.BeginDomainKeyRotation{Epoch: 2, NewDomainKeyId: []byte(kms.RotationKeyPrefix(clockCluster, 2) + "fourth"), NewDomainKeyCheckValue: newKCV}))
	r.mustApply(governAt(at, oneOfficer(r.sign(at.Add(time.Hour), func(s *custosv1.Statement) {
		s.Operation = &custosv1.Statement_RevokeAdmission{RevokeAdmission: &custosv1.RevokeAdmission{Node: "node-3"}}
	}))))
	if _, running := st.DomainKeyEpoch(false); running != nil {
		t.Fatalf("the rotation survived its generator's revocation: %v", running)
	}
}
