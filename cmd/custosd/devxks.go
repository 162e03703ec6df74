package main

import (
	"crypto/rand"
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"io/fs"
	"net"
	"os"
	"path/filepath"

	"github.com/custos-kms/custos/internal/atomicfile"
	"github.com/custos-kms/custos/internal/node"
	"github.com/custos-kms/custos/internal/pki"
	"github.com/custos-kms/custos/xks"
)

// The dev node's XKS key store (custosd dev --xks, docs/xks.md): one prefix,
// its SigV4 credential kept in DIR/xks/credential.json (0600), requests
// acting as the dev client's principal so that keys it creates are usable
// through XKS at once, decrypts justified CUSTOMER_WORKFLOW (which the
// default key policy allows).
const (
	devXKSPrefix = "/dev"
	devXKSRegion = "us-east-1"
	// devXKSClientCN is the subject AWS KMS's client certificate has in
	// devXKSRegion, for --xks-mtls.
	devXKSClientCN = "cks.kms." + devXKSRegion + ".amazonaws.com"
)

type devXKSCredential struct {
	AccessKeyID string `json:"access_key_id"`
	Secret      string `json:"secret"`
}

// devXKSConfig returns the dev node's XKS configuration listening on
// listen, with mutual TLS (the dev CA, CN devXKSClientCN) if mtls.
func devXKSConfig(dir, pkiDir, listen string, mtls bool) (*node.XKSConfig, devXKSCredential, error) {
	cred, err := devXKSCred(filepath.Join(dir, "xks"))
	if err != nil {
		return nil, cred, err
	}
	c := &node.XKSConfig{
		Listen: listen, CertFile: filepath.Join(pkiDir, pki.ServerFile), KeyFile: filepath.Join(pkiDir, pki.ServerKeyFile),
		Prefixes: []xks.PrefixConfig{{Path: devXKSPrefix, Region: devXKSRegion, DefaultReason: "CUSTOMER_WORKFLOW",
			Credentials: []xks.Credential{{AccessKeyID: cred.AccessKeyID, Secret: cred.Secret, Principal: devClientName}}}},
	}
	if mtls {
		if err := pki.CreateDevPKI(pkiDir, []string{"localhost", "127.0.0.1", "::1"}, devClientName, devXKSClientCN); err != nil {
			return nil, cred, fmt.Errorf("dev PKI for XKS mTLS: %w", err)
		}
		c.ClientCAFile, c.AllowedCNs = filepath.Join(pkiDir, pki.CAFile), []string{devXKSClientCN}
	}
	return c, cred, nil
}

// devXKSCred reads the dev XKS credential, making one on first use: an
// access key id of 26 characters A-Z and 2-7 and a 43-character secret, as
// AWS KMS's formats ask.
func devXKSCred(dir string) (devXKSCredential, error) {
	file := filepath.Join(dir, "credential.json")
	var c devXKSCredential
	b, err := os.ReadFile(file)
	switch {
	case err == nil:
		if err := json.Unmarshal(b, &c); err != nil || c.AccessKeyID == "" || len(c.Secret) < 43 {
			return c, fmt.Errorf("%s is damaged; remove it to make a new credential", file)
		}
		return c, nil
	case !errors.Is(err, fs.ErrNotExist):
		return c, err
	}
	const b32 = "ABCDEFGHIJKLMNOPQRSTUVWXYZ234567"
	id := make([]byte, 26)
	_, _ = rand.Read(id)
	for i := range id {
		id[i] = b32[id[i]%32]
	}
	secret := make([]byte, 32)
	_, _ = rand.Read(secret)
	c = devXKSCredential{AccessKeyID: "CUSTOSDEV" + string(id[:17]), Secret: base64.RawStdEncoding.EncodeToString(secret)}
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return c, err
	}
	b, _ = json.MarshalIndent(c, "", "  ")
	return c, atomicfile.Write(file, append(b, '\n'), 0o600, true)
}

// writeDevXKSEnv writes DIR/xks.env: the variables of the AWS KMS XKS proxy
// test client (aws-samples/aws-kms-xksproxy-test-client) for this node.
func writeDevXKSEnv(file, addr, caFile, pkiDir string, cred devXKSCredential, mtls bool) error {
	_, port, err := net.SplitHostPort(addr)
	if err != nil {
		return err
	}
	env := fmt.Sprintf("# written by custosd dev --xks: the AWS XKS proxy test client's variables; load with: source %s\n"+
		"export XKS_PROXY_HOST=%s\nexport URI_PREFIX=%s\nexport REGION=%s\nexport SCHEME=https://\n"+
		"export SIGV4_ACCESS_KEY_ID=%s\nexport SIGV4_SECRET_ACCESS_KEY=%s\nexport SECURE=%s\nexport CUSTOS_XKS_PRINCIPAL=%s\n",
		shellQuote(file), shellQuote("localhost:"+port), devXKSPrefix[1:], devXKSRegion,
		shellQuote(cred.AccessKeyID), shellQuote(cred.Secret), shellQuote("--cacert "+caFile), devClientName)
	if mtls {
		cert, key := pki.ClientFiles(pkiDir, devXKSClientCN)
		env += fmt.Sprintf("export MTLS=%s\n", shellQuote("--key "+key+" --cert "+cert))
	}
	return atomicfile.Write(file, []byte(env), 0o600, true)
}
