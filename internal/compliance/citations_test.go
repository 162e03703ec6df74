package compliance_test

import (
	"bufio"
	"bytes"
	"errors"
	"io/fs"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"testing"
)

// Citations that point at what users do not have: the internal design file
// and issue numbers of the project's tracker. Code and docs cite
// docs/architecture.md (actors, invariants 1–9, key flows) or another page
// of docs/ instead. The patterns are written so that this file does not
// match them itself.
var internalCitations = []struct {
	re   *regexp.Regexp
	what string
}{
	{regexp.MustCompile(`DESIGN\.md`), "the internal design file"},
	{regexp.MustCompile(`(?i)\bissues?\s*#?\s*[0-9]`), "an issue number"},
}

// invariantCitation finds "invariant N" and "invariants N" (the first
// number of a list or range).
var invariantCitation = regexp.MustCompile(`(?i)\binvariants?\s+([0-9]+)`)

// TestDocsStandAlone fails when a tracked Go, Markdown, protobuf, Python,
// Makefile or shell file cites the internal design file or an issue
// number, or cites an invariant that docs/architecture.md does not define.
func TestDocsStandAlone(t *testing.T) {
	root := filepath.Join("..", "..")
	files := sourceFiles(t, root)
	if len(files) < 50 {
		t.Fatalf("found only %d files to check under %s", len(files), root)
	}
	for _, rel := range files {
		b, err := os.ReadFile(filepath.Join(root, rel))
		if errors.Is(err, fs.ErrNotExist) {
			continue // tracked but deleted in the working tree
		}
		if err != nil {
			t.Fatal(err)
		}
		if generated(rel, b) {
			continue
		}
		sc := bufio.NewScanner(bytes.NewReader(b))
		sc.Buffer(make([]byte, 0, 64*1024), 4*1024*1024)
		for n := 1; sc.Scan(); n++ {
			line := sc.Text()
			for _, c := range internalCitations {
				if m := c.re.FindString(line); m != "" {
					t.Errorf("%s:%d cites %s (%q), which users do not have: cite docs/architecture.md or another page of docs/ instead", rel, n, c.what, m)
				}
			}
			for _, m := range invariantCitation.FindAllStringSubmatch(line, -1) {
				if k, err := strconv.Atoi(m[1]); err != nil || k < 1 || k > 9 {
					t.Errorf("%s:%d cites %q: docs/architecture.md defines invariants 1 to 9", rel, n, m[0])
				}
			}
		}
		if err := sc.Err(); err != nil {
			t.Fatalf("%s: %v", rel, err)
		}
	}
}

// TestArchitectureListsInvariants checks that docs/architecture.md, which
// code and docs cite by invariant number, numbers its invariants 1 to 9 in
// order under its "Invariants" heading.
func TestArchitectureListsInvariants(t *testing.T) {
	b, err := os.ReadFile(filepath.Join("..", "..", "docs", "architecture.md"))
	if err != nil {
		t.Fatal(err)
	}
	_, section, ok := strings.Cut(string(b), "\n## Invariants\n")
	if !ok {
		t.Fatal(`docs/architecture.md has no "## Invariants" section`)
	}
	if i := strings.Index(section, "\n## "); i >= 0 {
		section = section[:i]
	}
	var got []int
	for _, m := range regexp.MustCompile(`(?m)^([0-9]+)\. \*\*[^*]+\*\*`).FindAllStringSubmatch(section, -1) {
		k, _ := strconv.Atoi(m[1])
		got = append(got, k)
	}
	if len(got) != 9 {
		t.Fatalf("docs/architecture.md lists invariants %v, want 1 to 9", got)
	}
	for i, k := range got {
		if k != i+1 {
			t.Fatalf("docs/architecture.md lists invariants %v, want 1 to 9 in order", got)
		}
	}
}

// sourceFiles returns the paths (relative to root) of the files to check:
// the tracked files when root is a git checkout, else every file under root
// outside .git, bin/ and the development data directories.
func sourceFiles(t *testing.T, root string) []string {
	var all []string
	out, err := exec.Command("git", "-C", root, "ls-files", "-z").Output()
	if err == nil {
		for _, p := range strings.Split(string(out), "\x00") {
			if p != "" {
				all = append(all, filepath.FromSlash(p))
			}
		}
	} else {
		t.Logf("git ls-files: %v; walking the tree instead", err)
		err = filepath.WalkDir(root, func(path string, d fs.DirEntry, err error) error {
			if err != nil {
				return err
			}
			if d.IsDir() {
				switch d.Name() {
				case ".git", "bin", ".dev", ".cluster", "node_modules":
					return filepath.SkipDir
				}
				return nil
			}
			rel, err := filepath.Rel(root, path)
			if err != nil {
				return err
			}
			all = append(all, rel)
			return nil
		})
		if err != nil {
			t.Fatal(err)
		}
	}
	var files []string
	for _, rel := range all {
		if checked(root, rel) {
			files = append(files, rel)
		}
	}
	return files
}

// checked says whether a file is one whose text users read: Go, Markdown,
// protobuf, Python, Makefiles and shell scripts (by extension or by a
// "#!…sh" first line).
func checked(root, rel string) bool {
	base := filepath.Base(rel)
	switch filepath.Ext(base) {
	case ".go", ".md", ".proto", ".py", ".sh", ".mk":
		return true
	}
	if base == "Makefile" || base == "GNUmakefile" {
		return true
	}
	if filepath.Ext(base) != "" {
		return false
	}
	f, err := os.Open(filepath.Join(root, rel))
	if err != nil {
		return false
	}
	defer f.Close()
	first, _ := bufio.NewReader(f).ReadString('\n')
	return strings.HasPrefix(first, "#!") && strings.Contains(first, "sh")
}

// generated reports a generated Go file ("Code generated … DO NOT EDIT.",
// https://go.dev/s/generatedcode): its comments come from elsewhere (the
// .proto files, which are checked).
var generatedHeader = regexp.MustCompile(`(?m)^// Code generated .* DO NOT EDIT\.$`)

func generated(rel string, b []byte) bool {
	if !strings.HasSuffix(rel, ".go") {
		return false
	}
	head := b
	if i := bytes.Index(b, []byte("\npackage ")); i >= 0 {
		head = b[:i]
	}
	return generatedHeader.Match(head)
}
