package governance

import (
	"bytes"
	"crypto/rand"
	"encoding/json"
	"fmt"
	"sort"
	"strconv"
	"strings"
	"time"
	"unicode"
	"unicode/utf8"

	"google.golang.org/protobuf/encoding/protojson"
	"google.golang.org/protobuf/encoding/protowire"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/reflect/protoreflect"

	custosv1 "github.com/custos-kms/custos/proto/custos/v1"
)

const (
	// MaxStatementSize is the largest statement Parse accepts.
	MaxStatementSize = 64 << 10
	// NonceSize is the size of a statement's nonce.
	NonceSize = 16
	// MaxLifetime is how far after the verifier's clock a statement's
	// not_after may lie.
	MaxLifetime = 7 * 24 * time.Hour
	// SignatureContext is prefixed to the statement bytes before hashing.
	SignatureContext = "custos-statement-v1\x00"
	// maxNameLen bounds officer names and the other identifiers.
	maxNameLen = 256
	// contextDigestSize is the size of an encryption context digest
	// (SHA-256).
	contextDigestSize = 32
)

// Requirement is how many officer signatures an operation needs.
type Requirement int

const (
	// One valid officer signature suffices (tightening).
	One Requirement = iota + 1
	// Quorum needs the officer set's quorum (loosening).
	Quorum
)

func (r Requirement) String() string {
	switch r {
	case One:
		return "one"
	case Quorum:
		return "quorum"
	}
	return "Requirement(" + strconv.Itoa(int(r)) + ")"
}

// NewStatement returns a statement for clusterID with a fresh random 16-byte
// nonce, not_after = now + lifetime (rounded down to the second) and the
// comment. The caller sets the operation, then calls Marshal.
func NewStatement(clusterID string, lifetime time.Duration, comment string) (*custosv1.Statement, error) {
	if clusterID == "" {
		return nil, fmt.Errorf("%w: cluster_id is empty", ErrMalformed)
	}
	if lifetime <= 0 || lifetime > MaxLifetime {
		return nil, fmt.Errorf("%w: lifetime %s is not in (0, %s]", ErrMalformed, lifetime, MaxLifetime)
	}
	nonce := make([]byte, NonceSize)
	if _, err := rand.Read(nonce); err != nil {
		return nil, fmt.Errorf("governance: reading a nonce: %w", err)
	}
	return &custosv1.Statement{
		ClusterId:    clusterID,
		Nonce:        nonce,
		NotAfterUnix: time.Now().Add(lifetime).Unix(),
		Comment:      comment,
	}, nil
}

// Marshal returns the statement's bytes (deterministic protobuf), the bytes
// officers sign. It refuses a statement Parse would refuse.
func Marshal(st *custosv1.Statement) ([]byte, error) {
	if st == nil {
		return nil, fmt.Errorf("%w: nil statement", ErrMalformed)
	}
	if err := validate(st); err != nil {
		return nil, err
	}
	b, err := proto.MarshalOptions{Deterministic: true}.Marshal(st)
	if err != nil {
		return nil, fmt.Errorf("%w: %v", ErrMalformed, err)
	}
	if len(b) > MaxStatementSize {
		return nil, fmt.Errorf("%w: statement is %d bytes, more than %d", ErrMalformed, len(b), MaxStatementSize)
	}
	return b, nil
}

// Parse decodes and checks statement bytes. It refuses (ErrMalformed) empty
// or oversized input, protobuf errors, unknown fields anywhere in the tree,
// a singular field given twice, more than one operation, a nonce that is not
// 16 bytes, a missing cluster id, expiry or operation, and an operation whose
// required fields are empty or invalid.
func Parse(b []byte) (*custosv1.Statement, error) { return ParseAt(b, SignedRequestsVersion) }

// ParseAt is Parse as a cluster at state machine version smv parses: below
// WebAuthnVersion the credential operations and officers' credentials are
// unknown fields, and below SignedRequestsVersion a policy's
// require_request_signature, refused as a release of that version refused
// them.
func ParseAt(b []byte, smv uint32) (*custosv1.Statement, error) {
	if len(b) == 0 {
		return nil, fmt.Errorf("%w: empty", ErrMalformed)
	}
	if len(b) > MaxStatementSize {
		return nil, fmt.Errorf("%w: statement is %d bytes, more than %d", ErrMalformed, len(b), MaxStatementSize)
	}
	st := &custosv1.Statement{}
	if err := (proto.UnmarshalOptions{RecursionLimit: 16}).Unmarshal(b, st); err != nil {
		return nil, fmt.Errorf("%w: %v", ErrMalformed, err)
	}
	path := unknownFields(st.ProtoReflect(), "statement")
	if smv < SignedRequestsVersion && path != "statement" && path != "statement.set_policy" && policyHasField(b, requireRequestSignatureField) {
		// KeyPolicy.require_request_signature, in any encoding (false
		// too), is an unknown field to a release before signed
		// requests, which finds it at the policy before anything inside
		// it: refused as that release refused it.
		path = "statement.set_policy.policy"
	}
	if path != "" {
		return nil, fmt.Errorf("%w: unknown field in %s", ErrMalformed, path)
	}
	if smv < WebAuthnVersion {
		if path := beforeWebAuthn(st); path != "" {
			return nil, fmt.Errorf("%w: unknown field in %s", ErrMalformed, path)
		}
	}
	if err := checkWire(b, st.ProtoReflect().Descriptor(), "statement", 0); err != nil {
		return nil, err
	}
	if err := validate(st); err != nil {
		return nil, err
	}
	return st, nil
}

// unknownFields returns the path of the first message in m's tree holding
// unknown fields, or "".
func unknownFields(m protoreflect.Message, path string) string {
	if len(m.GetUnknown()) > 0 {
		return path
	}
	var found string
	m.Range(func(fd protoreflect.FieldDescriptor, v protoreflect.Value) bool {
		p := path + "." + string(fd.Name())
		switch {
		case fd.IsMap():
			if fd.MapValue().Kind() == protoreflect.MessageKind {
				v.Map().Range(func(_ protoreflect.MapKey, mv protoreflect.Value) bool {
					found = unknownFields(mv.Message(), p)
					return found == ""
				})
			}
		case fd.IsList():
			if fd.Kind() == protoreflect.MessageKind || fd.Kind() == protoreflect.GroupKind {
				l := v.List()
				for i := 0; i < l.Len() && found == ""; i++ {
					found = unknownFields(l.Get(i).Message(), fmt.Sprintf("%s[%d]", p, i))
				}
			}
		case fd.Kind() == protoreflect.MessageKind || fd.Kind() == protoreflect.GroupKind:
			found = unknownFields(v.Message(), p)
		}
		return found == ""
	})
	return found
}

// checkWire walks the wire form and refuses a singular field that occurs
// twice or two members of one oneof: the protobuf decoder would silently keep
// the last, so the same bytes could mean different things to a reader that
// keeps the first. Unknown fields were refused before.
func checkWire(b []byte, md protoreflect.MessageDescriptor, path string, depth int) error {
	if depth > 16 {
		return fmt.Errorf("%w: %s nested too deeply", ErrMalformed, path)
	}
	seen := map[protowire.Number]bool{}
	oneofs := map[protoreflect.FullName]protowire.Number{}
	for len(b) > 0 {
		num, typ, n := protowire.ConsumeTag(b)
		if n < 0 {
			return fmt.Errorf("%w: %s: %v", ErrMalformed, path, protowire.ParseError(n))
		}
		b = b[n:]
		m := protowire.ConsumeFieldValue(num, typ, b)
		if m < 0 {
			return fmt.Errorf("%w: %s: %v", ErrMalformed, path, protowire.ParseError(m))
		}
		val := b[:m]
		b = b[m:]
		fd := md.Fields().ByNumber(num)
		if fd == nil {
			return fmt.Errorf("%w: unknown field %d in %s", ErrMalformed, num, path)
		}
		p := path + "." + string(fd.Name())
		if !fd.IsList() && !fd.IsMap() {
			if seen[num] {
				return fmt.Errorf("%w: field %s occurs twice", ErrMalformed, p)
			}
			seen[num] = true
			if od := fd.ContainingOneof(); od != nil && !od.IsSynthetic() {
				if other, ok := oneofs[od.FullName()]; ok && other != num {
					return fmt.Errorf("%w: %s sets more than one %s", ErrMalformed, path, od.Name())
				}
				oneofs[od.FullName()] = num
			}
		}
		if fd.Kind() == protoreflect.MessageKind && typ == protowire.BytesType && !fd.IsMap() {
			inner, k := protowire.ConsumeBytes(val)
			if k < 0 {
				return fmt.Errorf("%w: %s: %v", ErrMalformed, p, protowire.ParseError(k))
			}
			if err := checkWire(inner, fd.Message(), p, depth+1); err != nil {
				return err
			}
		}
	}
	return nil
}

// validate checks the fields of a decoded statement.
func validate(st *custosv1.Statement) error {
	if st.GetClusterId() == "" {
		return fmt.Errorf("%w: cluster_id is empty", ErrMalformed)
	}
	if err := checkIdent("cluster_id", st.GetClusterId()); err != nil {
		return err
	}
	if len(st.GetNonce()) != NonceSize {
		return fmt.Errorf("%w: nonce is %d bytes, want %d", ErrMalformed, len(st.GetNonce()), NonceSize)
	}
	if st.GetNotAfterUnix() <= 0 {
		return fmt.Errorf("%w: not_after_unix is not set", ErrMalformed)
	}
	if !utf8.ValidString(st.GetComment()) {
		return fmt.Errorf("%w: comment is not UTF-8", ErrMalformed)
	}
	if r := st.GetRestoreId(); r != "" && !isLowerHex(r, 32) {
		return fmt.Errorf("%w: restore_id is not 32 lower-case hex digits", ErrMalformed)
	}
	switch op := st.GetOperation().(type) {
	case nil:
		return fmt.Errorf("%w: no operation", ErrMalformed)
	case *custosv1.Statement_RevokeKey:
		return checkIdent("revoke_key.key", op.RevokeKey.GetKey())
	case *custosv1.Statement_DisableKey:
		return checkIdent("disable_key.key", op.DisableKey.GetKey())
	case *custosv1.Statement_EnableKey:
		return checkIdent("enable_key.key", op.EnableKey.GetKey())
	case *custosv1.Statement_SetPolicy:
		if err := checkIdent("set_policy.key", op.SetPolicy.GetKey()); err != nil {
			return err
		}
		if op.SetPolicy.GetPolicy() == nil {
			return fmt.Errorf("%w: set_policy.policy is not set", ErrMalformed)
		}
		return nil
	case *custosv1.Statement_ApproveRequest:
		if err := checkIdent("approve_request.request_id", op.ApproveRequest.GetRequestId()); err != nil {
			return err
		}
		if op.ApproveRequest.GetTtlSeconds() < 0 {
			return fmt.Errorf("%w: approve_request.ttl_seconds is negative", ErrMalformed)
		}
		return nil
	case *custosv1.Statement_DenyRequest:
		return checkIdent("deny_request.request_id", op.DenyRequest.GetRequestId())
	case *custosv1.Statement_CreateGrant:
		g := op.CreateGrant
		if err := checkIdent("create_grant.principal", g.GetPrincipal()); err != nil {
			return err
		}
		if err := checkIdent("create_grant.key", g.GetKey()); err != nil {
			return err
		}
		if d := g.GetContextDigest(); len(d) != 0 && len(d) != contextDigestSize {
			return fmt.Errorf("%w: create_grant.context_digest is %d bytes, want 0 or %d", ErrMalformed, len(d), contextDigestSize)
		}
		if g.GetTtlSeconds() < 0 {
			return fmt.Errorf("%w: create_grant.ttl_seconds is negative", ErrMalformed)
		}
		return nil
	case *custosv1.Statement_RevokeGrant:
		return checkIdent("revoke_grant.grant_id", op.RevokeGrant.GetGrantId())
	case *custosv1.Statement_SetOfficers:
		if err := noCredentials("set_officers", op.SetOfficers.GetOfficers()); err != nil {
			return err
		}
		_, err := newOfficerSet("set_officers", op.SetOfficers.GetOfficers(), op.SetOfficers.GetQuorum())
		return err
	case *custosv1.Statement_AddOfficerCredential:
		if err := checkIdent("add_officer_credential.officer", op.AddOfficerCredential.GetOfficer()); err != nil {
			return err
		}
		return ValidateCredential(op.AddOfficerCredential.GetCredential())
	case *custosv1.Statement_RemoveOfficerCredential:
		if err := checkIdent("remove_officer_credential.officer", op.RemoveOfficerCredential.GetOfficer()); err != nil {
			return err
		}
		if n := len(op.RemoveOfficerCredential.GetCredentialId()); n < minCredentialID || n > maxCredentialID {
			return fmt.Errorf("%w: remove_officer_credential.credential_id is %d bytes", ErrMalformed, n)
		}
		return nil
	case *custosv1.Statement_AddSink:
		if op.AddSink.GetSink() == nil {
			return fmt.Errorf("%w: add_sink.sink is not set", ErrMalformed)
		}
		return checkIdent("add_sink.sink.name", op.AddSink.GetSink().GetName())
	case *custosv1.Statement_RemoveSink:
		return checkIdent("remove_sink.name", op.RemoveSink.GetName())
	case *custosv1.Statement_SetNotifyRules:
		if op.SetNotifyRules.GetRules() == nil {
			return fmt.Errorf("%w: set_notify_rules.rules is not set", ErrMalformed)
		}
		return nil
	case *custosv1.Statement_AdmitNode:
		a := op.AdmitNode
		if err := checkIdent("admit_node.node", a.GetNode()); err != nil {
			return err
		}
		if !isLowerHex(a.GetTransportKeyFingerprint(), 64) {
			return fmt.Errorf("%w: admit_node.transport_key_fingerprint is not 64 lower-case hex digits", ErrMalformed)
		}
		if !isLowerHex(a.GetIdentityKeyFingerprint(), 32) {
			return fmt.Errorf("%w: admit_node.identity_key_fingerprint is not 32 lower-case hex digits", ErrMalformed)
		}
		switch a.GetHash() {
		case custosv1.KeyTransportHash_KEY_TRANSPORT_HASH_SHA256, custosv1.KeyTransportHash_KEY_TRANSPORT_HASH_SHA1:
			return nil
		}
		return fmt.Errorf("%w: admit_node.hash is not SHA256 or SHA1", ErrMalformed)
	case *custosv1.Statement_RevokeAdmission:
		return checkIdent("revoke_admission.node", op.RevokeAdmission.GetNode())
	case *custosv1.Statement_ScheduleKeyDestruction:
		if op.ScheduleKeyDestruction.GetWaitingSeconds() < 0 {
			return fmt.Errorf("%w: schedule_key_destruction.waiting_seconds is negative", ErrMalformed)
		}
		return checkIdent("schedule_key_destruction.key", op.ScheduleKeyDestruction.GetKey())
	case *custosv1.Statement_CancelKeyDestruction:
		return checkIdent("cancel_key_destruction.key", op.CancelKeyDestruction.GetKey())
	case *custosv1.Statement_RotateDomainKey, *custosv1.Statement_CancelDomainKeyRotation:
		return nil
	case *custosv1.Statement_SetKeyMinVersion:
		if op.SetKeyMinVersion.GetMinDecryptionVersion() == 0 {
			return fmt.Errorf("%w: set_key_min_version.min_decryption_version is 0", ErrMalformed)
		}
		return checkIdent("set_key_min_version.key", op.SetKeyMinVersion.GetKey())
	case *custosv1.Statement_AddWitness:
		w := op.AddWitness.GetWitness()
		if w == nil {
			return fmt.Errorf("%w: add_witness.witness is not set", ErrMalformed)
		}
		if err := checkIdent("add_witness.witness.name", w.GetName()); err != nil {
			return err
		}
		if _, err := ParsePublicKey(w.GetPublicKey()); err != nil {
			return fmt.Errorf("%w: add_witness.witness.public_key: %v", ErrMalformed, err)
		}
		if w.GetLast() != nil {
			return fmt.Errorf("%w: add_witness.witness.last is set by the cluster", ErrMalformed)
		}
		return nil
	case *custosv1.Statement_RemoveWitness:
		return checkIdent("remove_witness.name", op.RemoveWitness.GetName())
	case *custosv1.Statement_SetQuotas:
		if op.SetQuotas.GetQuotas() == nil {
			return fmt.Errorf("%w: set_quotas.quotas is not set", ErrMalformed)
		}
		return nil
	case *custosv1.Statement_CreateCluster:
		cc := op.CreateCluster
		if !isLowerHex(st.GetClusterId(), 32) {
			return fmt.Errorf("%w: create_cluster: cluster_id must be 32 lower-case hex digits", ErrMalformed)
		}
		if err := noCredentials("create_cluster", cc.GetOfficers()); err != nil {
			return err
		}
		if _, err := newOfficerSet("create_cluster.officers", cc.GetOfficers(), cc.GetQuorum()); err != nil {
			return err
		}
		for i, der := range cc.GetClientAuthorities() {
			if _, err := ParseClientAuthority(der); err != nil {
				return fmt.Errorf("create_cluster.client_authorities[%d]: %w", i, err)
			}
		}
		if p := cc.GetProfile(); p != "" && p != "development" {
			return fmt.Errorf("%w: create_cluster.profile %q is neither \"\" nor \"development\"", ErrMalformed, p)
		}
		return nil
	case *custosv1.Statement_AddClientAuthority:
		_, err := ParseClientAuthority(op.AddClientAuthority.GetCertificate())
		return err
	case *custosv1.Statement_RemoveClientAuthority:
		if !isLowerHex(op.RemoveClientAuthority.GetSha256(), 64) {
			return fmt.Errorf("%w: remove_client_authority.sha256 is not 64 lower-case hex digits", ErrMalformed)
		}
		return nil
	case *custosv1.Statement_AcceptRestore:
		if !isLowerHex(op.AcceptRestore.GetSnapshotSha256(), 64) {
			return fmt.Errorf("%w: accept_restore.snapshot_sha256 is not 64 lower-case hex digits", ErrMalformed)
		}
		return nil
	default:
		return fmt.Errorf("%w: unknown operation %T", ErrMalformed, op)
	}
}

// checkIdent refuses an empty, overlong, non-UTF-8 or control-character
// identifier (key names, ids, officer names), so Describe shows it as is.
func checkIdent(field, s string) error {
	if s == "" {
		return fmt.Errorf("%w: %s is empty", ErrMalformed, field)
	}
	if len(s) > maxNameLen {
		return fmt.Errorf("%w: %s is longer than %d bytes", ErrMalformed, field, maxNameLen)
	}
	if !utf8.ValidString(s) {
		return fmt.Errorf("%w: %s is not UTF-8", ErrMalformed, field)
	}
	for _, r := range s {
		if unicode.IsControl(r) || unicode.Is(unicode.Cf, r) {
			return fmt.Errorf("%w: %s contains a control or format character", ErrMalformed, field)
		}
	}
	return nil
}

// noCredentials refuses officers that carry WebAuthn credentials: those
// are bound one by one (AddOfficerCredential), each shown to the officers
// who sign it, never inside an officer list.
func noCredentials(field string, officers []*custosv1.Officer) error {
	for _, o := range officers {
		if len(o.GetCredentials()) > 0 {
			return fmt.Errorf("%w: %s: officer %q carries credentials (bind them with add_officer_credential)", ErrMalformed, field, o.GetName())
		}
	}
	return nil
}

// isLowerHex reports whether s is n lower-case hex digits.
func isLowerHex(s string, n int) bool {
	if len(s) != n {
		return false
	}
	for _, r := range s {
		if (r < '0' || r > '9') && (r < 'a' || r > 'f') {
			return false
		}
	}
	return true
}

// Need returns how many signatures the statement's operation needs:
// One for RevokeKey, DisableKey, DenyRequest, RevokeGrant, RevokeAdmission,
// RemoveClientAuthority (tightening), CancelKeyDestruction (it keeps a key) and AddSink (it only adds who is told), Quorum for everything
// else (loosening, admitting a node, removing a sink or changing notify
// rules, and anything unknown).
func Need(st *custosv1.Statement) Requirement {
	switch st.GetOperation().(type) {
	case *custosv1.Statement_RevokeKey,
		*custosv1.Statement_DisableKey,
		*custosv1.Statement_DenyRequest,
		*custosv1.Statement_RevokeGrant,
		*custosv1.Statement_RevokeAdmission,
		*custosv1.Statement_RemoveClientAuthority,
		*custosv1.Statement_CancelKeyDestruction,
		*custosv1.Statement_RotateDomainKey,
		*custosv1.Statement_CancelDomainKeyRotation,
		*custosv1.Statement_AddSink,
		*custosv1.Statement_RemoveOfficerCredential:
		return One
	}
	return Quorum
}

// OperationName returns the operation's field name ("revoke_key", ...) or
// "none".
func OperationName(st *custosv1.Statement) string {
	if st == nil {
		return "none"
	}
	od := st.ProtoReflect().Descriptor().Oneofs().ByName("operation")
	if fd := st.ProtoReflect().WhichOneof(od); fd != nil {
		return string(fd.Name())
	}
	return "none"
}

// Describe returns one human-readable line: the operation, its parameters,
// the cluster, the expiry (UTC) and the comment, for an officer to read before
// signing. Strings are quoted, so control characters cannot hide anything.
func Describe(st *custosv1.Statement) string {
	if st == nil {
		return "(no statement)"
	}
	var b strings.Builder
	q := strconv.Quote
	b.WriteString(OperationName(st))
	switch op := st.GetOperation().(type) {
	case *custosv1.Statement_RevokeKey:
		fmt.Fprintf(&b, " key=%s", q(op.RevokeKey.GetKey()))
	case *custosv1.Statement_DisableKey:
		fmt.Fprintf(&b, " key=%s", q(op.DisableKey.GetKey()))
	case *custosv1.Statement_EnableKey:
		fmt.Fprintf(&b, " key=%s", q(op.EnableKey.GetKey()))
	case *custosv1.Statement_SetPolicy:
		pol := "null"
		if p := op.SetPolicy.GetPolicy(); p != nil {
			if j, err := (protojson.MarshalOptions{UseProtoNames: true}).Marshal(p); err == nil {
				var c bytes.Buffer
				// Drop protojson's deliberately unstable spacing (outside
				// strings only).
				if json.Compact(&c, j) == nil {
					pol = c.String()
				}
			}
		}
		fmt.Fprintf(&b, " key=%s policy=%s", q(op.SetPolicy.GetKey()), pol)
	case *custosv1.Statement_ApproveRequest:
		a := op.ApproveRequest
		fmt.Fprintf(&b, " request=%s uses=%s ttl=%s", q(a.GetRequestId()),
			orDefault(int64(a.GetUses()), "1"), ttlString(a.GetTtlSeconds()))
	case *custosv1.Statement_DenyRequest:
		fmt.Fprintf(&b, " request=%s", q(op.DenyRequest.GetRequestId()))
	case *custosv1.Statement_CreateGrant:
		g := op.CreateGrant
		ctx := "any"
		if len(g.GetContextDigest()) > 0 {
			ctx = fmt.Sprintf("%x", g.GetContextDigest())
		}
		fmt.Fprintf(&b, " principal=%s key=%s reason=%s context=%s uses=%s ttl=%s",
			q(g.GetPrincipal()), q(g.GetKey()), g.GetReason(), ctx,
			orDefault(int64(g.GetUses()), "1"), ttlString(g.GetTtlSeconds()))
	case *custosv1.Statement_RevokeGrant:
		fmt.Fprintf(&b, " grant=%s", q(op.RevokeGrant.GetGrantId()))
	case *custosv1.Statement_SetOfficers:
		so := op.SetOfficers
		names := make([]string, 0, len(so.GetOfficers()))
		for _, o := range so.GetOfficers() {
			fp := "invalid-key"
			if pub, err := ParsePublicKey(o.GetPublicKey()); err == nil {
				fp = Fingerprint(pub)
			}
			names = append(names, q(o.GetName())+":"+fp)
		}
		sort.Strings(names)
		fmt.Fprintf(&b, " officers=[%s] quorum=%d of %d", strings.Join(names, " "), so.GetQuorum(), len(names))
	case *custosv1.Statement_AddSink:
		sk := op.AddSink.GetSink()
		fmt.Fprintf(&b, " name=%s type=%s url=%s path=%s required_for_release=%t", q(sk.GetName()), sk.GetType(),
			q(sk.GetUrl()), q(sk.GetPath()), sk.GetRequiredForRelease())
	case *custosv1.Statement_RemoveSink:
		fmt.Fprintf(&b, " name=%s", q(op.RemoveSink.GetName()))
	case *custosv1.Statement_SetNotifyRules:
		r := op.SetNotifyRules.GetRules()
		fmt.Fprintf(&b, " reasons=%v outcomes=%v customer_principals=%q governance=%t all=%t",
			r.GetReasons(), r.GetOutcomes(), r.GetCustomerPrincipals(), r.GetGovernance(), r.GetAll())
	case *custosv1.Statement_AdmitNode:
		a := op.AdmitNode
		fmt.Fprintf(&b, " node=%s transport_key=%s identity_key=%s oaep=%s", q(a.GetNode()),
			a.GetTransportKeyFingerprint(), a.GetIdentityKeyFingerprint(), a.GetHash())
		if a.GetHash() == custosv1.KeyTransportHash_KEY_TRANSPORT_HASH_SHA1 {
			b.WriteString(" (NOT CRYPTREC: development profile only)")
		}
		if a.GetDomainKeyRotation() {
			b.WriteString(" for the domain-key rotation")
		}
	case *custosv1.Statement_RevokeAdmission:
		fmt.Fprintf(&b, " node=%s", q(op.RevokeAdmission.GetNode()))
	case *custosv1.Statement_ScheduleKeyDestruction:
		d := op.ScheduleKeyDestruction
		fmt.Fprintf(&b, " key=%s version=%s waiting=%s", q(d.GetKey()), versionOrAll(d.GetVersion()), waitString(d.GetWaitingSeconds()))
	case *custosv1.Statement_CancelKeyDestruction:
		d := op.CancelKeyDestruction
		fmt.Fprintf(&b, " key=%s version=%s", q(d.GetKey()), versionOrAll(d.GetVersion()))
	case *custosv1.Statement_AcceptRestore:
		fmt.Fprintf(&b, " snapshot_sha256=%s", op.AcceptRestore.GetSnapshotSha256())
	case *custosv1.Statement_AddClientAuthority:
		if ca, err := ParseClientAuthority(op.AddClientAuthority.GetCertificate()); err == nil {
			fmt.Fprintf(&b, " sha256=%s subject=%s", ca.Sha256, q(ca.Subject))
		} else {
			b.WriteString(" certificate=invalid")
		}
	case *custosv1.Statement_RemoveClientAuthority:
		fmt.Fprintf(&b, " sha256=%s", op.RemoveClientAuthority.GetSha256())
	case *custosv1.Statement_AddWitness:
		fp := "invalid-key"
		if pub, err := ParsePublicKey(op.AddWitness.GetWitness().GetPublicKey()); err == nil {
			fp = Fingerprint(pub)
		}
		fmt.Fprintf(&b, " name=%s key=%s", q(op.AddWitness.GetWitness().GetName()), fp)
	case *custosv1.Statement_RemoveWitness:
		fmt.Fprintf(&b, " name=%s", q(op.RemoveWitness.GetName()))
	case *custosv1.Statement_AddOfficerCredential:
		c := op.AddOfficerCredential.GetCredential()
		fp := "invalid-key"
		if pub, err := ParsePublicKey(c.GetPublicKey()); err == nil {
			fp = Fingerprint(pub)
		}
		fmt.Fprintf(&b, " officer=%s credential=%s key=%s rp_id=%s origins=%s user_verification=%t label=%s",
			q(op.AddOfficerCredential.GetOfficer()), CredentialIDString(c.GetCredentialId()), fp, q(c.GetRpId()),
			q(strings.Join(c.GetOrigins(), " ")), c.GetRequireUserVerification(), q(c.GetLabel()))
	case *custosv1.Statement_RemoveOfficerCredential:
		fmt.Fprintf(&b, " officer=%s credential=%s", q(op.RemoveOfficerCredential.GetOfficer()),
			CredentialIDString(op.RemoveOfficerCredential.GetCredentialId()))
	case *custosv1.Statement_CreateCluster:
		cc := op.CreateCluster
		var names []string
		for _, o := range cc.GetOfficers() {
			fp := "invalid-key"
			if pub, err := ParsePublicKey(o.GetPublicKey()); err == nil {
				fp = Fingerprint(pub)
			}
			names = append(names, q(o.GetName())+"("+fp+")")
		}
		fmt.Fprintf(&b, " officers=[%s] quorum=%d of %d client_authorities=%d profile=%s",
			strings.Join(names, " "), cc.GetQuorum(), len(names), len(cc.GetClientAuthorities()), q(cc.GetProfile()))
	case *custosv1.Statement_SetQuotas:
		qs := op.SetQuotas.GetQuotas()
		fmt.Fprintf(&b, " max_keys_per_principal=%s max_pending_per_principal=%s",
			orDefault(int64(qs.GetMaxKeysPerPrincipal()), "1000"), orDefault(int64(qs.GetMaxPendingPerPrincipal()), "16"))
	case *custosv1.Statement_SetKeyMinVersion:
		fmt.Fprintf(&b, " key=%s min_decryption_version=%d", q(op.SetKeyMinVersion.GetKey()), op.SetKeyMinVersion.GetMinDecryptionVersion())
	}
	fmt.Fprintf(&b, " (needs %s) cluster=%s not_after=%s", Need(st), q(st.GetClusterId()),
		time.Unix(st.GetNotAfterUnix(), 0).UTC().Format(time.RFC3339))
	if r := st.GetRestoreId(); r != "" {
		fmt.Fprintf(&b, " restore=%s", r)
	}
	if st.GetComment() != "" {
		fmt.Fprintf(&b, " comment=%s", q(st.GetComment()))
	}
	return b.String()
}

func orDefault(v int64, def string) string {
	if v == 0 {
		return def + " (default)"
	}
	return strconv.FormatInt(v, 10)
}

func ttlString(s int64) string {
	if s == 0 {
		return "1h0m0s (default)"
	}
	if s < 0 || s > int64(1<<62)/int64(time.Second) {
		return strconv.FormatInt(s, 10) + "s"
	}
	return (time.Duration(s) * time.Second).String()
}

// versionOrAll describes a destruction's version (0: the whole key).
func versionOrAll(v uint32) string {
	if v == 0 {
		return "all (the whole key)"
	}
	return strconv.FormatUint(uint64(v), 10)
}

// waitString describes a destruction's waiting period.
func waitString(s int64) string {
	if s == 0 {
		return "168h0m0s (default)"
	}
	if s < 0 || s > int64(1<<62)/int64(time.Second) {
		return strconv.FormatInt(s, 10) + "s"
	}
	return (time.Duration(s) * time.Second).String()
}

// requireRequestSignatureField is KeyPolicy.require_request_signature's
// field number (state machine version 4).
const requireRequestSignatureField = 12

// policyHasField reports whether statement bytes b carry field num in a
// set_policy's policy, in any occurrence (the decoder merges repeated
// occurrences of a message field, so any of them counts), whatever its
// value.
func policyHasField(b []byte, num protowire.Number) bool {
	setPolicy := (&custosv1.Statement{}).ProtoReflect().Descriptor().Fields().ByName("set_policy").Number()
	policy := (&custosv1.SetPolicy{}).ProtoReflect().Descriptor().Fields().ByName("policy").Number()
	for _, sp := range fieldBytes(b, setPolicy) {
		for _, p := range fieldBytes(sp, policy) {
			if hasField(p, num) {
				return true
			}
		}
	}
	return false
}

// fieldBytes returns the contents of every length-delimited occurrence of
// field num in b (nil when b does not parse).
func fieldBytes(b []byte, num protowire.Number) [][]byte {
	var out [][]byte
	for len(b) > 0 {
		n, typ, l := protowire.ConsumeTag(b)
		if l < 0 {
			return out
		}
		b = b[l:]
		if typ == protowire.BytesType && n == num {
			v, m := protowire.ConsumeBytes(b)
			if m < 0 {
				return out
			}
			out = append(out, v)
			b = b[m:]
			continue
		}
		m := protowire.ConsumeFieldValue(n, typ, b)
		if m < 0 {
			return out
		}
		b = b[m:]
	}
	return out
}

// hasField reports whether b holds field num (any wire type).
func hasField(b []byte, num protowire.Number) bool {
	for len(b) > 0 {
		n, typ, l := protowire.ConsumeTag(b)
		if l < 0 {
			return false
		}
		if n == num {
			return true
		}
		b = b[l:]
		m := protowire.ConsumeFieldValue(n, typ, b)
		if m < 0 {
			return false
		}
		b = b[m:]
	}
	return false
}
