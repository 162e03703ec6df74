package main

import (
	"bufio"
	"bytes"
	"context"
	"crypto/ecdsa"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials"

	"github.com/custos-kms/custos/internal/pki"
	"github.com/custos-kms/custos/kms/governance"
	custosv1 "github.com/custos-kms/custos/proto/custos/v1"
)

func TestLoadConfigErrors(t *testing.T) {
	dir := t.TempDir()
	if err := pki.CreateDevPKI(filepath.Join(dir, "pki"), nil); err != nil {
		t.Fatal(err)
	}
	module := filepath.Join(dir, "module.so")
	if err := os.WriteFile(module, nil, 0o644); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(dir, "pin"), []byte("1234\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	var officerKeys []*ecdsa.PrivateKey
	for _, name := range []string{"alice", "bob"} {
		k, err := governance.GenerateKey()
		if err != nil {
			t.Fatal(err)
		}
		officerKeys = append(officerKeys, k)
		if err := os.WriteFile(filepath.Join(dir, name+".pub.pem"), governance.PublicKeyPEM(&k.PublicKey), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	good := `{"id":"n1","data_dir":"data","listen":"127.0.0.1:7400",
		"pkcs11":{"module":"module.so","token_label":"t","pin_file":"pin"},
		"tls":{"ca":"pki/ca.pem","cert":"pki/server.pem","key":"pki/server-key.pem"}}`
	noenv := func(string) string { return "" }
	write := func(s string) string {
		p := filepath.Join(dir, "custosd.json")
		if err := os.WriteFile(p, []byte(s), 0o600); err != nil {
			t.Fatal(err)
		}
		return p
	}

	cfg, err := loadConfig(write(good), noenv)
	if err != nil {
		t.Fatal(err)
	}
	if cfg.PKCS11.PIN != "1234" || cfg.DataDir != filepath.Join(dir, "data") || cfg.TLS.CA != filepath.Join(dir, "pki/ca.pem") {
		t.Errorf("cfg = %+v", cfg)
	}
	if len(cfg.Officers) != 0 || cfg.Quorum != 0 {
		t.Errorf("no officers configured: cfg.Officers = %v, Quorum = %d", cfg.Officers, cfg.Quorum)
	}

	withCAs := strings.Replace(good, `"id":"n1",`, `"id":"n1","client_authorities":"pki/ca.pem",`, 1)
	if cfg, err = loadConfig(write(withCAs), noenv); err != nil || len(cfg.ClientAuthorities) != 1 {
		t.Fatalf("client_authorities: %d certificates, %v; want the one CA", len(cfg.ClientAuthorities), err)
	}

	withAudit := strings.Replace(good, `"id":"n1",`, `"id":"n1","auditors":["carol-audit"],"checkpoint_every":50,"checkpoint_interval":"2m",`, 1)
	cfg, err = loadConfig(write(withAudit), noenv)
	if err != nil {
		t.Fatal(err)
	}
	if len(cfg.Auditors) != 1 || cfg.Auditors[0] != "carol-audit" || cfg.CheckpointEvery != 50 || cfg.CheckpointInterval != 2*time.Minute {
		t.Errorf("auditors %v, checkpoint every %d / %v", cfg.Auditors, cfg.CheckpointEvery, cfg.CheckpointInterval)
	}

	officers := `"officers":[{"name":"alice","public_key_file":"alice.pub.pem"},{"name":"bob","public_key_file":"` +
		filepath.Join(dir, "bob.pub.pem") + `"}],"quorum":2,`
	withOfficers := strings.Replace(good, `"id":"n1",`, `"id":"n1",`+officers, 1)
	cfg, err = loadConfig(write(withOfficers), noenv)
	if err != nil {
		t.Fatal(err)
	}
	if len(cfg.Officers) != 2 || cfg.Quorum != 2 || cfg.Officers[0].GetName() != "alice" || cfg.Officers[1].GetName() != "bob" {
		t.Fatalf("officers = %v, quorum %d", cfg.Officers, cfg.Quorum)
	}
	for i, o := range cfg.Officers {
		if !bytes.Equal(o.GetPublicKey(), governance.MarshalPublicKey(&officerKeys[i].PublicKey)) {
			t.Errorf("officer %s: public key differs from the file", o.GetName())
		}
	}
	if err := os.WriteFile(filepath.Join(dir, "junk.pem"), []byte("not a key"), 0o644); err != nil {
		t.Fatal(err)
	}
	officerCase := func(from, to string) string { return strings.Replace(withOfficers, from, to, 1) }

	tests := []struct {
		name, json, want string
		env              string
	}{
		{"unknown field", strings.Replace(good, `"id"`, `"idd"`, 1), `"idd"`, ""},
		{"missing id", strings.Replace(good, `"id":"n1",`, ``, 1), `"id" is required`, ""},
		{"wrong type", strings.Replace(good, `"listen":"127.0.0.1:7400"`, `"listen":7400`, 1), `"listen"`, ""},
		{"missing ca file", strings.Replace(good, `pki/ca.pem`, `pki/nope.pem`, 1), `"tls.ca"`, ""},
		{"no PIN", strings.Replace(good, `,"pin_file":"pin"`, ``, 1), `"pkcs11.pin_file"`, ""},
		{"bad log level", strings.Replace(good, `"id":"n1"`, `"id":"n1","log":{"level":"loud"}`, 1), `"log.level"`, ""},
		{"officer without a name", officerCase(`"name":"alice"`, `"name":""`), `"officers[0].name" is required`, ""},
		{"officer named twice", officerCase(`"name":"bob"`, `"name":"alice"`), `"officers[1].name"`, ""},
		{"officer without a key file", officerCase(`,"public_key_file":"alice.pub.pem"`, ``), `"officers[0].public_key_file" is required`, ""},
		{"officer key file missing", officerCase(`alice.pub.pem`, `nope.pem`), `"officers[0].public_key_file"`, ""},
		{"officer key file not a key", officerCase(`alice.pub.pem`, `junk.pem`), `"officers[0].public_key_file"`, ""},
		{"two officers with one key", officerCase(`bob.pub.pem`, `alice.pub.pem`), `"officers[1].public_key_file"`, ""},
		{"unknown officer field", officerCase(`"name":"alice"`, `"name":"alice","key":"x"`), `"key"`, ""},
		{"no quorum", officerCase(`"quorum":2,`, ``), `"quorum"`, ""},
		{"quorum above the officers", officerCase(`"quorum":2`, `"quorum":3`), `"quorum"`, ""},
		{"quorum of the wrong type", officerCase(`"quorum":2`, `"quorum":"two"`), `"quorum"`, ""},
		{"quorum without officers", strings.Replace(good, `"id":"n1",`, `"id":"n1","quorum":1,`, 1), `"quorum"`, ""},
		{"empty auditor", strings.Replace(good, `"id":"n1",`, `"id":"n1","auditors":["ok",""],`, 1), `"auditors[1]"`, ""},
		{"auditor twice", strings.Replace(good, `"id":"n1",`, `"id":"n1","auditors":["a","a"],`, 1), `"auditors[1]" repeats`, ""},
		{"bad checkpoint interval", strings.Replace(good, `"id":"n1",`, `"id":"n1","checkpoint_interval":"soon",`, 1), `"checkpoint_interval"`, ""},
		{"tiny checkpoint interval", strings.Replace(good, `"id":"n1",`, `"id":"n1","checkpoint_interval":"10ms",`, 1), `"checkpoint_interval"`, ""},
		{"negative checkpoint_every", strings.Replace(good, `"id":"n1",`, `"id":"n1","checkpoint_every":-1,`, 1), `"checkpoint_every"`, ""},
		{"client authorities not certificates", strings.Replace(good, `"id":"n1",`, `"id":"n1","client_authorities":"junk.pem",`, 1), `"client_authorities"`, ""},
		{"client authorities: a leaf only", strings.Replace(good, `"id":"n1",`, `"id":"n1","client_authorities":"pki/server.pem",`, 1), `no CA certificate`, ""},
	}
	// A PIN file other users may read is refused (the group may: 0640).
	openPIN := filepath.Join(dir, "open.pin")
	if err := os.WriteFile(openPIN, []byte("1234\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	if err := os.Chmod(openPIN, 0o644); err != nil {
		t.Fatal(err)
	}
	tests = append(tests, struct {
		name, json, want string
		env              string
	}{"world-readable PIN file", strings.Replace(good, `"pin_file":"pin"`, `"pin_file":"open.pin"`, 1), `"pkcs11.pin_file" is open to other users (mode 0644)`, ""})
	for _, tt := range tests {
		_, err := loadConfig(write(tt.json), noenv)
		if err == nil || !strings.Contains(err.Error(), tt.want) {
			t.Errorf("%s: err = %v, want it to contain %s", tt.name, err, tt.want)
		}
	}

	// The PIN may come from the environment; it never appears in errors.
	cfg, err = loadConfig(write(strings.Replace(good, `,"pin_file":"pin"`, ``, 1)),
		func(k string) string {
			if k == PINEnv {
				return "5678"
			}
			return ""
		})
	if err != nil || cfg.PKCS11.PIN != "5678" {
		t.Errorf("PIN from env: err = %v, PIN ok = %v", err, cfg.PKCS11.PIN == "5678")
	}
}

func TestRunUsage(t *testing.T) {
	var out, errb bytes.Buffer
	if code := run([]string{"version"}, &out, &errb); code != 0 || !strings.HasPrefix(out.String(), "custosd ") {
		t.Errorf("version: code %d, out %q", code, out.String())
	}
	if code := run([]string{"dev", "--help"}, &out, &errb); code != 0 || !strings.Contains(errb.String(), "--data-dir") {
		t.Errorf("dev --help: code %d, stderr %q", code, errb.String())
	}
	if code := run([]string{"bogus"}, &out, &errb); code != 2 {
		t.Errorf("bogus: code %d, want 2", code)
	}
	errb.Reset()
	if code := run([]string{"serve", "--config", filepath.Join(t.TempDir(), "none.json")}, &out, &errb); code != 1 ||
		strings.Count(errb.String(), "\n") != 1 {
		t.Errorf("serve with a missing config: code %d, stderr %q; want 1 and one line", code, errb.String())
	}
	errb.Reset()
	if code := run([]string{"restore", "--config", filepath.Join(t.TempDir(), "none.json")}, &out, &errb); code != 2 ||
		!strings.Contains(errb.String(), "--snapshot FILE") {
		t.Errorf("restore without --snapshot: code %d, stderr %q; want 2", code, errb.String())
	}
	errb.Reset()
	if code := run([]string{"restore", "--config", filepath.Join(t.TempDir(), "none.json"), "--snapshot", "x"}, &out, &errb); code != 1 ||
		strings.Count(errb.String(), "\n") != 1 {
		t.Errorf("restore with a missing config: code %d, stderr %q; want 1 and one line", code, errb.String())
	}
}

// readEnv parses client.env.
func readEnv(t *testing.T, path string) map[string]string {
	t.Helper()
	f, err := os.Open(path)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	env := map[string]string{}
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		k, v, ok := strings.Cut(strings.TrimPrefix(sc.Text(), "export "), "=")
		if ok && !strings.HasPrefix(k, "#") {
			env[k] = strings.Trim(v, "'")
		}
	}
	return env
}

// startDev runs `custosd dev` in dir until the returned stop is called.
func startDev(t *testing.T, dir string) (env map[string]string, stop func()) {
	t.Helper()
	envFile := filepath.Join(dir, "client.env")
	_ = os.Remove(envFile)
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	var out, errb syncBuffer
	go func() { done <- cmdDev(ctx, []string{"--data-dir", dir, "--listen", "127.0.0.1:0"}, &out, &errb) }()
	deadline := time.Now().Add(60 * time.Second)
	for {
		if _, err := os.Stat(envFile); err == nil {
			break
		}
		select {
		case err := <-done:
			cancel()
			t.Fatalf("custosd dev exited: %v\n%s", err, errb.String())
		default:
		}
		if time.Now().After(deadline) {
			cancel()
			t.Fatalf("custosd dev did not write client.env\n%s", errb.String())
		}
		time.Sleep(20 * time.Millisecond)
	}
	return readEnv(t, envFile), func() {
		cancel()
		if err := <-done; err != nil {
			t.Errorf("custosd dev: %v", err)
		}
	}
}

func TestDevRestartKeepsKeys(t *testing.T) {
	dir := filepath.Join(t.TempDir(), "dev")
	env, stop := startDev(t, dir)
	for _, k := range []string{"CUSTOS_ADDR", "CUSTOS_CA", "CUSTOS_CERT", "CUSTOS_KEY"} {
		if env[k] == "" || (k != "CUSTOS_ADDR" && !filepath.IsAbs(env[k])) {
			t.Errorf("client.env: %s = %q", k, env[k])
		}
	}
	fi, err := os.Stat(filepath.Join(dir, "softhsm", "pins.json"))
	if err != nil || fi.Mode().Perm() != 0o600 {
		t.Errorf("pins.json: %v, mode %v", err, fi.Mode().Perm())
	}
	officerFile := filepath.Join(dir, "officers", "officer-1.pem")
	if env["CUSTOS_OFFICER_KEY"] != officerFile || env["CUSTOS_OFFICER_NAME"] != "officer-1" {
		t.Errorf("client.env: CUSTOS_OFFICER_KEY = %q, CUSTOS_OFFICER_NAME = %q; want %q, officer-1",
			env["CUSTOS_OFFICER_KEY"], env["CUSTOS_OFFICER_NAME"], officerFile)
	}
	fi, err = os.Stat(officerFile)
	if err != nil || fi.Mode().Perm() != 0o600 {
		t.Fatalf("officer key file: %v, mode %v", err, fi.Mode().Perm())
	}
	officerPEM, err := os.ReadFile(officerFile)
	if err != nil {
		t.Fatal(err)
	}
	conns := func(env map[string]string) (custosv1.KeyServiceClient, custosv1.GovernanceServiceClient) {
		cfg, err := pki.ClientTLSConfig(env["CUSTOS_CA"], env["CUSTOS_CERT"], env["CUSTOS_KEY"])
		if err != nil {
			t.Fatal(err)
		}
		cc, err := grpc.NewClient(env["CUSTOS_ADDR"], grpc.WithTransportCredentials(credentials.NewTLS(cfg)))
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { cc.Close() })
		return custosv1.NewKeyServiceClient(cc), custosv1.NewGovernanceServiceClient(cc)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	kc, gc := conns(env)
	if _, err := kc.CreateKey(ctx, &custosv1.CreateKeyRequest{Name: "payroll"}); err != nil {
		t.Fatal(err)
	}
	// The dev officer alone is the quorum: its key re-enables a key.
	disableEnable(ctx, t, kc, gc, env)
	stop()

	env, stop = startDev(t, dir)
	defer stop()
	kc, gc = conns(env)
	if _, err := kc.GetKey(ctx, &custosv1.GetKeyRequest{Name: "payroll"}); err != nil {
		t.Fatalf("GetKey after restart: %v", err)
	}
	if b, err := os.ReadFile(officerFile); err != nil || !bytes.Equal(b, officerPEM) {
		t.Errorf("officer key file changed across the restart (err %v)", err)
	}
	gov, err := gc.GetGovernance(ctx, &custosv1.GetGovernanceRequest{})
	if err != nil {
		t.Fatal(err)
	}
	if len(gov.GetOfficers()) != 1 || gov.GetOfficers()[0].GetName() != "officer-1" || gov.GetQuorum() != 1 {
		t.Errorf("governance = %v, want officer-1 alone, quorum 1", gov)
	}
	disableEnable(ctx, t, kc, gc, env)

	// The dev client is the dev node's auditor: it reads the signed
	// checkpoint keys of the ledger.
	cfg, err := pki.ClientTLSConfig(env["CUSTOS_CA"], env["CUSTOS_CERT"], env["CUSTOS_KEY"])
	if err != nil {
		t.Fatal(err)
	}
	cc, err := grpc.NewClient(env["CUSTOS_ADDR"], grpc.WithTransportCredentials(credentials.NewTLS(cfg)))
	if err != nil {
		t.Fatal(err)
	}
	defer cc.Close()
	cp, err := custosv1.NewAuditServiceClient(cc).GetCheckpoint(ctx, &custosv1.GetCheckpointRequest{})
	if err != nil || len(cp.GetPublicKeys()) == 0 || cp.GetHeadSeq() == 0 {
		t.Errorf("GetCheckpoint as the dev client: %v, %v", cp, err)
	}
}

// disableEnable disables key payroll and re-enables it with an EnableKey
// statement signed by the officer key client.env names.
func disableEnable(ctx context.Context, t *testing.T, kc custosv1.KeyServiceClient, gc custosv1.GovernanceServiceClient, env map[string]string) {
	t.Helper()
	if _, err := kc.SetKeyState(ctx, &custosv1.SetKeyStateRequest{Name: "payroll", State: custosv1.KeyState_KEY_STATE_DISABLED}); err != nil {
		t.Fatal(err)
	}
	gov, err := gc.GetGovernance(ctx, &custosv1.GetGovernanceRequest{})
	if err != nil {
		t.Fatal(err)
	}
	signer, err := governance.LoadKeyFile(env["CUSTOS_OFFICER_KEY"], nil)
	if err != nil {
		t.Fatal(err)
	}
	st, err := governance.NewStatement(gov.GetClusterId(), time.Hour, "dev test")
	if err != nil {
		t.Fatal(err)
	}
	st.Operation = &custosv1.Statement_EnableKey{EnableKey: &custosv1.EnableKey{Key: "payroll"}}
	b, err := governance.Marshal(st)
	if err != nil {
		t.Fatal(err)
	}
	sig, err := governance.Sign(signer, env["CUSTOS_OFFICER_NAME"], b)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := gc.Submit(ctx, &custosv1.SignedStatement{Statement: b, Signatures: []*custosv1.OfficerSignature{sig}}); err != nil {
		t.Fatalf("EnableKey signed by the dev officer: %v", err)
	}
	k, err := kc.GetKey(ctx, &custosv1.GetKeyRequest{Name: "payroll"})
	if err != nil || k.GetState() != custosv1.KeyState_KEY_STATE_ENABLED {
		t.Errorf("after EnableKey: %v, %v", k, err)
	}
}

// syncBuffer is a bytes.Buffer safe for one writer and one reader.
type syncBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (s *syncBuffer) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.Write(p)
}

func (s *syncBuffer) String() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.String()
}
