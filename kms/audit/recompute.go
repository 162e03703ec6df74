package audit

import (
	"crypto/ecdsa"
	"crypto/sha256"
	"encoding/hex"
	"fmt"
	"slices"
	"strings"
	"time"

	"google.golang.org/protobuf/proto"

	"github.com/custos-kms/custos/kms/governance"
	"github.com/custos-kms/custos/kms/keypolicy"
	"github.com/custos-kms/custos/kms/requestsig"
	custosv1 "github.com/custos-kms/custos/proto/custos/v1"
)

// Recomputed state (docs/ledger.md, *Recomputed state*): from the GENESIS
// record of a cluster born at state machine version 2 or later, the
// verifier recomputes what the customer governs — every key's policy,
// lifecycle (enabled, revoked, versions, minimum version, destruction),
// the client authorities and the witnesses — from the officer-signed
// statements the GOVERNANCE records carry and the key administration
// records, in ledger order, and checks every record that released a key
// or changed one against it with the rules the state machine decides by
// (package keypolicy). A release the officers' decisions did not permit —
// a revoked or disabled key, a principal or reason the policy did not
// allow, a time window, a rate limit, a witness requirement, an untrusted
// issuer — is reported even when every link, digest and signature holds:
// what modified node code, or an operator who re-signed a rewritten
// ledger, would have to write.

// keyModel is what the verifier recomputes of one key.
type keyModel struct {
	policy           *custosv1.KeyPolicy
	enabled, revoked bool
	versions, min    uint32
	// scheduled and destroyed: the key as a whole (index 0) and each
	// version (index v).
	scheduled, destroyed []bool
	// changedAt is the record that last changed the key's state, for
	// messages.
	changedAt uint64
}

// witnessModel is a witness the officers registered and its last
// cosignature.
type witnessModel struct {
	der            []byte
	pub            *ecdsa.PublicKey
	has            bool
	seq            uint64
	cosignedAtNano int64
}

// pendingRequest is what a PENDING record asked, for the approval that
// makes it a grant.
type pendingRequest struct {
	principal, key string
	reason         custosv1.Reason
	context, data  []byte
	at             int64
}

// requestLifetime is how long a pending request can be approved
// (kms.requestLifetime).
const requestLifetime = 24 * time.Hour

// rateCount is a principal's allowed decrypts of a key in one hour.
type rateCount struct {
	hour  int64
	count uint32
}

// stateBook recomputes the governed state through an export.
type stateBook struct {
	on      bool   // following from the genesis
	why     string // why not, once stopped (empty before the genesis)
	cluster string

	keys        map[string]*keyModel
	pinned      bool
	authorities map[string][]byte // hex SHA-256 of the CA certificates → DER (nil: not carried)
	// nonces are the signed requests' nonces released under in the last
	// 2×requestsig.MaxSkew of record time, nonceOrder them oldest first.
	nonces     map[string]int64
	nonceOrder []string
	// statements are the applied statements (by the SHA-256 of their
	// bytes, and by nonce below version 3) and the record that applied
	// each: a statement is applied once.
	statements map[string]uint64
	// pending are the requests PENDING records raised, by request id,
	// pendingOrder their ids oldest first.
	pending      map[string]*pendingRequest
	pendingOrder []string
	// lastTime is the time of the last record (MEMBERSHIP records carry
	// the time Raft appended the configuration, not the cluster's clock).
	lastTime int64
	// restoring is set by a RESTORE record until the officers accept
	// the restore: no key is released meanwhile (state machine version 4).
	restoring bool
	witnesses map[string]*witnessModel
	counters  map[string]*rateCount
	releases  int
}

// stop ends the recomputation: what follows cannot be recomputed.
func (b *stateBook) stop(why string) {
	if b.on {
		b.on, b.why = false, why
	}
}

// start begins the recomputation at a GENESIS record at position 1.
func (b *stateBook) start(rec *custosv1.DecisionRecord) {
	g := rec.GetGenesis()
	if g.GetStateMachineVersion() < 2 {
		b.why = "the cluster was born at state machine version 1, whose records do not carry the signed statements"
		return
	}
	b.on, b.cluster = true, g.GetClusterId()
	b.keys, b.authorities, b.nonces = map[string]*keyModel{}, map[string][]byte{}, map[string]int64{}
	b.statements, b.pending = map[string]uint64{}, map[string]*pendingRequest{}
	b.witnesses, b.counters = map[string]*witnessModel{}, map[string]*rateCount{}
	for _, ca := range g.GetClientAuthorities() {
		b.authorities[strings.ToLower(ca.GetSha256())] = ca.GetCertificate()
	}
	b.pinned = len(b.authorities) > 0
}

// note takes in one record at position pos, with the officer book that
// verified it (officers.note ran first); it returns what the recomputed
// state did not permit in it, or "".
func (b *stateBook) note(rec *custosv1.DecisionRecord, pos uint64, officers *officerBook) string {
	op := rec.GetOperation()
	if op == custosv1.Operation_OPERATION_GENESIS && pos == 1 {
		b.start(rec)
		return ""
	}
	if !b.on {
		return ""
	}
	if op != custosv1.Operation_OPERATION_MEMBERSHIP {
		// Every other record is stamped with the cluster's clock,
		// which never goes back: a back-dated record would reopen a
		// time window, a rate limit's hour or a witness's freshness.
		if rec.TimeUnixNano < b.lastTime {
			return fmt.Sprintf("its time %s is before the previous record's %s: the cluster's clock never goes back",
				time.Unix(0, rec.TimeUnixNano).UTC().Format(time.RFC3339Nano), time.Unix(0, b.lastTime).UTC().Format(time.RFC3339Nano))
		}
		b.lastTime = rec.TimeUnixNano
	}
	if op == custosv1.Operation_OPERATION_RESTORE {
		if officers.smv < 4 {
			b.stop(fmt.Sprintf("record %d restores the cluster from a snapshot file: the state after it is the snapshot's", pos))
			return ""
		}
		b.restoring = true
		return ""
	}
	if requestsig.MethodOf(op) != "" && rec.GetOutcome() != custosv1.Outcome_OUTCOME_ALLOW && rec.GetRequestSignature() != nil &&
		rec.GetMatchedRule() != "request-signature:invalid" {
		// A signed request the cluster refused or sent to the officers
		// spent its nonce all the same: its proof must hold, and the
		// nonce may not release a key later.
		if why := b.requestSignature(rec); why != "" {
			return why
		}
	}
	if rec.GetOutcome() == custosv1.Outcome_OUTCOME_PENDING && requestsig.MethodOf(op) != "" {
		b.raise(rec)
		return ""
	}
	if rec.GetOutcome() != custosv1.Outcome_OUTCOME_ALLOW {
		return "" // refused and pending decisions release and change nothing
	}
	switch op {
	case custosv1.Operation_OPERATION_GOVERNANCE:
		if !officers.following() {
			b.stop(fmt.Sprintf("the officer set could not be followed to record %d", pos))
			return ""
		}
		return b.statement(rec, pos, officers.smv)
	case custosv1.Operation_OPERATION_DECRYPT, custosv1.Operation_OPERATION_DECRYPT_DATA_KEY, custosv1.Operation_OPERATION_REENCRYPT:
		b.releases++
		return b.release(rec)
	case custosv1.Operation_OPERATION_CREATE_KEY, custosv1.Operation_OPERATION_ROTATE_KEY,
		custosv1.Operation_OPERATION_DISABLE_KEY, custosv1.Operation_OPERATION_SET_MIN_DECRYPTION_VERSION:
		return b.keyAdmin(rec, pos)
	case custosv1.Operation_OPERATION_DESTROY_KEY:
		if k := b.keys[rec.Key]; k != nil && int(rec.KeyVersion) <= int(k.versions) {
			k.destroy(rec.KeyVersion)
			k.changedAt = pos
		}
	case custosv1.Operation_OPERATION_WITNESS_COSIGNATURE:
		return b.cosignature(rec)
	}
	return ""
}

// issuer returns what is wrong with the issuer of a record's principal.
func (b *stateBook) issuer(rec *custosv1.DecisionRecord) string {
	iss := rec.GetPrincipalIssuerSha256()
	if _, ok := b.authorities[hex.EncodeToString(iss)]; len(iss) == 0 || !b.pinned || ok {
		return ""
	}
	return fmt.Sprintf("principal %q's certificate was issued by %s, not a client authority the officers trusted", rec.Principal, shortHex(iss))
}

// release checks a decision that released a key.
func (b *stateBook) release(rec *custosv1.DecisionRecord) string {
	if why := b.issuer(rec); why != "" {
		return why
	}
	k := b.keys[rec.Key]
	if k == nil {
		return fmt.Sprintf("it released key %q, which no record created", rec.Key)
	}
	v := rec.KeyVersion
	p := k.policy
	now := rec.TimeUnixNano
	switch {
	case b.restoring:
		return "it released a key while a restore waited for the officers' acceptance"
	case k.revoked:
		return fmt.Sprintf("key %q was revoked by the officers (record %d)", rec.Key, k.changedAt)
	case !k.enabled:
		return fmt.Sprintf("key %q was disabled (record %d)", rec.Key, k.changedAt)
	case v == 0 || v > k.versions:
		return fmt.Sprintf("key %q had no version %d", rec.Key, v)
	case v < k.min:
		return fmt.Sprintf("version %d of key %q was below its minimum decryption version %d", v, rec.Key, k.min)
	case k.destroyed[0] || k.destroyed[v] || k.scheduled[0] || k.scheduled[v]:
		return fmt.Sprintf("version %d of key %q was destroyed or scheduled for destruction", v, rec.Key)
	case !slices.Contains(p.GetDecryptPrincipals(), rec.Principal):
		return fmt.Sprintf("principal %q is not among the decrypt principals of key %q's policy version %d", rec.Principal, rec.Key, p.GetVersion())
	case !keypolicy.InWindows(p, time.Unix(0, now)):
		return fmt.Sprintf("key %q's policy version %d allows no use at %s", rec.Key, p.GetVersion(), time.Unix(0, now).UTC().Format(time.RFC3339))
	case p.GetRequireRequestSignature() && rec.GetRequestSignature() == nil:
		return fmt.Sprintf("key %q's policy version %d releases only to signed requests, and the record carries no request signature", rec.Key, p.GetVersion())
	case p.GetWitnessMaxAgeSeconds() > 0 && !b.witnessFresh(p, now, rec.Seq-1):
		return fmt.Sprintf("key %q's policy version %d releases only after a recent witness cosignature, and there was none", rec.Key, p.GetVersion())
	}
	if rec.GetRequestSignature() != nil {
		if why := b.requestSignature(rec); why != "" {
			return why
		}
	}
	max := p.GetMaxDecryptsPerPrincipalPerHour()
	id := rec.Key + "\x00" + rec.Principal
	c := b.counters[id]
	if max > 0 && c != nil && c.hour == now/int64(time.Hour) && c.count >= max {
		return fmt.Sprintf("principal %q had used key %q %d times that hour, the policy's limit", rec.Principal, rec.Key, max)
	}
	if !UsesGrant(rec) {
		// A grant's own terms are the grant book's; any other ALLOW is
		// the policy's, for this reason.
		action, reason := keypolicy.Action(p, rec.Reason)
		if action != custosv1.Action_ACTION_ALLOW {
			return fmt.Sprintf("key %q's policy version %d does not allow reason %s without the officers' approval, and no grant is named", rec.Key, p.GetVersion(), reason)
		}
		if want := keypolicy.AllowRule(p, reason); rec.MatchedRule != want {
			return fmt.Sprintf("its matched rule is %q; the recomputed policy gives %q", rec.MatchedRule, want)
		}
	}
	if max > 0 {
		if c == nil || c.hour != now/int64(time.Hour) {
			c = &rateCount{hour: now / int64(time.Hour)}
			b.counters[id] = c
		}
		c.count++
	}
	return ""
}

// witnessFresh reports whether a registered witness's last cosignature
// lets a record after seq last be released at now.
func (b *stateBook) witnessFresh(p *custosv1.KeyPolicy, now int64, last uint64) bool {
	for _, w := range b.witnesses {
		if w.has && keypolicy.WitnessFresh(p, now, last, w.seq, w.cosignedAtNano) {
			return true
		}
	}
	return false
}

// keyAdmin checks and applies a key administration record.
func (b *stateBook) keyAdmin(rec *custosv1.DecisionRecord, pos uint64) string {
	if why := b.issuer(rec); why != "" {
		return why
	}
	k := b.keys[rec.Key]
	if rec.Operation == custosv1.Operation_OPERATION_CREATE_KEY {
		if k != nil {
			return fmt.Sprintf("it creates key %q again, over the one record %d last changed", rec.Key, k.changedAt)
		}
		b.keys[rec.Key] = &keyModel{policy: keypolicy.Default(rec.Principal), enabled: true, versions: 1, min: 1,
			scheduled: make([]bool, 2), destroyed: make([]bool, 2), changedAt: pos}
		return ""
	}
	if k == nil {
		return fmt.Sprintf("it changes key %q, which no record created", rec.Key)
	}
	if !keypolicy.IsAdmin(k.policy, rec.Principal) {
		return fmt.Sprintf("principal %q may not administer key %q under its policy version %d", rec.Principal, rec.Key, k.policy.GetVersion())
	}
	switch rec.Operation {
	case custosv1.Operation_OPERATION_ROTATE_KEY:
		if k.destroyed[0] || k.scheduled[0] {
			return fmt.Sprintf("key %q was destroyed or scheduled for destruction", rec.Key)
		}
		if rec.KeyVersion != k.versions+1 {
			return fmt.Sprintf("it creates version %d of key %q, which had %d", rec.KeyVersion, rec.Key, k.versions)
		}
		k.versions++
		k.scheduled, k.destroyed = append(k.scheduled, false), append(k.destroyed, false)
	case custosv1.Operation_OPERATION_DISABLE_KEY:
		k.enabled = false
	case custosv1.Operation_OPERATION_SET_MIN_DECRYPTION_VERSION:
		if rec.KeyVersion < k.min || rec.KeyVersion > k.versions {
			return fmt.Sprintf("it sets key %q's minimum decryption version from %d to %d: a key administrator may only raise it, up to the primary version %d",
				rec.Key, k.min, rec.KeyVersion, k.versions)
		}
		k.min = rec.KeyVersion
	}
	k.changedAt = pos
	return ""
}

// statement applies an applied statement to the recomputed state, at
// state machine version smv.
func (b *stateBook) statement(rec *custosv1.DecisionRecord, pos uint64, smv uint32) string {
	ss := rec.GetSignedStatement()
	if ss == nil {
		return "it applied a statement it does not carry"
	}
	st := &custosv1.Statement{}
	if err := proto.Unmarshal(ss.GetStatement(), st); err != nil {
		return fmt.Sprintf("its signed statement does not decode: %v", err)
	}
	// Applied once: by the hash of its bytes (and, below version 3, by
	// its nonce alone, as nodes of those versions kept it).
	h := sha256.Sum256(ss.GetStatement())
	spent := []string{"h:" + string(h[:])}
	if smv < 3 {
		spent = append(spent, "n:"+string(st.GetNonce()))
	}
	for _, k := range spent {
		if at, ok := b.statements[k]; ok {
			return fmt.Sprintf("it applies again the statement record %d applied (a replay)", at)
		}
	}
	for _, k := range spent {
		b.statements[k] = pos
	}
	if want := "governance:" + governance.OperationName(st); rec.MatchedRule != want {
		return fmt.Sprintf("its matched rule %q is not its statement's %q", rec.MatchedRule, want)
	}
	if why := b.grantOf(rec, st); why != "" {
		return why
	}
	key := func(name string) (*keyModel, string) {
		k := b.keys[name]
		if k == nil {
			return nil, fmt.Sprintf("its statement applied to key %q, which no record created", name)
		}
		k.changedAt = pos
		return k, ""
	}
	switch op := st.Operation.(type) {
	case *custosv1.Statement_RevokeKey:
		k, why := key(op.RevokeKey.GetKey())
		if k != nil {
			k.revoked = true
		}
		return why
	case *custosv1.Statement_DisableKey:
		k, why := key(op.DisableKey.GetKey())
		if k != nil {
			k.enabled = false
		}
		return why
	case *custosv1.Statement_EnableKey:
		k, why := key(op.EnableKey.GetKey())
		if k != nil {
			k.enabled, k.revoked = true, false
		}
		return why
	case *custosv1.Statement_SetPolicy:
		k, why := key(op.SetPolicy.GetKey())
		if op.SetPolicy.GetPolicy() == nil {
			return "its set_policy carries no policy"
		}
		if k != nil {
			p := proto.Clone(op.SetPolicy.GetPolicy()).(*custosv1.KeyPolicy)
			p.Version = k.policy.GetVersion() + 1
			k.policy = p
		}
		return why
	case *custosv1.Statement_SetKeyMinVersion:
		k, why := key(op.SetKeyMinVersion.GetKey())
		if k != nil {
			v := op.SetKeyMinVersion.GetMinDecryptionVersion()
			if v < 1 || v > k.versions {
				return fmt.Sprintf("its statement sets key %q's minimum decryption version to %d, outside 1..%d", op.SetKeyMinVersion.GetKey(), v, k.versions)
			}
			k.min = v
		}
		return why
	case *custosv1.Statement_ScheduleKeyDestruction:
		k, why := key(op.ScheduleKeyDestruction.GetKey())
		if k != nil && op.ScheduleKeyDestruction.GetVersion() <= k.versions {
			k.schedule(op.ScheduleKeyDestruction.GetVersion(), true)
		}
		return why
	case *custosv1.Statement_CancelKeyDestruction:
		k, why := key(op.CancelKeyDestruction.GetKey())
		if k != nil && op.CancelKeyDestruction.GetVersion() <= k.versions {
			k.schedule(op.CancelKeyDestruction.GetVersion(), false)
			k.scheduled[0] = false
		}
		return why
	case *custosv1.Statement_AddClientAuthority:
		h := sha256.Sum256(op.AddClientAuthority.GetCertificate())
		b.authorities[hex.EncodeToString(h[:])] = op.AddClientAuthority.GetCertificate()
		b.pinned = true
	case *custosv1.Statement_RemoveClientAuthority:
		delete(b.authorities, strings.ToLower(op.RemoveClientAuthority.GetSha256()))
		b.pinned = true
	case *custosv1.Statement_AddWitness:
		if w := op.AddWitness.GetWitness(); w != nil {
			pub, _ := parseP256(w.GetPublicKey())
			b.witnesses[w.Name] = &witnessModel{der: w.GetPublicKey(), pub: pub}
		}
	case *custosv1.Statement_RemoveWitness:
		delete(b.witnesses, op.RemoveWitness.GetName())
	case *custosv1.Statement_AcceptRestore:
		b.restoring = false
		b.stop(fmt.Sprintf("record %d accepts a restore: the state after it is the snapshot file's", pos))
	case *custosv1.Statement_ApproveRequest:
		delete(b.pending, op.ApproveRequest.GetRequestId())
	case *custosv1.Statement_DenyRequest:
		delete(b.pending, op.DenyRequest.GetRequestId())
	}
	return ""
}

// schedule marks version v (0: every version not destroyed, and the key
// as a whole) scheduled for destruction or not.
func (k *keyModel) schedule(v uint32, on bool) {
	if v != 0 {
		if !k.destroyed[v] {
			k.scheduled[v] = on
		}
		return
	}
	for i := 1; i <= int(k.versions); i++ {
		if !k.destroyed[i] {
			k.scheduled[i] = on
		}
	}
	k.scheduled[0] = on
}

// destroy marks version v (0: every scheduled version, and the key as a
// whole) destroyed.
func (k *keyModel) destroy(v uint32) {
	if v != 0 {
		k.destroyed[v], k.scheduled[v] = true, false
		return
	}
	for i := 1; i <= int(k.versions); i++ {
		if k.scheduled[i] {
			k.destroyed[i], k.scheduled[i] = true, false
		}
	}
	k.destroyed[0] = true
}
