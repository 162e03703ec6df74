package main

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	custos "github.com/custos-kms/custos/clients/go"
	"github.com/custos-kms/custos/kms/governance"
	custosv1 "github.com/custos-kms/custos/proto/custos/v1"
)

func TestWantsDevCluster(t *testing.T) {
	for _, tt := range []struct {
		args []string
		want bool
	}{
		{nil, false},
		{[]string{"--data-dir", "x"}, false},
		{[]string{"--nodes", "3"}, true},
		{[]string{"-nodes=3"}, true},
		{[]string{"--data-dir", "x", "--nodes=3"}, true},
		{[]string{"--", "--nodes", "3"}, false},
		{[]string{"--nodesx", "3"}, false},
	} {
		if got := wantsDevCluster(tt.args); got != tt.want {
			t.Errorf("wantsDevCluster(%q) = %v, want %v", tt.args, got, tt.want)
		}
	}
}

func TestPrefixWriter(t *testing.T) {
	var b bytes.Buffer
	p := &prefixWriter{w: &b, prefix: "[node1] "}
	for _, s := range []string{"one\ntw", "o\n", "three"} {
		if _, err := p.Write([]byte(s)); err != nil {
			t.Fatal(err)
		}
	}
	p.flush()
	if want := "[node1] one\n[node1] two\n[node1] three\n"; b.String() != want {
		t.Errorf("got %q, want %q", b.String(), want)
	}
}

func TestDevClusterFlags(t *testing.T) {
	dir := t.TempDir()
	for _, args := range [][]string{
		{"dev", "--nodes", "1", "--data-dir", dir},
		{"dev", "--nodes", "10", "--data-dir", dir},
		{"dev", "--nodes", "3", "--base-port", "65530", "--data-dir", dir},
	} {
		var out, errb bytes.Buffer
		if code := run(args, &out, &errb); code != 2 {
			t.Errorf("%q: code %d, want 2 (stderr %q)", args, code, errb.String())
		}
	}
	var out, errb bytes.Buffer
	if code := run([]string{"dev", "--nodes", "3", "--help"}, &out, &errb); code != 0 || !strings.Contains(errb.String(), "--base-port") {
		t.Errorf("dev --nodes 3 --help: code %d, stderr %q", code, errb.String())
	}
	if code := run([]string{"dev", "--nodes", "3", "--base-port", "-1", "--data-dir", dir}, &out, &errb); code != 2 {
		t.Errorf("--base-port -1: code %d, want 2", code)
	}
	// A restart must keep the layout it was created with.
	l, fresh, err := clusterLoadLayout(dir, clusterLayout{Nodes: 3, BasePort: 7401}, false)
	if err != nil || !fresh {
		t.Fatalf("first start: %+v, fresh %v, %v", l, fresh, err)
	}
	if err := clusterSaveLayout(dir, l); err != nil {
		t.Fatal(err)
	}
	if l, fresh, err := clusterLoadLayout(dir, clusterLayout{Nodes: 3, BasePort: 9000}, false); err != nil || fresh || l.BasePort != 7401 {
		t.Errorf("restart without --base-port: %+v, fresh %v, %v; want base port 7401", l, fresh, err)
	}
	if _, _, err := clusterLoadLayout(dir, clusterLayout{Nodes: 3, BasePort: 9000}, true); err == nil {
		t.Error("restart with another --base-port: no error")
	}
	if _, _, err := clusterLoadLayout(dir, clusterLayout{Nodes: 5, BasePort: 7401}, false); err == nil {
		t.Error("restart with another --nodes: no error")
	}
	// --base-port 0: the ports picked at the first start are kept.
	eph := clusterLayout{Nodes: 3, APIPorts: []int{40001, 40002, 40003}, RaftPorts: []int{40011, 40012, 40013}}
	dir0 := t.TempDir()
	if err := clusterSaveLayout(dir0, eph); err != nil {
		t.Fatal(err)
	}
	l, fresh, err = clusterLoadLayout(dir0, clusterLayout{Nodes: 3}, true)
	if err != nil || fresh || l.ephemeral() || l.apiAddr(1) != "127.0.0.1:40002" || l.raftAddr(2) != "127.0.0.1:40013" {
		t.Errorf("restart of a --base-port 0 cluster: %+v, fresh %v, %v", l, fresh, err)
	}
	if err := clusterSaveLayout(dir0, clusterLayout{Nodes: 3, APIPorts: []int{40001}}); err != nil {
		t.Fatal(err)
	}
	if _, _, err := clusterLoadLayout(dir0, clusterLayout{Nodes: 3}, false); err == nil || !strings.Contains(err.Error(), "is damaged") {
		t.Errorf("base port 0 without every port: %v", err)
	}
}

// TestClusterListen: every address is bound before any node starts; with
// --base-port 0 the ports the system picked are recorded, and a busy
// address is refused with the node and the address named.
func TestClusterListen(t *testing.T) {
	layout := clusterLayout{Nodes: 3}
	lis, err := clusterListen(&layout)
	if err != nil {
		t.Fatal(err)
	}
	defer func() {
		for _, l := range lis {
			l.close()
		}
	}()
	if len(layout.APIPorts) != 3 || len(layout.RaftPorts) != 3 {
		t.Fatalf("layout %+v", layout)
	}
	for i, l := range lis {
		if l.api.Addr().String() != layout.apiAddr(i) || l.raft.Addr().String() != layout.raftAddr(i) {
			t.Errorf("node%d: listening on %s and %s, layout says %s and %s", i+1, l.api.Addr(), l.raft.Addr(), layout.apiAddr(i), layout.raftAddr(i))
		}
	}
	// The same layout again: node1's gRPC port is held by lis.
	again := layout
	if _, err := clusterListen(&again); err == nil || !strings.Contains(err.Error(), "node1 gRPC address "+layout.apiAddr(0)) {
		t.Errorf("busy address: %v", err)
	}
}

// TestDevCluster runs `custosd dev --nodes 3` as a real process with three
// `custosd serve` children and uses the cluster through clients/go.
func TestDevCluster(t *testing.T) {
	tmp := t.TempDir()
	bin := buildCustosd(t, tmp)

	dir := filepath.Join(tmp, "cluster")
	logFile, err := os.Create(filepath.Join(tmp, "custosd.log"))
	if err != nil {
		t.Fatal(err)
	}
	defer logFile.Close()
	parent := exec.Command(bin, "dev", "--nodes", "3", "--data-dir", dir, "--base-port", "0")
	parent.Stdout, parent.Stderr = logFile, logFile
	if err := parent.Start(); err != nil {
		t.Fatal(err)
	}
	exited := make(chan error, 1)
	go func() { exited <- parent.Wait() }()
	logText := func() string { b, _ := os.ReadFile(logFile.Name()); return string(b) }
	startLines := regexp.MustCompile(`custosd dev: (node\d) started, pid (\d+) \(gRPC (\S+), Raft (\S+)\)`)
	childPIDs := func() map[string]int {
		pids := map[string]int{}
		for _, m := range startLines.FindAllStringSubmatch(logText(), -1) {
			pids[m[1]], _ = strconv.Atoi(m[2])
		}
		return pids
	}
	parentDone := false
	t.Cleanup(func() {
		// On failure, leave no process behind.
		if !parentDone {
			_ = parent.Process.Kill()
			<-exited
		}
		for _, pid := range childPIDs() {
			_ = syscall.Kill(pid, syscall.SIGKILL)
		}
		if t.Failed() {
			t.Logf("custosd dev output:\n%s", logText())
		}
	})

	envFile := filepath.Join(dir, "client.env")
	deadline := time.Now().Add(45 * time.Second)
	for {
		if _, err := os.Stat(envFile); err == nil {
			break
		}
		select {
		case err := <-exited:
			parentDone = true
			t.Fatalf("custosd dev exited before writing client.env: %v", err)
		default:
		}
		if time.Now().After(deadline) {
			t.Fatal("custosd dev did not write client.env within 45s")
		}
		time.Sleep(50 * time.Millisecond)
	}
	pids := childPIDs()
	if len(pids) != 3 {
		t.Fatalf("child pids %v, want node1..node3", pids)
	}

	env := readEnv(t, envFile)
	// The addresses the parent bound (--base-port 0) and printed.
	var addrs []string
	for _, m := range startLines.FindAllStringSubmatch(logText(), -1) {
		addrs = append(addrs, m[3])
		if _, p, _ := net.SplitHostPort(m[3]); p == "0" || p == "" {
			t.Errorf("%s: gRPC address %s", m[1], m[3])
		}
		if _, p, _ := net.SplitHostPort(m[4]); p == "0" || p == "" {
			t.Errorf("%s: Raft address %s", m[1], m[4])
		}
	}
	if got := env["CUSTOS_ADDR"]; got != strings.Join(addrs, ",") {
		t.Errorf("CUSTOS_ADDR = %q, want %q", got, strings.Join(addrs, ","))
	}
	if env["CUSTOS_OFFICER_KEY"] != filepath.Join(dir, "officers", "officer-1.pem") || env["CUSTOS_OFFICER_NAME"] != "officer-1" {
		t.Errorf("officer in client.env: %q, %q", env["CUSTOS_OFFICER_KEY"], env["CUSTOS_OFFICER_NAME"])
	}
	for i := 1; i <= 3; i++ {
		for _, f := range []string{"softhsm/pins.json", "softhsm/user.pin", "config.json"} {
			p := filepath.Join(dir, fmt.Sprintf("node%d", i), f)
			if fi, err := os.Stat(p); err != nil || fi.Mode().Perm() != 0o600 {
				t.Errorf("%s: %v (want mode 0600)", p, err)
			}
		}
	}

	// The client configuration as ConfigFromEnv builds it from client.env.
	cfg := custos.Config{Addrs: custos.SplitAddrs(env["CUSTOS_ADDR"]), CAFile: env["CUSTOS_CA"], CertFile: env["CUSTOS_CERT"], KeyFile: env["CUSTOS_KEY"],
		CallTimeout: 15 * time.Second}
	dial := func(addrs ...string) *custos.Client {
		c := cfg
		if len(addrs) > 0 {
			c.Addrs = addrs
		}
		cl, err := custos.Dial(context.Background(), c)
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { cl.Close() })
		return cl
	}
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()

	all := dial()
	sts, errs := all.ClusterStatusAll(ctx)
	var leader, clusterID string
	for i, st := range sts {
		if errs[i] != nil {
			t.Fatalf("status from %s: %v", addrs[i], errs[i])
		}
		if want := fmt.Sprintf("node%d", i+1); st.GetNodeId() != want {
			t.Errorf("%s answers as %q, want %q", addrs[i], st.GetNodeId(), want)
		}
		leaders := 0
		for _, s := range st.GetServers() {
			if s.GetSuffrage() != "VOTER" {
				t.Errorf("%s: member %s is %s", st.GetNodeId(), s.GetId(), s.GetSuffrage())
			}
			if s.GetLeader() {
				leaders++
			}
		}
		if len(st.GetServers()) != 3 || leaders != 1 {
			t.Errorf("%s sees %d members with %d leaders: %v", st.GetNodeId(), len(st.GetServers()), leaders, st.GetServers())
		}
		if i == 0 {
			leader, clusterID = st.GetLeaderId(), st.GetClusterId()
		} else if st.GetLeaderId() != leader || st.GetClusterId() != clusterID {
			t.Errorf("%s: leader %q cluster %q; node1 says %q, %q", st.GetNodeId(), st.GetLeaderId(), st.GetClusterId(), leader, clusterID)
		}
		// client.env is written once every node is a custodian.
		if !st.GetHasDomainKey() {
			t.Errorf("%s holds no domain key: %s", st.GetNodeId(), st.GetHsmDetail())
		}
		if st.GetProfile() != "development" {
			t.Errorf("%s: profile %q", st.GetNodeId(), st.GetProfile())
		}
	}

	// Key crypto through node1, which holds the domain key.
	node1 := dial(addrs[0])
	if _, err := node1.CreateKey(ctx, "payroll", ""); err != nil {
		t.Fatal(err)
	}
	ct, err := node1.Encrypt(ctx, "payroll", []byte("hello cluster"), map[string]string{"dept": "hr"})
	if err != nil {
		t.Fatal(err)
	}
	j := custos.Justification{Reason: custosv1.Reason_REASON_CUSTOMER_INITIATED, Text: "dev cluster test"}
	pt, err := node1.Decrypt(ctx, ct, map[string]string{"dept": "hr"}, j)
	if err != nil || string(pt) != "hello cluster" {
		t.Fatalf("decrypt on node1: %q, %v", pt, err)
	}

	// node2 decides (the decision goes through the leader) and releases
	// with its own HSM: it was admitted.
	node2 := dial(addrs[1])
	if pt, err := node2.Decrypt(ctx, ct, map[string]string{"dept": "hr"}, j); err != nil || string(pt) != "hello cluster" {
		t.Fatalf("decrypt on node2: %q, %v", pt, err)
	}
	decided := false
	for rec, err := range node1.Decisions(ctx, &custosv1.DecisionFilter{Key: "payroll"}, 0) {
		if err != nil {
			t.Fatal(err)
		}
		if rec.GetNode() == "node2" && rec.GetOperation() == custosv1.Operation_OPERATION_DECRYPT {
			decided = true
		}
	}
	if !decided {
		t.Error("the ledger has no decrypt decision proposed by node2")
	}
	for _, cl := range []*custos.Client{all, node1, node2} {
		cl.Close()
	}

	// A node that dies leaves the others running; SIGHUP starts it again
	// on the same sockets.
	waitLog := func(what string, re *regexp.Regexp) []string {
		t.Helper()
		deadline := time.Now().Add(60 * time.Second)
		for {
			if m := re.FindStringSubmatch(logText()); m != nil {
				return m
			}
			select {
			case err := <-exited:
				parentDone = true
				t.Fatalf("custosd dev exited while waiting for %s: %v", what, err)
			default:
			}
			if time.Now().After(deadline) {
				t.Fatalf("custosd dev did not report %s within 60s", what)
			}
			time.Sleep(50 * time.Millisecond)
		}
	}
	// node1 — the initialiser — dies: key crypto goes on through the
	// others, with the CLI's address list (node1 first) as it is.
	if err := syscall.Kill(pids["node1"], syscall.SIGKILL); err != nil {
		t.Fatal(err)
	}
	waitLog("node1's death", regexp.MustCompile(`custosd dev: node1 exited \(signal: killed\); the other 2 keep running\. Start it again with: kill -HUP \d+`))
	// The survivors elect a leader (until then they answer Unavailable:
	// nothing is issued without one).
	node2 = dial(addrs[1])
	for deadline := time.Now().Add(30 * time.Second); ; {
		if st, err := node2.ClusterStatus(ctx); err == nil && st.GetLeaderId() != "" && st.GetLeaderId() != "node1" {
			break
		}
		if time.Now().After(deadline) {
			t.Fatal("no leader among node2 and node3 within 30s of node1's death")
		}
		time.Sleep(50 * time.Millisecond)
	}
	survivors := dial(addrs...)
	ct2, err := survivors.Encrypt(ctx, "payroll", []byte("two of three"), nil)
	if err != nil {
		t.Fatalf("encrypt with node1 down: %v", err)
	}
	node3 := dial(addrs[2])
	if pt, err := node3.Decrypt(ctx, ct2, nil, j); err != nil || string(pt) != "two of three" {
		t.Fatalf("decrypt on node3 with node1 down: %q, %v", pt, err)
	}
	if err := parent.Process.Signal(syscall.SIGHUP); err != nil {
		t.Fatal(err)
	}
	restarted := waitLog("node1's restart", regexp.MustCompile(`(?s)node1 exited.*custosd dev: node1 started, pid (\d+)`))
	pids["node1"], _ = strconv.Atoi(restarted[1])
	node1 = dial(addrs[0])
	if st, err := node1.ClusterStatus(ctx); err != nil || st.GetNodeId() != "node1" || !st.GetHasDomainKey() {
		t.Fatalf("node1 after the restart: %v, %v", st, err)
	}

	// The dev officer rotates the domain key; the parent plays the
	// officers and the generator's HSM security officer for each node's
	// rotation transport key, as it does for admissions. Afterwards every
	// node holds the new key and the old data still decrypts everywhere.
	officer, err := governance.LoadKeyFile(env["CUSTOS_OFFICER_KEY"], nil)
	if err != nil {
		t.Fatal(err)
	}
	rctx, rcancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer rcancel()
	rot, err := node1.NewStatement(rctx, "rotate", time.Hour)
	if err != nil {
		t.Fatal(err)
	}
	rot.Operation = &custosv1.Statement_RotateDomainKey{RotateDomainKey: &custosv1.RotateDomainKey{}}
	if _, err := node1.SignAndSubmit(rctx, rot, custos.Officer{Name: env["CUSTOS_OFFICER_NAME"], Signer: officer}); err != nil {
		t.Fatal(err)
	}
	all = dial()
	for deadline := time.Now().Add(90 * time.Second); ; {
		sts, errs := all.ClusterStatusAll(rctx)
		done := 0
		for i, st := range sts {
			if errs[i] == nil && st.GetDomainKeyEpoch() == 1 && st.GetRotation() == nil && st.GetHasDomainKey() {
				done++
			}
		}
		if done == 3 {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("the domain-key rotation did not complete on every node within 90s: %v %v", sts, errs)
		}
		time.Sleep(100 * time.Millisecond)
	}
	for _, a := range addrs {
		cl := dial(a)
		for _, c := range []struct {
			ct   []byte
			ec   map[string]string
			want string
		}{{ct, map[string]string{"dept": "hr"}, "hello cluster"}, {ct2, nil, "two of three"}} {
			if pt, err := cl.Decrypt(rctx, c.ct, c.ec, j); err != nil || string(pt) != c.want {
				t.Fatalf("decrypt on %s after the rotation: %q, %v", a, pt, err)
			}
		}
		cl.Close()
	}
	all.Close()
	for _, cl := range []*custos.Client{node1, node2, node3, survivors} {
		cl.Close()
	}

	// SIGINT stops the parent and, through it, every child.
	if err := parent.Process.Signal(os.Interrupt); err != nil {
		t.Fatal(err)
	}
	select {
	case err := <-exited:
		parentDone = true
		if err != nil {
			t.Errorf("custosd dev after SIGINT: %v", err)
		}
	case <-time.After(40 * time.Second):
		t.Fatal("custosd dev did not stop within 40s of SIGINT")
	}
	for id, pid := range pids {
		if err := syscall.Kill(pid, 0); !errors.Is(err, syscall.ESRCH) {
			t.Errorf("%s (pid %d) still exists after the parent stopped: kill 0: %v", id, pid, err)
		}
		if !regexp.MustCompile(`\[` + id + `\] .*msg="socket activation: serving on passed sockets" sockets="console=127\.0\.0\.1:\d+,grpc=127\.0\.0\.1:\d+,raft=127\.0\.0\.1:\d+"`).MatchString(logText()) {
			t.Errorf("%s did not serve on the sockets the parent passed", id)
		}
		if !strings.Contains(logText(), fmt.Sprintf(`msg="custos node stopped" id=%s`, id)) {
			t.Errorf("%s did not log a clean stop", id)
		}
	}
}
