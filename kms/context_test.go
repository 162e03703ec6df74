package kms_test

import (
	"bytes"
	"testing"

	"github.com/custos-kms/custos/clients/go/envelope"
	"github.com/custos-kms/custos/kms"
)

// The client library encodes encryption contexts on its own (it does not
// import the server); both encodings must stay byte-identical, since the
// client sends the header's context and the server binds its digest.
func TestContextEncodingMatchesClient(t *testing.T) {
	for _, ctx := range []map[string]string{
		nil,
		{},
		{"dept": "hr"},
		{"b": "2", "a": "1", "ab": "", "é": "ü"},
		{"file": "report.pdf", "dept": "hr", "year": "2026"},
	} {
		if got, want := kms.CanonicalContext(ctx), envelope.CanonicalContext(ctx); !bytes.Equal(got, want) {
			t.Errorf("context %v: server encodes %x, client %x", ctx, got, want)
		}
		if kms.ContextDigest(ctx) != envelope.ContextDigest(ctx) {
			t.Errorf("context %v: digests differ", ctx)
		}
	}
}
