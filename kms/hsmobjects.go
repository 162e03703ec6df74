package kms

import (
	"context"
	"encoding/hex"
	"errors"
	"fmt"
	"strings"
	"time"

	"github.com/custos-kms/custos/hsm"
	custosv1 "github.com/custos-kms/custos/proto/custos/v1"
	raftlogv1 "github.com/custos-kms/custos/proto/raftlog/v1"
)

// HSM objects custos relies on are authenticated (invariant 9 of
// docs/architecture.md; docs/hsm-objects.md): each has a random object id
// chosen when it is made, and a key check value computed in the HSM, both
// recorded in the log. A node uses an object only if the backend finds
// exactly one object with that id and the attributes custos sets, whose check
// value is the recorded one. Anything else — an object planted under the id
// with a value its planter knows, a second object beside the real one — is
// refused: the request fails closed with ErrHSMObjectRejected, the node logs
// it, and a RejectHSMObject record goes into the ledger.

// MaxObjectIDLen bounds the object ids the log accepts (CKA_ID values).
const MaxObjectIDLen = 255

// rejectReportInterval bounds the RejectHSMObject records one node writes for
// one object id: a planted object would otherwise add a record per request.
const rejectReportInterval = 5 * time.Minute

// newObjectID returns prefix + "/" + 32 random hex digits from the HSM's
// RNG: an id no one can predict before the command naming it is committed.
func (s *Service) newObjectID(ctx context.Context, prefix string) ([]byte, error) {
	raw, err := s.hsm.Random(ctx, 16)
	if err != nil {
		return nil, hsmError("random", err)
	}
	return []byte(prefix + "/" + hex.EncodeToString(raw)), nil
}

// newKEK makes the KEK of a new key version in this node's HSM, wrapped
// under the domain key, with a random object id and its key check value: the
// version record to propose.
func (s *Service) newKEK(ctx context.Context, key string, version uint32) (*raftlogv1.KeyVersionRecord, error) {
	if err := s.admitted(ctx); err != nil {
		return nil, err
	}
	if s.state.rotating() {
		return nil, ErrRotating
	}
	id, err := s.newObjectID(ctx, fmt.Sprintf("custos/kek/%s/%d", key, version))
	if err != nil {
		return nil, err
	}
	blob, kcv, err := s.hsm.GenerateWrappedKey(ctx, s.state.DomainKey())
	if err != nil {
		if errors.Is(err, hsm.ErrObjectMismatch) {
			return nil, s.rejectObject(ctx, "", 0, s.state.DomainKeyID(), err)
		}
		return nil, hsmError("generate key", err)
	}
	return &raftlogv1.KeyVersionRecord{Version: version, WrappedKek: blob, KekId: id, KekCheckValue: kcv}, nil
}

// kekRef names a key version whose KEK is verified in this node's HSM.
type kekRef struct {
	key     string
	version uint32
}

// kek returns the reference of a key version's KEK in this node's HSM,
// unwrapping it from the replicated wrapped form if it is not there yet. The
// object is verified (VerifyKey) the first time this process uses it; after
// that the backend re-verifies whenever it finds the object again.
func (s *Service) kek(ctx context.Context, key string, kv *raftlogv1.KeyVersionRecord) (hsm.KeyRef, error) {
	if err := s.admitted(ctx); err != nil {
		return hsm.KeyRef{}, err
	}
	ref := kekRef{key: key, version: kv.Version}
	s.kekMu.Lock()
	known, ok := s.keks[ref]
	s.kekMu.Unlock()
	if ok {
		return known, nil
	}
	kr := hsm.KeyRef{ID: kv.KekId, CheckValue: kv.KekCheckValue}
	err := s.hsm.VerifyKey(ctx, kr, hsm.UsageEncrypt)
	if errors.Is(err, hsm.ErrKeyNotFound) {
		err = s.hsm.UnwrapKey(ctx, s.state.DomainKey(), kv.WrappedKek, hsm.KeySpec{
			ID: kr.ID, Label: fmt.Sprintf("custos kek %s v%d", key, kv.Version), Usage: hsm.UsageEncrypt,
			CheckValue: kr.CheckValue})
		if errors.Is(err, hsm.ErrKeyExists) {
			// Another request unwrapped it first — or an object custos did
			// not make holds the id: only verification tells.
			err = s.hsm.VerifyKey(ctx, kr, hsm.UsageEncrypt)
			if errors.Is(err, hsm.ErrKeyNotFound) {
				err = fmt.Errorf("%w: an object of another kind holds id %q", hsm.ErrObjectMismatch, kr.ID)
			}
		}
	}
	if err != nil {
		if errors.Is(err, hsm.ErrObjectMismatch) {
			return hsm.KeyRef{}, s.rejectObject(ctx, key, kv.Version, kr.ID, err)
		}
		return hsm.KeyRef{}, hsmError("load key", err)
	}
	s.kekMu.Lock()
	s.keks[ref] = kr
	s.kekMu.Unlock()
	return kr, nil
}

// kekError maps an HSM error of an operation under a verified KEK. A KEK
// that no longer verifies — its token object was replaced or doubled while
// this node runs, and the backend found it again — is forgotten here,
// reported like any rejected object (a log line and an HSM_OBJECT_REJECTED
// record) and fails the request with ErrHSMObjectRejected; anything else is
// hsmError.
func (s *Service) kekError(ctx context.Context, kr hsm.KeyRef, op string, err error) error {
	if !errors.Is(err, hsm.ErrObjectMismatch) {
		return hsmError(op, err)
	}
	key, version := "", uint32(0)
	s.kekMu.Lock()
	for ref, known := range s.keks {
		if string(known.ID) == string(kr.ID) {
			key, version = ref.key, ref.version
			delete(s.keks, ref)
		}
	}
	s.kekMu.Unlock()
	return s.rejectObject(ctx, key, version, kr.ID, err)
}

// materialise puts a new key version into this node's HSM right away; a
// failure is logged and retried on first use.
func (s *Service) materialise(ctx context.Context, key string, kv *raftlogv1.KeyVersionRecord) {
	if _, err := s.kek(ctx, key, kv); err != nil {
		s.lg.Warn("key version not yet in this HSM; will retry on use", "key", key, "version", kv.Version, "err", err)
	}
}

// rejectObject handles an HSM object that is not the recorded one: it logs
// it, records a RejectHSMObject in the ledger (at most once per object id
// and rejectReportInterval on this node), and returns the error to fail the
// request with. key is "" for the domain key.
func (s *Service) rejectObject(ctx context.Context, key string, version uint32, id []byte, cause error) error {
	what := "the domain key"
	if key != "" {
		what = fmt.Sprintf("key %q version %d", key, version)
	}
	s.lg.Error("HSM object rejected: it is not the key the log records; nothing was done with it",
		"key", key, "version", version, "object_id", string(id), "err", cause)
	s.rejectMu.Lock()
	last, seen := s.rejectReported[string(id)]
	report := !seen || time.Since(last) >= rejectReportInterval
	if report {
		s.rejectReported[string(id)] = time.Now()
	}
	s.rejectMu.Unlock()
	if report && s.state.ClusterID() != "" {
		rctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), 10*time.Second)
		_, err := s.apply(rctx, Principal{Name: "custosd"}, &raftlogv1.Command{Op: &raftlogv1.Command_RejectHsmObject{
			RejectHsmObject: &raftlogv1.RejectHSMObject{Key: key, KeyVersion: version, ObjectId: id, Detail: cause.Error()}}})
		cancel()
		if err != nil {
			s.lg.Error("could not record the rejected HSM object", "object_id", string(id), "err", err)
		}
	}
	return fmt.Errorf("%w: this node's HSM object for %s is not the key the log records (%v); nothing was done with it",
		ErrHSMObjectRejected, what, cause)
}

// maxRejectDetail bounds the detail a RejectHSMObject record carries.
const maxRejectDetail = 1024

// applyRejectHSMObject records that a node refused an HSM object (it is a
// DENY record: the default notify rules send it to the customer's sinks).
func (s *State) applyRejectHSMObject(index uint64, c *raftlogv1.Command, op *raftlogv1.RejectHSMObject) any {
	if s.clusterID == "" {
		return fmt.Errorf("%w: cluster not initialised", ErrFailedPrecondition)
	}
	if len(op.ObjectId) == 0 || len(op.ObjectId) > MaxObjectIDLen || len(op.Key) > MaxKeyNameLen {
		return fmt.Errorf("%w: reject_hsm_object: object id of 1 to %d bytes and a valid key name", ErrInvalidArgument, MaxObjectIDLen)
	}
	rec := s.newRecord(index, c, custosv1.Operation_OPERATION_HSM_OBJECT_REJECTED)
	rec.Outcome = custosv1.Outcome_OUTCOME_DENY
	rec.Key, rec.KeyVersion = op.Key, op.KeyVersion
	rec.MatchedRule = "hsm-object:rejected"
	detail := fmt.Sprintf("object %q: %s", op.ObjectId, op.Detail)
	if len(detail) > maxRejectDetail {
		detail = strings.ToValidUTF8(detail[:maxRejectDetail], "")
	}
	rec.Detail = detail
	return &Decision{Record: rec}
}
