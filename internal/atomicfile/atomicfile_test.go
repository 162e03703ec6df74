package atomicfile

import (
	"errors"
	"io/fs"
	"os"
	"path/filepath"
	"testing"
)

func TestWrite(t *testing.T) {
	dir := t.TempDir()
	p := filepath.Join(dir, "client.env")
	if err := Write(p, []byte("one"), 0o600, false); err != nil {
		t.Fatal(err)
	}
	if err := Write(p, []byte("two"), 0o600, false); !errors.Is(err, fs.ErrExist) {
		t.Fatalf("second write without overwrite: %v, want ErrExist", err)
	}
	if b, _ := os.ReadFile(p); string(b) != "one" {
		t.Fatalf("refused write changed the file: %q", b)
	}
	if err := Write(p, []byte("three"), 0o640, true); err != nil {
		t.Fatal(err)
	}
	fi, err := os.Stat(p)
	if err != nil || fi.Mode().Perm() != 0o640 {
		t.Fatalf("mode %v, %v", fi.Mode().Perm(), err)
	}
	if b, _ := os.ReadFile(p); string(b) != "three" {
		t.Fatalf("overwrite: %q", b)
	}
	ents, err := os.ReadDir(dir)
	if err != nil || len(ents) != 1 {
		t.Fatalf("directory holds %d entries (temporary files left?), %v", len(ents), err)
	}
	if err := Write(filepath.Join(dir, "missing", "f"), []byte("x"), 0o600, true); err == nil {
		t.Fatal("write into a missing directory succeeded")
	}
}
