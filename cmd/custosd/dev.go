package main

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"io/fs"
	"log/slog"
	"net"
	"os"
	"path/filepath"

	"github.com/custos-kms/custos/internal/node"
	"github.com/custos-kms/custos/internal/pki"
	"github.com/custos-kms/custos/softhsm"
)

// Names used by the dev node.
const (
	devTokenLabel = "custos-dev"
	devClientName = "dev-admin"
	devNodeID     = "dev"
)

// devPINs are the dev token's PINs, kept in DIR/softhsm/pins.json (0600) so
// a restart reuses the token.
type devPINs struct {
	UserPIN string `json:"user_pin"`
	SOPIN   string `json:"so_pin"`
}

func cmdDev(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	fl := flag.NewFlagSet("custosd dev", flag.ContinueOnError)
	fl.SetOutput(stderr)
	dataDir := fl.String("data-dir", ".dev", "directory for the token, PKI, Raft log and ledger (kept across restarts)")
	listen := fl.String("listen", node.DefaultListen, "gRPC listen address")
	fl.Usage = func() {
		fmt.Fprint(fl.Output(), `Usage: custosd dev [--data-dir DIR] [--listen ADDR]

Starts a single custos node for development: a SoftHSM2 token in DIR/softhsm
(random PINs in DIR/softhsm/pins.json), a throwaway CA and certificates in
DIR/pki (client certificate CN "dev-admin"), Raft and ledger in DIR. It writes
DIR/client.env with the CUSTOS_* variables the custos CLI reads. Restarting on
the same DIR keeps keys and ledger. Stop it with Ctrl-C.

Flags:
`)
		fl.PrintDefaults()
	}
	if err := fl.Parse(args); err != nil {
		if errors.Is(err, flag.ErrHelp) {
			return err
		}
		return errUsage
	}
	if fl.NArg() > 0 {
		fmt.Fprintf(stderr, "custosd dev: unexpected argument %q\n", fl.Arg(0))
		fl.Usage()
		return errUsage
	}
	dir, err := filepath.Abs(*dataDir)
	if err != nil {
		return err
	}
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return fmt.Errorf("data dir: %w", err)
	}
	log := newLogger(stderr, slog.LevelInfo, false)

	tok, err := devToken(filepath.Join(dir, "softhsm"))
	if err != nil {
		return err
	}
	pkiDir := filepath.Join(dir, "pki")
	if err := pki.CreateDevPKI(pkiDir, []string{"localhost", "127.0.0.1", "::1"}, devClientName); err != nil {
		return fmt.Errorf("dev PKI: %w", err)
	}

	var cfg node.Config
	cfg.ID = devNodeID
	cfg.DataDir = dir
	cfg.Listen = *listen
	cfg.PKCS11.Module = tok.Module
	cfg.PKCS11.TokenLabel = tok.Label
	cfg.PKCS11.PIN = tok.PIN
	cfg.TLS.CA = filepath.Join(pkiDir, pki.CAFile)
	cfg.TLS.Cert = filepath.Join(pkiDir, pki.ServerFile)
	cfg.TLS.Key = filepath.Join(pkiDir, pki.ServerKeyFile)
	cfg.Bootstrap = true
	cfg.RaftLocalTimeouts = true
	cfg.Logger = log

	n, err := node.Start(ctx, cfg)
	if err != nil {
		return err
	}
	envFile := filepath.Join(dir, "client.env")
	certFile, keyFile := pki.ClientFiles(pkiDir, devClientName)
	env := fmt.Sprintf("# written by custosd dev; load with: source %s\nexport CUSTOS_ADDR=%s\nexport CUSTOS_CA=%s\nexport CUSTOS_CERT=%s\nexport CUSTOS_KEY=%s\n",
		shellQuote(envFile), shellQuote(dialAddr(n.Addr())), shellQuote(cfg.TLS.CA), shellQuote(certFile), shellQuote(keyFile))
	if err := os.WriteFile(envFile, []byte(env), 0o600); err != nil {
		n.Close()
		return fmt.Errorf("write %s: %w", envFile, err)
	}
	fmt.Fprintf(stdout, `
custos dev node is running.
  listening:  %s
  cluster id: %s
  data dir:   %s
  client env: %s

In another shell:
  source %s
  custos key create payroll

Stop with Ctrl-C; restarting on the same data dir keeps keys and ledger.
`, dialAddr(n.Addr()), n.ClusterID(), dir, envFile, shellQuote(envFile))
	return serveUntilSignal(ctx, n, log)
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
	pinsFile := filepath.Join(dir, "pins.json")
	var pins devPINs
	b, err := os.ReadFile(pinsFile)
	switch {
	case err == nil:
		if err := json.Unmarshal(b, &pins); err != nil || pins.UserPIN == "" || pins.SOPIN == "" {
			return nil, fmt.Errorf("%s is damaged; remove the data dir to start a fresh dev node", pinsFile)
		}
	case errors.Is(err, fs.ErrNotExist):
		labels, lerr := d.Labels()
		if lerr != nil {
			return nil, lerr
		}
		for _, l := range labels {
			if l == devTokenLabel {
				return nil, fmt.Errorf("%s is missing but token %q exists in %s; remove the data dir to start a fresh dev node", pinsFile, devTokenLabel, dir)
			}
		}
		pins = devPINs{UserPIN: randomPIN(), SOPIN: randomPIN()}
		b, _ := json.MarshalIndent(pins, "", "  ")
		if err := os.WriteFile(pinsFile, append(b, '\n'), 0o600); err != nil {
			return nil, fmt.Errorf("write %s: %w", pinsFile, err)
		}
	default:
		return nil, fmt.Errorf("read %s: %w", pinsFile, err)
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
