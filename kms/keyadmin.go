package kms

import (
	"errors"
	"fmt"
	"strconv"

	custosv1 "github.com/custos-kms/custos/proto/custos/v1"
	raftlogv1 "github.com/custos-kms/custos/proto/raftlog/v1"
)

// recordKeyAdmin appends the ledger record of a key administration command
// (CreateKey, AddKeyVersion, SetKeyState disabling, SetMinDecryptionVersion)
// at its log position, so that every change to a key's state is in the
// hash-chained ledger (docs/architecture.md, invariant 5) — identically on
// every replica, since it is built from the command and the state only.
//
// res is what the command's apply returned: the key record of a change
// that was made (recorded ALLOW, and returned to the caller unchanged), or
// an error. A refusal because the principal may not do it (ErrPermissionDenied:
// not one of the key's users, or a change that would loosen access) is
// recorded DENY and its error names the record; other refusals (no such
// key, invalid arguments, a concurrent rotation) change nothing that
// concerns anyone else and are not recorded. Each command makes at most one
// record, as a decrypt does, so the ledger grows no faster than with
// refused decrypts.
func (s *State) recordKeyAdmin(index uint64, c *raftlogv1.Command, op custosv1.Operation, key string, version uint32, res any) any {
	switch r := res.(type) {
	case *raftlogv1.KeyRecord:
		rec := s.newRecord(index, c, op)
		rec.Outcome = custosv1.Outcome_OUTCOME_ALLOW
		rec.Key = key
		rec.MatchedRule = keyAdminRule(op, "")
		switch op {
		case custosv1.Operation_OPERATION_CREATE_KEY:
			rec.KeyVersion = r.PrimaryVersion
			rec.Detail = "key created with version 1; its policy names the creator only"
			rec.Detail += originDetail(r.Versions[len(r.Versions)-1])
		case custosv1.Operation_OPERATION_ROTATE_KEY:
			rec.KeyVersion = r.PrimaryVersion
			rec.Detail = "version " + strconv.FormatUint(uint64(r.PrimaryVersion), 10) + " created and made primary"
			rec.Detail += originDetail(r.Versions[len(r.Versions)-1])
		case custosv1.Operation_OPERATION_DISABLE_KEY:
			rec.Detail = "key disabled"
		case custosv1.Operation_OPERATION_SET_MIN_DECRYPTION_VERSION:
			rec.KeyVersion = r.MinDecryptionVersion
			rec.Detail = "minimum decryption version set to " + strconv.FormatUint(uint64(r.MinDecryptionVersion), 10)
		}
		s.extra = append(s.extra, rec)
		return res
	case error:
		if !errors.Is(r, ErrPermissionDenied) && !errors.Is(r, ErrResourceExhausted) {
			return res
		}
		rec := s.newRecord(index, c, op)
		rec.Outcome = custosv1.Outcome_OUTCOME_DENY
		rec.Key, rec.KeyVersion = key, version
		rec.MatchedRule = keyAdminRule(op, "denied")
		rec.Detail = r.Error()
		s.extra = append(s.extra, rec)
		return fmt.Errorf("%w (ledger record %d: DENY)", r, rec.Seq)
	}
	return res
}

// keyAdminRule names the rule of a key administration record:
// "key-admin:rotate" for a change made, "key-admin:rotate:denied" for one
// refused.
func keyAdminRule(op custosv1.Operation, what string) string {
	name := map[custosv1.Operation]string{
		custosv1.Operation_OPERATION_CREATE_KEY:                 "create",
		custosv1.Operation_OPERATION_ROTATE_KEY:                 "rotate",
		custosv1.Operation_OPERATION_DISABLE_KEY:                "disable",
		custosv1.Operation_OPERATION_SET_MIN_DECRYPTION_VERSION: "set-min-decryption-version",
	}[op]
	if what == "" {
		return "key-admin:" + name
	}
	return "key-admin:" + name + ":" + what
}

// originDetail is what a key administration record says of a version
// whose material was imported: its origin and key check value, which the
// customer can compute from the key they imported and compare.
func originDetail(v *raftlogv1.KeyVersionRecord) string {
	if v.GetOrigin() != custosv1.KeyOrigin_KEY_ORIGIN_EXTERNAL {
		return ""
	}
	return fmt.Sprintf("; origin EXTERNAL (imported), key check value %x", v.KekCheckValue)
}
