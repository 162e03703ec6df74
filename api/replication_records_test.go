package api

import (
	"context"
	"fmt"
	"testing"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	"github.com/custos-kms/custos/kms"
	raftlogv1 "github.com/custos-kms/custos/proto/raftlog/v1"
)

// recordLeader is a fakeLeader that also serves ledger records.
type recordLeader struct {
	fakeLeader
	reads int
}

func (r *recordLeader) PeerRecords(from, to uint64) ([][]byte, error) {
	r.reads++
	if from > 10 {
		return nil, fmt.Errorf("%w: record %d is not on this node", kms.ErrUnavailable, from)
	}
	return [][]byte{[]byte("r")}, nil
}

// TestReplicationReadRecords: only members may read records, leader or
// not; the node's answer (or its Unavailable) is passed on; a leader that
// serves no records answers Unimplemented.
func TestReplicationReadRecords(t *testing.T) {
	as := func(name string) context.Context {
		return context.WithValue(context.Background(), principalKey{}, kms.Principal{Name: name})
	}
	r := &recordLeader{}
	srv := NewReplicationServer(r)
	req := &raftlogv1.ReadRecordsRequest{FromSeq: 1, ToSeq: 5}
	for _, ctx := range []context.Context{context.Background(), as("app"), as("custos-node:"), as("custos-node:node9")} {
		if _, err := srv.ReadRecords(ctx, req); status.Code(err) != codes.PermissionDenied {
			t.Fatalf("ReadRecords by a non-member: %v", err)
		}
	}
	if r.reads != 0 {
		t.Fatalf("refused callers read %d times", r.reads)
	}
	resp, err := srv.ReadRecords(as("custos-node:node2"), req)
	if err != nil || len(resp.GetRecords()) != 1 {
		t.Fatalf("ReadRecords by a member on a follower: %v, %v", resp, err)
	}
	_, err = srv.ReadRecords(as("custos-node:node3"), &raftlogv1.ReadRecordsRequest{FromSeq: 11, ToSeq: 12})
	if status.Code(err) != codes.Unavailable {
		t.Fatalf("ReadRecords of records the node lacks: %v, want Unavailable", err)
	}
	plain := NewReplicationServer(&fakeLeader{})
	if _, err := plain.ReadRecords(as("custos-node:node2"), req); status.Code(err) != codes.Unimplemented {
		t.Fatalf("ReadRecords on a node without records: %v, want Unimplemented", err)
	}
}
