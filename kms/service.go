package kms

import (
	"cmp"
	"context"
	"crypto/rand"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"log/slog"
	"sync"
	"time"

	"github.com/custos-kms/custos/hsm"
	"github.com/custos-kms/custos/kms/governance"
	"github.com/custos-kms/custos/kms/requestsig"
	custosv1 "github.com/custos-kms/custos/proto/custos/v1"
	raftlogv1 "github.com/custos-kms/custos/proto/raftlog/v1"
)

// Log replicates commands: it returns once the command is committed and
// applied, with the state machine's result for it. raft.Node implements it.
type Log interface {
	Apply(ctx context.Context, cmd *raftlogv1.Command) (any, error)
}

// Config wires a Service.
type Config struct {
	// NodeID is this node's Raft server id; it is stamped into commands.
	NodeID string
	// HSM is this node's HSM.
	HSM hsm.Backend
	// Log replicates commands to the State.
	Log Log
	// State is the replicated state the Log applies to.
	State *State
	// Now is the clock stamped into commands; time.Now if nil.
	Now func() time.Time
	// Logger; slog.Default() if nil. Never given secrets.
	Logger *slog.Logger
	// Auditors are the principals that may read the ledger (AuditService).
	Auditors []string
	// ReadIndex, if set, makes Encrypt and GenerateDataKey linearizable:
	// before reading the key's state they wait until this node has applied
	// the index it returns, and fail with ErrUnavailable if it fails
	// (readindex.go). Nil keeps the local read — right only for a single
	// node whose log is the State's only writer.
	ReadIndex ReadIndexFunc
	// ReadIndexTimeout bounds a read index when the request's context has
	// no earlier deadline (DefaultReadIndexTimeout if 0).
	ReadIndexTimeout time.Duration
	// RequireAdmission makes key crypto wait for this node's HSM to hold the
	// cluster's domain key (a node that joined a cluster): until it does,
	// every use of a key fails closed with ErrNotAdmitted (admission.go).
	RequireAdmission bool
	// Profile is the genesis profile InitCluster records: "" (production)
	// or ProfileDevelopment.
	Profile string
	// ClientAuthorities are the CA certificates (DER) InitCluster pins as
	// the officers' client authorities (authorities.go); none: not pinned.
	ClientAuthorities [][]byte
	// MaxStreamsPerPrincipal bounds the audit streams (WatchDecisions,
	// Export) one principal keeps open on this node at once
	// (DefaultMaxStreamsPerPrincipal if 0).
	MaxStreamsPerPrincipal int
	// DecisionsPerSecond and RefusalsPerSecond are this node's
	// per-principal rate quotas (quota.go; DefaultDecisionsPerSecond and
	// DefaultRefusalsPerSecond if 0).
	DecisionsPerSecond float64
	RefusalsPerSecond  float64
	// RefusalBurst is how many refusals a principal may make at once
	// (DefaultRefusalBurst if 0).
	RefusalBurst int
	// Genesis is the officer-signed genesis (a CreateCluster statement,
	// docs/governance.md) a new cluster is initialised from: its cluster
	// id, officers, quorum, client authorities and profile, instead of
	// InitCluster's arguments, Profile and ClientAuthorities.
	Genesis *custosv1.SignedStatement
	// MaxStateMachineVersion is the newest state machine version this node
	// reports it can apply and a new cluster starts at (StateMachineVersion
	// if 0; docs/upgrades.md). Lower only to stand in for an older release
	// (tests of rolling upgrades).
	MaxStateMachineVersion uint32
}

// Service implements custos's key operations. It validates requests, puts
// every state change and every decision through the Log, and does the HSM
// work on this node. Decrypt follows docs/architecture.md, invariant 2: the
// decision record is committed through the Log before the HSM unwraps
// anything (decideRelease).
type Service struct {
	hsm   hsm.Backend
	log   Log
	state *State
	node  string
	now   func() time.Time
	lg    *slog.Logger

	kekMu sync.Mutex
	keks  map[kekRef]hsm.KeyRef // KEKs verified in this node's HSM

	rejectMu       sync.Mutex
	rejectReported map[string]time.Time // object id → last RejectHSMObject proposed

	auditors        map[string]bool
	releaseNotifier ReleaseNotifier

	streams streamSlots

	readIndex        ReadIndexFunc
	readIndexTimeout time.Duration

	admission   *admission // nil unless Config.RequireAdmission
	profile     string     // for InitCluster
	maxSMV      uint32     // Config.MaxStateMachineVersion
	genesis     *custosv1.SignedStatement
	authorities [][]byte // for InitCluster
	custody     custody  // the admission worker's memory (admissionwork.go)
	imports     imports  // import parameters this node handed out (keyimport.go)
	rates       *rateQuotas
}

// NewService checks cfg and returns a Service.
func NewService(cfg Config) (*Service, error) {
	if cfg.HSM == nil || cfg.Log == nil || cfg.State == nil || cfg.NodeID == "" {
		return nil, errors.New("kms: NewService needs HSM, Log, State and NodeID")
	}
	s := &Service{hsm: cfg.HSM, log: cfg.Log, state: cfg.State, node: cfg.NodeID,
		now: cfg.Now, lg: cfg.Logger, keks: map[kekRef]hsm.KeyRef{}, rejectReported: map[string]time.Time{},
		readIndex: cfg.ReadIndex, readIndexTimeout: cfg.ReadIndexTimeout,
		custody: custody{noted: map[string]bool{}}, profile: cfg.Profile, authorities: cfg.ClientAuthorities, genesis: cfg.Genesis,
		rates:   newRateQuotas(cfg.DecisionsPerSecond, cfg.RefusalsPerSecond, cfg.RefusalBurst),
		streams: streamSlots{max: cmp.Or(cfg.MaxStreamsPerPrincipal, DefaultMaxStreamsPerPrincipal), open: map[string]int{}},
		imports: imports{pending: map[string]*pendingImport{}}}
	if s.readIndexTimeout <= 0 {
		s.readIndexTimeout = DefaultReadIndexTimeout
	}
	switch s.maxSMV = cmp.Or(cfg.MaxStateMachineVersion, StateMachineVersion); {
	case s.maxSMV > StateMachineVersion:
		return nil, fmt.Errorf("kms: MaxStateMachineVersion %d is newer than this custosd's %d", s.maxSMV, StateMachineVersion)
	case cfg.State.StateMachineVersion() > s.maxSMV:
		return nil, fmt.Errorf("kms: the cluster runs state machine version %d and this custosd applies at most %d: run a newer release (docs/upgrades.md)",
			cfg.State.StateMachineVersion(), s.maxSMV)
	}
	if cfg.RequireAdmission {
		s.admission = &admission{}
	}
	if s.now == nil {
		s.now = time.Now
	}
	s.auditors = map[string]bool{}
	for _, a := range cfg.Auditors {
		s.auditors[a] = true
	}
	if s.lg == nil {
		s.lg = slog.Default()
	}
	return s, nil
}

// State returns the replicated state the service reads.
func (s *Service) State() *State { return s.state }

// InitCluster makes the cluster's domain key and records the cluster id,
// the customer's officers and their quorum on first start; on later starts
// it checks that this HSM holds the domain key the log records (its object
// id, attributes and key check value: invariant 9 of docs/architecture.md).
// Officers then change only by a quorum-signed statement, and the arguments
// are ignored.
func (s *Service) InitCluster(ctx context.Context, officers []*custosv1.Officer, quorum uint32) error {
	if id := s.state.ClusterID(); id != "" {
		err := s.hsm.VerifyKey(ctx, s.state.DomainKey(), hsm.UsageWrap)
		switch {
		case err == nil:
			return nil
		case errors.Is(err, hsm.ErrKeyNotFound):
			return fmt.Errorf("%w: this node's HSM token does not hold the domain key of cluster %s", ErrFailedPrecondition, id)
		case errors.Is(err, hsm.ErrObjectMismatch):
			return s.rejectObject(ctx, "", 0, s.state.DomainKeyID(), err)
		default:
			return fmt.Errorf("%w: check domain key: %w", ErrUnavailable, err)
		}
	}
	profile, authorities := s.profile, s.authorities
	var clusterID string
	if s.genesis != nil {
		// The officers' own genesis: everything comes from it.
		if len(officers) > 0 {
			return fmt.Errorf("%w: an officer-signed genesis names the officers: the configuration must not", ErrInvalidArgument)
		}
		st, _, err := governance.VerifyGenesis(s.genesis, s.now())
		if err != nil {
			return fmt.Errorf("%w: the genesis statement: %w", ErrInvalidArgument, err)
		}
		cc := st.GetCreateCluster()
		clusterID, officers, quorum, authorities, profile = st.ClusterId, cc.Officers, cc.Quorum, cc.ClientAuthorities, cc.Profile
	}
	if len(officers) == 0 || quorum < 1 || int(quorum) > len(officers) {
		return fmt.Errorf("%w: a cluster needs at least one officer and a quorum between 1 and the number of officers", ErrInvalidArgument)
	}
	if clusterID == "" {
		raw, err := s.hsm.Random(ctx, 16)
		if err != nil {
			return fmt.Errorf("%w: random cluster id: %w", ErrUnavailable, err)
		}
		clusterID = hex.EncodeToString(raw)
	}
	domainID, err := s.newObjectID(ctx, "custos/domain/"+clusterID)
	if err != nil {
		return err
	}
	kcv, err := s.hsm.GenerateKey(ctx, hsm.KeySpec{ID: domainID, Label: "custos domain key " + clusterID, Usage: hsm.UsageWrap})
	if err != nil {
		return fmt.Errorf("%w: generate domain key: %w", ErrUnavailable, err)
	}
	_, err = s.apply(ctx, Principal{Name: "custosd"}, &raftlogv1.Command{Op: &raftlogv1.Command_InitCluster{
		InitCluster: &raftlogv1.InitCluster{ClusterId: clusterID, DomainKeyId: domainID, Officers: officers, Quorum: quorum,
			DomainKeyCheckValue: kcv, Profile: profile, ClientAuthorities: authorities, StateMachineVersion: s.maxSMV,
			GenesisStatement: s.genesis}}})
	if err != nil {
		_ = s.hsm.DestroyKey(context.WithoutCancel(ctx), domainID)
		return err
	}
	s.lg.Info("cluster initialised", "cluster_id", clusterID, "profile", profile, "client_authorities", len(authorities),
		"officer_signed_genesis", s.genesis != nil)
	if profile == ProfileDevelopment {
		s.lg.Warn("this cluster has the development profile: it may move its domain key with RSA-OAEP-SHA1 and is not CRYPTREC-compliant")
	}
	return nil
}

// ClusterID returns the cluster id, or "" before InitCluster.
func (s *Service) ClusterID() string { return s.state.ClusterID() }

// apply proposes a command and returns its result; a result that is an
// error comes back as the error. Failures to commit are ErrUnavailable.
func (s *Service) apply(ctx context.Context, p Principal, cmd *raftlogv1.Command) (any, error) {
	s.stamp(p, cmd)
	if len(p.Certificate) > 0 {
		ctx = withPrincipalCertificate(ctx, p.Certificate)
	}
	res, err := s.log.Apply(ctx, cmd)
	return applyResult(ctx, res, err)
}

// stamp fills in what every command carries: time, node and principal.
func (s *Service) stamp(p Principal, cmd *raftlogv1.Command) {
	cmd.TimeUnixNano = s.now().UnixNano()
	cmd.Node = s.node
	cmd.Principal = p.Name
	cmd.PrincipalIssuerSha256, cmd.PrincipalCertSha256 = p.IssuerSHA256, p.CertSHA256
}

// applyResult maps what Log.Apply returned the way apply documents.
func applyResult(ctx context.Context, res any, err error) (any, error) {
	if err != nil {
		if isDomainError(err) {
			return nil, err
		}
		if ctxErr := ctx.Err(); ctxErr != nil {
			return nil, ctxErr
		}
		return nil, fmt.Errorf("%w: not committed: %v", ErrUnavailable, err)
	}
	if e, ok := res.(error); ok {
		return nil, e
	}
	return res, nil
}

// isDomainError reports whether err is an outcome to pass on as it is
// (one of the kinds of errors.go) rather than a failure to commit.
func isDomainError(err error) bool { return IsDomainError(err) }

// applyKey proposes a key command and returns the resulting key.
func (s *Service) applyKey(ctx context.Context, p Principal, cmd *raftlogv1.Command) (*custosv1.Key, error) {
	res, err := s.apply(ctx, p, cmd)
	if err != nil {
		return nil, err
	}
	k, ok := res.(*raftlogv1.KeyRecord)
	if !ok {
		return nil, fmt.Errorf("%w: unexpected result %T", ErrInternal, res)
	}
	return keyProto(k), nil
}

// CreateKey creates a key with version 1: the HSM makes the KEK, wrapped
// under the domain key; the wrapped form goes through the log; every node
// unwraps it into its own HSM as a non-extractable object.
func (s *Service) CreateKey(ctx context.Context, p Principal, req *custosv1.CreateKeyRequest) (*custosv1.Key, error) {
	if err := ValidateKeyName(req.GetName()); err != nil {
		return nil, err
	}
	if len(req.GetDescription()) > MaxDescriptionLen {
		return nil, fmt.Errorf("%w: description is longer than %d bytes", ErrInvalidArgument, MaxDescriptionLen)
	}
	if err := s.ready(); err != nil {
		return nil, err
	}
	if _, err := s.state.Key(req.Name); err == nil {
		return nil, fmt.Errorf("%w: key %q", ErrAlreadyExists, req.Name)
	}
	// Refused requests are rate-limited before any HSM work (quota.go).
	if err := s.throttle(p, req.Name, &raftlogv1.Command{Op: &raftlogv1.Command_CreateKey{CreateKey: &raftlogv1.CreateKey{Name: req.Name}}}); err != nil {
		return nil, err
	}
	kv, err := s.newKEK(ctx, req.Name, 1)
	if err != nil {
		return nil, err
	}
	k, err := s.applyKey(ctx, p, &raftlogv1.Command{Op: &raftlogv1.Command_CreateKey{CreateKey: &raftlogv1.CreateKey{
		Name: req.Name, Description: req.Description, WrappedKek: kv.WrappedKek, KekId: kv.KekId, KekCheckValue: kv.KekCheckValue}}})
	if err != nil {
		return nil, err
	}
	s.materialise(ctx, req.Name, kv)
	s.lg.Info("key created", "key", req.Name, "principal", p.Name)
	return k, nil
}

// GetKey returns a key's metadata.
func (s *Service) GetKey(ctx context.Context, p Principal, req *custosv1.GetKeyRequest) (*custosv1.Key, error) {
	if err := ValidateKeyName(req.GetName()); err != nil {
		return nil, err
	}
	k, err := s.state.Key(req.Name)
	if err != nil {
		return nil, err
	}
	return keyProto(k), nil
}

// ListKeys lists keys by name, paginated. The page token is the last name
// of the previous page.
func (s *Service) ListKeys(ctx context.Context, p Principal, req *custosv1.ListKeysRequest) (*custosv1.ListKeysResponse, error) {
	size := int(req.GetPageSize())
	switch {
	case size < 0 || size > 1000:
		return nil, fmt.Errorf("%w: page_size must be between 0 and 1000", ErrInvalidArgument)
	case size == 0:
		size = 100
	}
	if t := req.GetPageToken(); t != "" {
		if err := ValidateKeyName(t); err != nil {
			return nil, fmt.Errorf("%w: page_token is not valid", ErrInvalidArgument)
		}
	}
	names := s.state.KeyNames(req.GetPageToken(), size+1)
	resp := &custosv1.ListKeysResponse{}
	for i, n := range names {
		if i == size {
			resp.NextPageToken = names[size-1]
			break
		}
		if k, err := s.state.Key(n); err == nil {
			resp.Keys = append(resp.Keys, keyProto(k))
		}
	}
	return resp, nil
}

// RotateKey adds a version and makes it primary.
func (s *Service) RotateKey(ctx context.Context, p Principal, req *custosv1.RotateKeyRequest) (*custosv1.Key, error) {
	if err := ValidateKeyName(req.GetName()); err != nil {
		return nil, err
	}
	k, err := s.state.Key(req.Name)
	if err != nil {
		return nil, err
	}
	next := uint32(len(k.Versions)) + 1
	if err := s.throttle(p, req.Name, &raftlogv1.Command{Op: &raftlogv1.Command_AddKeyVersion{AddKeyVersion: &raftlogv1.AddKeyVersion{Name: req.Name}}}); err != nil {
		return nil, err
	}
	kv, err := s.newKEK(ctx, req.Name, next)
	if err != nil {
		return nil, err
	}
	key, err := s.applyKey(ctx, p, &raftlogv1.Command{Op: &raftlogv1.Command_AddKeyVersion{AddKeyVersion: &raftlogv1.AddKeyVersion{
		Name: req.Name, Version: next, WrappedKek: kv.WrappedKek, KekId: kv.KekId, KekCheckValue: kv.KekCheckValue}}})
	if err != nil {
		return nil, err
	}
	s.materialise(ctx, req.Name, kv)
	s.lg.Info("key rotated", "key", req.Name, "version", next, "principal", p.Name)
	return key, nil
}

// SetKeyState enables or disables a key.
func (s *Service) SetKeyState(ctx context.Context, p Principal, req *custosv1.SetKeyStateRequest) (*custosv1.Key, error) {
	if err := ValidateKeyName(req.GetName()); err != nil {
		return nil, err
	}
	var enabled bool
	switch req.GetState() {
	case custosv1.KeyState_KEY_STATE_ENABLED:
		enabled = true
	case custosv1.KeyState_KEY_STATE_DISABLED:
	default:
		return nil, fmt.Errorf("%w: state must be KEY_STATE_ENABLED or KEY_STATE_DISABLED", ErrInvalidArgument)
	}
	cmd := &raftlogv1.Command{Op: &raftlogv1.Command_SetKeyState{SetKeyState: &raftlogv1.SetKeyState{Name: req.Name, Enabled: enabled}}}
	if err := s.throttle(p, req.Name, cmd); err != nil {
		return nil, err
	}
	k, err := s.applyKey(ctx, p, cmd)
	if err == nil {
		s.lg.Info("key state set", "key", req.Name, "enabled", enabled, "principal", p.Name)
	}
	return k, err
}

// SetMinDecryptionVersion sets the lowest version that still decrypts.
func (s *Service) SetMinDecryptionVersion(ctx context.Context, p Principal, req *custosv1.SetMinDecryptionVersionRequest) (*custosv1.Key, error) {
	if err := ValidateKeyName(req.GetName()); err != nil {
		return nil, err
	}
	if req.GetMinDecryptionVersion() == 0 {
		return nil, fmt.Errorf("%w: min_decryption_version must be at least 1", ErrInvalidArgument)
	}
	cmd := &raftlogv1.Command{Op: &raftlogv1.Command_SetMinDecryptionVersion{
		SetMinDecryptionVersion: &raftlogv1.SetMinDecryptionVersion{Name: req.Name, MinDecryptionVersion: req.MinDecryptionVersion}}}
	if err := s.throttle(p, req.Name, cmd); err != nil {
		return nil, err
	}
	return s.applyKey(ctx, p, cmd)
}

// GenerateDataKey returns a fresh data key from the HSM's RNG and its
// wrapped form under the key's primary version.
func (s *Service) GenerateDataKey(ctx context.Context, p Principal, req *custosv1.GenerateDataKeyRequest) (*custosv1.GenerateDataKeyResponse, error) {
	rnd, err := s.hsm.Random(ctx, DataKeySize)
	if err != nil {
		return nil, hsmError("random", err)
	}
	w, err := s.seal(ctx, p, "key", req.GetKey(), KindDataKey, rnd, req.GetEncryptionContext())
	if err != nil {
		clear(rnd)
		return nil, err
	}
	return &custosv1.GenerateDataKeyResponse{Key: w.Key, KeyVersion: w.KeyVersion, Plaintext: rnd, WrappedDataKey: w.Marshal()}, nil
}

// Encrypt encrypts a payload of at most MaxPayload bytes.
func (s *Service) Encrypt(ctx context.Context, p Principal, req *custosv1.EncryptRequest) (*custosv1.EncryptResponse, error) {
	if len(req.GetPlaintext()) > MaxPayload {
		return nil, fmt.Errorf("%w: plaintext has %d bytes, at most %d (use GenerateDataKey for larger data)",
			ErrInvalidArgument, len(req.GetPlaintext()), MaxPayload)
	}
	w, err := s.seal(ctx, p, "key", req.GetKey(), KindPayload, req.GetPlaintext(), req.GetEncryptionContext())
	if err != nil {
		return nil, err
	}
	return &custosv1.EncryptResponse{Key: w.Key, KeyVersion: w.KeyVersion, Ciphertext: w.Marshal()}, nil
}

// seal encrypts plaintext under the primary version of key in the HSM, for
// a principal the key's policy allows to encrypt.
func (s *Service) seal(ctx context.Context, p Principal, field, key string, kind Kind, plaintext []byte, encCtx map[string]string) (*Wrapped, error) {
	if err := validateName(field, key); err != nil {
		return nil, err
	}
	if err := ValidateContext(encCtx); err != nil {
		return nil, err
	}
	// Nothing is committed for a seal, so the key's state read below must
	// be at least as new as everything committed before this request
	// (invariant 3 of docs/architecture.md: no seal after an acknowledged revoke or disable, on
	// any node): a read index first, or nothing is issued.
	if err := s.linearize(ctx); err != nil {
		return nil, err
	}
	return s.sealApplied(ctx, p, key, kind, plaintext, encCtx)
}

// sealApplied is seal on this node's applied state as it is now. Call it
// only when that state is known to be recent enough: after linearize, or
// after this node caught up with a decision committed for the request
// (ReEncrypt).
func (s *Service) sealApplied(ctx context.Context, p Principal, key string, kind Kind, plaintext []byte, encCtx map[string]string) (*Wrapped, error) {
	kv, id, iv, err := s.encryptingVersion(ctx, p, key)
	if err != nil {
		return nil, err
	}
	w := &Wrapped{Kind: kind, Key: key, KeyVersion: kv.Version, IV: iv}
	w.Ciphertext, err = s.hsm.EncryptGCM(ctx, id, iv, plaintext, w.AAD(ContextDigest(encCtx)))
	if err != nil {
		return nil, s.kekError(ctx, id, "encrypt", err)
	}
	return w, nil
}

// encryptingVersion checks, on this node's applied state, that p may
// encrypt with key now (not revoked, enabled, named by the policy) and
// returns its primary version, that version's KEK id in this HSM and a fresh
// IV from the HSM. Every encrypting path (seal, XKS encrypt) goes through it.
func (s *Service) encryptingVersion(ctx context.Context, p Principal, key string) (*raftlogv1.KeyVersionRecord, hsm.KeyRef, []byte, error) {
	kv, err := s.state.encryptVersion(key, p.Name)
	if err != nil {
		return nil, hsm.KeyRef{}, nil, err
	}
	id, err := s.kek(ctx, key, kv)
	if err != nil {
		return nil, hsm.KeyRef{}, nil, err
	}
	iv, err := s.hsm.Random(ctx, hsm.GCMIVSize)
	if err != nil {
		return nil, hsm.KeyRef{}, nil, hsmError("random", err)
	}
	return kv, id, iv, nil
}

// Decrypt commits a decision record, then, if it allows, decrypts.
func (s *Service) Decrypt(ctx context.Context, p Principal, req *custosv1.DecryptRequest) (*custosv1.DecryptResponse, error) {
	w, cmd, err := decideCommand(p, req.GetCiphertext(), req.GetEncryptionContext(), req.GetJustification(), req.GetRequestSignature(), false)
	if err != nil {
		return nil, err
	}
	rec, pt, err := s.decideRelease(ctx, p, s.proposer(ctx, p, cmd), s.wrappedRelease(w, req.GetEncryptionContext()))
	if err != nil {
		return nil, err
	}
	return &custosv1.DecryptResponse{Key: w.Key, KeyVersion: w.KeyVersion, Plaintext: pt,
		DecisionSeq: rec.Seq, RequestId: rec.RequestId}, nil
}

// ReEncrypt commits a decision record, then rewraps under the primary
// version inside this node; the plaintext is never returned.
func (s *Service) ReEncrypt(ctx context.Context, p Principal, req *custosv1.ReEncryptRequest) (*custosv1.ReEncryptResponse, error) {
	w, cmd, err := decideCommand(p, req.GetCiphertext(), req.GetEncryptionContext(), req.GetJustification(), req.GetRequestSignature(), true)
	if err != nil {
		return nil, err
	}
	rel := s.wrappedRelease(w, req.GetEncryptionContext())
	var nw *Wrapped
	rel.deliver = func(ctx context.Context, pt []byte) error {
		defer clear(pt)
		// The decision was committed after this request arrived and the
		// pipeline waited until this node applied it: the state is recent
		// enough without another read index.
		if err := validateName("key", w.Key); err != nil {
			return err
		}
		if err := ValidateContext(req.GetEncryptionContext()); err != nil {
			return err
		}
		nw, err = s.sealApplied(ctx, p, w.Key, w.Kind, pt, req.GetEncryptionContext())
		return err
	}
	rec, _, err := s.decideRelease(ctx, p, s.proposer(ctx, p, cmd), rel)
	if err != nil {
		return nil, err
	}
	return &custosv1.ReEncryptResponse{Key: nw.Key, KeyVersion: nw.KeyVersion, SourceKeyVersion: w.KeyVersion,
		Ciphertext: nw.Marshal(), DecisionSeq: rec.Seq, RequestId: rec.RequestId}, nil
}

// decideCommand validates a decrypt-type request and returns the parsed
// ciphertext and the Decide command to propose for it. A signed request
// (docs/signed-requests.md) carries its signature and the caller's
// certificate into the command, where every replica checks them.
func decideCommand(p Principal, ct []byte, encCtx map[string]string, j *custosv1.Justification, sig *custosv1.RequestSignature, reencrypt bool) (*Wrapped, *raftlogv1.Command, error) {
	if len(ct) == 0 {
		return nil, nil, fmt.Errorf("%w: ciphertext is empty", ErrInvalidArgument)
	}
	if sig != nil {
		switch {
		case len(sig.GetNonce()) != requestsig.NonceSize || len(sig.GetSignature()) == 0 || len(sig.GetSignature()) > requestsig.MaxSignature:
			return nil, nil, fmt.Errorf("%w: request_signature needs a %d-byte nonce and an ECDSA signature of at most %d bytes",
				ErrInvalidArgument, requestsig.NonceSize, requestsig.MaxSignature)
		case len(p.Certificate) == 0:
			return nil, nil, fmt.Errorf("%w: a signed request needs a caller identified by a certificate", ErrInvalidArgument)
		}
	}
	w, err := ParseWrapped(ct)
	if err != nil {
		return nil, nil, err
	}
	if err := ValidateContext(encCtx); err != nil {
		return nil, nil, err
	}
	if err := validateJustification(j); err != nil {
		return nil, nil, err
	}
	op := custosv1.Operation_OPERATION_DECRYPT
	switch {
	case reencrypt:
		op = custosv1.Operation_OPERATION_REENCRYPT
	case w.Kind == KindDataKey:
		op = custosv1.Operation_OPERATION_DECRYPT_DATA_KEY
	}
	digest := ContextDigest(encCtx)
	data := sha256.Sum256(ct)
	return w, &raftlogv1.Command{Op: &raftlogv1.Command_Decide{Decide: &raftlogv1.Decide{
		Key: w.Key, KeyVersion: w.KeyVersion, Operation: op,
		Reason: j.GetReason(), JustificationText: j.GetText(), Ticket: j.GetTicket(),
		ContextDigest: digest[:], RequestId: newRequestID(), DataDigest: data[:],
		RequestSignature: sig, PrincipalCertificate: certIfSigned(p, sig),
	}}}, nil
}

// withProof keeps a Decide's request signature and certificate only for a
// key whose policy requires signed requests (as this node sees it; the
// state machine decides): other commands do not carry them into the log.
func (s *Service) withProof(cmd *raftlogv1.Command) *raftlogv1.Command {
	if d := cmd.GetDecide(); d != nil && d.RequestSignature != nil && !s.state.RequiresSignedRequests(d.Key) {
		d.RequestSignature, d.PrincipalCertificate = nil, nil
	}
	return cmd
}

// certIfSigned is the caller's certificate for a signed request, nil
// otherwise (an unsigned request's command does not grow by it).
func certIfSigned(p Principal, sig *custosv1.RequestSignature) []byte {
	if sig == nil {
		return nil
	}
	return p.Certificate
}

// proposer returns the proposal of one Decide command through the log, for
// decideRelease.
func (s *Service) proposer(ctx context.Context, p Principal, cmd *raftlogv1.Command) func() (any, error) {
	s.withProof(cmd)
	return func() (any, error) {
		if err := s.throttle(p, cmd.GetDecide().GetKey(), cmd); err != nil {
			return nil, err
		}
		return s.apply(ctx, p, cmd)
	}
}

// releasing is what one front door hands decideRelease about the key
// version an ALLOW decision covers: how to decrypt under its KEK in this
// node's HSM, in the front door's own format, and what to finish with the
// plaintext inside this node.
type releasing struct {
	key     string
	version uint32
	// open decrypts under the KEK id in this node's HSM; an authentication
	// failure is ErrDecryptionFailed.
	open func(ctx context.Context, kek hsm.KeyRef) ([]byte, error)
	// deliver, if set, finishes the request inside this node with the
	// plaintext (ReEncrypt seals it again) and owns it; decideRelease then
	// returns no plaintext.
	deliver func(ctx context.Context, pt []byte) error
}

// wrappedRelease opens a custos ciphertext (Decrypt, ReEncrypt,
// BatchDecrypt) under the encryption context of the request.
func (s *Service) wrappedRelease(w *Wrapped, encCtx map[string]string) releasing {
	return releasing{key: w.Key, version: w.KeyVersion, open: func(ctx context.Context, kek hsm.KeyRef) ([]byte, error) {
		return s.openGCM(ctx, kek, w.IV, w.Ciphertext, w.AAD(ContextDigest(encCtx)))
	}}
}

// openGCM decrypts AES-256-GCM in this node's HSM.
func (s *Service) openGCM(ctx context.Context, kek hsm.KeyRef, iv, ct, aad []byte) ([]byte, error) {
	pt, err := s.hsm.DecryptGCM(ctx, kek, iv, ct, aad)
	if err != nil {
		if errors.Is(err, hsm.ErrDecrypt) {
			return nil, ErrDecryptionFailed
		}
		return nil, s.kekError(ctx, kek, "decrypt", err)
	}
	return pt, nil
}

// decideRelease is the one decrypt pipeline: gRPC Decrypt, ReEncrypt,
// BatchDecrypt and XKS decrypt all go through it. propose commits the
// Decide command (the caller builds it in its own wire format) and returns
// what the log returned for it; then this node waits until it has applied
// the log up to the decision (docs/architecture.md, invariant 3: it acts on
// the decision only with state at least as new as what the leader decided
// under, so a notify-before-release policy the decision saw is seen here
// too); then, for an ALLOW only, it releases (invariant 2: decide, record,
// then release): admission, the key version, the notification before
// release if the policy asks for it (invariant 6), the HSM.
//
// It returns the committed decision record (also for DENY and PENDING; nil
// if nothing was committed), the plaintext (nil when rel.deliver took it)
// and an error for anything but a release. Every failure after an ALLOW,
// the caller's cancellation included, is followed by a RELEASE_BLOCKED
// record (blockRelease), so the ledger says the ALLOW released nothing.
func (s *Service) decideRelease(ctx context.Context, p Principal, propose func() (any, error), rel releasing) (*custosv1.DecisionRecord, []byte, error) {
	res, err := propose()
	if err != nil {
		return nil, nil, err
	}
	d, ok := res.(*Decision)
	if !ok {
		return nil, nil, fmt.Errorf("%w: unexpected decision result %T", ErrInternal, res)
	}
	rec := d.Record
	allowed := d.Err == nil && rec != nil && rec.Outcome == custosv1.Outcome_OUTCOME_ALLOW
	if err := s.caughtUp(ctx, d); err != nil {
		if allowed {
			s.blockRelease(ctx, p, rec, blockCause(ctx, err, BlockCauseError), err)
		}
		return rec, nil, err
	}
	if d.Err != nil {
		return rec, nil, d.Err
	}
	if !allowed {
		return rec, nil, fmt.Errorf("%w: decision is not ALLOW", ErrInternal)
	}
	pt, cause, err := s.release(ctx, p, rec, rel)
	if err != nil {
		s.blockRelease(ctx, p, rec, cause, err)
		return rec, nil, err
	}
	return rec, pt, nil
}

// caughtUp waits until this node's state has applied the log up to a
// decision the leader committed (on a follower), so the node acts on it —
// and shows it in its own ledger — only with state at least that recent.
func (s *Service) caughtUp(ctx context.Context, d *Decision) error {
	if d.Record == nil {
		return nil
	}
	if err := s.state.WaitApplied(ctx, d.Record.RaftIndex); err != nil {
		return fmt.Errorf("%w: this node has not caught up with decision %d: %v", ErrUnavailable, d.Record.Seq, err)
	}
	return nil
}

// release is the step of decideRelease after an ALLOW decision rec: one
// read of the key, the notification before release if its policy asks for
// it, the KEK of the version in this HSM, the decryption, and rel.deliver.
// On failure it also returns the cause for the RELEASE_BLOCKED record.
func (s *Service) release(ctx context.Context, p Principal, rec *custosv1.DecisionRecord, rel releasing) ([]byte, string, error) {
	fail := func(step string, err error) ([]byte, string, error) { return nil, blockCause(ctx, err, step), err }
	if err := s.admitted(ctx); err != nil {
		return fail(BlockCauseError, err) // before any notify-before-release delivery
	}
	kv, notify, err := s.state.releaseVersion(rel.key, rel.version)
	if err != nil {
		return fail(BlockCauseError, err)
	}
	if notify {
		if err := s.notifyBeforeRelease(ctx, rec); err != nil {
			return fail(BlockCauseNotify, err)
		}
	}
	id, err := s.kek(ctx, rel.key, kv)
	if err != nil {
		return fail(BlockCauseHSM, err)
	}
	pt, err := rel.open(ctx, id)
	if err != nil {
		return fail(BlockCauseHSM, err)
	}
	// Released means handed back to a caller that still waits for it: one
	// that gave up gets nothing, and the ledger says so.
	if err := ctx.Err(); err != nil {
		clear(pt)
		return fail(BlockCauseCancelled, err)
	}
	if rel.deliver != nil {
		if err := rel.deliver(ctx, pt); err != nil {
			return fail(BlockCauseError, err)
		}
		return nil, "", nil
	}
	return pt, "", nil
}

// blockCause is the cause recorded when err stopped a release at a step
// whose own cause is step: the kind's cause if it has one, "cancelled" if
// the caller's context ended, else step.
func blockCause(ctx context.Context, err error, step string) string {
	if c := ErrorKindOf(err).BlockCause; c != "" {
		return c
	}
	if ctx.Err() != nil {
		return BlockCauseCancelled
	}
	return step
}

// blockReleaseTimeout bounds the commit of a RELEASE_BLOCKED record, which
// does not end with the caller's context.
const blockReleaseTimeout = 30 * time.Second

// blockRelease commits a RELEASE_BLOCKED record after an ALLOW decision rec
// that released nothing, so the ledger (and the disclosure report) does not
// count it as a key use. Best effort: the caller's cancellation does not
// stop it, and a failure to commit is logged — the ALLOW then stands alone
// and is counted as a release (docs/audit.md).
func (s *Service) blockRelease(ctx context.Context, p Principal, rec *custosv1.DecisionRecord, cause string, err error) {
	detail := "nothing released: " + err.Error()
	var ne *notifyError
	if errors.As(err, &ne) {
		detail = ne.detail
	}
	bctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), blockReleaseTimeout)
	defer cancel()
	if _, aerr := s.apply(bctx, p, &raftlogv1.Command{Op: &raftlogv1.Command_BlockRelease{BlockRelease: &raftlogv1.BlockRelease{
		DecisionSeq: rec.Seq, RequestId: rec.RequestId, Key: rec.Key, Detail: detail, Cause: cause}}}); aerr != nil {
		s.lg.Error("could not record a blocked release: the ALLOW decision will count as a release",
			"decision", rec.Seq, "request_id", rec.RequestId, "cause", cause, "err", aerr)
	}
}

func validateJustification(j *custosv1.Justification) error {
	if len(j.GetText()) > MaxJustificationText {
		return fmt.Errorf("%w: justification.text is longer than %d bytes", ErrInvalidArgument, MaxJustificationText)
	}
	if len(j.GetTicket()) > MaxTicket {
		return fmt.Errorf("%w: justification.ticket is longer than %d bytes", ErrInvalidArgument, MaxTicket)
	}
	if _, ok := custosv1.Reason_name[int32(j.GetReason())]; !ok {
		return fmt.Errorf("%w: justification.reason %d is not a known reason", ErrInvalidArgument, j.GetReason())
	}
	return nil
}

// ready fails until the cluster has been initialised.
func (s *Service) ready() error {
	if s.state.ClusterID() == "" {
		return fmt.Errorf("%w: cluster not initialised", ErrFailedPrecondition)
	}
	return s.state.Health()
}

// Health reports whether this node can serve: HSM reachable, ledger sound.
func (s *Service) Health(ctx context.Context) error {
	if err := s.hsm.Health(ctx); err != nil {
		return hsmError("health", err)
	}
	return s.state.Health()
}

func hsmError(op string, err error) error {
	switch {
	case errors.Is(err, context.Canceled), errors.Is(err, context.DeadlineExceeded):
		return err
	case errors.Is(err, hsm.ErrInvalidInput):
		return fmt.Errorf("%w: hsm %s: %v", ErrInvalidArgument, op, err)
	case errors.Is(err, hsm.ErrKeyNotFound):
		return fmt.Errorf("%w: hsm %s: key material missing on this node", ErrFailedPrecondition, op)
	default:
		return fmt.Errorf("%w: hsm %s: %v", ErrHSMFailed, op, err)
	}
}

func newRequestID() string {
	var b [16]byte
	_, _ = rand.Read(b[:])
	return hex.EncodeToString(b[:])
}

func keyProto(k *raftlogv1.KeyRecord) *custosv1.Key {
	out := &custosv1.Key{
		Name: k.Name, Description: k.Description, State: custosv1.KeyState_KEY_STATE_DISABLED,
		PrimaryVersion: k.PrimaryVersion, MinDecryptionVersion: k.MinDecryptionVersion,
		Algorithm: "AES_256_GCM", CreateTimeUnixNano: k.CreateTimeUnixNano, UpdateTimeUnixNano: k.UpdateTimeUnixNano,
	}
	switch {
	case k.Destroyed:
		out.State = custosv1.KeyState_KEY_STATE_DESTROYED
	case k.DestroyAfterUnixNano != 0:
		out.State = custosv1.KeyState_KEY_STATE_PENDING_DESTRUCTION
	case k.Revoked:
		out.State = custosv1.KeyState_KEY_STATE_REVOKED
	case k.Enabled:
		out.State = custosv1.KeyState_KEY_STATE_ENABLED
	}
	for _, v := range k.Versions {
		origin := v.Origin
		if origin == custosv1.KeyOrigin_KEY_ORIGIN_UNSPECIFIED {
			origin = custosv1.KeyOrigin_KEY_ORIGIN_HSM
		}
		out.Versions = append(out.Versions, &custosv1.KeyVersion{Version: v.Version, CreateTimeUnixNano: v.CreateTimeUnixNano,
			Origin: origin, KeyCheckValue: v.KekCheckValue, DestroyTimeUnixNano: v.DestroyAfterUnixNano, Destroyed: v.Destroyed})
	}
	return out
}
