package main

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"net"
	"os"
	"path/filepath"
	"sort"
	"strconv"
	"strings"
	"time"

	"github.com/custos-kms/custos/internal/activation"
	"github.com/custos-kms/custos/internal/flagusage"
	"github.com/custos-kms/custos/internal/node"
	"github.com/custos-kms/custos/internal/pki"
	"github.com/custos-kms/custos/kms"
	"github.com/custos-kms/custos/kms/governance"
	custosv1 "github.com/custos-kms/custos/proto/custos/v1"
	"github.com/custos-kms/custos/xks"
)

// PINEnv is the environment variable holding the PKCS#11 user PIN when the
// configuration names no pin_file.
const PINEnv = "CUSTOS_PKCS11_PIN"

// fileConfig is the JSON configuration of `custosd serve`; docs/config.md
// documents every field.
type fileConfig struct {
	ID        string `json:"id"`
	DataDir   string `json:"data_dir"`
	Listen    string `json:"listen"`
	RaftAddr  string `json:"raft_addr"`
	Bootstrap bool   `json:"bootstrap"`
	PKCS11    struct {
		Module     string `json:"module"`
		TokenLabel string `json:"token_label"`
		PINFile    string `json:"pin_file"`
	} `json:"pkcs11"`
	TLS struct {
		CA   string `json:"ca"`
		Cert string `json:"cert"`
		Key  string `json:"key"`
	} `json:"tls"`
	Log struct {
		Level  string `json:"level"`
		Format string `json:"format"`
	} `json:"log"`
	// Officers and Quorum are used when the node initialises a new
	// cluster only; afterwards officer statements change them.
	Officers []fileOfficer `json:"officers"`
	Quorum   uint32        `json:"quorum"`
	// Profile, with officers, is recorded when the node initialises a
	// cluster: "development" or "" (production).
	Profile string `json:"profile"`
	// ClientAuthorities, a PEM file of CA certificates, is what a new
	// cluster pins as the CAs that identify principals
	// (docs/identities.md); absent: the CA certificates of tls.ca.
	ClientAuthorities string `json:"client_authorities"`
	// Genesis, a statement file the officers signed (custos officer
	// propose genesis), initialises a new cluster instead of officers,
	// quorum, profile and client_authorities (docs/governance.md,
	// Officer-signed genesis).
	Genesis string `json:"genesis"`
	// Auditors may read the ledger (AuditService); checkpoint_* set how
	// often the leader signs the chain head.
	Auditors           []string `json:"auditors"`
	CheckpointEvery    uint64   `json:"checkpoint_every"`
	CheckpointInterval string   `json:"checkpoint_interval"`
	// MaxStreamsPerPrincipal bounds one principal's open audit streams.
	MaxStreamsPerPrincipal int `json:"max_streams_per_principal"`
	// Per-principal rate quotas of this node (docs/quotas.md).
	MaxDecisionsPerSecond float64 `json:"max_decisions_per_second_per_principal"`
	MaxRefusalsPerSecond  float64 `json:"max_refusals_per_second_per_principal"`
	// Cluster membership (docs/config.md): raft over mutual TLS with the
	// node certificate in tls.cert, the other nodes, whether this node
	// joins an existing cluster, the expected cluster id, whether the
	// leader adds the configured peers itself, and the operators.
	RaftTLS   *bool      `json:"raft_tls"`
	Peers     []filePeer `json:"peers"`
	Join      bool       `json:"join"`
	ClusterID string     `json:"cluster_id"`
	AddPeers  bool       `json:"add_peers"`
	Operators []string   `json:"operators"`
	// MetricsListen serves Prometheus /metrics over plain HTTP; XKS
	// serves the AWS KMS External Key Store proxy API (docs/xks.md).
	MetricsListen string   `json:"metrics_listen"`
	XKS           *fileXKS `json:"xks"`
	// Console serves the officer console (docs/console.md); off unless
	// the section is present.
	Console *fileConsole `json:"console"`
	// RaftAdvertise is the Raft address given to the other nodes when it
	// differs from the bind address raft_addr (a proxy, NAT).
	RaftAdvertise string `json:"raft_advertise"`
}

// fileConsole is the console section (docs/console.md).
type fileConsole struct {
	Listen                  string   `json:"listen"`
	Cert                    string   `json:"cert"`
	Key                     string   `json:"key"`
	RPID                    string   `json:"rp_id"`
	Origins                 []string `json:"origins"`
	RequireUserVerification bool     `json:"require_user_verification"`
}

// fileXKS is the xks section: the XKS listener, its TLS and the key
// stores (prefixes) with their SigV4 credentials. Secrets are never inline:
// each credential names a file or an environment variable.
type fileXKS struct {
	Listen     string          `json:"listen"`
	Cert       string          `json:"cert"`
	Key        string          `json:"key"`
	ClientCA   string          `json:"client_ca"`
	AllowedCNs []string        `json:"allowed_cns"`
	EKMID      string          `json:"ekm_id"`
	Prefixes   []fileXKSPrefix `json:"prefixes"`
	// Deadline bounds each request ("150ms"); xks.DefaultDeadline if empty.
	Deadline string `json:"deadline"`
}

type fileXKSPrefix struct {
	Path          string              `json:"path"`
	Region        string              `json:"region"`
	DefaultReason string              `json:"default_reason"`
	ReasonMap     map[string]string   `json:"reason_map"`
	Credentials   []fileXKSCredential `json:"credentials"`
}

type fileXKSCredential struct {
	AccessKeyID string `json:"access_key_id"`
	SecretFile  string `json:"secret_file"`
	SecretEnv   string `json:"secret_env"`
	Principal   string `json:"principal"`
	// Secret is refused: it is here to say so clearly.
	Secret json.RawMessage `json:"secret"`
}

// xksMinSecret is the shortest SigV4 secret AWS KMS accepts.
const xksMinSecret = 43

// filePeer is another node of the cluster.
type filePeer struct {
	ID       string `json:"id"`
	RaftAddr string `json:"raft_addr"`
	APIAddr  string `json:"api_addr"`
}

// fileOfficer is one security officer in the configuration.
type fileOfficer struct {
	Name          string `json:"name"`
	PublicKeyFile string `json:"public_key_file"`
}

func cmdServe(ctx context.Context, args []string, stderr io.Writer) error {
	fl := flag.NewFlagSet("custosd serve", flag.ContinueOnError)
	fl.SetOutput(stderr)
	configFile := fl.String("config", "", "JSON configuration `FILE` (see docs/config.md)")
	logFormat := fl.String("log-format", "", "log `FORMAT`, text or json (overrides log.format)")
	logLevel := fl.String("log-level", "", "log `LEVEL`: debug, info, warn or error (overrides log.level)")
	fl.Usage = func() {
		fmt.Fprint(fl.Output(), `Usage: custosd serve --config FILE [--log-format text|json] [--log-level LEVEL]

Starts a custos node from a JSON configuration (docs/config.md). The PKCS#11
PIN is read from the file named by pkcs11.pin_file or, without one, from the
CUSTOS_PKCS11_PIN environment variable. Stop it with SIGINT or SIGTERM.
SIGHUP re-reads the configuration and applies the XKS key stores and
credentials (docs/xks.md); TLS files reload by themselves when they change.
Listening sockets passed by systemd socket activation (LISTEN_FDS, named
grpc, raft, xks or metrics in LISTEN_FDNAMES) are served on instead of
binding the configured addresses (docs/config.md, "Socket activation").

Flags:
`)
		flagusage.Print(fl.Output(), fl)
	}
	if err := fl.Parse(args); err != nil {
		if errors.Is(err, flag.ErrHelp) {
			return err
		}
		return errUsage
	}
	if *configFile == "" || fl.NArg() > 0 {
		fmt.Fprintln(stderr, "custosd serve: --config FILE is required")
		fl.Usage()
		return errUsage
	}
	switch *logFormat {
	case "", "text", "json":
	default:
		fmt.Fprintf(stderr, "custosd serve: --log-format must be text or json, not %q\n", *logFormat)
		return errUsage
	}
	if *logLevel != "" {
		var l slog.Level
		if err := l.UnmarshalText([]byte(*logLevel)); err != nil {
			fmt.Fprintf(stderr, "custosd serve: --log-level must be debug, info, warn or error, not %q\n", *logLevel)
			return errUsage
		}
	}
	// Listening sockets passed by systemd or a parent process (socket
	// activation, docs/config.md): taken over, and the LISTEN_* variables
	// unset, before anything else.
	passed, err := activation.Listeners()
	if err != nil {
		return err
	}
	cfg, err := loadConfigLog(*configFile, os.Getenv, *logLevel, *logFormat)
	if err == nil {
		err = useListeners(&cfg, passed)
	}
	if err != nil {
		for _, l := range passed {
			_ = l.Close()
		}
		return err
	}
	log := cfg.Logger
	if len(passed) > 0 {
		var names []string
		for name, l := range passed {
			names = append(names, name+"="+l.Addr().String())
		}
		sort.Strings(names)
		log.Info("socket activation: serving on passed sockets", "sockets", strings.Join(names, ","))
	}
	n, err := node.Start(ctx, cfg)
	if err != nil {
		return err
	}
	reloadOnHangup(ctx, func() error { return reloadConfig(n, *configFile, os.Getenv, cfg, log) }, log)
	return serveUntilSignal(ctx, n, log)
}

// Names of the sockets `custosd serve` takes from socket activation
// (LISTEN_FDNAMES; systemd: FileDescriptorName=).
const (
	socketGRPC    = "grpc"
	socketRaft    = "raft"
	socketXKS     = "xks"
	socketMetrics = "metrics"
	socketConsole = "console"
)

// useListeners puts the passed sockets into cfg in place of binding the
// configured addresses, which stay what the node tells its peers. Every
// socket must have a use: a name custosd does not know, a socket for a
// listener the configuration does not turn on (raft without raft_tls, xks
// without an xks section, metrics without metrics_listen), or a socket on
// another port than the configured one is refused.
func useListeners(cfg *node.Config, passed map[string]net.Listener) error {
	names := make([]string, 0, len(passed))
	for name := range passed {
		names = append(names, name)
	}
	sort.Strings(names)
	for _, name := range names {
		l := passed[name]
		var field, addr string
		switch name {
		case socketGRPC:
			field, addr = "listen", cfg.Listen
			cfg.Listener = l
		case socketRaft:
			if !cfg.RaftTLS {
				return fmt.Errorf("socket activation: a %q socket was passed but raft_tls is off (Raft without TLS, on a single node, binds raft_addr itself)", name)
			}
			field, addr = "raft_addr", cfg.RaftAddr
			cfg.RaftListener = l
		case socketXKS:
			if cfg.XKS == nil {
				return fmt.Errorf("socket activation: a %q socket was passed but the configuration has no xks section", name)
			}
			field, addr = "xks.listen", cfg.XKS.Listen
			cfg.XKS.Listener = l
		case socketConsole:
			if cfg.Console == nil {
				return fmt.Errorf("socket activation: a %q socket was passed but the configuration has no console section", name)
			}
			field, addr = "console.listen", cfg.Console.Listen
			cfg.Console.Listener = l
		case socketMetrics:
			if cfg.MetricsListen == "" {
				return fmt.Errorf("socket activation: a %q socket was passed but metrics_listen is not set", name)
			}
			field, addr = "metrics_listen", cfg.MetricsListen
			cfg.MetricsListener = l
		default:
			return fmt.Errorf("socket activation: %s names a socket %q; custosd serve takes %s, %s, %s, %s and %s",
				activation.EnvFDNames, name, socketGRPC, socketRaft, socketXKS, socketMetrics, socketConsole)
		}
		if err := samePort(addr, l.Addr()); err != nil {
			return fmt.Errorf("socket activation: the %q socket listens on %s but %s is %q: %w", name, l.Addr(), field, addr, err)
		}
	}
	return nil
}

// samePort checks that a passed socket bound at got serves the configured
// address want: the same port, unless want leaves the port to the system
// (port 0) or is empty (a default; Raft then advertises the socket's
// address).
func samePort(want string, got net.Addr) error {
	if want == "" {
		return nil
	}
	_, wp, err := net.SplitHostPort(want)
	if err != nil {
		return fmt.Errorf("not host:port: %w", err)
	}
	ta, ok := got.(*net.TCPAddr)
	if !ok {
		return errors.New("the socket is not a TCP socket")
	}
	if wp != "0" && wp != strconv.Itoa(ta.Port) {
		return errors.New("make them the same port: the configured address is the one peers and clients are told")
	}
	return nil
}

// loadConfig reads and checks a configuration file. Errors name the file
// and the bad field. Relative paths in it are relative to its directory.
func loadConfig(path string, getenv func(string) string) (node.Config, error) {
	return loadConfigLog(path, getenv, "", "")
}

// loadConfigLog is loadConfig with the log level and format, when not
// empty, taken from the command line instead of the file.
func loadConfigLog(path string, getenv func(string) string, logLevel, logFormat string) (node.Config, error) {
	var cfg node.Config
	b, err := os.ReadFile(path)
	if err != nil {
		return cfg, fmt.Errorf("config: %w", err)
	}
	var fc fileConfig
	dec := json.NewDecoder(bytes.NewReader(b))
	dec.DisallowUnknownFields()
	if err := dec.Decode(&fc); err != nil {
		var te *json.UnmarshalTypeError
		if errors.As(err, &te) {
			return cfg, fmt.Errorf("config %s: field %q: want a JSON %s, got %s", path, te.Field, te.Type, te.Value)
		}
		return cfg, fmt.Errorf("config %s: %w", path, err)
	}
	if dec.More() {
		return cfg, fmt.Errorf("config %s: trailing data after the JSON object", path)
	}
	if logLevel != "" {
		fc.Log.Level = logLevel
	}
	if logFormat != "" {
		fc.Log.Format = logFormat
	}
	bad := func(field, why string) error {
		return fmt.Errorf("config %s: field %q %s", path, field, why)
	}
	base := filepath.Dir(path)
	abs := func(p string) string {
		if p == "" || filepath.IsAbs(p) {
			return p
		}
		return filepath.Join(base, p)
	}
	required := []struct{ field, value string }{
		{"id", fc.ID},
		{"data_dir", fc.DataDir},
		{"listen", fc.Listen},
		{"pkcs11.module", fc.PKCS11.Module},
		{"pkcs11.token_label", fc.PKCS11.TokenLabel},
		{"tls.ca", fc.TLS.CA},
		{"tls.cert", fc.TLS.Cert},
		{"tls.key", fc.TLS.Key},
	}
	for _, r := range required {
		if strings.TrimSpace(r.value) == "" {
			return cfg, bad(r.field, "is required")
		}
	}
	for _, f := range []struct{ field, value string }{
		{"pkcs11.module", abs(fc.PKCS11.Module)},
		{"tls.ca", abs(fc.TLS.CA)},
		{"tls.cert", abs(fc.TLS.Cert)},
		{"tls.key", abs(fc.TLS.Key)},
	} {
		if _, err := os.Stat(f.value); err != nil {
			return cfg, bad(f.field, fmt.Sprintf("names a file that cannot be read: %v", err))
		}
	}

	var pin string
	if fc.PKCS11.PINFile != "" {
		if fi, err := os.Stat(abs(fc.PKCS11.PINFile)); err == nil && fi.Mode().Perm()&0o007 != 0 {
			return cfg, bad("pkcs11.pin_file", fmt.Sprintf("is open to other users (mode %04o): chmod o-rwx it (0600, or 0640 with the custos group)", fi.Mode().Perm()))
		}
		pb, err := os.ReadFile(abs(fc.PKCS11.PINFile))
		if err != nil {
			return cfg, bad("pkcs11.pin_file", fmt.Sprintf("cannot be read: %v", err))
		}
		pin = strings.TrimRight(string(pb), "\r\n")
		if pin == "" {
			return cfg, bad("pkcs11.pin_file", "names an empty file")
		}
	} else if pin = getenv(PINEnv); pin == "" {
		return cfg, bad("pkcs11.pin_file", "is empty and "+PINEnv+" is not set: give the PKCS#11 user PIN one way or the other")
	}

	var level slog.Level
	if fc.Log.Level != "" {
		if err := level.UnmarshalText([]byte(fc.Log.Level)); err != nil {
			return cfg, bad("log.level", "must be debug, info, warn or error")
		}
	}
	var jsonLog bool
	switch fc.Log.Format {
	case "", "text":
	case "json":
		jsonLog = true
	default:
		return cfg, bad("log.format", `must be "text" or "json"`)
	}

	officers, err := loadOfficers(fc.Officers, fc.Quorum, abs, bad)
	if err != nil {
		return cfg, err
	}
	if fc.Genesis != "" {
		if len(fc.Officers) > 0 || fc.Profile != "" || fc.ClientAuthorities != "" {
			return cfg, bad("genesis", "names the officers, quorum, profile and client authorities itself: leave officers, quorum, profile and client_authorities out")
		}
		f, err := governance.ReadFile(abs(fc.Genesis))
		if err != nil {
			return cfg, bad("genesis", err.Error())
		}
		ss := f.Signed()
		// Its signatures, not its expiry: a node initialised while it was
		// valid ignores it afterwards (InitCluster checks the expiry).
		at := time.Now()
		if st, err := governance.Parse(f.Statement); err == nil && at.Unix() > st.GetNotAfterUnix() {
			at = time.Unix(st.GetNotAfterUnix(), 0)
		}
		if _, _, err := governance.VerifyGenesis(ss, at); err != nil {
			return cfg, bad("genesis", "is not an officer-signed genesis that holds: "+err.Error())
		}
		cfg.Genesis = ss
	}
	seen := map[string]int{}
	for i, a := range fc.Auditors {
		field := fmt.Sprintf("auditors[%d]", i)
		if strings.TrimSpace(a) == "" || a != strings.TrimSpace(a) {
			return cfg, bad(field, "must be a client certificate common name (not empty, no surrounding spaces)")
		}
		if j, dup := seen[a]; dup {
			return cfg, bad(field, fmt.Sprintf("repeats auditors[%d]", j))
		}
		seen[a] = i
	}
	var cpInterval time.Duration
	if fc.CheckpointInterval != "" {
		if cpInterval, err = time.ParseDuration(fc.CheckpointInterval); err != nil || cpInterval < time.Second {
			return cfg, bad("checkpoint_interval", `must be a duration of at least 1s, e.g. "30s" or "5m"`)
		}
	}

	ids := map[string]int{fc.ID: -1}
	for i, p := range fc.Peers {
		field := func(f string) string { return fmt.Sprintf("peers[%d].%s", i, f) }
		if strings.TrimSpace(p.ID) == "" || strings.ContainsAny(p.ID, " \t:") {
			return cfg, bad(field("id"), "must be a node id (no spaces or colons)")
		}
		if j, dup := ids[p.ID]; dup {
			if j < 0 {
				return cfg, bad(field("id"), "is this node's own id")
			}
			return cfg, bad(field("id"), fmt.Sprintf("repeats peers[%d]", j))
		}
		ids[p.ID] = i
		if p.RaftAddr == "" || p.APIAddr == "" {
			return cfg, bad(field("raft_addr"), "and api_addr are required (host:port)")
		}
		cfg.Peers = append(cfg.Peers, node.Peer{ID: p.ID, RaftAddr: p.RaftAddr, APIAddr: p.APIAddr})
	}
	if fc.Join && fc.Bootstrap {
		return cfg, bad("join", "and bootstrap exclude each other: one node bootstraps, the others join")
	}
	// Raft over mutual TLS is on by default in cluster configurations
	// (peers or join), off for a single node unless asked for.
	cfg.RaftTLS = len(fc.Peers) > 0 || fc.Join
	if fc.RaftTLS != nil {
		cfg.RaftTLS = *fc.RaftTLS
	}
	if !cfg.RaftTLS && (len(fc.Peers) > 0 || fc.Join) {
		return cfg, bad("raft_tls", "cannot be false in a cluster (peers or join): Raft traffic runs over mutual TLS")
	}
	for i, o := range fc.Operators {
		if strings.TrimSpace(o) == "" || o != strings.TrimSpace(o) {
			return cfg, bad(fmt.Sprintf("operators[%d]", i), "must be a client certificate common name")
		}
	}
	if fc.RaftAdvertise != "" {
		if h, p, err := net.SplitHostPort(fc.RaftAdvertise); err != nil || h == "" || p == "" || p == "0" {
			return cfg, bad("raft_advertise", "must be host:port with a fixed port, e.g. 10.0.0.5:7401")
		}
		cfg.RaftAdvertise = fc.RaftAdvertise
	}
	if fc.MetricsListen != "" {
		if _, _, err := net.SplitHostPort(fc.MetricsListen); err != nil {
			return cfg, bad("metrics_listen", "must be host:port, e.g. 127.0.0.1:7490")
		}
		cfg.MetricsListen = fc.MetricsListen
	}
	if fc.XKS != nil {
		if cfg.XKS, err = loadXKS(fc.XKS, abs, getenv, bad); err != nil {
			return cfg, err
		}
	}
	if c := fc.Console; c != nil {
		if _, _, err := net.SplitHostPort(c.Listen); err != nil {
			return cfg, bad("console.listen", "must be host:port, e.g. 127.0.0.1:8444")
		}
		if c.RPID == "" {
			return cfg, bad("console.rp_id", "is required: the host name officers open the console at (WebAuthn relying party id)")
		}
		if (c.Cert == "") != (c.Key == "") {
			return cfg, bad("console.cert", "console.cert and console.key go together (both absent: the node's tls.cert and tls.key)")
		}
		cc := &node.ConsoleConfig{Listen: c.Listen, RPID: c.RPID, Origins: c.Origins, RequireUserVerification: c.RequireUserVerification}
		if c.Cert != "" {
			cc.CertFile, cc.KeyFile = abs(c.Cert), abs(c.Key)
		}
		cfg.Console = cc
	}
	cfg.Join, cfg.ClusterID, cfg.AddPeers, cfg.Operators = fc.Join, fc.ClusterID, fc.AddPeers, fc.Operators
	cfg.ID = fc.ID
	cfg.Officers, cfg.Quorum = officers, fc.Quorum
	if fc.Profile != "" && fc.Profile != kms.ProfileDevelopment {
		return cfg, bad("profile", fmt.Sprintf("%q is not a profile: \"development\" or leave it out (production)", fc.Profile))
	}
	cfg.Profile = fc.Profile
	if fc.ClientAuthorities != "" {
		if cfg.ClientAuthorities, err = pki.LoadCACerts(abs(fc.ClientAuthorities)); err != nil {
			return cfg, bad("client_authorities", err.Error())
		}
	}
	cfg.Auditors = fc.Auditors
	cfg.CheckpointEvery = fc.CheckpointEvery
	cfg.CheckpointInterval = cpInterval
	if fc.MaxStreamsPerPrincipal < 0 || fc.MaxStreamsPerPrincipal > 10000 {
		return cfg, bad("max_streams_per_principal", "must be between 1 and 10000 (0 or absent: the default)")
	}
	cfg.MaxStreamsPerPrincipal = fc.MaxStreamsPerPrincipal
	if fc.MaxDecisionsPerSecond < 0 || fc.MaxDecisionsPerSecond > 1e7 {
		return cfg, bad("max_decisions_per_second_per_principal", "must be between 1 and 10000000 (0 or absent: the default)")
	}
	if fc.MaxRefusalsPerSecond < 0 || fc.MaxRefusalsPerSecond > 1e7 {
		return cfg, bad("max_refusals_per_second_per_principal", "must be between 1 and 10000000 (0 or absent: the default)")
	}
	cfg.DecisionsPerSecond, cfg.RefusalsPerSecond = fc.MaxDecisionsPerSecond, fc.MaxRefusalsPerSecond
	cfg.DataDir = abs(fc.DataDir)
	cfg.Listen = fc.Listen
	cfg.RaftAddr = fc.RaftAddr
	cfg.Bootstrap = fc.Bootstrap
	cfg.PKCS11.Module = abs(fc.PKCS11.Module)
	cfg.PKCS11.TokenLabel = fc.PKCS11.TokenLabel
	cfg.PKCS11.PIN = pin
	cfg.TLS.CA = abs(fc.TLS.CA)
	cfg.TLS.Cert = abs(fc.TLS.Cert)
	cfg.TLS.Key = abs(fc.TLS.Key)
	cfg.Logger = newLogger(os.Stderr, level, jsonLog)
	return cfg, nil
}

// loadOfficers reads the officers' public keys and checks the set: unique
// names and keys, and 1 <= quorum <= number of officers. No officers (and no
// quorum) is allowed: a node of an initialised cluster needs none.
func loadOfficers(fos []fileOfficer, quorum uint32, abs func(string) string, bad func(field, why string) error) ([]*custosv1.Officer, error) {
	if len(fos) == 0 {
		if quorum != 0 {
			return nil, bad("quorum", "is set but officers is empty")
		}
		return nil, nil
	}
	var out []*custosv1.Officer
	names := map[string]int{}
	keys := map[string]int{}
	for i, fo := range fos {
		field := func(f string) string { return fmt.Sprintf("officers[%d].%s", i, f) }
		if strings.TrimSpace(fo.Name) == "" {
			return nil, bad(field("name"), "is required")
		}
		if j, dup := names[fo.Name]; dup {
			return nil, bad(field("name"), fmt.Sprintf("repeats officer %q of officers[%d]", fo.Name, j))
		}
		names[fo.Name] = i
		if strings.TrimSpace(fo.PublicKeyFile) == "" {
			return nil, bad(field("public_key_file"), "is required")
		}
		b, err := os.ReadFile(abs(fo.PublicKeyFile))
		if err != nil {
			return nil, bad(field("public_key_file"), fmt.Sprintf("names a file that cannot be read: %v", err))
		}
		pub, err := governance.ParsePublicKeyPEM(b)
		if err != nil {
			return nil, bad(field("public_key_file"), fmt.Sprintf("does not hold a PEM ECDSA P-256 public key: %v", err))
		}
		der := governance.MarshalPublicKey(pub)
		if j, dup := keys[string(der)]; dup {
			return nil, bad(field("public_key_file"), fmt.Sprintf("holds the same key as officers[%d]", j))
		}
		keys[string(der)] = i
		out = append(out, &custosv1.Officer{Name: fo.Name, PublicKey: der})
	}
	if quorum < 1 || int(quorum) > len(out) {
		return nil, bad("quorum", fmt.Sprintf("must be between 1 and the number of officers (%d)", len(out)))
	}
	if _, err := governance.NewOfficerSet(out, quorum); err != nil {
		return nil, bad("officers", err.Error())
	}
	return out, nil
}

// loadXKS checks the xks section and reads the credentials' secrets.
func loadXKS(fx *fileXKS, abs func(string) string, getenv func(string) string, bad func(field, why string) error) (*node.XKSConfig, error) {
	if fx.Listen == "" {
		return nil, bad("xks.listen", "is required (host:port, e.g. :8443)")
	}
	if _, _, err := net.SplitHostPort(fx.Listen); err != nil {
		return nil, bad("xks.listen", "must be host:port, e.g. :8443")
	}
	var deadline time.Duration
	if fx.Deadline != "" {
		d, err := time.ParseDuration(fx.Deadline)
		if err != nil || d <= 0 {
			return nil, bad("xks.deadline", "must be a positive duration, e.g. 200ms")
		}
		deadline = d
	}
	files := []struct{ field, value string }{{"xks.cert", fx.Cert}, {"xks.key", fx.Key}}
	if fx.ClientCA != "" {
		files = append(files, struct{ field, value string }{"xks.client_ca", fx.ClientCA})
	}
	for _, f := range files {
		if strings.TrimSpace(f.value) == "" {
			return nil, bad(f.field, "is required")
		}
		if _, err := os.Stat(abs(f.value)); err != nil {
			return nil, bad(f.field, fmt.Sprintf("names a file that cannot be read: %v", err))
		}
	}
	switch {
	case fx.ClientCA != "" && len(fx.AllowedCNs) == 0:
		return nil, bad("xks.allowed_cns", "is required with xks.client_ca (for AWS: cks.kms.<region>.amazonaws.com)")
	case fx.ClientCA == "" && len(fx.AllowedCNs) > 0:
		return nil, bad("xks.client_ca", "is required with xks.allowed_cns")
	case len(fx.Prefixes) == 0:
		return nil, bad("xks.prefixes", "needs at least one key store")
	}
	for i, cn := range fx.AllowedCNs {
		if strings.TrimSpace(cn) == "" {
			return nil, bad(fmt.Sprintf("xks.allowed_cns[%d]", i), "is empty")
		}
	}
	out := &node.XKSConfig{Listen: fx.Listen, CertFile: abs(fx.Cert), KeyFile: abs(fx.Key), AllowedCNs: fx.AllowedCNs, EKMID: fx.EKMID,
		Deadline: deadline}
	if fx.ClientCA != "" {
		out.ClientCAFile = abs(fx.ClientCA)
	}
	keyIDs := map[string]string{}
	for i, fp := range fx.Prefixes {
		pf := func(f string) string { return fmt.Sprintf("xks.prefixes[%d].%s", i, f) }
		if strings.TrimSpace(fp.Region) == "" {
			return nil, bad(pf("region"), "is required (the AWS region of the external key store)")
		}
		if fp.DefaultReason != "" && !validReason(fp.DefaultReason) {
			return nil, bad(pf("default_reason"), "is not a justification reason (e.g. CUSTOMER_WORKFLOW)")
		}
		for k, v := range fp.ReasonMap {
			if !strings.HasPrefix(k, "kmsViaService=") && !strings.HasPrefix(k, "kmsOperation=") {
				return nil, bad(pf("reason_map"), fmt.Sprintf("key %q must start with kmsViaService= or kmsOperation=", k))
			}
			if !validReason(v) {
				return nil, bad(pf("reason_map"), fmt.Sprintf("value %q for %q is not a justification reason", v, k))
			}
		}
		if len(fp.Credentials) == 0 {
			return nil, bad(pf("credentials"), "needs at least one credential")
		}
		p := xks.PrefixConfig{Path: fp.Path, Region: fp.Region, DefaultReason: fp.DefaultReason, ReasonMap: fp.ReasonMap}
		for j, fc := range fp.Credentials {
			cf := func(f string) string { return fmt.Sprintf("xks.prefixes[%d].credentials[%d].%s", i, j, f) }
			if fc.Secret != nil {
				return nil, bad(cf("secret"), "is not allowed: secrets stay out of the configuration; use secret_file or secret_env")
			}
			if strings.TrimSpace(fc.AccessKeyID) == "" {
				return nil, bad(cf("access_key_id"), "is required")
			}
			if where, dup := keyIDs[fc.AccessKeyID]; dup {
				return nil, bad(cf("access_key_id"), "repeats "+where)
			}
			keyIDs[fc.AccessKeyID] = cf("access_key_id")
			if strings.TrimSpace(fc.Principal) == "" {
				return nil, bad(cf("principal"), "is required (the custos principal key policies name)")
			}
			var secret string
			switch {
			case fc.SecretFile != "" && fc.SecretEnv != "":
				return nil, bad(cf("secret_file"), "and secret_env exclude each other")
			case fc.SecretFile != "":
				b, err := os.ReadFile(abs(fc.SecretFile))
				if err != nil {
					return nil, bad(cf("secret_file"), fmt.Sprintf("cannot be read: %v", err))
				}
				secret = strings.TrimRight(string(b), "\r\n")
			case fc.SecretEnv != "":
				if secret = getenv(fc.SecretEnv); secret == "" {
					return nil, bad(cf("secret_env"), fmt.Sprintf("names %s, which is not set", fc.SecretEnv))
				}
			default:
				return nil, bad(cf("secret_file"), "or secret_env is required")
			}
			if len(secret) < xksMinSecret {
				return nil, bad(cf("secret_file"), fmt.Sprintf("holds a secret shorter than %d characters (AWS KMS requires 43 to 64)", xksMinSecret))
			}
			p.Credentials = append(p.Credentials, xks.Credential{AccessKeyID: fc.AccessKeyID, Secret: secret, Principal: fc.Principal})
		}
		out.Prefixes = append(out.Prefixes, p)
	}
	return out, nil
}

// validReason reports whether s names a justification reason, with or
// without its REASON_ prefix.
func validReason(s string) bool {
	if !strings.HasPrefix(s, "REASON_") {
		s = "REASON_" + s
	}
	v, ok := custosv1.Reason_value[s]
	return ok && v != 0
}
