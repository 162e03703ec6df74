package kms

import (
	"context"
	"crypto/rsa"
	"crypto/x509"
	"encoding/hex"
	"errors"
	"fmt"
	"sync"
	"time"

	"github.com/custos-kms/custos/hsm"
	custosv1 "github.com/custos-kms/custos/proto/custos/v1"
	raftlogv1 "github.com/custos-kms/custos/proto/raftlog/v1"
)

// Key import, bring your own key (docs/key-transport.md, *Key import*): a
// customer asks a node for import parameters — a one-time RSA-3072 import
// key in that node's HSM, a session object no other process sees, and a
// token naming it — wraps an AES-256 key under it in one of AWS KMS's
// formats (clients/go/keyimport), and hands the result back to the same
// node. Its HSM unwraps the key, computes its key check value and wraps it
// under the domain key; the result goes through the log as a key version of
// origin EXTERNAL, like any generated KEK, and every custodian loads it
// from there. The key is never in the clear outside an HSM.

const (
	// ImportTokenTTL is how long import parameters stay valid.
	ImportTokenTTL = 24 * time.Hour
	// maxPendingImports bounds the import keys one node holds at a time,
	// maxImportsPerPrincipal those one principal holds: each is an
	// RSA-3072 key in the node's HSM.
	maxPendingImports      = 16
	maxImportsPerPrincipal = 2
)

// pendingImport is import parameters handed out by this node.
type pendingImport struct {
	keyID     []byte // the import key's CKA_ID (a session object)
	key       string
	principal string
	algorithm custosv1.ImportWrappingAlgorithm
	expires   time.Time
}

// imports holds this node's pending imports by token.
type imports struct {
	mu      sync.Mutex
	pending map[string]*pendingImport
}

// importFormat maps an algorithm to the HSM's format and OAEP hash.
func importFormat(a custosv1.ImportWrappingAlgorithm) (hsm.ImportFormat, hsm.OAEPHash, bool) {
	switch a {
	case custosv1.ImportWrappingAlgorithm_RSAES_OAEP_SHA_256:
		return hsm.ImportRSAOAEP, hsm.OAEPSHA256, true
	case custosv1.ImportWrappingAlgorithm_RSA_AES_KEY_WRAP_SHA_256:
		return hsm.ImportRSAAESKeyWrap, hsm.OAEPSHA256, true
	case custosv1.ImportWrappingAlgorithm_RSAES_OAEP_SHA_1:
		return hsm.ImportRSAOAEP, hsm.OAEPSHA1, true
	case custosv1.ImportWrappingAlgorithm_RSA_AES_KEY_WRAP_SHA_1:
		return hsm.ImportRSAAESKeyWrap, hsm.OAEPSHA1, true
	}
	return 0, 0, false
}

// GetParametersForImport makes an import key in this node's HSM and returns
// its public half and a token valid for ImportTokenTTL on this node.
func (s *Service) GetParametersForImport(ctx context.Context, p Principal, req *custosv1.GetParametersForImportRequest) (*custosv1.ImportParameters, error) {
	if err := ValidateKeyName(req.GetKey()); err != nil {
		return nil, err
	}
	_, hash, ok := importFormat(req.GetAlgorithm())
	if !ok {
		return nil, fmt.Errorf("%w: algorithm must be RSAES_OAEP_SHA_256 or RSA_AES_KEY_WRAP_SHA_256", ErrInvalidArgument)
	}
	if err := s.ready(); err != nil {
		return nil, err
	}
	if err := s.state.mayImport(req.GetKey(), p.Name); err != nil {
		return nil, err
	}
	if hash == hsm.OAEPSHA1 && s.state.Profile() != ProfileDevelopment {
		return nil, fmt.Errorf("%w: %s is not CRYPTREC-listed: only a cluster with the development profile accepts it", ErrFailedPrecondition, req.GetAlgorithm())
	}
	if err := s.admitted(ctx); err != nil {
		return nil, err
	}
	now := s.now()
	s.pruneImports(ctx, now)
	raw, err := s.hsm.Random(ctx, 16)
	if err != nil {
		return nil, hsmError("random", err)
	}
	token := s.node + "." + hex.EncodeToString(raw)
	pi := &pendingImport{key: req.GetKey(), principal: p.Name, algorithm: req.GetAlgorithm(), expires: now.Add(ImportTokenTTL)}
	// The slot is taken before the HSM works, so concurrent calls cannot
	// pass the bounds together.
	if err := s.reserveImport(token, pi); err != nil {
		return nil, err
	}
	id, err := s.newObjectID(ctx, "custos/import/"+req.GetKey())
	var der []byte
	if err == nil {
		var pub *rsa.PublicKey
		if pub, err = s.hsm.GenerateTransportKey(ctx, id); err != nil {
			err = hsmError("import key", err)
		} else if der, err = x509.MarshalPKIXPublicKey(pub); err != nil {
			_ = s.hsm.DestroyTransportKey(ctx, id)
			err = fmt.Errorf("%w: import public key: %v", ErrInternal, err)
		}
	}
	s.imports.mu.Lock()
	if err != nil {
		delete(s.imports.pending, token)
	} else {
		pi.keyID = id
	}
	s.imports.mu.Unlock()
	if err != nil {
		return nil, err
	}
	s.lg.Info("import parameters made", "key", req.GetKey(), "principal", p.Name, "algorithm", req.GetAlgorithm().String(), "expires", pi.expires)
	return &custosv1.ImportParameters{ImportToken: token, PublicKey: der, Algorithm: req.GetAlgorithm(),
		ExpireTimeUnixNano: pi.expires.UnixNano(), NodeId: s.node, Key: req.GetKey()}, nil
}

// reserveImport records pi under token unless a bound is reached.
func (s *Service) reserveImport(token string, pi *pendingImport) error {
	s.imports.mu.Lock()
	defer s.imports.mu.Unlock()
	mine := 0
	for _, o := range s.imports.pending {
		if o.principal == pi.principal {
			mine++
		}
	}
	switch {
	case mine >= maxImportsPerPrincipal:
		return fmt.Errorf("%w: %s holds %d pending imports on this node; use them or let them expire (%s)", ErrResourceExhausted, pi.principal, mine, ImportTokenTTL)
	case len(s.imports.pending) >= maxPendingImports:
		return fmt.Errorf("%w: this node holds %d pending imports; try another node or later", ErrResourceExhausted, maxPendingImports)
	}
	s.imports.pending[token] = pi
	return nil
}

// pruneImports destroys the import keys of expired parameters.
func (s *Service) pruneImports(ctx context.Context, now time.Time) {
	s.imports.mu.Lock()
	var gone [][]byte
	for t, pi := range s.imports.pending {
		if !now.Before(pi.expires) && pi.keyID != nil {
			gone = append(gone, pi.keyID)
			delete(s.imports.pending, t)
		}
	}
	s.imports.mu.Unlock()
	for _, id := range gone {
		if err := s.hsm.DestroyTransportKey(ctx, id); err != nil {
			s.lg.Warn("could not destroy an expired import key (it ends with this process)", "err", err)
		}
	}
}

// takeImport removes and returns the pending import of token for key, or
// says why there is none.
func (s *Service) takeImport(ctx context.Context, p Principal, token, key string) (*pendingImport, error) {
	now := s.now()
	s.imports.mu.Lock()
	pi, ok := s.imports.pending[token]
	if ok && pi.keyID == nil {
		ok = false // still being made
	}
	if ok && pi.key == key && pi.principal == p.Name {
		delete(s.imports.pending, token)
	}
	s.imports.mu.Unlock()
	switch {
	case !ok:
		if node, _, found := cutToken(token); found && node != s.node {
			return nil, fmt.Errorf("%w: import token of node %s: import on the node that made the parameters", ErrFailedPrecondition, node)
		}
		return nil, fmt.Errorf("%w: import token not known on this node (used, expired, or the node restarted): get new import parameters", ErrNotFound)
	case pi.key != key:
		return nil, fmt.Errorf("%w: the import token is for key %q", ErrInvalidArgument, pi.key)
	case pi.principal != p.Name:
		return nil, fmt.Errorf("%w: the import token was made for another principal", ErrPermissionDenied)
	case !now.Before(pi.expires):
		_ = s.hsm.DestroyTransportKey(ctx, pi.keyID)
		return nil, fmt.Errorf("%w: the import parameters expired at %s: get new ones", ErrFailedPrecondition, pi.expires.UTC().Format(time.RFC3339))
	}
	return pi, nil
}

// cutToken splits an import token into its node and random part.
func cutToken(token string) (node, rest string, ok bool) {
	for i := len(token) - 1; i >= 0; i-- {
		if token[i] == '.' {
			return token[:i], token[i+1:], true
		}
	}
	return "", "", false
}

// ImportKeyMaterial imports a wrapped AES-256 key as version 1, origin
// EXTERNAL, of a new key req.Key (mayImport says why not into one that
// exists). The
// import parameters are used up whatever the outcome, except when the token
// is refused outright; nothing is created unless the key imports.
func (s *Service) ImportKeyMaterial(ctx context.Context, p Principal, req *custosv1.ImportKeyMaterialRequest) (*custosv1.Key, error) {
	if err := ValidateKeyName(req.GetKey()); err != nil {
		return nil, err
	}
	if len(req.GetDescription()) > MaxDescriptionLen {
		return nil, fmt.Errorf("%w: description is longer than %d bytes", ErrInvalidArgument, MaxDescriptionLen)
	}
	if req.GetImportToken() == "" || len(req.GetImportToken()) > 512 {
		return nil, fmt.Errorf("%w: import_token is required", ErrInvalidArgument)
	}
	if err := s.ready(); err != nil {
		return nil, err
	}
	if err := s.state.mayImport(req.GetKey(), p.Name); err != nil {
		return nil, err
	}
	if err := s.throttle(p, req.GetKey(), &raftlogv1.Command{Op: &raftlogv1.Command_CreateKey{CreateKey: &raftlogv1.CreateKey{Name: req.GetKey()}}}); err != nil {
		return nil, err
	}
	if err := s.admitted(ctx); err != nil {
		return nil, err
	}
	pi, err := s.takeImport(ctx, p, req.GetImportToken(), req.GetKey())
	if err != nil {
		return nil, err
	}
	format, hash, _ := importFormat(pi.algorithm)
	if n := hsm.ImportSize(format); len(req.GetEncryptedKeyMaterial()) != n {
		_ = s.hsm.DestroyTransportKey(ctx, pi.keyID)
		return nil, fmt.Errorf("%w: encrypted_key_material is %d bytes; %s gives %d", ErrInvalidArgument, len(req.GetEncryptedKeyMaterial()), pi.algorithm, n)
	}
	blob, kcv, err := s.hsm.ImportWrappedKey(ctx, pi.keyID, req.GetEncryptedKeyMaterial(), format, hash, s.state.DomainKey())
	if err != nil {
		_ = s.hsm.DestroyTransportKey(ctx, pi.keyID)
		switch {
		case errors.Is(err, hsm.ErrDecrypt):
			return nil, fmt.Errorf("%w: the key material does not unwrap under this import key (wrong public key, wrong algorithm or altered)", ErrInvalidArgument)
		case errors.Is(err, hsm.ErrInvalidInput):
			return nil, fmt.Errorf("%w: %v", ErrInvalidArgument, err)
		case errors.Is(err, hsm.ErrObjectMismatch):
			return nil, s.rejectObject(ctx, "", 0, s.state.DomainKeyID(), err)
		}
		return nil, hsmError("import key", err)
	}
	k, err := s.addImportedVersion(ctx, p, req, blob, kcv)
	if err != nil {
		return nil, err
	}
	s.lg.Info("key material imported", "key", req.GetKey(), "version", k.PrimaryVersion, "principal", p.Name)
	return k, nil
}

// addImportedVersion creates the key with the imported KEK as version 1
// (CreateKey refuses a name that exists meanwhile).
func (s *Service) addImportedVersion(ctx context.Context, p Principal, req *custosv1.ImportKeyMaterialRequest, blob, kcv []byte) (*custosv1.Key, error) {
	id, err := s.newObjectID(ctx, fmt.Sprintf("custos/kek/%s/%d", req.GetKey(), 1))
	if err != nil {
		return nil, err
	}
	kv := &raftlogv1.KeyVersionRecord{Version: 1, WrappedKek: blob, KekId: id, KekCheckValue: kcv,
		Origin: custosv1.KeyOrigin_KEY_ORIGIN_EXTERNAL}
	cmd := &raftlogv1.Command{Op: &raftlogv1.Command_CreateKey{CreateKey: &raftlogv1.CreateKey{Name: req.GetKey(),
		Description: req.GetDescription(), WrappedKek: blob, KekId: id, KekCheckValue: kcv, Origin: kv.Origin}}}
	k, err := s.applyKey(ctx, p, cmd)
	if err != nil {
		return nil, err
	}
	s.materialise(ctx, req.GetKey(), kv)
	return k, nil
}

// mayImport refuses an import into a key that exists: an import creates a
// new key (anyone may, as anyone may create one), whose policy names the
// importer only. Adding material someone knows to an existing key would let
// any of its users — an encrypt-only one, or one whose decrypts need the
// officers' approval — read every data key made under it from then on,
// outside custos; the existing key's users get PermissionDenied, as for any
// change to someone else's key, the others FailedPrecondition.
func (s *State) mayImport(name, principal string) error {
	s.mu.RLock()
	defer s.mu.RUnlock()
	if _, ok := s.keys[name]; !ok {
		return nil
	}
	if _, err := s.userKey(name, principal, "import into"); err != nil {
		return err
	}
	return fmt.Errorf("%w: key %q exists: an import creates a new key (import under another name)", ErrFailedPrecondition, name)
}
