package governance_test

import (
	"bytes"
	"errors"
	"strings"
	"testing"

	"google.golang.org/protobuf/encoding/protowire"
	"google.golang.org/protobuf/proto"

	"github.com/custos-kms/custos/kms/governance"
	custosv1 "github.com/custos-kms/custos/proto/custos/v1"
)

func TestParseRoundTrip(t *testing.T) {
	for _, tc := range operations(t) {
		st := statement(tc.op)
		b := mustMarshal(t, st)
		got, err := governance.Parse(b)
		if err != nil {
			t.Fatalf("%s: %v", tc.name, err)
		}
		if !proto.Equal(got, st) {
			t.Errorf("%s: round trip differs", tc.name)
		}
		if b2 := mustMarshal(t, got); !bytes.Equal(b, b2) {
			t.Errorf("%s: Marshal is not deterministic", tc.name)
		}
	}
}

// wireStatement returns valid revoke_key statement bytes with extra appended
// to the top-level message.
func wireStatement(t *testing.T, extra ...byte) []byte {
	b := mustMarshal(t, statement(&custosv1.RevokeKey{Key: "payroll"}))
	return append(b, extra...)
}

func TestParseRefusesWire(t *testing.T) {
	var w []byte
	unknownTop := protowire.AppendVarint(protowire.AppendTag(w, 99, protowire.VarintType), 1)
	// Unknown field 5 inside revoke_key (field 10): a second revoke_key
	// would be a duplicate, so build the statement by hand.
	inner := protowire.AppendString(protowire.AppendTag(nil, 1, protowire.BytesType), "payroll")
	inner = protowire.AppendVarint(protowire.AppendTag(inner, 5, protowire.VarintType), 7)
	base := statement(nil)
	nested, _ := proto.MarshalOptions{Deterministic: true}.Marshal(base)
	nested = protowire.AppendBytes(protowire.AppendTag(nested, 10, protowire.BytesType), inner)
	// Unknown field deep in set_policy.policy.windows[0].
	window := protowire.AppendVarint(protowire.AppendTag(nil, 42, protowire.VarintType), 1)
	policy := protowire.AppendBytes(protowire.AppendTag(nil, 6, protowire.BytesType), window)
	setPolicy := protowire.AppendString(protowire.AppendTag(nil, 1, protowire.BytesType), "k")
	setPolicy = protowire.AppendBytes(protowire.AppendTag(setPolicy, 2, protowire.BytesType), policy)
	deep, _ := proto.MarshalOptions{Deterministic: true}.Marshal(statement(nil))
	deep = protowire.AppendBytes(protowire.AppendTag(deep, 13, protowire.BytesType), setPolicy)
	// Wrong wire type for a known field (cluster_id as varint) lands in
	// unknown fields.
	wrongType := protowire.AppendVarint(protowire.AppendTag(nil, 1, protowire.VarintType), 1)
	// The same singular field twice: a second cluster_id.
	dupCluster := protowire.AppendString(protowire.AppendTag(nil, 1, protowire.BytesType), "cluster-other")
	// Two operations.
	disable := protowire.AppendBytes(protowire.AppendTag(nil, 11, protowire.BytesType),
		protowire.AppendString(protowire.AppendTag(nil, 1, protowire.BytesType), "payroll"))
	// The same operation twice (proto would merge them).
	revokeAgain := protowire.AppendBytes(protowire.AppendTag(nil, 10, protowire.BytesType),
		protowire.AppendString(protowire.AppendTag(nil, 1, protowire.BytesType), "other"))

	for _, tc := range []struct {
		name    string
		b       []byte
		mention string
	}{
		{"empty", nil, "empty"},
		{"garbage", []byte{0xff, 0xff, 0xff}, ""},
		{"truncated", wireStatement(t)[:10], ""},
		{"too large", bytes.Repeat([]byte{0}, governance.MaxStatementSize+1), "bytes"},
		{"unknown top-level field", wireStatement(t, unknownTop...), "unknown field"},
		{"unknown field in operation", nested, "revoke_key"},
		{"unknown field deep in policy", deep, "windows"},
		{"wrong wire type", wireStatement(t, wrongType...), "unknown field"},
		{"cluster_id twice", wireStatement(t, dupCluster...), "cluster_id"},
		{"two operations", wireStatement(t, disable...), "operation"},
		{"operation twice", wireStatement(t, revokeAgain...), "revoke_key"},
	} {
		_, err := governance.Parse(tc.b)
		if !errors.Is(err, governance.ErrMalformed) {
			t.Errorf("%s: err = %v, want ErrMalformed", tc.name, err)
			continue
		}
		if tc.mention != "" && !strings.Contains(err.Error(), tc.mention) {
			t.Errorf("%s: error %q does not mention %q", tc.name, err, tc.mention)
		}
	}
	// Sanity: the hand-built nested statement without the unknown field is
	// accepted, so the refusal above is for the unknown field.
	ok, _ := proto.MarshalOptions{Deterministic: true}.Marshal(base)
	ok = protowire.AppendBytes(protowire.AppendTag(ok, 10, protowire.BytesType),
		protowire.AppendString(protowire.AppendTag(nil, 1, protowire.BytesType), "payroll"))
	if _, err := governance.Parse(ok); err != nil {
		t.Errorf("hand-built statement: %v", err)
	}
}

func TestParseRefusesFields(t *testing.T) {
	offs := newOfficers(t, "dora", "emil")
	two := protoOfficers(offs)
	sameKey := protoOfficers(offs)
	sameKey[1].PublicKey = sameKey[0].PublicKey
	sameName := protoOfficers(offs)
	sameName[1].Name = sameName[0].Name
	badKey := protoOfficers(offs)
	badKey[0].PublicKey = []byte("not a key")
	p384 := protoOfficers(offs)
	p384[0].PublicKey = p384PublicDER(t)
	noName := protoOfficers(offs)
	noName[1].Name = ""

	mod := func(op any, f func(*custosv1.Statement)) *custosv1.Statement {
		st := statement(op)
		f(st)
		return st
	}
	keep := func(*custosv1.Statement) {}
	revoke := &custosv1.RevokeKey{Key: "k"}
	for _, tc := range []struct {
		name    string
		st      *custosv1.Statement
		mention string
	}{
		{"no operation", statement(nil), "operation"},
		{"no cluster", mod(revoke, func(s *custosv1.Statement) { s.ClusterId = "" }), "cluster_id"},
		{"short nonce", mod(revoke, func(s *custosv1.Statement) { s.Nonce = s.Nonce[:15] }), "nonce"},
		{"long nonce", mod(revoke, func(s *custosv1.Statement) { s.Nonce = append(s.Nonce, 0) }), "nonce"},
		{"no nonce", mod(revoke, func(s *custosv1.Statement) { s.Nonce = nil }), "nonce"},
		{"no expiry", mod(revoke, func(s *custosv1.Statement) { s.NotAfterUnix = 0 }), "not_after"},
		{"revoke_key without key", mod(&custosv1.RevokeKey{}, keep), "revoke_key.key"},
		{"revoke_key nil", mod(nil, func(s *custosv1.Statement) {
			s.Operation = &custosv1.Statement_RevokeKey{}
		}), "revoke_key.key"},
		{"disable_key without key", mod(&custosv1.DisableKey{}, keep), "disable_key.key"},
		{"enable_key without key", mod(&custosv1.EnableKey{}, keep), "enable_key.key"},
		{"key with control character", mod(&custosv1.EnableKey{Key: "pay\nroll"}, keep), "enable_key.key"},
		{"key too long", mod(&custosv1.EnableKey{Key: strings.Repeat("k", 300)}, keep), "enable_key.key"},
		{"set_policy without key", mod(&custosv1.SetPolicy{Policy: &custosv1.KeyPolicy{}}, keep), "set_policy.key"},
		{"set_policy without policy", mod(&custosv1.SetPolicy{Key: "k"}, keep), "set_policy.policy"},
		{"approve_request without id", mod(&custosv1.ApproveRequest{Uses: 1}, keep), "approve_request.request_id"},
		{"approve_request negative ttl", mod(&custosv1.ApproveRequest{RequestId: "r", TtlSeconds: -1}, keep), "ttl_seconds"},
		{"deny_request without id", mod(&custosv1.DenyRequest{}, keep), "deny_request.request_id"},
		{"create_grant without principal", mod(&custosv1.CreateGrant{Key: "k"}, keep), "create_grant.principal"},
		{"create_grant without key", mod(&custosv1.CreateGrant{Principal: "p"}, keep), "create_grant.key"},
		{"create_grant short digest", mod(&custosv1.CreateGrant{Principal: "p", Key: "k", ContextDigest: []byte{1}}, keep), "context_digest"},
		{"create_grant negative ttl", mod(&custosv1.CreateGrant{Principal: "p", Key: "k", TtlSeconds: -5}, keep), "ttl_seconds"},
		{"revoke_grant without id", mod(&custosv1.RevokeGrant{}, keep), "revoke_grant.grant_id"},
		{"set_officers empty", mod(&custosv1.SetOfficers{Quorum: 1}, keep), "set_officers"},
		{"set_officers quorum 0", mod(&custosv1.SetOfficers{Officers: two, Quorum: 0}, keep), "quorum"},
		{"set_officers quorum 3 of 2", mod(&custosv1.SetOfficers{Officers: two, Quorum: 3}, keep), "quorum"},
		{"set_officers same key", mod(&custosv1.SetOfficers{Officers: sameKey, Quorum: 1}, keep), "is also"},
		{"set_officers same name", mod(&custosv1.SetOfficers{Officers: sameName, Quorum: 1}, keep), "twice"},
		{"set_officers bad key", mod(&custosv1.SetOfficers{Officers: badKey, Quorum: 1}, keep), "dora"},
		{"set_officers P-384 key", mod(&custosv1.SetOfficers{Officers: p384, Quorum: 1}, keep), "P-256"},
		{"set_officers empty name", mod(&custosv1.SetOfficers{Officers: noName, Quorum: 1}, keep), "name"},
	} {
		b, err := proto.MarshalOptions{Deterministic: true}.Marshal(tc.st)
		if err != nil {
			t.Fatalf("%s: %v", tc.name, err)
		}
		_, err = governance.Parse(b)
		if !errors.Is(err, governance.ErrMalformed) {
			t.Errorf("%s: Parse err = %v, want ErrMalformed", tc.name, err)
			continue
		}
		if !strings.Contains(err.Error(), tc.mention) {
			t.Errorf("%s: error %q does not mention %q", tc.name, err, tc.mention)
		}
		if _, err := governance.Marshal(tc.st); !errors.Is(err, governance.ErrMalformed) {
			t.Errorf("%s: Marshal err = %v, want ErrMalformed", tc.name, err)
		}
	}
}

func FuzzParse(f *testing.F) {
	for _, tc := range operations(f) {
		f.Add(mustMarshal(f, statement(tc.op)))
	}
	f.Add([]byte{})
	f.Add([]byte{0x0a, 0x00})
	f.Add(wireStatementF(f))
	f.Fuzz(func(t *testing.T, b []byte) {
		st, err := governance.Parse(b)
		if err != nil {
			if !errors.Is(err, governance.ErrMalformed) {
				t.Fatalf("Parse error not ErrMalformed: %v", err)
			}
			return
		}
		_ = governance.Describe(st)
		_ = governance.Need(st)
		b2, err := governance.Marshal(st)
		if err != nil {
			if len(b) > governance.MaxStatementSize/2 {
				return // re-encoding may grow (e.g. overlong varints); not a bug
			}
			t.Fatalf("Marshal of a parsed statement: %v", err)
		}
		st2, err := governance.Parse(b2)
		if err != nil {
			t.Fatalf("Parse of Marshal: %v", err)
		}
		if !proto.Equal(st, st2) {
			t.Fatal("round trip differs")
		}
	})
}

func wireStatementF(f *testing.F) []byte {
	b := mustMarshal(f, statement(&custosv1.SetOfficers{Officers: protoOfficers(newOfficers(f, "a", "b")), Quorum: 2}))
	return protowire.AppendVarint(protowire.AppendTag(b, 99, protowire.VarintType), 1)
}
