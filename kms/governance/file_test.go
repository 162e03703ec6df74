package governance_test

import (
	"encoding/json"
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/custos-kms/custos/kms/governance"
	custosv1 "github.com/custos-kms/custos/proto/custos/v1"
)

// TestOfflineFile walks the offline flow: one officer creates the file,
// two sign it in turn (one re-signs), anyone submits.
func TestOfflineFile(t *testing.T) {
	offs := newOfficers(t, "alice", "bob", "carol")
	set := officerSet(t, offs, 2)
	b := mustMarshal(t, statement(&custosv1.EnableKey{Key: "payroll"}))
	path := filepath.Join(t.TempDir(), "statement.json")

	f, err := governance.NewFile(b)
	if err != nil {
		t.Fatal(err)
	}
	if !strings.HasPrefix(f.Description, "enable_key ") {
		t.Errorf("description %q", f.Description)
	}
	if err := governance.WriteFile(path, f); err != nil {
		t.Fatal(err)
	}
	for _, o := range []officer{offs[0], offs[1], offs[0]} {
		f, err := governance.ReadFile(path)
		if err != nil {
			t.Fatal(err)
		}
		sig, err := governance.Sign(o.key, o.name, f.Statement)
		if err != nil {
			t.Fatal(err)
		}
		f.AddSignature(sig)
		if err := governance.WriteFile(path, f); err != nil {
			t.Fatal(err)
		}
	}
	f, err = governance.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	if len(f.Signatures) != 2 {
		t.Fatalf("%d signatures, want 2 (alice's replaced)", len(f.Signatures))
	}
	if _, signers, err := set.Verify(f.Signed(), testCluster, testNow); err != nil || len(signers) != 2 {
		t.Fatalf("verify: %v %v", signers, err)
	}
	// The JSON carries base64 statement bytes and the documented names.
	raw, _ := os.ReadFile(path)
	var m map[string]any
	if err := json.Unmarshal(raw, &m); err != nil {
		t.Fatal(err)
	}
	for _, k := range []string{"statement", "description", "signatures"} {
		if _, ok := m[k]; !ok {
			t.Errorf("no %q in %s", k, raw)
		}
	}
	if sigs := m["signatures"].([]any); sigs[0].(map[string]any)["officer"] != "alice" {
		t.Errorf("signatures %v", sigs)
	}
	if ents, _ := os.ReadDir(filepath.Dir(path)); len(ents) != 1 {
		t.Errorf("temporary files left: %d entries", len(ents))
	}
}

func TestReadFileRefuses(t *testing.T) {
	dir := t.TempDir()
	for name, data := range map[string]string{
		"not json":      "hello",
		"unknown field": `{"statement":"AQ==","extra":1}`,
		"no statement":  `{"description":"x"}`,
		"bad base64":    `{"statement":"!!"}`,
		"trailing":      `{"statement":"AQ=="} {}`,
	} {
		p := filepath.Join(dir, strings.ReplaceAll(name, " ", "_"))
		os.WriteFile(p, []byte(data), 0o644)
		if _, err := governance.ReadFile(p); !errors.Is(err, governance.ErrMalformed) {
			t.Errorf("%s: %v", name, err)
		}
	}
	if _, err := governance.NewFile([]byte("junk")); !errors.Is(err, governance.ErrMalformed) {
		t.Errorf("NewFile junk: %v", err)
	}
	if err := governance.WriteFile(filepath.Join(dir, "x"), &governance.File{}); !errors.Is(err, governance.ErrMalformed) {
		t.Errorf("WriteFile empty: %v", err)
	}
}
