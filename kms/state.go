package kms

import (
	"crypto/sha256"
	"errors"
	"fmt"
	"slices"
	"sync"
	"time"

	"github.com/custos-kms/custos/hsm"
	"github.com/custos-kms/custos/kms/audit"
	"github.com/custos-kms/custos/kms/governance"
	"github.com/custos-kms/custos/kms/keypolicy"
	"github.com/custos-kms/custos/kms/ledger"
	custosv1 "github.com/custos-kms/custos/proto/custos/v1"
	raftlogv1 "github.com/custos-kms/custos/proto/raftlog/v1"
	"github.com/custos-kms/custos/raft"
	"google.golang.org/protobuf/proto"
)

// State is the replicated key state: the cluster identity, every key with its
// versions and lifecycle, and the head of the decision ledger. The Raft log
// drives it through ApplyBatch; everything in it is a function of the log.
//
// Keys live in memory (they are few); decision records go to the on-disk
// ledger store, so memory stays bounded whatever the number of decisions.
type State struct {
	mu          sync.RWMutex
	clusterID   string
	domainKeyID []byte
	domainKCV   []byte // the domain key's check value (docs/hsm-objects.md)
	keys        map[string]*raftlogv1.KeyRecord
	ledger      *ledger.Store
	seq         uint64   // last ledger sequence number
	head        [32]byte // hash of the record at seq
	applied     uint64   // last applied Raft index
	broken      error    // set when the ledger store failed: fail closed
	smVersion   uint32   // the cluster's state machine version (smversion.go; 0 is 1)
	// lastDigest is the state digest after the last record that carries
	// one, or of the state a snapshot restored (statedigest.go).
	lastDigest []byte
	// cpMismatches are the nodes whose mismatching checkpoint is recorded
	// (applyCheckpoint).
	cpMismatches []string
	// clock is the state's time: the largest command time applied so far,
	// in Unix nanoseconds. It only moves forward (advanceClock).
	clock int64

	gov      *custosv1.Governance   // officers and quorum
	officers *governance.OfficerSet // parsed gov, for signature checks
	nonces   map[string]int64       // applied statements' nonces → not_after, until it is behind clock
	// requestNonces are the spent nonces of signed requests with when
	// they may be forgotten (Unix seconds), requestNonceOrder them (each
	// followed by its principal) in the order spent from requestNonceHead
	// on, requestNoncesBy how many each principal holds (requestsigs.go).
	requestNonces     map[string]int64
	requestNonceOrder []string
	requestNonceHead  int
	requestNoncesBy   map[string]int
	requests          map[string]*custosv1.ApprovalRequest
	grants            map[string]*custosv1.Grant
	counters          map[string]*raftlogv1.RateCounter // key\x00principal → hourly count
	// proposals are statements waiting for signatures, by id
	// (proposals.go); credCounters the newest WebAuthn signature counter
	// accepted from each credential, by id.
	proposals    map[string]*custosv1.Proposal
	credCounters map[string]uint32

	nodeKeys             []*raftlogv1.NodeKey // checkpoint signing keys
	lastCheckpoint       *custosv1.Checkpoint
	lastCheckpointRecord uint64

	// admissions holds every node's admission (admissionstate.go).
	admissions map[string]*custosv1.NodeAdmission
	// admissionsVersion changes whenever an admission does.
	admissionsVersion uint64
	// destroyedVersion changes whenever a key version is destroyed (and
	// on a restore).
	destroyedVersion uint64
	// authoritiesVersion changes whenever the client authorities may have
	// (authorities.go); trust caches what it built from them.
	authoritiesVersion uint64
	trust              *ClientTrust
	trustVersion       uint64
	// members is the Raft configuration of the last configuration entry
	// applied (replaced whole, never modified in place).
	members []*raftlogv1.RaftServer
	// restore is set when the cluster was restored from a snapshot file
	// (restore.go); nil otherwise.
	restore *custosv1.ClusterRestore
	// epoch is the domain key's (rotation.go); rotation a running
	// rotation; retired the CKA_IDs of domain keys every node destroys.
	epoch    uint32
	rotation *custosv1.DomainKeyRotation
	retired  [][]byte
	// genesis is the chain hash of the GENESIS record (nil for a cluster
	// initialised before it existed).
	genesis []byte
	// grown is closed (and replaced) whenever records are appended;
	// advanced whenever entries are applied.
	grown    chan struct{}
	advanced chan struct{}
	// pending holds the records appended by the batch being applied, not
	// yet in the ledger store (a checkpoint may cover them).
	pending map[uint64][]byte
	// extra holds the records the command being applied appended besides
	// a Decision's (key administration, membership): its result to the
	// caller is something else, a key record for instance.
	extra []*custosv1.DecisionRecord
}

var _ raft.ConfigurationObserver = (*State)(nil)

// NewState returns an empty State writing decision records to l.
func NewState(l *ledger.Store) *State {
	s := &State{ledger: l}
	s.reset()
	return s
}

// reset empties the in-memory state (before a restore).
func (s *State) reset() {
	s.clusterID, s.domainKeyID, s.domainKCV = "", nil, nil
	s.clock = 0
	s.keys = map[string]*raftlogv1.KeyRecord{}
	s.gov, s.officers = nil, nil
	s.nonces = map[string]int64{}
	s.requestNonces, s.requestNonceOrder, s.requestNonceHead = map[string]int64{}, nil, 0
	s.requestNoncesBy = map[string]int{}
	s.requests = map[string]*custosv1.ApprovalRequest{}
	s.grants = map[string]*custosv1.Grant{}
	s.counters = map[string]*raftlogv1.RateCounter{}
	s.proposals = map[string]*custosv1.Proposal{}
	s.credCounters = map[string]uint32{}
	s.nodeKeys, s.lastCheckpoint, s.lastCheckpointRecord = nil, nil, 0
	s.members = nil
	s.restore = nil
	s.epoch, s.rotation, s.retired = 0, nil, nil
	s.genesis = nil
	s.smVersion, s.lastDigest, s.cpMismatches = 0, nil, nil
	s.admissions = map[string]*custosv1.NodeAdmission{}
	s.admissionsVersion++
	s.destroyedVersion++
	s.authoritiesVersion++
	if s.grown == nil {
		s.grown = make(chan struct{})
		s.advanced = make(chan struct{})
	}
}

// Decision is the result of a Decide or Govern command.
type Decision struct {
	// Record is the committed decision (or governance) record.
	Record *custosv1.DecisionRecord
	// Err is nil for ALLOW and the domain error to return otherwise.
	Err error
	// Result says what a governance statement did.
	Result string
	// GrantID is the grant a statement created, if any.
	GrantID string
}

// ApplyBatch implements raft.StateMachine.
func (s *State) ApplyBatch(entries []raft.AppliedEntry) [][]any {
	s.mu.Lock()
	defer s.mu.Unlock()
	out := make([][]any, len(entries))
	var recs []ledger.Record
	var decisions []*Decision
	s.pending = map[uint64][]byte{}
	defer func() { s.pending = nil }()
	// add appends one record to the chain, in log order. It links the
	// record to the head here, since one command may append several
	// (a configuration entry that changes several servers).
	add := func(rec *custosv1.DecisionRecord) {
		rec.PrevHash = append(rec.PrevHash[:0], s.head[:]...)
		rec.Notify = s.notifies(rec)
		if s.changesState(rec) {
			// The governed state after this record (statedigest.go), so
			// that the newest state a node holds is always on record, and
			// the one before it, so that no change outside the log can
			// hide inside this one.
			// (Not a RESTORE record: it reports the one change made
			// outside the log on purpose, a restore from a snapshot file
			// the officers then accept or not.)
			if s.smv() >= 2 && rec.Operation != custosv1.Operation_OPERATION_RESTORE {
				rec.StateDigestBefore = s.lastDigest
			}
			rec.StateDigest, rec.StateDigestVersion = s.stateDigest(), s.digestVersion()
		}
		if len(rec.StateDigest) > 0 {
			s.lastDigest = rec.StateDigest
		}
		data, err := proto.MarshalOptions{Deterministic: true}.Marshal(rec)
		if err != nil {
			panic(fmt.Sprintf("kms: marshal decision record: %v", err))
		}
		recs = append(recs, ledger.Record{Seq: rec.Seq, Data: data})
		s.pending[rec.Seq] = data
		s.head = ledger.Hash(data)
		if rec.Operation == custosv1.Operation_OPERATION_GENESIS {
			s.genesis = append([]byte(nil), s.head[:]...)
		}
	}
	addExtra := func() {
		for _, rec := range s.extra {
			add(rec)
		}
		s.extra = s.extra[:0]
	}
	for i, e := range entries {
		if e.Configuration != nil {
			s.applyConfiguration(e.Index, e.Configuration)
			addExtra()
		}
		res := make([]any, len(e.Commands))
		for j, c := range e.Commands {
			r := s.apply(e.Index, c)
			if d, ok := r.(*Decision); ok && d.Record != nil {
				add(d.Record)
				decisions = append(decisions, d)
			}
			addExtra()
			res[j] = r
		}
		out[i] = res
		s.applied = e.Index
	}
	if len(recs) > 0 && s.broken == nil {
		if err := s.ledger.PutBatch(recs); err != nil {
			s.broken = fmt.Errorf("ledger store failed at seq %d: %w", recs[0].Seq, err)
		}
	}
	if s.broken != nil {
		// Nothing may be released on a decision that is not on disk.
		for _, d := range decisions {
			d.Err = fmt.Errorf("%w: decision not recorded: %v", ErrUnavailable, s.broken)
		}
	} else if len(recs) > 0 {
		close(s.grown)
		s.grown = make(chan struct{})
	}
	close(s.advanced)
	s.advanced = make(chan struct{})
	return out
}

// apply dispatches one command. It returns a *Decision, a key record clone,
// nil, or an error; it never fails the node. Every command first goes
// through the state's clock (advanceClock): past it, c.TimeUnixNano is the
// command's effective time, which is all that the command's handler reads.
func (s *State) apply(index uint64, c *raftlogv1.Command) any {
	s.advanceClock(c)
	// A key administrator identified by a certificate that the officers'
	// client authorities did not issue changes nothing (authorities.go).
	issuer := s.checkIssuer(c)
	admin := func(f func() any) any {
		if issuer != nil {
			return issuer
		}
		return f()
	}
	switch op := c.Op.(type) {
	case *raftlogv1.Command_InitCluster:
		return s.applyInit(index, c, op.InitCluster)
	case *raftlogv1.Command_CreateKey:
		return s.recordKeyAdmin(index, c, custosv1.Operation_OPERATION_CREATE_KEY, op.CreateKey.Name, 1,
			admin(func() any { return s.applyCreateKey(c, op.CreateKey) }))
	case *raftlogv1.Command_AddKeyVersion:
		return s.recordKeyAdmin(index, c, custosv1.Operation_OPERATION_ROTATE_KEY, op.AddKeyVersion.Name, op.AddKeyVersion.Version,
			admin(func() any { return s.applyAddVersion(c, op.AddKeyVersion) }))
	case *raftlogv1.Command_SetKeyState:
		r := admin(func() any { return s.applySetState(c, op.SetKeyState) })
		if op.SetKeyState.Enabled {
			return r // always refused: enabling is a governance statement
		}
		return s.recordKeyAdmin(index, c, custosv1.Operation_OPERATION_DISABLE_KEY, op.SetKeyState.Name, 0, r)
	case *raftlogv1.Command_SetMinDecryptionVersion:
		return s.recordKeyAdmin(index, c, custosv1.Operation_OPERATION_SET_MIN_DECRYPTION_VERSION, op.SetMinDecryptionVersion.Name,
			op.SetMinDecryptionVersion.MinDecryptionVersion, admin(func() any { return s.applySetMin(c, op.SetMinDecryptionVersion) }))
	case *raftlogv1.Command_Decide:
		return s.applyDecide(index, c, op.Decide)
	case *raftlogv1.Command_Govern:
		return s.applyGovern(index, c, op.Govern)
	case *raftlogv1.Command_RecordCheckpoint:
		return s.applyCheckpoint(index, c, op.RecordCheckpoint)
	case *raftlogv1.Command_AdvanceCursor:
		return s.applyAdvanceCursor(op.AdvanceCursor)
	case *raftlogv1.Command_BlockRelease:
		return s.applyBlockRelease(index, c, op.BlockRelease)
	case *raftlogv1.Command_RegisterNodeKey:
		return s.applyRegisterNodeKey(index, c, op.RegisterNodeKey)
	case *raftlogv1.Command_RejectHsmObject:
		return s.applyRejectHSMObject(index, c, op.RejectHsmObject)
	case *raftlogv1.Command_OfferTransportKey:
		return s.applyOfferTransportKey(c, op.OfferTransportKey)
	case *raftlogv1.Command_TransportDomainKey:
		return s.applyTransportDomainKey(index, c, op.TransportDomainKey)
	case *raftlogv1.Command_ConfirmAdmission:
		return s.applyConfirmAdmission(index, c, op.ConfirmAdmission)
	case *raftlogv1.Command_CompleteKeyDestruction:
		return s.applyCompleteDestruction(index, c, op.CompleteKeyDestruction)
	case *raftlogv1.Command_ReportRestore:
		return s.applyReportRestore(index, c, op.ReportRestore)
	case *raftlogv1.Command_BeginDomainKeyRotation:
		return s.applyBeginRotation(index, c, op.BeginDomainKeyRotation)
	case *raftlogv1.Command_RewrapKeks:
		return s.applyRewrapKeks(index, c, op.RewrapKeks)
	case *raftlogv1.Command_CompleteDomainKeyRotation:
		return s.applyCompleteRotation(index, c, op.CompleteDomainKeyRotation)
	case *raftlogv1.Command_RecordCosignature:
		return s.applyRecordCosignature(index, c, op.RecordCosignature)
	case *raftlogv1.Command_RecordThrottled:
		return s.applyRecordThrottled(index, c, op.RecordThrottled)
	case *raftlogv1.Command_SetStateMachineVersion:
		return s.applySetStateMachineVersion(index, c, op.SetStateMachineVersion)
	case *raftlogv1.Command_Propose:
		return s.applyPropose(index, c, op.Propose)
	default:
		// A command this version does not know: refuse it the same way on
		// every replica.
		return fmt.Errorf("%w: unknown command %T", ErrInternal, c.Op)
	}
}

func (s *State) applyInit(index uint64, c *raftlogv1.Command, op *raftlogv1.InitCluster) any {
	if s.clusterID != "" {
		return fmt.Errorf("%w: cluster already initialised as %s", ErrFailedPrecondition, s.clusterID)
	}
	if len(op.DomainKeyId) == 0 || len(op.DomainKeyCheckValue) != hsm.CheckValueSize {
		return fmt.Errorf("%w: the domain key needs an object id and a %d-byte key check value", ErrInvalidArgument, hsm.CheckValueSize)
	}
	if op.Profile != "" && op.Profile != ProfileDevelopment {
		return fmt.Errorf("%w: unknown profile %q", ErrInvalidArgument, op.Profile)
	}
	if op.StateMachineVersion > StateMachineVersion {
		return fmt.Errorf("%w: state machine version %d is newer than this custosd's %d", ErrFailedPrecondition, op.StateMachineVersion, StateMachineVersion)
	}
	if op.GenesisStatement != nil {
		if err := checkGenesisStatement(op, time.Unix(0, c.TimeUnixNano)); err != nil {
			return err
		}
	}
	gov := &custosv1.Governance{ClusterId: op.ClusterId, Officers: op.Officers, Quorum: op.Quorum, Version: 1,
		NotifyRules: DefaultNotifyRules(), Profile: op.Profile}
	cas, err := genesisAuthorities(op.ClientAuthorities)
	if err != nil {
		return err
	}
	gov.ClientAuthorities, gov.ClientAuthoritiesPinned = cas, len(cas) > 0
	set, err := governance.NewOfficerSetFromGovernance(gov)
	if err != nil {
		return fmt.Errorf("%w: officers: %v", ErrInvalidArgument, err)
	}
	s.gov, s.officers = gov, set
	s.authoritiesVersion++
	s.clusterID = op.ClusterId
	s.smVersion = op.StateMachineVersion
	// The first record: the genesis. Its chain hash is the cluster's
	// genesis fingerprint (add, in ApplyBatch, keeps it).
	rec := s.newRecord(index, c, custosv1.Operation_OPERATION_GENESIS)
	rec.Outcome = custosv1.Outcome_OUTCOME_ALLOW
	rec.MatchedRule = "genesis"
	rec.Genesis = &custosv1.Genesis{ClusterId: op.ClusterId, Officers: op.Officers, Quorum: op.Quorum, DomainKeyId: op.DomainKeyId,
		DomainKeyCheckValue: op.DomainKeyCheckValue, Profile: op.Profile, ClientAuthorities: cas, StateMachineVersion: op.StateMachineVersion,
		Statement: op.GenesisStatement}
	rec.Detail = fmt.Sprintf("cluster %s initialised: %d officers, quorum %d, %d client authorities, profile %q",
		op.ClusterId, len(op.Officers), op.Quorum, len(cas), op.Profile)
	s.extra = append(s.extra, rec)
	s.domainKeyID = append([]byte(nil), op.DomainKeyId...)
	s.domainKCV = append([]byte(nil), op.DomainKeyCheckValue...)
	// The node that made the domain key is its first custodian.
	s.admissionsVersion++
	s.admissions[c.Node] = &custosv1.NodeAdmission{Node: c.Node, State: custosv1.AdmissionState_ADMISSION_STATE_ADMITTED,
		UpdateTimeUnixNano: c.TimeUnixNano}
	return nil
}

func (s *State) applyCreateKey(c *raftlogv1.Command, op *raftlogv1.CreateKey) any {
	if s.clusterID == "" {
		return fmt.Errorf("%w: cluster not initialised", ErrFailedPrecondition)
	}
	if _, ok := s.keys[op.Name]; ok {
		return fmt.Errorf("%w: key %q", ErrAlreadyExists, op.Name)
	}
	if s.rotation != nil {
		return ErrRotating
	}
	if err := checkKEKObject(op.KekId, op.KekCheckValue); err != nil {
		return err
	}
	if err := s.checkKeyQuota(c.Principal); err != nil {
		return err
	}
	k := &raftlogv1.KeyRecord{
		Creator:              c.Principal,
		Name:                 op.Name,
		Description:          op.Description,
		Enabled:              true,
		PrimaryVersion:       1,
		MinDecryptionVersion: 1,
		Versions: []*raftlogv1.KeyVersionRecord{{
			Version: 1, WrappedKek: op.WrappedKek, CreateTimeUnixNano: c.TimeUnixNano,
			KekId: op.KekId, KekCheckValue: op.KekCheckValue, Origin: op.Origin,
		}},
		CreateTimeUnixNano: c.TimeUnixNano,
		UpdateTimeUnixNano: c.TimeUnixNano,
		Policy:             DefaultPolicy(c.Principal),
	}
	s.keys[op.Name] = k
	return proto.Clone(k)
}

func (s *State) applyAddVersion(c *raftlogv1.Command, op *raftlogv1.AddKeyVersion) any {
	k, err := s.adminKey(op.Name, c.Principal, "rotate")
	if err != nil {
		return err
	}
	if k.Destroyed || k.DestroyAfterUnixNano != 0 {
		return fmt.Errorf("%w: key %q is destroyed or scheduled for destruction", ErrFailedPrecondition, op.Name)
	}
	if s.rotation != nil {
		return ErrRotating
	}
	if op.Origin == custosv1.KeyOrigin_KEY_ORIGIN_EXTERNAL {
		// Imported material creates a key; it is never added to one (its
		// users would read what others encrypt under it: keyimport.go).
		return fmt.Errorf("%w: imported material is never added to an existing key", ErrPermissionDenied)
	}
	if want := uint32(len(k.Versions)) + 1; op.Version != want {
		return fmt.Errorf("%w: key %q: a concurrent rotation created version %d first", ErrFailedPrecondition, op.Name, want-1)
	}
	if err := checkKEKObject(op.KekId, op.KekCheckValue); err != nil {
		return err
	}
	k.Versions = append(k.Versions, &raftlogv1.KeyVersionRecord{
		Version: op.Version, WrappedKek: op.WrappedKek, CreateTimeUnixNano: c.TimeUnixNano,
		KekId: op.KekId, KekCheckValue: op.KekCheckValue, Origin: op.Origin,
	})
	k.PrimaryVersion = op.Version
	k.UpdateTimeUnixNano = c.TimeUnixNano
	return proto.Clone(k)
}

// checkKEKObject refuses a new key version without the random object id and
// the key check value that authenticate its KEK in every node's HSM
// (docs/hsm-objects.md).
func checkKEKObject(id, kcv []byte) error {
	if len(id) == 0 || len(id) > MaxObjectIDLen || len(kcv) != hsm.CheckValueSize {
		return fmt.Errorf("%w: a key version needs an object id of 1 to %d bytes and a %d-byte key check value",
			ErrInvalidArgument, MaxObjectIDLen, hsm.CheckValueSize)
	}
	return nil
}

// applySetState disables a key on behalf of one of its users (tightening).
// Enabling loosens access: only an EnableKey statement signed by the
// officer quorum does it.
func (s *State) applySetState(c *raftlogv1.Command, op *raftlogv1.SetKeyState) any {
	if op.Enabled {
		return fmt.Errorf("%w: enabling key %q loosens access: submit an EnableKey statement signed by the officer quorum", ErrPermissionDenied, op.Name)
	}
	k, err := s.adminKey(op.Name, c.Principal, "disable")
	if err != nil {
		return err
	}
	k.Enabled = false
	k.UpdateTimeUnixNano = c.TimeUnixNano
	return proto.Clone(k)
}

// applySetMin raises the minimum decryption version (tightening, by a key
// user); lowering it would loosen access and is refused.
func (s *State) applySetMin(c *raftlogv1.Command, op *raftlogv1.SetMinDecryptionVersion) any {
	k, err := s.adminKey(op.Name, c.Principal, "change the minimum decryption version of")
	if err != nil {
		return err
	}
	if op.MinDecryptionVersion < k.MinDecryptionVersion {
		return fmt.Errorf("%w: lowering the minimum decryption version of key %q loosens access", ErrPermissionDenied, op.Name)
	}
	if op.MinDecryptionVersion < 1 || op.MinDecryptionVersion > k.PrimaryVersion {
		return fmt.Errorf("%w: min_decryption_version %d: must be between 1 and the primary version %d",
			ErrInvalidArgument, op.MinDecryptionVersion, k.PrimaryVersion)
	}
	k.MinDecryptionVersion = op.MinDecryptionVersion
	k.UpdateTimeUnixNano = c.TimeUnixNano
	return proto.Clone(k)
}

// applyDecide evaluates a key use against the state at this log position
// and builds the decision record. The caller (ApplyBatch) persists it.
func (s *State) applyDecide(index uint64, c *raftlogv1.Command, op *raftlogv1.Decide) any {
	if n := len(op.DataDigest); n != 0 && n != sha256.Size {
		// What a grant scoped to ciphertexts compares: 32 bytes or none.
		op.DataDigest = nil
	}
	if err := s.checkIssuer(c); err != nil {
		return s.decide(index, c, op, custosv1.Outcome_OUTCOME_DENY, "principal:issuer", err)
	}
	signed, err := s.checkRequestSignature(c, op)
	if err != nil {
		return s.decide(index, c, op, custosv1.Outcome_OUTCOME_DENY, "request-signature:invalid", err)
	}
	outcome, rule, derr := s.evaluate(c, op, signed)
	return s.decide(index, c, op, outcome, rule, derr)
}

// decide builds the decision record of a Decide command with the given
// verdict, at the state's clock, and applies the verdict's effects.
func (s *State) decide(index uint64, c *raftlogv1.Command, op *raftlogv1.Decide, outcome custosv1.Outcome, rule string, derr error) *Decision {
	rec := &custosv1.DecisionRecord{
		Seq:                   s.seq + 1,
		TimeUnixNano:          s.clock,
		Node:                  c.Node,
		Principal:             c.Principal,
		PrincipalIssuerSha256: c.PrincipalIssuerSha256,
		PrincipalCertSha256:   c.PrincipalCertSha256,
		Key:                   op.Key,
		KeyVersion:            op.KeyVersion,
		Operation:             op.Operation,
		Reason:                op.Reason,
		JustificationText:     op.JustificationText,
		Ticket:                op.Ticket,
		ContextDigest:         op.ContextDigest,
		DataDigest:            op.DataDigest,
		RequestSignature:      op.RequestSignature,
		PrincipalCertificate:  op.PrincipalCertificate,
		Outcome:               outcome,
		MatchedRule:           rule,
		RequestId:             op.RequestId,
		PrevHash:              append([]byte(nil), s.head[:]...),
		RaftIndex:             index,
	}
	s.seq++
	switch outcome {
	case custosv1.Outcome_OUTCOME_ALLOW:
		s.countUse(c, op)
	case custosv1.Outcome_OUTCOME_PENDING:
		s.addRequest(c, op, rec.Seq)
		derr = &PendingError{RequestID: op.RequestId, Seq: rec.Seq}
	default:
		derr = fmt.Errorf("%w (decision %d: DENY by %s)", derr, rec.Seq, rule)
	}
	return &Decision{Record: rec, Err: derr}
}

// evaluate decides a key use against the state at this log position, in a
// fixed order: key lifecycle, version, principal, time window, rate limit,
// then the reason's action (a matching grant turns approval or denial into
// ALLOW). It does not change the state; the caller applies the effects.
func (s *State) evaluate(c *raftlogv1.Command, op *raftlogv1.Decide, signed bool) (custosv1.Outcome, string, error) {
	deny := custosv1.Outcome_OUTCOME_DENY
	if s.smv() >= SignedRequestsVersion && s.restorePending() {
		// Nothing is released between a restore and its acceptance: the
		// API refuses it, and from version 4 so does every replica, so
		// that a RESTORE record cannot hide releases (audit.Verify).
		return deny, "restore:pending", ErrRestorePending
	}
	k, ok := s.keys[op.Key]
	switch {
	case !ok:
		return deny, "key:not-found", fmt.Errorf("%w: key %q", ErrNotFound, op.Key)
	case k.Revoked:
		return deny, "key-state:revoked", fmt.Errorf("%w: key %q is revoked by a security officer", ErrFailedPrecondition, op.Key)
	case !k.Enabled:
		return deny, "key-state:disabled", fmt.Errorf("%w: key %q is disabled", ErrFailedPrecondition, op.Key)
	case op.KeyVersion == 0 || op.KeyVersion > uint32(len(k.Versions)):
		return deny, "key-version:not-found", fmt.Errorf("%w: key %q has no version %d", ErrNotFound, op.Key, op.KeyVersion)
	case op.KeyVersion < k.MinDecryptionVersion:
		return deny, "key-version:below-minimum", fmt.Errorf("%w: key %q version %d is below the minimum decryption version %d",
			ErrFailedPrecondition, op.Key, op.KeyVersion, k.MinDecryptionVersion)
	}
	if rule, err := destructionState(k, k.Versions[op.KeyVersion-1]); err != nil {
		return deny, rule, err
	}
	p := k.Policy
	// "policy/v<version>:<rule>", built without fmt on the decide path.
	prefix := keypolicy.RulePrefix(p)
	rule := func(r string) string { return prefix + r }
	// The command's effective time (advanceClock): time windows, the rate
	// limit's hour and grant expiry never go back with a proposer's clock.
	now := time.Unix(0, c.TimeUnixNano)
	switch {
	case !slices.Contains(p.DecryptPrincipals, c.Principal):
		return deny, rule("principal"), fmt.Errorf("%w: principal %q may not decrypt with key %q", ErrPermissionDenied, c.Principal, op.Key)
	case p.RequireRequestSignature && !signed:
		return deny, rule("request-signature"), fmt.Errorf("%w: key %q releases only to requests signed with the key of the caller's certificate (docs/signed-requests.md)",
			ErrPermissionDenied, op.Key)
	case !inWindows(p, now):
		return deny, rule("time-window"), fmt.Errorf("%w: key %q may not be used at this time", ErrPermissionDenied, op.Key)
	case p.WitnessMaxAgeSeconds > 0 && !s.witnessFresh(p):
		return deny, rule("witness"), fmt.Errorf("%w: key %q releases only while a witness has cosigned the ledger in the last %ds and %d records, and none has",
			ErrFailedPrecondition, op.Key, p.WitnessMaxAgeSeconds, witnessMaxRecords(p))
	case p.MaxDecryptsPerPrincipalPerHour > 0 && s.usesThisHour(c, op) >= p.MaxDecryptsPerPrincipalPerHour:
		return deny, rule("rate-limit"), fmt.Errorf("%w: principal %q reached %d decrypts per hour with key %q",
			ErrResourceExhausted, c.Principal, p.MaxDecryptsPerPrincipalPerHour, op.Key)
	}
	action, reason := policyAction(p, op.Reason)
	if action == custosv1.Action_ACTION_ALLOW {
		return custosv1.Outcome_OUTCOME_ALLOW, keypolicy.AllowRule(p, reason), nil
	}
	if g := s.matchGrant(c, op); g != nil {
		return custosv1.Outcome_OUTCOME_ALLOW, audit.GrantRulePrefix + g.GrantId, nil
	}
	if action == custosv1.Action_ACTION_DENY {
		return deny, rule("reason=" + reason + ":deny"), fmt.Errorf("%w: policy of key %q denies reason %s",
			ErrPermissionDenied, op.Key, reason)
	}
	if r := s.requests[op.RequestId]; r != nil && s.smv() >= 2 && !sameRequest(r, c, op) {
		// A request id names one request: another one under it would
		// replace what the officers are reviewing (a member node picks
		// request ids).
		return deny, "approval:request-id-in-use", fmt.Errorf("%w: request id %s names another request", ErrInvalidArgument, op.RequestId)
	}
	if max := s.maxPendingPerPrincipal(); s.pendingOf(c.Principal) >= max {
		return deny, "approval:too-many-pending", fmt.Errorf("%w: principal %q has %d requests waiting for approval",
			ErrResourceExhausted, c.Principal, max)
	}
	return custosv1.Outcome_OUTCOME_PENDING, rule("reason=" + reason + ":require-approval"), nil
}

// userKey returns a key for a tightening operation by one of its users.
func (s *State) userKey(name, principal, what string) (*raftlogv1.KeyRecord, error) {
	return s.keyFor(name, principal, what, isKeyUser, "")
}

// adminKey returns a key principal may administer (rotate, raise its
// minimum version, disable: isKeyAdmin), else an error.
func (s *State) adminKey(name, principal, what string) (*raftlogv1.KeyRecord, error) {
	return s.keyFor(name, principal, what, isKeyAdmin, ": it is not one of the key's administrators (policy admin_principals)")
}

// keyFor returns key name if its policy lets principal do what (may), else
// NotFound or PermissionDenied (with why appended).
func (s *State) keyFor(name, principal, what string, may func(*custosv1.KeyPolicy, string) bool, why string) (*raftlogv1.KeyRecord, error) {
	k, ok := s.keys[name]
	if !ok {
		return nil, fmt.Errorf("%w: key %q", ErrNotFound, name)
	}
	if !may(k.Policy, principal) {
		return nil, fmt.Errorf("%w: principal %q may not %s key %q%s", ErrPermissionDenied, principal, what, name, why)
	}
	return k, nil
}

// ClusterID returns the cluster id, "" before initialisation.
func (s *State) ClusterID() string {
	s.mu.RLock()
	defer s.mu.RUnlock()
	return s.clusterID
}

// DomainKeyID returns the CKA_ID of the cluster's domain key.
func (s *State) DomainKeyID() []byte {
	s.mu.RLock()
	defer s.mu.RUnlock()
	return append([]byte(nil), s.domainKeyID...)
}

// DomainKey returns the domain key's object id and key check value, as the
// log recorded them at initialisation.
func (s *State) DomainKey() hsm.KeyRef {
	s.mu.RLock()
	defer s.mu.RUnlock()
	return hsm.KeyRef{ID: append([]byte(nil), s.domainKeyID...), CheckValue: append([]byte(nil), s.domainKCV...)}
}

// Key returns a copy of a key's record.
func (s *State) Key(name string) (*raftlogv1.KeyRecord, error) {
	s.mu.RLock()
	defer s.mu.RUnlock()
	k, ok := s.keys[name]
	if !ok {
		return nil, fmt.Errorf("%w: key %q", ErrNotFound, name)
	}
	return proto.Clone(k).(*raftlogv1.KeyRecord), nil
}

// A key record in the state is changed in place by the commands that apply
// to it, but its version records (raftlogv1.KeyVersionRecord) and its policy
// are never modified once applied: a new version is appended, a new policy
// replaces the old one. The hot paths below therefore hand out the version
// record itself, read-only, instead of cloning the whole key record as Key
// does (a clone per Decrypt was ~12 allocations and ~3 % of the node's CPU).

// releaseVersion returns, under one read lock, the record of a key version
// to decrypt with (read-only: it is shared with the state) and whether the
// key's policy requires notification before release.
func (s *State) releaseVersion(name string, version uint32) (*raftlogv1.KeyVersionRecord, bool, error) {
	s.mu.RLock()
	defer s.mu.RUnlock()
	k, ok := s.keys[name]
	if !ok {
		return nil, false, fmt.Errorf("%w: key %q", ErrNotFound, name)
	}
	if version == 0 || int(version) > len(k.Versions) {
		return nil, false, fmt.Errorf("%w: key %q has no version %d", ErrNotFound, name, version)
	}
	return k.Versions[version-1], k.Policy.GetNotifyBeforeRelease(), nil
}

// encryptVersion checks, under one read lock, that principal may encrypt
// with key now (not revoked, enabled, named by the policy) and returns the
// record of its primary version (read-only: it is shared with the state).
func (s *State) encryptVersion(name, principal string) (*raftlogv1.KeyVersionRecord, error) {
	s.mu.RLock()
	defer s.mu.RUnlock()
	k, ok := s.keys[name]
	switch {
	case !ok:
		return nil, fmt.Errorf("%w: key %q", ErrNotFound, name)
	case k.Revoked:
		return nil, fmt.Errorf("%w: key %q is revoked by a security officer", ErrFailedPrecondition, name)
	case !k.Enabled:
		return nil, fmt.Errorf("%w: key %q is disabled", ErrFailedPrecondition, name)
	case !slices.Contains(k.Policy.GetEncryptPrincipals(), principal):
		return nil, fmt.Errorf("%w: principal %q may not encrypt with key %q", ErrPermissionDenied, principal, name)
	}
	v := k.Versions[k.PrimaryVersion-1]
	if _, err := destructionState(k, v); err != nil {
		return nil, fmt.Errorf("%w (rotate the key to encrypt again)", err)
	}
	return v, nil
}

// KeyNames returns the key names after `after`, in order, at most limit.
func (s *State) KeyNames(after string, limit int) []string {
	s.mu.RLock()
	defer s.mu.RUnlock()
	names := make([]string, 0, len(s.keys))
	for n := range s.keys {
		if n > after {
			names = append(names, n)
		}
	}
	sortStrings(names)
	if len(names) > limit {
		names = names[:limit]
	}
	return names
}

// LedgerHead returns the last decision sequence number and its hash.
func (s *State) LedgerHead() (uint64, [32]byte) {
	s.mu.RLock()
	defer s.mu.RUnlock()
	return s.seq, s.head
}

// AppliedIndex returns the last applied Raft log index.
func (s *State) AppliedIndex() uint64 {
	s.mu.RLock()
	defer s.mu.RUnlock()
	return s.applied
}

// Health returns an error when the state can no longer record decisions.
func (s *State) Health() error {
	s.mu.RLock()
	defer s.mu.RUnlock()
	if s.broken != nil {
		return fmt.Errorf("%w: %v", ErrUnavailable, s.broken)
	}
	return nil
}

// DecisionRecord reads a committed decision record from the ledger.
func (s *State) DecisionRecord(seq uint64) (*custosv1.DecisionRecord, error) {
	data, err := s.ledger.Get(seq)
	if errors.Is(err, ledger.ErrNotFound) {
		return nil, fmt.Errorf("%w: decision %d", ErrNotFound, seq)
	}
	if err != nil {
		return nil, fmt.Errorf("%w: read decision %d: %v", ErrInternal, seq, err)
	}
	rec := &custosv1.DecisionRecord{}
	if err := proto.Unmarshal(data, rec); err != nil {
		return nil, fmt.Errorf("%w: decode decision %d: %v", ErrInternal, seq, err)
	}
	return rec, nil
}

func sortStrings(s []string) { slices.Sort(s) }
