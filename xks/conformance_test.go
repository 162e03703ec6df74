package xks_test

import (
	"bytes"
	"fmt"
	"io"
	"net/http"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/custos-kms/custos/internal/version"
	"github.com/custos-kms/custos/kms"
	"github.com/custos-kms/custos/xks"
)

// badIDs are key ids the specification does not allow, in a form a URI
// can carry: too long, characters outside its set, empty.
var badIDs = []string{strings.Repeat("k", 129), "a~b", "a%20b", "a%2Fb", "a+b", "a:b", ""}

// TestXKSCheckOrder: on every XKS URI, whatever the key id (an existing
// key, a missing one, ids the specification allows or not), a method other
// than POST is 405 before anything else; then a request that is not
// authenticated is 401; then an id the specification does not allow is
// 400 ValidationException and an allowed id of no key 404
// KeyNotFoundException.
func TestXKSCheckOrder(t *testing.T) {
	f := newFixture(t)
	f.createKey(t, "foo")
	okIDs := []string{"foo", "non_existing_key", "_leading_underscore", strings.Repeat("k", 65), strings.Repeat("k", 128)}
	body := map[string]any{"requestMetadata": md("DescribeKey", "o-1")}
	unsigned := withMutate(func(r *http.Request) { r.Header.Del("Authorization") })
	targets := []string{"health"}
	for _, id := range append(okIDs, badIDs...) {
		for _, op := range []string{"metadata", "encrypt", "decrypt"} {
			targets = append(targets, "keys/"+id+"/"+op)
		}
	}
	for _, target := range targets {
		for _, m := range []string{"GET", "PUT", "DELETE", "PATCH"} {
			for _, auth := range [][]func(*callOpt){nil, {unsigned}} {
				if r := f.call(t, target, body, append(auth, withMethod(m))...); r.status != 405 || r.header.Get("Allow") != "POST" {
					t.Errorf("%s %s (signed %v) = %d %v, want 405 with Allow: POST", m, target, auth == nil, r.status, r.body)
				}
			}
		}
		f.call(t, target, body, unsigned).wantError(t, 401, "AuthenticationFailedException")
		f.call(t, target, body, withCred(ak1, "Invalid"+secret1)).wantError(t, 401, "AuthenticationFailedException")
	}
	for _, id := range badIDs {
		for _, op := range []string{"metadata", "encrypt", "decrypt"} {
			f.call(t, "keys/"+id+"/"+op, body).wantError(t, 400, "ValidationException")
		}
	}
	for _, id := range okIDs[1:] {
		f.call(t, "keys/"+id+"/metadata", body).wantError(t, 404, "KeyNotFoundException")
		f.call(t, "keys/"+id+"/encrypt", encryptBody([]byte("x"), nil)).wantError(t, 404, "KeyNotFoundException")
	}
	// Not an XKS URI at all: 404 InvalidUriPathException, whatever the
	// method.
	f.call(t, "keys/foo/sign", body, withMethod("GET")).wantError(t, 404, "InvalidUriPathException")
	f.call(t, "keys/foo", body).wantError(t, 404, "InvalidUriPathException")
}

// TestXKSKeyIDs: every key id the specification allows reaches a custos key
// — itself when it is a custos key name (1 to 64 characters), else the key
// kms.XKSKeyName maps it to — and the decrypt's ledger record names both.
func TestXKSKeyIDs(t *testing.T) {
	f := newFixture(t)
	pt := []byte("0123456789abcdef0123456789abcdef")
	mappedOfMapped := ""
	for i, id := range []string{"k", strings.Repeat("a", 64), strings.Repeat("b", 65), strings.Repeat("c", 128), "_foo", "_", ".x", "-x", "a.b_c-D9"} {
		name, mapped, err := kms.XKSKeyName(id)
		if err != nil {
			t.Fatalf("XKSKeyName(%q): %v", id, err)
		}
		if mapped != (len(id) > kms.MaxKeyNameLen || strings.ContainsAny(id[:1], "_.-")) {
			t.Fatalf("XKSKeyName(%q) mapped = %v", id, mapped)
		}
		if id == "_foo" {
			mappedOfMapped = name
		}
		f.createKey(t, name)
		r := f.call(t, "keys/"+id+"/metadata", map[string]any{"requestMetadata": md("DescribeKey", "id-m")})
		if r.status != 200 || r.str("keyStatus") != "ENABLED" {
			t.Fatalf("metadata of %q (key %s) = %d %v", id, name, r.status, r.body)
		}
		enc := f.call(t, "keys/"+id+"/encrypt", encryptBody(pt, nil))
		kmsID := fmt.Sprintf("id-dec-%d", i)
		if dec := f.call(t, "keys/"+id+"/decrypt", decryptBody(kmsID, enc, nil)); dec.status != 200 || !bytes.Equal(dec.bytes(t, "plaintext"), pt) {
			t.Fatalf("round trip of %q = %d %v", id, dec.status, dec.body)
		}
		rec := f.record(t, kmsID)
		if rec.Key != name || strings.Contains(rec.JustificationText, "externalKeyId="+id) != mapped {
			t.Fatalf("record of %q: key %q, text %q", id, rec.Key, rec.JustificationText)
		}
	}
	// The custos name a mapped id maps to is not itself an id for that key:
	// as an id it is mapped again (no two ids reach one key).
	f.call(t, "keys/"+mappedOfMapped+"/metadata", map[string]any{"requestMetadata": md("DescribeKey", "id-x")}).
		wantError(t, 404, "KeyNotFoundException")
}

// TestXKSBodyTooLarge: a body over the limit is 501
// UnsupportedOperationException (a size above what custos supports), with
// or without a Content-Length and before authentication, and the
// connection is closed; a body at the limit is read.
func TestXKSBodyTooLarge(t *testing.T) {
	f := newFixture(t)
	f.createKey(t, "foo")
	pad := func(n int) []byte {
		b := []byte(`{"requestMetadata":{"awsPrincipalArn":"a","kmsOperation":"DescribeKey","kmsRequestId":"big"}}`)
		return append(b, bytes.Repeat([]byte(" "), n-len(b))...)
	}
	r := f.call(t, "keys/foo/metadata", pad(xks.DefaultMaxBody+1))
	r.wantError(t, 501, "UnsupportedOperationException")
	if !r.closed {
		t.Error("oversize body: the connection stays open (its rest would be read)")
	}
	f.call(t, "keys/foo/metadata", pad(xks.DefaultMaxBody+1), withMutate(func(r *http.Request) { r.Header.Del("Authorization") })).
		wantError(t, 501, "UnsupportedOperationException")
	// Chunked: no Content-Length, the limit found while reading.
	f.call(t, "keys/foo/metadata", pad(xks.DefaultMaxBody+1), withMutate(func(r *http.Request) {
		r.ContentLength = -1
		r.Body = io.NopCloser(io.MultiReader(r.Body))
	})).wantError(t, 501, "UnsupportedOperationException")
	if r := f.call(t, "keys/foo/metadata", pad(xks.DefaultMaxBody)); r.status != 200 {
		t.Fatalf("body at the limit = %d %v", r.status, r.body)
	}
}

// TestXKSHealthCachedAndVersioned: the health API names the product and
// its version in both model strings, and however many calls come at
// once, one deep check runs a second.
func TestXKSHealthCachedAndVersioned(t *testing.T) {
	f := newFixture(t)
	hb := map[string]any{"requestMetadata": map[string]any{"kmsOperation": "KmsHealthCheck", "kmsRequestId": "hc"}}
	r := f.call(t, "health", hb)
	d := r.body["ekmFleetDetails"].([]any)[0].(map[string]any)
	if r.status != 200 || r.str("xksProxyModel") != "custos XKS proxy "+version.Version() ||
		!strings.Contains(d["model"].(string), "custos "+version.Version()) || d["healthStatus"] != "ACTIVE" {
		t.Fatalf("health = %d %v", r.status, r.body)
	}
	f.advance(time.Second)
	before := f.handler.HealthChecks()
	f.srv.Client().Transport.(*http.Transport).MaxIdleConnsPerHost = 16
	var wg sync.WaitGroup
	for range 16 {
		wg.Go(func() {
			for range 4 {
				if r := f.call(t, "health", hb); r.status != 200 {
					t.Errorf("health = %d %v", r.status, r.body)
				}
			}
		})
	}
	wg.Wait()
	if n := f.handler.HealthChecks() - before; n != 1 {
		t.Fatalf("64 health calls within a second ran %d deep checks, want 1", n)
	}
	f.advance(time.Second)
	f.call(t, "health", hb)
	if n := f.handler.HealthChecks() - before; n != 2 {
		t.Fatalf("a call a second later: %d checks in all, want 2", n)
	}
}
