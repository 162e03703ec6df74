package xks

import (
	"errors"
	"fmt"
	"strings"
	"testing"

	"github.com/custos-kms/custos/kms"
)

// TestFromDomainCoversEveryKind: every kind of the kms error table has an
// XKS error of the specification's table, and only ErrInternal (and
// errors custos does not know) is the generic InternalException; a fail-
// closed "not committed" is a retryable 503.
func TestFromDomainCoversEveryKind(t *testing.T) {
	for _, k := range kms.ErrorKinds {
		err := fmt.Errorf("%w: key %q s3cr3t", k.Err, "k")
		if k == kms.ErrorKindPending {
			err = &kms.PendingError{RequestID: "r1", Seq: 3}
		}
		ae := fromDomain(err)
		if ae.name != k.XKS || errStatus[ae.name] == 0 {
			t.Errorf("kind %q: %s (HTTP %d), want %s", k.Name, ae.name, errStatus[ae.name], k.XKS)
		}
		if (ae.name == errInternal) != (k == kms.ErrorKindInternal) {
			t.Errorf("kind %q is the generic %s", k.Name, ae.name)
		}
		if !k.Public && strings.Contains(ae.msg, "s3cr3t") {
			t.Errorf("kind %q leaks its message: %q", k.Name, ae.msg)
		}
	}
	for _, err := range []error{
		fmt.Errorf("%w: not committed: raft: leadership lost", kms.ErrUnavailable),
		fmt.Errorf("%w: this node has not caught up with decision 7", kms.ErrUnavailable),
		fmt.Errorf("kek: %w", kms.ErrHSMObjectRejected),
		kms.ErrNotAdmitted,
	} {
		if ae := fromDomain(err); errStatus[ae.name] != 503 {
			t.Errorf("%v: %s (HTTP %d), want 503", err, ae.name, errStatus[ae.name])
		}
	}
	if ae := fromDomain(errors.New("boom")); ae.name != errInternal || strings.Contains(ae.msg, "boom") {
		t.Errorf("unknown error: %v", ae)
	}
}
