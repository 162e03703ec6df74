package main

import (
	"bytes"
	"context"
	"crypto/ecdsa"
	"crypto/rand"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"net"
	"os"
	"path/filepath"

	custos "github.com/custos-kms/custos/clients/go"
	"github.com/custos-kms/custos/internal/atomicfile"
	"github.com/custos-kms/custos/internal/node"
	"github.com/custos-kms/custos/internal/pki"
	"github.com/custos-kms/custos/kms"
	"github.com/custos-kms/custos/kms/governance"
	custosv1 "github.com/custos-kms/custos/proto/custos/v1"
	"github.com/custos-kms/custos/softhsm"
)

// Names used by the dev node.
const (
	devTokenLabel  = "custos-dev"
	devClientName  = "dev-admin"
	devNodeID      = "dev"
	devOfficerName = "officer-1"
)

// devPINs are the dev token's PINs, kept in DIR/softhsm/pins.json (0600) so
// a restart reuses the token.
type devPINs struct {
	UserPIN string `json:"user_pin"`
	SOPIN   string `json:"so_pin"`
}

func cmdDev(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	fl, err := parseDevFlags(args, false, stderr)
	if err != nil {
		return err
	}
	dir, err := filepath.Abs(fl.dataDir)
	if err != nil {
		return err
	}
	// Before the token, the PKI or anything else in dir: one custosd uses
	// it at a time.
	lock, err := node.LockDataDir(dir)
	if err != nil {
		return err
	}
	defer lock.Release()
	log := newLogger(stderr, fl.level, false)

	tok, err := devToken(filepath.Join(dir, "softhsm"))
	if err != nil {
		return err
	}
	pkiDir := filepath.Join(dir, "pki")
	if err := pki.CreateDevPKI(pkiDir, []string{"localhost", "127.0.0.1", "::1"}, devClientName); err != nil {
		return fmt.Errorf("dev PKI: %w", err)
	}
	officerFile, officer, err := devOfficer(filepath.Join(dir, "officers"))
	if err != nil {
		return err
	}

	var cfg node.Config
	cfg.ID = devNodeID
	cfg.DataDir = dir
	cfg.DataDirLock = lock
	cfg.Listen = fl.listen
	cfg.PKCS11.Module = tok.Module
	cfg.PKCS11.TokenLabel = tok.Label
	cfg.PKCS11.PIN = tok.PIN
	cfg.TLS.CA = filepath.Join(pkiDir, pki.CAFile)
	cfg.TLS.Cert = filepath.Join(pkiDir, pki.ServerFile)
	cfg.TLS.Key = filepath.Join(pkiDir, pki.ServerKeyFile)
	cfg.Bootstrap = true
	cfg.RaftLocalTimeouts = true
	cfg.Officers, cfg.Quorum = []*custosv1.Officer{officer}, 1
	cfg.Profile = kms.ProfileDevelopment
	// The dev client may read and export the ledger (AuditService).
	cfg.Auditors = []string{devClientName}
	cfg.Logger = log
	if fl.console != "" {
		// The officer console, with the dev CA's server certificate (for
		// localhost; a browser must trust the dev CA).
		cfg.Console = &node.ConsoleConfig{Listen: fl.console, RPID: "localhost"}
	}
	var xksCred devXKSCredential
	if fl.xks != "" {
		if cfg.XKS, xksCred, err = devXKSConfig(dir, pkiDir, fl.xks, fl.xksMTLS); err != nil {
			return err
		}
	}

	n, err := node.Start(ctx, cfg)
	if err != nil {
		return err
	}
	if cfg.XKS != nil {
		xksEnv := filepath.Join(dir, "xks.env")
		if err := writeDevXKSEnv(xksEnv, n.XKSAddr(), cfg.TLS.CA, pkiDir, xksCred, fl.xksMTLS); err != nil {
			n.Close()
			return fmt.Errorf("write %s: %w", xksEnv, err)
		}
		fmt.Fprintf(stdout, "XKS proxy API on https://%s%s/kms/xks/v1 (test client variables: %s)\n",
			dialAddr(n.XKSAddr()), devXKSPrefix, xksEnv)
	}
	if u := n.ConsoleURL(); u != "" {
		fmt.Fprintf(stdout, "officer console on %s (WebAuthn security keys; the browser must trust the dev CA %s; docs/console.md)\n", u, cfg.TLS.CA)
	}
	if !isOfficer(n.Service().State().Governance(), officer) {
		log.Warn("the dev officer key is not an officer of this cluster (the officer set was changed, or the key file replaced); statements it signs will be refused",
			"key_file", officerFile)
	}
	envFile := filepath.Join(dir, "client.env")
	certFile, keyFile := pki.ClientFiles(pkiDir, devClientName)
	env := fmt.Sprintf("# written by custosd dev; load with: source %s\n"+
		"export CUSTOS_ADDR=%s\nexport CUSTOS_CA=%s\nexport CUSTOS_CERT=%s\nexport CUSTOS_KEY=%s\n"+
		"export CUSTOS_OFFICER_KEY=%s\nexport CUSTOS_OFFICER_NAME=%s\n",
		shellQuote(envFile), shellQuote(dialAddr(n.Addr())), shellQuote(cfg.TLS.CA), shellQuote(certFile), shellQuote(keyFile),
		shellQuote(officerFile), shellQuote(devOfficerName))
	if err := atomicfile.Write(envFile, []byte(env), 0o600, true); err != nil {
		n.Close()
		return fmt.Errorf("write %s: %w", envFile, err)
	}
	// As in a dev cluster, custosd dev plays the officer and the token's
	// SO for what needs them outside the log: the transport key of a
	// domain-key rotation (devadmit.go).
	if stop, err := startDevAdmitter(ctx, n, dir, officerFile, certFile, keyFile, cfg.TLS.CA, stderr); err != nil {
		log.Warn("custosd dev will not approve domain-key rotations by itself", "err", err)
	} else {
		defer stop()
	}
	fmt.Fprintf(stdout, `
custos dev node is running.
  listening:  %s
  cluster id: %s
  data dir:   %s
  client env: %s
  officer:    %s (quorum 1), key %s

The dev cluster has one security officer, whose key sits unencrypted in the
data dir; it alone signs the statements that loosen access (re-enabling a
key, approving a request). client.env names it in CUSTOS_OFFICER_KEY and
CUSTOS_OFFICER_NAME.

%s
Stop with Ctrl-C; restarting on the same data dir keeps keys, officer and ledger.
`, dialAddr(n.Addr()), n.ClusterID(), dir, envFile, devOfficerName, officerFile,
		devNextSteps(envFile, cliDir(), "custos key create payroll",
			"echo hello | custos encrypt --key payroll - hello.cst",
			"custos decrypt --justification CUSTOMER_INITIATED hello.cst -"))
	return serveUntilSignal(ctx, n, log)
}

// startDevAdmitter runs a dev admitter for the single dev node until the
// returned stop is called.
func startDevAdmitter(ctx context.Context, n *node.Node, dir, officerFile, certFile, keyFile, caFile string, errw io.Writer) (func(), error) {
	exe, err := os.Executable()
	if err != nil {
		return nil, err
	}
	hsmDir, err := softhsm.OpenDir(filepath.Join(dir, "softhsm"))
	if err != nil {
		return nil, err
	}
	self := &clusterChild{id: devNodeID, hsmConf: hsmDir.ConfPath(), pins: filepath.Join(dir, "softhsm", "pins.json"), label: devTokenLabel}
	admitter, err := newDevAdmitter(custos.Config{Addrs: []string{dialAddr(n.Addr())}, CAFile: caFile, CertFile: certFile, KeyFile: keyFile},
		officerFile, exe, dir, []*clusterChild{self}, errw)
	if err != nil {
		return nil, err
	}
	actx, cancel := context.WithCancel(ctx)
	done := make(chan struct{})
	go func() { defer close(done); admitter.run(actx) }()
	return func() { cancel(); <-done }, nil
}

// devOfficer returns the dev node's officer, "officer-1", and its key file
// dir/officer-1.pem: created (unencrypted, mode 0600) on first use, read
// again on later starts.
func devOfficer(dir string) (string, *custosv1.Officer, error) {
	file := filepath.Join(dir, devOfficerName+".pem")
	var pub *ecdsa.PublicKey
	switch _, err := os.Stat(file); {
	case err == nil:
		signer, err := governance.LoadKeyFile(file, func() ([]byte, error) {
			return nil, errors.New("the dev officer key file is encrypted; custosd dev writes it unencrypted")
		})
		if err != nil {
			return "", nil, fmt.Errorf("dev officer key %s (remove it and the data dir to start over): %w", file, err)
		}
		ek, ok := signer.Public().(*ecdsa.PublicKey)
		if !ok {
			return "", nil, fmt.Errorf("dev officer key %s is not an ECDSA key", file)
		}
		pub = ek
	case errors.Is(err, fs.ErrNotExist):
		if err := os.MkdirAll(dir, 0o700); err != nil {
			return "", nil, fmt.Errorf("dev officer: %w", err)
		}
		k, err := governance.GenerateKey()
		if err != nil {
			return "", nil, fmt.Errorf("dev officer: %w", err)
		}
		if err := governance.WriteKeyFile(file, k, nil); err != nil {
			return "", nil, fmt.Errorf("dev officer: %w", err)
		}
		pub = &k.PublicKey
	default:
		return "", nil, fmt.Errorf("dev officer: %w", err)
	}
	return file, &custosv1.Officer{Name: devOfficerName, PublicKey: governance.MarshalPublicKey(pub)}, nil
}

// isOfficer reports whether o (name and key) is in gov's officer set.
func isOfficer(gov *custosv1.Governance, o *custosv1.Officer) bool {
	for _, g := range gov.GetOfficers() {
		if g.GetName() == o.GetName() && bytes.Equal(g.GetPublicKey(), o.GetPublicKey()) {
			return true
		}
	}
	return false
}

// tokenPINs returns the PINs of the dev token label in d, kept in
// dir/pins.json (0600): read on a restart, made at random on first use. A
// token without its PIN file (or a damaged file) is refused: the data dir
// must then be removed.
func tokenPINs(d *softhsm.Dir, dir, label string) (devPINs, error) {
	pinsFile := filepath.Join(dir, "pins.json")
	var pins devPINs
	b, err := os.ReadFile(pinsFile)
	switch {
	case err == nil:
		if err := json.Unmarshal(b, &pins); err != nil || pins.UserPIN == "" || pins.SOPIN == "" {
			return devPINs{}, fmt.Errorf("%s is damaged; remove the data dir to start afresh", pinsFile)
		}
		return pins, nil
	case errors.Is(err, fs.ErrNotExist):
		labels, err := d.Labels()
		if err != nil {
			return devPINs{}, err
		}
		for _, l := range labels {
			if l == label {
				return devPINs{}, fmt.Errorf("%s is missing but token %q exists in %s; remove the data dir to start afresh", pinsFile, label, dir)
			}
		}
		pins = devPINs{UserPIN: randomPIN(), SOPIN: randomPIN()}
		b, _ := json.MarshalIndent(pins, "", "  ")
		if err := atomicfile.Write(pinsFile, append(b, '\n'), 0o600, true); err != nil {
			return devPINs{}, fmt.Errorf("write %s: %w", pinsFile, err)
		}
		return pins, nil
	default:
		return devPINs{}, fmt.Errorf("read %s: %w", pinsFile, err)
	}
}

// devToken returns the dev SoftHSM2 token in dir, creating the token and its
// random PINs on first use, and points this process's SoftHSM at dir.
func devToken(dir string) (*softhsm.Token, error) {
	d, err := softhsm.OpenDir(dir)
	if err != nil {
		return nil, err
	}
	if err := d.Activate(); err != nil {
		return nil, err
	}
	pins, err := tokenPINs(d, dir, devTokenLabel)
	if err != nil {
		return nil, err
	}
	tok, err := d.InitToken(devTokenLabel, pins.SOPIN, pins.UserPIN)
	if err != nil {
		return nil, err
	}
	return tok, nil
}

// dialAddr turns a listen address into one a local client can dial:
// an unspecified host (0.0.0.0, ::) becomes 127.0.0.1.
func dialAddr(addr string) string {
	host, port, err := net.SplitHostPort(addr)
	if err != nil {
		return addr
	}
	if ip := net.ParseIP(host); host == "" || (ip != nil && ip.IsUnspecified()) {
		return net.JoinHostPort("127.0.0.1", port)
	}
	return addr
}

func randomPIN() string {
	b := make([]byte, 16)
	_, _ = rand.Read(b) // crypto/rand.Read never fails
	return hex.EncodeToString(b)
}

// shellQuote quotes s for a POSIX shell.
func shellQuote(s string) string {
	safe := true
	for _, r := range s {
		if !(r >= 'a' && r <= 'z' || r >= 'A' && r <= 'Z' || r >= '0' && r <= '9' || r == '/' || r == '.' || r == '_' || r == '-' || r == ':') {
			safe = false
			break
		}
	}
	if safe && s != "" {
		return s
	}
	out := "'"
	for _, r := range s {
		if r == '\'' {
			out += `'\''`
		} else {
			out += string(r)
		}
	}
	return out + "'"
}
