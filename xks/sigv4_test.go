package xks

import (
	"bytes"
	"errors"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
	"time"
)

// The AWS SigV4 test suite (aws-sig-v4-test-suite, also in the AWS General
// Reference): credentials AKIDEXAMPLE / wJalrXUtnFEMI/K7MDENG+bPxRfiCYEXAMPLEKEY,
// region us-east-1, service "service", host example.amazonaws.com, time
// 20150830T123600Z. The signatures below are the published ones.
const (
	suiteAK     = "AKIDEXAMPLE"
	suiteSecret = "wJalrXUtnFEMI/K7MDENG+bPxRfiCYEXAMPLEKEY"
	suiteDate   = "20150830T123600Z"
)

var suiteTime = time.Date(2015, 8, 30, 12, 36, 0, 0, time.UTC)

func suiteVerifier() *Verifier {
	return &Verifier{Service: "service", Region: "us-east-1", Now: func() time.Time { return suiteTime },
		Secret: func(ak string) (string, bool) { return suiteSecret, ak == suiteAK }}
}

func suiteRequest(method, target, sig string) *http.Request {
	r := httptest.NewRequest(method, "https://example.amazonaws.com"+target, nil)
	r.Header.Set("X-Amz-Date", suiteDate)
	r.Header.Set("Authorization", "AWS4-HMAC-SHA256 Credential=AKIDEXAMPLE/20150830/us-east-1/service/aws4_request, SignedHeaders=host;x-amz-date, Signature="+sig)
	return r
}

func TestSigV4Suite(t *testing.T) {
	for _, c := range []struct{ name, method, target, sig string }{
		{"get-vanilla", "GET", "/", "5fa00fa31553b73ebf1942676e86291e8372ff2a2260956d9b8aae1d763fbf31"},
		{"get-vanilla-query-order-key-case", "GET", "/?Param2=value2&Param1=value1", "b97d918cfa904a5beff61c982a1b6f458b799221646efd99d3219ec94cdf2500"},
		{"post-vanilla", "POST", "/", "5da7c1a2acd57cee7505fc6676e4e544621c30862966e37dddb68e92efbe5d6b"},
	} {
		t.Run(c.name, func(t *testing.T) {
			ak, err := suiteVerifier().Verify(suiteRequest(c.method, c.target, c.sig), nil)
			if err != nil || ak != suiteAK {
				t.Fatalf("Verify = %q, %v", ak, err)
			}
			// Our signer reproduces the published signature.
			r := httptest.NewRequest(c.method, "https://example.amazonaws.com"+c.target, nil)
			if err := Sign(r, nil, suiteAK, suiteSecret, "us-east-1", "service", suiteTime); err != nil {
				t.Fatal(err)
			}
			if got := r.Header.Get("Authorization"); !strings.HasSuffix(got, "Signature="+c.sig) {
				t.Fatalf("Sign: %s", got)
			}
			// Any change breaks it.
			bad := suiteRequest(c.method, c.target, c.sig)
			bad.Host = "example.amazonaws.org"
			if _, err := suiteVerifier().Verify(bad, nil); !errors.Is(err, errAuth) {
				t.Fatalf("other host: %v", err)
			}
			if _, err := suiteVerifier().Verify(suiteRequest(c.method, c.target, c.sig), []byte("x")); !errors.Is(err, errAuth) {
				t.Fatalf("other body: %v", err)
			}
		})
	}
}

func TestSigV4Rejects(t *testing.T) {
	body := []byte(`{"a":1}`)
	signed := func(mod func(r *http.Request)) *http.Request {
		r := httptest.NewRequest("POST", "https://xks.example.com/p/kms/xks/v1/health", bytes.NewReader(body))
		r.Header.Set("Content-Type", "application/json")
		if err := Sign(r, body, suiteAK, suiteSecret, "us-east-1", "service", suiteTime, "content-type"); err != nil {
			t.Fatal(err)
		}
		if mod != nil {
			mod(r)
		}
		return r
	}
	if _, err := suiteVerifier().Verify(signed(nil), body); err != nil {
		t.Fatalf("good request: %v", err)
	}
	cases := map[string]func(r *http.Request){
		"no authorization":   func(r *http.Request) { r.Header.Del("Authorization") },
		"two authorizations": func(r *http.Request) { r.Header.Add("Authorization", r.Header.Get("Authorization")) },
		"other algorithm": func(r *http.Request) {
			r.Header.Set("Authorization", "AWS4-HMAC-SHA512"+r.Header.Get("Authorization")[16:])
		},
		"signed header change": func(r *http.Request) { r.Header.Set("Content-Type", "text/plain") },
		"date change":          func(r *http.Request) { r.Header.Set("X-Amz-Date", "20150830T123601Z") },
		"no date":              func(r *http.Request) { r.Header.Del("X-Amz-Date") },
		"path change":          func(r *http.Request) { r.URL.Path = "/q/kms/xks/v1/health"; r.URL.RawPath = "" },
		"method change":        func(r *http.Request) { r.Method = "PUT" },
		"unknown key": func(r *http.Request) {
			r.Header.Set("Authorization", strings.Replace(r.Header.Get("Authorization"), "AKIDEXAMPLE", "AKIDOTHER", 1))
		},
		"other region": func(r *http.Request) {
			r.Header.Set("Authorization", strings.Replace(r.Header.Get("Authorization"), "us-east-1", "us-west-2", 1))
		},
		"other service": func(r *http.Request) {
			r.Header.Set("Authorization", strings.Replace(r.Header.Get("Authorization"), "/service/", "/kms/", 1))
		},
		"host unsigned": func(r *http.Request) {
			r.Header.Set("Authorization", strings.Replace(r.Header.Get("Authorization"), "content-type;host;x-amz-date", "content-type;x-amz-date", 1))
		},
		"unsorted signed headers": func(r *http.Request) {
			r.Header.Set("Authorization", strings.Replace(r.Header.Get("Authorization"), "content-type;host;x-amz-date", "host;content-type;x-amz-date", 1))
		},
		"short signature": func(r *http.Request) {
			a := r.Header.Get("Authorization")
			r.Header.Set("Authorization", a[:len(a)-2])
		},
		"content hash mismatch": func(r *http.Request) { r.Header.Set("X-Amz-Content-Sha256", hashHex([]byte("other"))) },
	}
	for name, mod := range cases {
		if _, err := suiteVerifier().Verify(signed(mod), body); !errors.Is(err, errAuth) {
			t.Errorf("%s: err = %v, want a sigv4 error", name, err)
		}
	}
	if _, err := suiteVerifier().Verify(signed(nil), []byte(`{"a":2}`)); !errors.Is(err, errAuth) {
		t.Errorf("body change: %v", err)
	}
}

func TestSigV4Skew(t *testing.T) {
	for _, c := range []struct {
		d  time.Duration
		ok bool
	}{{0, true}, {4*time.Minute + 59*time.Second, true}, {-5 * time.Minute, true}, {5*time.Minute + time.Second, false}, {-6 * time.Minute, false}, {24 * time.Hour, false}} {
		v := suiteVerifier()
		v.Now = func() time.Time { return suiteTime.Add(c.d) }
		_, err := v.Verify(suiteRequest("GET", "/", "5fa00fa31553b73ebf1942676e86291e8372ff2a2260956d9b8aae1d763fbf31"), nil)
		if (err == nil) != c.ok {
			t.Errorf("skew %s: err = %v", c.d, err)
		}
	}
}

func TestParseAuthorizationSlashInAccessKey(t *testing.T) {
	a, err := parseAuthorization("AWS4-HMAC-SHA256 Credential=AB/CD/20150830/us-east-1/kms-xks-proxy/aws4_request, SignedHeaders=host;x-amz-date, Signature=" + strings.Repeat("00", 32))
	if err != nil || a.accessKeyID != "AB/CD" || a.date != "20150830" || a.service != "kms-xks-proxy" {
		t.Fatalf("parse = %+v, %v", a, err)
	}
}

func FuzzParseAuthorization(f *testing.F) {
	f.Add("AWS4-HMAC-SHA256 Credential=AKIDEXAMPLE/20150830/us-east-1/service/aws4_request, SignedHeaders=host;x-amz-date, Signature=5fa00fa31553b73ebf1942676e86291e8372ff2a2260956d9b8aae1d763fbf31")
	f.Fuzz(func(t *testing.T, h string) { _, _ = parseAuthorization(h) })
}
