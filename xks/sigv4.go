package xks

import (
	"crypto/hmac"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"net/http"
	"net/url"
	"sort"
	"strconv"
	"strings"
	"time"
)

// AWS Signature Version 4, header form, as the XKS proxy API uses it
// (its Appendix A, and the AWS General Reference "Signature Version 4
// signing process"): HMAC-SHA-256 only.

const (
	sigV4Algorithm = "AWS4-HMAC-SHA256"
	sigV4Terminal  = "aws4_request"
	amzDateFormat  = "20060102T150405Z"
	// DefaultMaxSkew is how far a request's X-Amz-Date may be from the
	// verifier's clock, either way.
	DefaultMaxSkew = 5 * time.Minute
)

// errAuth is wrapped by every verification failure; the message after it
// is for the log only.
var errAuth = errors.New("sigv4")

// Verifier checks SigV4 signatures for one service and region.
type Verifier struct {
	// Service is the service name in the credential scope (kms-xks-proxy).
	Service string
	// Region is the only region accepted in the credential scope.
	Region string
	// Secret returns the secret access key for an access key id.
	Secret func(accessKeyID string) (string, bool)
	// Now is the clock; time.Now if nil.
	Now func() time.Time
	// MaxSkew bounds |X-Amz-Date - Now|; DefaultMaxSkew if zero.
	MaxSkew time.Duration
}

// authHeader is a parsed Authorization header.
type authHeader struct {
	accessKeyID, date, region, service string
	signedHeaders                      []string
	signature                          []byte
}

func parseAuthorization(h string) (*authHeader, error) {
	rest, ok := strings.CutPrefix(h, sigV4Algorithm+" ")
	if !ok {
		return nil, fmt.Errorf("%w: Authorization is not %s", errAuth, sigV4Algorithm)
	}
	var a authHeader
	var cred, signed, sig string
	for _, part := range strings.Split(rest, ",") {
		k, v, ok := strings.Cut(strings.TrimSpace(part), "=")
		if !ok {
			return nil, fmt.Errorf("%w: malformed Authorization component", errAuth)
		}
		var dst *string
		switch k {
		case "Credential":
			dst = &cred
		case "SignedHeaders":
			dst = &signed
		case "Signature":
			dst = &sig
		default:
			return nil, fmt.Errorf("%w: unknown Authorization component %q", errAuth, k)
		}
		if *dst != "" {
			return nil, fmt.Errorf("%w: Authorization repeats %s", errAuth, k)
		}
		*dst = v
	}
	if cred == "" || signed == "" || sig == "" {
		return nil, fmt.Errorf("%w: Authorization lacks Credential, SignedHeaders or Signature", errAuth)
	}
	// The access key id may itself contain '/': the scope is the last four
	// fields.
	f := strings.Split(cred, "/")
	if len(f) < 5 || f[len(f)-1] != sigV4Terminal {
		return nil, fmt.Errorf("%w: malformed credential scope", errAuth)
	}
	n := len(f)
	a.accessKeyID = strings.Join(f[:n-4], "/")
	a.date, a.region, a.service = f[n-4], f[n-3], f[n-2]
	a.signedHeaders = strings.Split(signed, ";")
	for i, name := range a.signedHeaders {
		if name == "" || name != strings.ToLower(name) || i > 0 && a.signedHeaders[i-1] >= name {
			return nil, fmt.Errorf("%w: SignedHeaders must be lower case, sorted and unique", errAuth)
		}
	}
	var err error
	if a.signature, err = hex.DecodeString(sig); err != nil || len(a.signature) != sha256.Size {
		return nil, fmt.Errorf("%w: Signature is not 64 hex digits", errAuth)
	}
	return &a, nil
}

// Verify checks r's SigV4 Authorization header against body (the whole
// request body, already read). It returns the access key id that signed.
// The signed headers must include host and x-amz-date; the date must be
// within MaxSkew of Now and match the credential scope's date; the scope's
// region and service must be the verifier's.
func (v *Verifier) Verify(r *http.Request, body []byte) (string, error) {
	hs := r.Header.Values("Authorization")
	if len(hs) != 1 {
		return "", fmt.Errorf("%w: want exactly one Authorization header, got %d", errAuth, len(hs))
	}
	a, err := parseAuthorization(hs[0])
	if err != nil {
		return "", err
	}
	if a.service != v.Service || a.region != v.Region {
		return a.accessKeyID, fmt.Errorf("%w: credential scope %s/%s, want %s/%s", errAuth, a.region, a.service, v.Region, v.Service)
	}
	if !contains(a.signedHeaders, "host") || !contains(a.signedHeaders, "x-amz-date") {
		return a.accessKeyID, fmt.Errorf("%w: SignedHeaders must include host and x-amz-date", errAuth)
	}
	amzDate := r.Header.Get("X-Amz-Date")
	t, err := time.Parse(amzDateFormat, amzDate)
	if err != nil {
		return a.accessKeyID, fmt.Errorf("%w: X-Amz-Date missing or malformed", errAuth)
	}
	if a.date != amzDate[:8] {
		return a.accessKeyID, fmt.Errorf("%w: credential date %s does not match X-Amz-Date", errAuth, a.date)
	}
	now := time.Now
	if v.Now != nil {
		now = v.Now
	}
	skew := v.MaxSkew
	if skew == 0 {
		skew = DefaultMaxSkew
	}
	if d := now().Sub(t); d > skew || d < -skew {
		return a.accessKeyID, fmt.Errorf("%w: X-Amz-Date is %s away from this clock (at most %s)", errAuth, d.Round(time.Second), skew)
	}
	if h := r.Header.Get("X-Amz-Content-Sha256"); h != "" && h != hashHex(body) {
		return a.accessKeyID, fmt.Errorf("%w: X-Amz-Content-Sha256 does not match the body", errAuth)
	}
	secret, ok := v.Secret(a.accessKeyID)
	if !ok {
		return a.accessKeyID, fmt.Errorf("%w: unknown access key id", errAuth)
	}
	creq, err := canonicalRequest(r, a.signedHeaders, body)
	if err != nil {
		return a.accessKeyID, err
	}
	want := signature(secret, a.date, a.region, a.service, amzDate, creq)
	if !hmac.Equal(want, a.signature) {
		return a.accessKeyID, fmt.Errorf("%w: signature does not match", errAuth)
	}
	return a.accessKeyID, nil
}

// Sign adds X-Amz-Date and a SigV4 Authorization header to r, signing the
// given headers (lower case; host and x-amz-date are always added) and
// body. It exists for tests and tools; custos itself only verifies.
func Sign(r *http.Request, body []byte, accessKeyID, secret, region, service string, t time.Time, headers ...string) error {
	amzDate := t.UTC().Format(amzDateFormat)
	r.Header.Set("X-Amz-Date", amzDate)
	signed := append([]string{"host", "x-amz-date"}, headers...)
	sort.Strings(signed)
	signed = compactStrings(signed)
	creq, err := canonicalRequest(r, signed, body)
	if err != nil {
		return err
	}
	sig := signature(secret, amzDate[:8], region, service, amzDate, creq)
	r.Header.Set("Authorization", fmt.Sprintf("%s Credential=%s/%s/%s/%s/%s, SignedHeaders=%s, Signature=%s",
		sigV4Algorithm, accessKeyID, amzDate[:8], region, service, sigV4Terminal, strings.Join(signed, ";"), hex.EncodeToString(sig)))
	return nil
}

// canonicalRequest builds the SigV4 canonical request.
func canonicalRequest(r *http.Request, signed []string, body []byte) (string, error) {
	var b strings.Builder
	b.WriteString(r.Method)
	b.WriteByte('\n')
	// The XKS routes accept only unreserved characters in the path, so the
	// path as sent is already its canonical form.
	p := r.URL.EscapedPath()
	if p == "" {
		p = "/"
	}
	b.WriteString(p)
	b.WriteByte('\n')
	b.WriteString(canonicalQuery(r.URL.RawQuery))
	b.WriteByte('\n')
	for _, name := range signed {
		var vals []string
		switch name {
		case "host":
			vals = []string{r.Host}
		case "content-length":
			vals = r.Header.Values("Content-Length")
			if len(vals) == 0 && r.ContentLength >= 0 {
				vals = []string{strconv.FormatInt(r.ContentLength, 10)}
			}
		default:
			vals = r.Header.Values(name)
		}
		if len(vals) == 0 || name == "host" && vals[0] == "" {
			return "", fmt.Errorf("%w: signed header %q is missing", errAuth, name)
		}
		for i, v := range vals {
			vals[i] = strings.Join(strings.Fields(v), " ")
		}
		b.WriteString(name)
		b.WriteByte(':')
		b.WriteString(strings.Join(vals, ","))
		b.WriteByte('\n')
	}
	b.WriteByte('\n')
	b.WriteString(strings.Join(signed, ";"))
	b.WriteByte('\n')
	b.WriteString(hashHex(body))
	return b.String(), nil
}

// canonicalQuery sorts the query's parameters by name, then value, each
// URI-encoded with only the unreserved characters left as they are.
func canonicalQuery(raw string) string {
	if raw == "" {
		return ""
	}
	type kv struct{ k, v string }
	var ps []kv
	for _, part := range strings.Split(raw, "&") {
		if part == "" {
			continue
		}
		k, v, _ := strings.Cut(part, "=")
		if dk, err := url.QueryUnescape(k); err == nil {
			k = dk
		}
		if dv, err := url.QueryUnescape(v); err == nil {
			v = dv
		}
		ps = append(ps, kv{uriEncode(k), uriEncode(v)})
	}
	sort.Slice(ps, func(i, j int) bool {
		if ps[i].k != ps[j].k {
			return ps[i].k < ps[j].k
		}
		return ps[i].v < ps[j].v
	})
	out := make([]string, len(ps))
	for i, p := range ps {
		out[i] = p.k + "=" + p.v
	}
	return strings.Join(out, "&")
}

func uriEncode(s string) string {
	var b strings.Builder
	for i := 0; i < len(s); i++ {
		c := s[i]
		if c >= 'A' && c <= 'Z' || c >= 'a' && c <= 'z' || c >= '0' && c <= '9' || c == '-' || c == '_' || c == '.' || c == '~' {
			b.WriteByte(c)
		} else {
			fmt.Fprintf(&b, "%%%02X", c)
		}
	}
	return b.String()
}

// signature derives the signing key and signs the string to sign built
// from the canonical request.
func signature(secret, date, region, service, amzDate, creq string) []byte {
	sts := sigV4Algorithm + "\n" + amzDate + "\n" + date + "/" + region + "/" + service + "/" + sigV4Terminal + "\n" + hashHex([]byte(creq))
	k := hmacSHA256([]byte("AWS4"+secret), date)
	k = hmacSHA256(k, region)
	k = hmacSHA256(k, service)
	k = hmacSHA256(k, sigV4Terminal)
	return hmacSHA256(k, sts)
}

func hmacSHA256(key []byte, data string) []byte {
	m := hmac.New(sha256.New, key)
	m.Write([]byte(data))
	return m.Sum(nil)
}

func hashHex(b []byte) string {
	h := sha256.Sum256(b)
	return hex.EncodeToString(h[:])
}

func contains(list []string, s string) bool {
	for _, x := range list {
		if x == s {
			return true
		}
	}
	return false
}

func compactStrings(s []string) []string {
	out := s[:0]
	for i, x := range s {
		if i == 0 || x != s[i-1] {
			out = append(out, x)
		}
	}
	return out
}
