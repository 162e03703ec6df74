package raft

import (
	"io"
	"reflect"
	"strings"
	"testing"
	"time"

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

// observerSM is a countSM that also receives configuration entries.
type observerSM struct{ countSM }

func (*observerSM) ObservesConfiguration() {}

func TestFSMHandsConfigurationEntriesToObservers(t *testing.T) {
	sm := &observerSM{}
	f := &fsm{sm: sm}
	at := time.Unix(1700000000, 123456789)
	conf := hraft.Configuration{Servers: []hraft.Server{
		{Suffrage: hraft.Voter, ID: "n1", Address: "a1"},
		{Suffrage: hraft.Nonvoter, ID: "n2", Address: "a2"},
	}}
	logs := []*hraft.Log{
		entryLog(t, 5, 1),
		{Index: 6, Term: 1, Type: hraft.LogConfiguration, Data: hraft.EncodeConfiguration(conf), AppendedAt: at},
		{Index: 7, Term: 1, Type: hraft.LogConfiguration, Data: hraft.EncodeConfiguration(conf)},
		entryLog(t, 8, 1),
	}
	resp := f.ApplyBatch(logs)
	if len(sm.batches) != 1 || len(sm.batches[0]) != 4 {
		t.Fatalf("state machine saw batches %v, want one batch of 4 entries", sm.batches)
	}
	got := sm.batches[0][1]
	want := &Configuration{Servers: []Server{{ID: "n1", Addr: "a1", Suffrage: "Voter"}, {ID: "n2", Addr: "a2", Suffrage: "Nonvoter"}},
		AppendedAtUnixNano: at.UnixNano()}
	if got.Index != 6 || len(got.Commands) != 0 || !reflect.DeepEqual(got.Configuration, want) {
		t.Fatalf("configuration entry = %+v %+v, want index 6 with %+v", got, got.Configuration, want)
	}
	if c := sm.batches[0][2].Configuration; c == nil || c.AppendedAtUnixNano != 0 {
		t.Fatalf("entry without AppendedAt: %+v", c)
	}
	if sm.batches[0][0].Configuration != nil || sm.batches[0][3].Configuration != nil {
		t.Fatalf("command entries carry a configuration")
	}
	if len(resp) != 4 || resp[1] != nil || resp[2] != nil || resp[0] == nil || resp[3] == nil {
		t.Fatalf("responses %v, want nil for the configuration logs only", resp)
	}
}
