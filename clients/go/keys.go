package custos

import (
	"bytes"
	"context"
	"crypto/rsa"
	"crypto/x509"
	"errors"
	"fmt"
	"iter"
	"strings"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	"github.com/custos-kms/custos/clients/go/keyimport"
	custosv1 "github.com/custos-kms/custos/proto/custos/v1"
)

// Errors from the convenience methods wrap the gRPC status error with %w, so
// status.Code(err) and status.FromError work on them.

// CreateKey creates an AES-256-GCM key with version 1.
func (c *Client) CreateKey(ctx context.Context, name, description string) (*custosv1.Key, error) {
	k, err := c.keys.CreateKey(ctx, &custosv1.CreateKeyRequest{Name: name, Description: description})
	if err != nil {
		return nil, fmt.Errorf("custos: create key %q: %w", name, err)
	}
	return k, nil
}

// GetKey returns a key's metadata.
func (c *Client) GetKey(ctx context.Context, name string) (*custosv1.Key, error) {
	k, err := c.keys.GetKey(ctx, &custosv1.GetKeyRequest{Name: name})
	if err != nil {
		return nil, fmt.Errorf("custos: get key %q: %w", name, err)
	}
	return k, nil
}

// AllKeys iterates over every key in name order, fetching pages as it goes.
// An error ends the iteration after being yielded.
func (c *Client) AllKeys(ctx context.Context) iter.Seq2[*custosv1.Key, error] {
	return func(yield func(*custosv1.Key, error) bool) {
		token := ""
		for {
			resp, err := c.keys.ListKeys(ctx, &custosv1.ListKeysRequest{PageToken: token})
			if err != nil {
				yield(nil, fmt.Errorf("custos: list keys: %w", err))
				return
			}
			for _, k := range resp.GetKeys() {
				if !yield(k, nil) {
					return
				}
			}
			next := resp.GetNextPageToken()
			if next == "" {
				return
			}
			if next == token {
				yield(nil, errors.New("custos: list keys: server returned the same page token twice"))
				return
			}
			token = next
		}
	}
}

// ListKeys returns every key in name order, following all pages.
func (c *Client) ListKeys(ctx context.Context) ([]*custosv1.Key, error) {
	var keys []*custosv1.Key
	for k, err := range c.AllKeys(ctx) {
		if err != nil {
			return nil, err
		}
		keys = append(keys, k)
	}
	return keys, nil
}

// RotateKey adds a version to the key and makes it the primary one. Older
// versions keep decrypting.
func (c *Client) RotateKey(ctx context.Context, name string) (*custosv1.Key, error) {
	k, err := c.keys.RotateKey(ctx, &custosv1.RotateKeyRequest{Name: name})
	if err != nil {
		return nil, fmt.Errorf("custos: rotate key %q: %w", name, err)
	}
	return k, nil
}

// EnableKey asks to enable a disabled key with SetKeyState. The cluster
// refuses it (codes.PermissionDenied): re-enabling loosens access, so it
// needs an EnableKey statement signed by the officer quorum (SignAndSubmit).
// It is kept for clusters that predate governance.
func (c *Client) EnableKey(ctx context.Context, name string) (*custosv1.Key, error) {
	return c.setState(ctx, name, custosv1.KeyState_KEY_STATE_ENABLED, "enable")
}

// DisableKey disables a key: it no longer encrypts or decrypts. Principals
// named in the key's policy may do this without an officer; re-enabling needs
// the officer quorum.
func (c *Client) DisableKey(ctx context.Context, name string) (*custosv1.Key, error) {
	return c.setState(ctx, name, custosv1.KeyState_KEY_STATE_DISABLED, "disable")
}

func (c *Client) setState(ctx context.Context, name string, s custosv1.KeyState, verb string) (*custosv1.Key, error) {
	k, err := c.keys.SetKeyState(ctx, &custosv1.SetKeyStateRequest{Name: name, State: s})
	if err != nil {
		return nil, fmt.Errorf("custos: %s key %q: %w", verb, name, err)
	}
	return k, nil
}

// SetMinDecryptionVersion refuses decryption under versions of the key below
// v.
func (c *Client) SetMinDecryptionVersion(ctx context.Context, name string, v uint32) (*custosv1.Key, error) {
	k, err := c.keys.SetMinDecryptionVersion(ctx, &custosv1.SetMinDecryptionVersionRequest{Name: name, MinDecryptionVersion: v})
	if err != nil {
		return nil, fmt.Errorf("custos: set min decryption version of key %q: %w", name, err)
	}
	return k, nil
}

// DataKey is a data key from GenerateDataKey: 32 bytes for AES-256-GCM and
// their wrapped form. Call Zero as soon as Plaintext is no longer needed.
type DataKey struct {
	// Key and Version name the key version that wrapped the data key.
	Key     string
	Version uint32
	// Plaintext is the data key itself.
	Plaintext []byte
	// Wrapped is the data key wrapped under Key/Version and the encryption
	// context; store it with the data. It is not secret.
	Wrapped []byte
}

// Zero overwrites Plaintext with zeros and drops it.
func (d *DataKey) Zero() {
	if d == nil {
		return
	}
	clear(d.Plaintext)
	d.Plaintext = nil
}

// GenerateDataKey returns a fresh data key and its wrapped form, bound to the
// encryption context encCtx (which may be nil).
func (c *Client) GenerateDataKey(ctx context.Context, key string, encCtx map[string]string) (*DataKey, error) {
	resp, err := c.keys.GenerateDataKey(ctx, &custosv1.GenerateDataKeyRequest{Key: key, EncryptionContext: encCtx})
	if err != nil {
		return nil, fmt.Errorf("custos: generate data key with key %q: %w", key, err)
	}
	return &DataKey{
		Key:       resp.GetKey(),
		Version:   resp.GetKeyVersion(),
		Plaintext: resp.GetPlaintext(),
		Wrapped:   resp.GetWrappedDataKey(),
	}, nil
}

// DecryptDataKey asks custos to unwrap a wrapped data key. encCtx must equal
// the context it was generated with. The request, with j, is recorded in the
// cluster's decision ledger before anything is released. The caller should
// zero the returned key when done.
func (c *Client) DecryptDataKey(ctx context.Context, wrapped []byte, encCtx map[string]string, j Justification) ([]byte, error) {
	resp, err := c.decrypt(ctx, wrapped, encCtx, j)
	if err != nil {
		return nil, fmt.Errorf("custos: decrypt data key: %w", err)
	}
	return resp.GetPlaintext(), nil
}

func (c *Client) decrypt(ctx context.Context, ciphertext []byte, encCtx map[string]string, j Justification) (*custosv1.DecryptResponse, error) {
	req := &custosv1.DecryptRequest{
		Ciphertext:        ciphertext,
		EncryptionContext: encCtx,
		Justification:     j.proto(),
	}
	if err := c.sign(req); err != nil {
		return nil, err
	}
	return c.keys.Decrypt(ctx, req)
}

// Encrypt encrypts a small payload (at most 64 KiB) in the HSM under the
// key's primary version. Use EncryptStream for anything larger.
func (c *Client) Encrypt(ctx context.Context, key string, plaintext []byte, encCtx map[string]string) ([]byte, error) {
	resp, err := c.keys.Encrypt(ctx, &custosv1.EncryptRequest{Key: key, Plaintext: plaintext, EncryptionContext: encCtx})
	if err != nil {
		return nil, fmt.Errorf("custos: encrypt with key %q: %w", key, err)
	}
	return resp.GetCiphertext(), nil
}

// Decrypt decrypts a ciphertext from Encrypt. Like DecryptDataKey it is a
// recorded decision.
func (c *Client) Decrypt(ctx context.Context, ciphertext []byte, encCtx map[string]string, j Justification) ([]byte, error) {
	resp, err := c.decrypt(ctx, ciphertext, encCtx, j)
	if err != nil {
		return nil, fmt.Errorf("custos: decrypt: %w", err)
	}
	return resp.GetPlaintext(), nil
}

// Justification says why a decryption is requested. It is written to the
// ledger and matched against the key's policy. A zero Reason is recorded as
// REASON_UNSPECIFIED, as given: the key's policy decides it as a reason of
// its own (by default as strictly as THIRD_PARTY_DATA_REQUEST).
type Justification struct {
	Reason custosv1.Reason
	// Text is shown to the customer's officers; at most 1024 bytes.
	Text string
	// Ticket is an optional case or ticket reference; at most 256 bytes.
	Ticket string
}

func (j Justification) proto() *custosv1.Justification {
	return &custosv1.Justification{Reason: j.Reason, Text: j.Text, Ticket: j.Ticket}
}

// ParseReason parses a reason code such as "CUSTOMER_INITIATED",
// "customer-initiated" or "REASON_CUSTOMER_INITIATED" (case-insensitive,
// '-' taken as '_'). REASON_UNSPECIFIED is refused.
func ParseReason(s string) (custosv1.Reason, error) {
	name := strings.ToUpper(strings.ReplaceAll(strings.TrimSpace(s), "-", "_"))
	if !strings.HasPrefix(name, "REASON_") {
		name = "REASON_" + name
	}
	v, ok := custosv1.Reason_value[name]
	if !ok || v == int32(custosv1.Reason_REASON_UNSPECIFIED) {
		return 0, fmt.Errorf("custos: unknown justification reason %q (want one of %s)", s, strings.Join(ReasonNames(), ", "))
	}
	return custosv1.Reason(v), nil
}

// ParseReasonOrUnspecified is ParseReason that also accepts UNSPECIFIED
// (or REASON_UNSPECIFIED): the reason recorded for a decrypt whose
// Justification names none. Policies, grants and ledger filters can name it
// as a reason of its own.
func ParseReasonOrUnspecified(s string) (custosv1.Reason, error) {
	name := strings.ToUpper(strings.ReplaceAll(strings.TrimSpace(s), "-", "_"))
	if name == "UNSPECIFIED" || name == "REASON_UNSPECIFIED" {
		return custosv1.Reason_REASON_UNSPECIFIED, nil
	}
	r, err := ParseReason(s)
	if err != nil {
		return 0, fmt.Errorf("%w (or UNSPECIFIED)", err)
	}
	return r, nil
}

// ReasonNames returns the reason codes ParseReason accepts, without the
// REASON_ prefix, in enum order.
func ReasonNames() []string {
	var names []string
	for v := int32(1); ; v++ {
		n, ok := custosv1.Reason_name[v]
		if !ok {
			return names
		}
		names = append(names, strings.TrimPrefix(n, "REASON_"))
	}
}

// ReasonString returns r without the REASON_ prefix, e.g. "EMERGENCY".
func ReasonString(r custosv1.Reason) string {
	return strings.TrimPrefix(r.String(), "REASON_")
}

// DecryptItem is one item of a BatchDecrypt: a wrapped data key (or an
// Encrypt ciphertext), the encryption context it was made under, and the
// justification recorded with its decision.
type DecryptItem struct {
	Ciphertext        []byte
	EncryptionContext map[string]string
	Justification     Justification
}

// DecryptResult is the outcome of one DecryptItem: Plaintext, or Err (a
// gRPC status error: status.Code(Err) is the code a Decrypt of the item
// alone would have returned). DecisionSeq and RequestID name the item's
// ledger record (0 and "" if it was never decided).
type DecryptResult struct {
	Plaintext   []byte
	Key         string
	Version     uint32
	DecisionSeq uint64
	RequestID   string
	Err         error
}

// MaxBatchDecrypt is the most items one BatchDecrypt call carries; the
// helper splits longer slices into calls of this size.
const MaxBatchDecrypt = 1000

// BatchDecrypt unwraps many data keys in few calls: each item is still a
// decision of its own, recorded in the ledger before its plaintext is
// released, but the records share Raft log entries. Results are in item
// order; one item's failure does not fail the others. The error is
// non-nil only when a call as a whole failed; the results returned with it
// are those of the calls before (items in chunks of MaxBatchDecrypt).
func (c *Client) BatchDecrypt(ctx context.Context, items []DecryptItem) ([]DecryptResult, error) {
	out := make([]DecryptResult, 0, len(items))
	for start := 0; start < len(items); start += MaxBatchDecrypt {
		chunk := items[start:min(start+MaxBatchDecrypt, len(items))]
		req := &custosv1.BatchDecryptRequest{Requests: make([]*custosv1.DecryptRequest, len(chunk))}
		for i, it := range chunk {
			req.Requests[i] = &custosv1.DecryptRequest{Ciphertext: it.Ciphertext,
				EncryptionContext: it.EncryptionContext, Justification: it.Justification.proto()}
			if err := c.sign(req.Requests[i]); err != nil {
				return out, err
			}
		}
		resp, err := c.keys.BatchDecrypt(ctx, req)
		if err != nil {
			return out, fmt.Errorf("custos: batch decrypt: %w", err)
		}
		if len(resp.GetResults()) != len(chunk) {
			return out, fmt.Errorf("custos: batch decrypt: %d results for %d items", len(resp.GetResults()), len(chunk))
		}
		for _, r := range resp.GetResults() {
			if ok := r.GetResponse(); ok != nil {
				out = append(out, DecryptResult{Plaintext: ok.GetPlaintext(), Key: ok.GetKey(), Version: ok.GetKeyVersion(),
					DecisionSeq: ok.GetDecisionSeq(), RequestID: ok.GetRequestId()})
				continue
			}
			e := r.GetError()
			out = append(out, DecryptResult{DecisionSeq: e.GetDecisionSeq(), RequestID: e.GetRequestId(),
				Err: status.Error(codes.Code(e.GetCode()), e.GetMessage())})
		}
	}
	return out, nil
}

// GetParametersForImport asks the node that answers for import parameters
// for key (bring your own key): a one-time RSA-3072 import public key in
// that node's HSM and a token, valid for 24 hours on that node only. Wrap
// the key with keyimport.Wrap, then call ImportKeyMaterial through the same
// Client (it keeps to the node that answered while that node is up).
func (c *Client) GetParametersForImport(ctx context.Context, key string, alg keyimport.Algorithm) (*custosv1.ImportParameters, *rsa.PublicKey, error) {
	a, ok := custosv1.ImportWrappingAlgorithm_value[string(alg)]
	if !ok || a == 0 {
		return nil, nil, fmt.Errorf("custos: import parameters: %w: algorithm %q", keyimport.ErrInvalid, alg)
	}
	p, err := c.keys.GetParametersForImport(ctx, &custosv1.GetParametersForImportRequest{Key: key, Algorithm: custosv1.ImportWrappingAlgorithm(a)})
	if err != nil {
		return nil, nil, fmt.Errorf("custos: import parameters for %q: %w", key, err)
	}
	k, err := x509.ParsePKIXPublicKey(p.GetPublicKey())
	if err != nil {
		return nil, nil, fmt.Errorf("custos: import public key: %w", err)
	}
	pub, ok := k.(*rsa.PublicKey)
	if !ok {
		return nil, nil, fmt.Errorf("custos: import public key is a %T, not RSA", k)
	}
	return p, pub, nil
}

// ImportKeyMaterial imports key material wrapped under the import key of
// token as a new version (origin EXTERNAL) of key, creating the key if it
// does not exist (with description).
func (c *Client) ImportKeyMaterial(ctx context.Context, key, token string, wrapped []byte, description string) (*custosv1.Key, error) {
	k, err := c.keys.ImportKeyMaterial(ctx, &custosv1.ImportKeyMaterialRequest{Key: key, ImportToken: token,
		EncryptedKeyMaterial: wrapped, Description: description})
	if err != nil {
		return nil, fmt.Errorf("custos: import key material into %q: %w", key, err)
	}
	return k, nil
}

// ImportKey imports the AES-256 key raw into key in one go: import
// parameters, wrapping in this process (keyimport.Wrap with alg), import.
// It checks that the new version's key check value is raw's
// (keyimport.CheckValue) and returns the key. raw never leaves this process
// unwrapped; clear it when done.
func (c *Client) ImportKey(ctx context.Context, key string, raw []byte, alg keyimport.Algorithm, description string) (*custosv1.Key, error) {
	want, err := keyimport.CheckValue(raw)
	if err != nil {
		return nil, fmt.Errorf("custos: import key %q: %w", key, err)
	}
	p, pub, err := c.GetParametersForImport(ctx, key, alg)
	if err != nil {
		return nil, err
	}
	wrapped, err := keyimport.Wrap(pub, alg, raw)
	if err != nil {
		return nil, fmt.Errorf("custos: import key %q: %w", key, err)
	}
	k, err := c.ImportKeyMaterial(ctx, key, p.GetImportToken(), wrapped, description)
	if err != nil {
		return nil, err
	}
	for _, v := range k.GetVersions() {
		if v.GetVersion() == k.GetPrimaryVersion() && !bytes.Equal(v.GetKeyCheckValue(), want) {
			return k, fmt.Errorf("custos: import key %q: version %d's key check value %x is not your key's %x", key, v.GetVersion(), v.GetKeyCheckValue(), want)
		}
	}
	return k, nil
}
