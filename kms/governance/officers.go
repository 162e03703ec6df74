package governance

import (
	"bytes"
	"fmt"

	custosv1 "github.com/custos-kms/custos/proto/custos/v1"
	"google.golang.org/protobuf/proto"
)

// NextOfficers returns the officers and quorum after st, and whether st
// changes them: set_officers replaces the officers (one who keeps the same
// name and public key keeps the WebAuthn credentials bound to it),
// add_officer_credential binds a credential to an officer, and
// remove_officer_credential unbinds one. It refuses (ErrMalformed) a change
// that does not apply: an unknown officer, a credential id already bound,
// more than MaxCredentialsPerOfficer, a credential the officer does not
// have, or a result NewOfficerSet refuses. The nodes and auditors apply
// officer changes through it, so both follow the same set.
func NextOfficers(officers []*custosv1.Officer, quorum uint32, st *custosv1.Statement) ([]*custosv1.Officer, uint32, bool, error) {
	clone := func(in []*custosv1.Officer) []*custosv1.Officer {
		out := make([]*custosv1.Officer, len(in))
		for i, o := range in {
			out[i] = proto.Clone(o).(*custosv1.Officer)
		}
		return out
	}
	find := func(list []*custosv1.Officer, name string) *custosv1.Officer {
		for _, o := range list {
			if o.GetName() == name {
				return o
			}
		}
		return nil
	}
	var next []*custosv1.Officer
	switch op := st.GetOperation().(type) {
	case *custosv1.Statement_SetOfficers:
		next, quorum = clone(op.SetOfficers.GetOfficers()), op.SetOfficers.GetQuorum()
		for _, o := range next {
			if old := find(officers, o.GetName()); old != nil && samePublicKey(old.GetPublicKey(), o.GetPublicKey()) {
				o.Credentials = clone([]*custosv1.Officer{{Credentials: old.GetCredentials()}})[0].Credentials
			}
		}
	case *custosv1.Statement_AddOfficerCredential:
		next = clone(officers)
		o := find(next, op.AddOfficerCredential.GetOfficer())
		if o == nil {
			return nil, 0, false, fmt.Errorf("%w: add_officer_credential: no officer %q", ErrUnknownOfficer, op.AddOfficerCredential.GetOfficer())
		}
		c := op.AddOfficerCredential.GetCredential()
		for _, other := range next {
			for _, oc := range other.GetCredentials() {
				if bytes.Equal(oc.GetCredentialId(), c.GetCredentialId()) {
					return nil, 0, false, fmt.Errorf("%w: add_officer_credential: credential %s is already bound to %q",
						ErrMalformed, CredentialIDString(c.GetCredentialId()), other.GetName())
				}
			}
		}
		o.Credentials = append(o.Credentials, proto.Clone(c).(*custosv1.WebAuthnCredential))
	case *custosv1.Statement_RemoveOfficerCredential:
		next = clone(officers)
		o := find(next, op.RemoveOfficerCredential.GetOfficer())
		if o == nil {
			return nil, 0, false, fmt.Errorf("%w: remove_officer_credential: no officer %q", ErrUnknownOfficer, op.RemoveOfficerCredential.GetOfficer())
		}
		i := -1
		for j, c := range o.GetCredentials() {
			if bytes.Equal(c.GetCredentialId(), op.RemoveOfficerCredential.GetCredentialId()) {
				i = j
			}
		}
		if i < 0 {
			return nil, 0, false, fmt.Errorf("%w: remove_officer_credential: officer %q has no credential %s", ErrMalformed,
				o.GetName(), CredentialIDString(op.RemoveOfficerCredential.GetCredentialId()))
		}
		o.Credentials = append(o.Credentials[:i], o.Credentials[i+1:]...)
	default:
		return officers, quorum, false, nil
	}
	if _, err := NewOfficerSet(next, quorum); err != nil {
		return nil, 0, false, err
	}
	return next, quorum, true, nil
}

// samePublicKey reports whether two PKIX encodings hold the same P-256 key.
func samePublicKey(a, b []byte) bool {
	pa, err1 := ParsePublicKey(a)
	pb, err2 := ParsePublicKey(b)
	return err1 == nil && err2 == nil && pa.Equal(pb)
}
