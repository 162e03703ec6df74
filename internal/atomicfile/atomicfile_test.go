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

// TestPlace: without overwrite, Place never replaces an existing file and
// leaves the temporary file to the caller; otherwise the temporary file
// becomes path and is gone under its own name.
func TestPlace(t *testing.T) {
	dir := t.TempDir()
	p := filepath.Join(dir, "out")
	tmp := func(s string) string {
		f, err := os.CreateTemp(dir, ".out.tmp-*")
		if err != nil {
			t.Fatal(err)
		}
		f.WriteString(s)
		f.Close()
		return f.Name()
	}
	a := tmp("a")
	if err := Place(a, p, false); err != nil {
		t.Fatal(err)
	}
	if _, err := os.Lstat(a); !errors.Is(err, fs.ErrNotExist) {
		t.Errorf("temporary file still there after Place: %v", err)
	}
	b := tmp("b")
	if err := Place(b, p, false); !errors.Is(err, fs.ErrExist) {
		t.Fatalf("Place over an existing file without overwrite: %v, want ErrExist", err)
	}
	if got, _ := os.ReadFile(p); string(got) != "a" {
		t.Errorf("refused Place changed the file: %q", got)
	}
	if _, err := os.Lstat(b); err != nil {
		t.Errorf("refused Place removed the caller's temporary file: %v", err)
	}
	if err := Place(b, p, true); err != nil {
		t.Fatal(err)
	}
	if got, _ := os.ReadFile(p); string(got) != "b" {
		t.Errorf("overwrite: %q", got)
	}
	if ents, _ := os.ReadDir(dir); len(ents) != 1 {
		t.Errorf("directory holds %d entries, want 1", len(ents))
	}
}
