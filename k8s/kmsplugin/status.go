package kmsplugin

import (
	"context"
	"crypto/sha256"
	"encoding/binary"
	"encoding/hex"
	"fmt"
	"strings"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
	kmsapi "k8s.io/kms/apis/v2"

	custosv1 "github.com/custos-kms/custos/proto/custos/v1"
)

// APIVersion is the KMS API version Status reports.
const APIVersion = "v2"

// Healthy is the healthz value of a healthy Status.
const Healthy = "ok"

// probePlaintext is what Status seals: not a secret, and its encryption
// context differs from the seeds', so its ciphertext is no seed.
var probePlaintext = make([]byte, MinSeedSize)

// KeyID returns the KMS v2 key_id of a custos key version: the key's name,
// the version, and 16 hex digits of a SHA-256 over both and the version's key
// check value, so that a key destroyed and created again under the same
// name has new ids. It is stable for the life of the version.
func KeyID(key string, version uint32, checkValue []byte) string {
	h := sha256.New()
	h.Write([]byte("custos-kms-v2-key-id\x00"))
	h.Write([]byte(key))
	h.Write([]byte{0})
	h.Write(binary.BigEndian.AppendUint32(nil, version))
	h.Write(checkValue)
	return fmt.Sprintf("custos/%s/v%d/%s", key, version, hex.EncodeToString(h.Sum(nil)[:8]))
}

// Status reports whether custos seals under the key now, and the key_id of
// its primary version. A fresh answer costs a GetKey and an Encrypt of a
// probe, neither of which custos records in its ledger; answers are reused
// for StatusTTL (StatusErrorTTL when unhealthy), and concurrent calls share
// one probe.
//
// An unhealthy answer carries no key_id: the API server extends the life of
// its write DEK whenever Status repeats the key_id it has, healthy or not,
// so an unhealthy answer with an id would let it keep writing under a key
// custos refuses.
func (p *Plugin) Status(ctx context.Context, _ *kmsapi.StatusRequest) (*kmsapi.StatusResponse, error) {
	for {
		p.mu.Lock()
		if p.last != nil {
			ttl := p.errTTL
			if p.last.GetHealthz() == Healthy {
				ttl = p.ttl
			}
			if p.now().Sub(p.lastAt) < ttl {
				r := p.last
				p.mu.Unlock()
				return r, nil
			}
		}
		if ch := p.inflight; ch != nil {
			p.mu.Unlock()
			select {
			case <-ch:
				continue
			case <-ctx.Done():
				return nil, status.FromContextError(ctx.Err()).Err()
			}
		}
		ch := make(chan struct{})
		p.inflight = ch
		p.mu.Unlock()

		// The probe is not the caller's: a caller that gives up does not
		// cut it short, and the next caller gets its answer.
		pctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), p.probeTimeout)
		r := p.probe(pctx)
		cancel()

		p.mu.Lock()
		p.last, p.lastAt, p.inflight = r, p.now(), nil
		changed := p.logged != r.GetHealthz()+"\x00"+r.GetKeyId()
		p.logged = r.GetHealthz() + "\x00" + r.GetKeyId()
		close(ch)
		p.mu.Unlock()
		switch {
		case !changed:
		case r.GetHealthz() == Healthy:
			p.log.Info("status: healthy", "key", p.key, "key_id", r.GetKeyId())
		default:
			p.log.Warn("status: unhealthy", "key", p.key, "healthz", r.GetHealthz())
		}
		return r, nil
	}
}

// probe asks custos for the key's state and seals the probe under it.
func (p *Plugin) probe(ctx context.Context) *kmsapi.StatusResponse {
	bad := func(format string, args ...any) *kmsapi.StatusResponse {
		return &kmsapi.StatusResponse{Version: APIVersion, Healthz: fmt.Sprintf(format, args...)}
	}
	k, err := p.getKey(ctx)
	if err != nil {
		return bad("custos: get key %q: %s", p.key, describe(err))
	}
	if s := k.GetState(); s != custosv1.KeyState_KEY_STATE_ENABLED {
		return bad("custos key %q is %s", p.key, stateName(s))
	}
	resp, err := p.keys.Encrypt(ctx, &custosv1.EncryptRequest{Key: p.key, Plaintext: probePlaintext, EncryptionContext: p.probeCx})
	if err != nil {
		return bad("custos: encrypt under key %q: %s", p.key, describe(err))
	}
	if _, err := ParseHeader(resp.GetCiphertext()); err != nil {
		return bad("custos: encrypt under key %q: %s", p.key, err)
	}
	id, err := p.keyID(ctx, resp.GetKeyVersion())
	if err != nil {
		return bad("custos: get key %q: %s", p.key, describe(err))
	}
	return &kmsapi.StatusResponse{Version: APIVersion, Healthz: Healthy, KeyId: id}
}

// getKey reads the key and refreshes the key ids of its versions.
func (p *Plugin) getKey(ctx context.Context) (*custosv1.Key, error) {
	k, err := p.keys.GetKey(ctx, &custosv1.GetKeyRequest{Name: p.key})
	if err != nil {
		return nil, err
	}
	ids := make(map[uint32]string, len(k.GetVersions()))
	for _, v := range k.GetVersions() {
		ids[v.GetVersion()] = KeyID(p.key, v.GetVersion(), v.GetKeyCheckValue())
	}
	p.mu.Lock()
	p.ids = ids
	p.mu.Unlock()
	return k, nil
}

// keyID returns the key_id of version, reading the key if the version is
// new to the plugin.
func (p *Plugin) keyID(ctx context.Context, version uint32) (string, error) {
	p.mu.Lock()
	id, ok := p.ids[version]
	p.mu.Unlock()
	if ok {
		return id, nil
	}
	if _, err := p.getKey(ctx); err != nil {
		return "", err
	}
	p.mu.Lock()
	id, ok = p.ids[version]
	p.mu.Unlock()
	if !ok {
		return "", status.Errorf(codes.Internal, "custos sealed under version %d of key %q, which GetKey does not list", version, p.key)
	}
	return id, nil
}

// noteVersion drops a cached Status whose key_id is not id: Encrypt saw the
// key rotated, and the API server, which checks that Encrypt's key_id is
// the one Status reported, should learn of it at its next Status.
func (p *Plugin) noteVersion(id string) {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.last != nil && p.last.GetKeyId() != id {
		p.last = nil
	}
}

// invalidateOn drops the cached Status after an error that says the key
// or the plugin's access changed (not after a transient one).
func (p *Plugin) invalidateOn(err error) {
	switch status.Code(err) {
	case codes.FailedPrecondition, codes.NotFound, codes.PermissionDenied, codes.Unauthenticated:
		p.mu.Lock()
		p.last = nil
		p.mu.Unlock()
	}
}

func stateName(s custosv1.KeyState) string {
	return strings.TrimPrefix(s.String(), "KEY_STATE_")
}

// describe is a status error's code and message, for a healthz string.
func describe(err error) string {
	st := status.Convert(err)
	return fmt.Sprintf("%s (%s)", st.Message(), st.Code())
}
