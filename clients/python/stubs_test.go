package python_test

import (
	"encoding/hex"
	"encoding/json"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"

	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/reflect/protodesc"
	"google.golang.org/protobuf/reflect/protoregistry"
	"google.golang.org/protobuf/types/descriptorpb"

	_ "github.com/custos-kms/custos/proto/custos/v1" // registers the files compared
)

// TestPythonStubsMatchProto: the Python client's generated code
// (custos/_proto, committed) describes the same messages, enums and
// services as the Go code generated from proto/custos/v1: a .proto change
// without clients/python/gen.sh fails here.
func TestPythonStubsMatchProto(t *testing.T) {
	requirePython(t)
	files, err := filepath.Glob("../../proto/custos/v1/*.proto")
	if err != nil || len(files) == 0 {
		t.Fatalf("no .proto files: %v", err)
	}
	var mods []string
	for _, f := range files {
		mods = append(mods, strings.TrimSuffix(filepath.Base(f), ".proto"))
	}
	script := `import importlib, json, sys
out = {}
for m in sys.argv[1:]:
    out[m] = importlib.import_module("custos._proto." + m + "_pb2").DESCRIPTOR.serialized_pb.hex()
print(json.dumps(out))`
	cmd := exec.Command(python, append([]string{"-c", script}, mods...)...)
	cmd.Dir = "."
	raw, err := cmd.Output()
	if err != nil {
		t.Fatalf("reading the Python descriptors: %v", err)
	}
	var py map[string]string
	if err := json.Unmarshal(raw, &py); err != nil {
		t.Fatal(err)
	}
	for _, m := range mods {
		path := "custos/v1/" + m + ".proto"
		fd, err := protoregistry.GlobalFiles.FindFileByPath(path)
		if err != nil {
			t.Fatalf("%s is not registered in Go: %v", path, err)
		}
		goFD := normalise(protodesc.ToFileDescriptorProto(fd))
		b, err := hex.DecodeString(py[m])
		if err != nil {
			t.Fatal(err)
		}
		pyFD := new(descriptorpb.FileDescriptorProto)
		if err := proto.Unmarshal(b, pyFD); err != nil {
			t.Fatalf("%s: the Python descriptor does not parse: %v", m, err)
		}
		if !proto.Equal(goFD, normalise(pyFD)) {
			t.Errorf("clients/python/custos/_proto/%s_pb2.py is not generated from %s: run clients/python/gen.sh", m, path)
		}
	}
}

// normalise clears what generators fill in differently (json_name, source
// info), leaving the schema.
func normalise(fd *descriptorpb.FileDescriptorProto) *descriptorpb.FileDescriptorProto {
	fd.SourceCodeInfo = nil
	var msgs func([]*descriptorpb.DescriptorProto)
	msgs = func(ms []*descriptorpb.DescriptorProto) {
		for _, m := range ms {
			for _, f := range m.Field {
				f.JsonName = nil
			}
			msgs(m.NestedType)
		}
	}
	msgs(fd.MessageType)
	return fd
}
