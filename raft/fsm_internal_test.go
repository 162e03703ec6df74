package raft

import (
	"io"
	"strings"
	"testing"

	hraft "github.com/hashicorp/raft"
	"google.golang.org/protobuf/proto"

	raftlogv1 "github.com/custos-kms/custos/proto/raftlog/v1"
)

// countSM returns, per command, the entry index and command position.
type countSM struct{ batches [][]AppliedEntry }

func (c *countSM) ApplyBatch(es []AppliedEntry) [][]any {
	c.batches = append(c.batches, es)
	out := make([][]any, len(es))
	for i, e := range es {
		for j := range e.Commands {
			out[i] = append(out[i], [2]uint64{e.Index, uint64(j)})
		}
	}
	return out
}
func (c *countSM) Snapshot() (Snapshot, error) { return nil, nil }
func (c *countSM) Restore(io.Reader) error     { return nil }

func entryLog(t *testing.T, index uint64, n int) *hraft.Log {
	e := &raftlogv1.Entry{}
	for range n {
		e.Commands = append(e.Commands, &raftlogv1.Command{Principal: "p"})
	}
	data, err := proto.Marshal(e)
	if err != nil {
		t.Fatal(err)
	}
	return &hraft.Log{Index: index, Term: 1, Type: hraft.LogCommand, Data: data}
}

func TestFSMApplyBatchMapsResults(t *testing.T) {
	sm := &countSM{}
	f := &fsm{sm: sm}
	logs := []*hraft.Log{
		entryLog(t, 5, 2),
		{Index: 6, Term: 1, Type: hraft.LogConfiguration, Data: []byte("not an entry")},
		entryLog(t, 7, 1),
	}
	resp := f.ApplyBatch(logs)
	if len(sm.batches) != 1 || len(sm.batches[0]) != 2 {
		t.Fatalf("state machine saw batches %v, want one batch of 2 entries", sm.batches)
	}
	if len(resp) != 3 || resp[1] != nil {
		t.Fatalf("responses %v, want 3 with nil for the configuration log", resp)
	}
	if r := resp[0].([]any); len(r) != 2 || r[1] != [2]uint64{5, 1} {
		t.Fatalf("response 0 = %v", r)
	}
	if r := resp[2].([]any); len(r) != 1 || r[0] != [2]uint64{7, 0} {
		t.Fatalf("response 2 = %v", r)
	}
	if got := f.Apply(entryLog(t, 8, 3)).([]any); len(got) != 3 {
		t.Fatalf("Apply response %v", got)
	}
}

func TestFSMDecodeFailurePanics(t *testing.T) {
	f := &fsm{sm: &countSM{}}
	defer func() {
		r := recover()
		msg, _ := r.(string)
		if !strings.Contains(msg, "cannot decode log entry at index 9") {
			t.Fatalf("panic = %v, want a decode failure naming index 9", r)
		}
	}()
	f.ApplyBatch([]*hraft.Log{{Index: 9, Term: 2, Type: hraft.LogCommand, Data: []byte{0xff, 0xff, 0xff}}})
	t.Fatal("ApplyBatch did not panic")
}
