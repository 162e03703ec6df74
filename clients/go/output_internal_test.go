package custos

import (
	"errors"
	"io"
	"io/fs"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

// TestWriteOutputNoOverwrite: with WithNoOverwrite an existing output file
// is refused before fill runs, and a file that appears while fill runs is
// not replaced either; no temporary file is left behind. Without it the
// output replaces the file.
func TestWriteOutputNoOverwrite(t *testing.T) {
	dir := t.TempDir()
	out := filepath.Join(dir, "out")
	write := func(s string) {
		if err := os.WriteFile(out, []byte(s), 0o600); err != nil {
			t.Fatal(err)
		}
	}
	content := func() string {
		b, err := os.ReadFile(out)
		if err != nil {
			t.Fatal(err)
		}
		return string(b)
	}
	noTemp := func() {
		t.Helper()
		ents, _ := os.ReadDir(dir)
		for _, e := range ents {
			if strings.Contains(e.Name(), ".tmp-") {
				t.Errorf("temporary file %s left behind", e.Name())
			}
		}
	}
	no := collect([]Option{WithNoOverwrite()})

	write("old")
	called := false
	err := writeOutput(out, no, func(io.Writer) error { called = true; return nil })
	if !errors.Is(err, fs.ErrExist) || called || content() != "old" {
		t.Errorf("existing output: err %v, fill called %v, content %q; want ErrExist before fill, old content", err, called, content())
	}

	os.Remove(out)
	err = writeOutput(out, no, func(w io.Writer) error {
		write("appeared meanwhile")
		_, err := io.WriteString(w, "new")
		return err
	})
	if !errors.Is(err, fs.ErrExist) || content() != "appeared meanwhile" {
		t.Errorf("output that appeared during fill: err %v, content %q; want ErrExist, the file untouched", err, content())
	}
	noTemp()

	os.Remove(out)
	if err := writeOutput(out, no, func(w io.Writer) error { _, err := io.WriteString(w, "new"); return err }); err != nil || content() != "new" {
		t.Errorf("new output: %v, content %q", err, content())
	}
	noTemp()

	// A failing fill leaves nothing, with or without WithNoOverwrite.
	os.Remove(out)
	for _, o := range []*options{no, collect(nil)} {
		if err := writeOutput(out, o, func(w io.Writer) error { io.WriteString(w, "part"); return errors.New("boom") }); err == nil {
			t.Error("failing fill: no error")
		}
		if _, err := os.Lstat(out); !errors.Is(err, fs.ErrNotExist) {
			t.Errorf("failing fill left %s (%v)", out, err)
		}
		noTemp()
	}

	// Without the option the output replaces the file.
	write("old")
	if err := writeOutput(out, collect(nil), func(w io.Writer) error { _, err := io.WriteString(w, "new"); return err }); err != nil || content() != "new" {
		t.Errorf("overwrite: %v, content %q", err, content())
	}
	noTemp()
}
