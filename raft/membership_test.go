package raft_test

import (
	"context"
	"io"
	"testing"
)

func TestMembershipAndSnapshotAccessors(t *testing.T) {
	cfg := testConfig("n1", t.TempDir())
	cfg.Bootstrap = true
	n := openNode(t, cfg, &listSM{})
	waitLeaderSelf(t, n)
	ctx := context.Background()
	applyN(t, n, "m", 0, 10)
	servers, err := n.Servers()
	if err != nil || len(servers) != 1 || servers[0].ID != n.ID() || servers[0].Suffrage != "Voter" {
		t.Fatalf("Servers = %v, %v", servers, err)
	}
	if !n.HasServer(n.ID()) || n.HasServer("nope") {
		t.Fatal("HasServer is wrong")
	}
	meta, rc, err := n.OpenSnapshot(ctx)
	if err != nil {
		t.Fatalf("OpenSnapshot: %v", err)
	}
	data, err := io.ReadAll(rc)
	rc.Close()
	if err != nil || len(data) == 0 || meta.Index == 0 {
		t.Fatalf("snapshot: %d bytes at index %d, %v", len(data), meta.Index, err)
	}
	// Nothing new: the latest snapshot is reused.
	if _, rc, err := n.OpenSnapshot(ctx); err != nil {
		t.Fatalf("second OpenSnapshot: %v", err)
	} else {
		rc.Close()
	}
	if err := n.TransferLeadership(ctx, "nope"); err == nil {
		t.Fatal("transfer to an unknown server succeeded")
	}
}
