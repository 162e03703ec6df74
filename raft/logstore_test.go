package raft_test

import (
	"bytes"
	"errors"
	"path/filepath"
	"testing"
	"time"

	hraft "github.com/hashicorp/raft"

	"github.com/custos-kms/custos/raft"
)

func TestLogStore(t *testing.T) {
	path := filepath.Join(t.TempDir(), "raft.db")
	s, err := raft.OpenLogStore(path)
	if err != nil {
		t.Fatal(err)
	}
	if f, _ := s.FirstIndex(); f != 0 {
		t.Fatalf("FirstIndex of an empty log = %d", f)
	}
	at := time.Unix(1700000000, 123)
	var logs []*hraft.Log
	for i := uint64(1); i <= 100; i++ {
		logs = append(logs, &hraft.Log{Index: i, Term: i / 10, Type: hraft.LogCommand, Data: []byte{byte(i)}, AppendedAt: at})
	}
	logs[5].Extensions, logs[6].Type, logs[6].Data = []byte("ext"), hraft.LogBarrier, nil
	if err := s.StoreLogs(logs); err != nil {
		t.Fatal(err)
	}
	check := func(first, last uint64) {
		t.Helper()
		if f, _ := s.FirstIndex(); f != first {
			t.Fatalf("FirstIndex = %d, want %d", f, first)
		}
		if l, _ := s.LastIndex(); l != last {
			t.Fatalf("LastIndex = %d, want %d", l, last)
		}
	}
	check(1, 100)
	var got hraft.Log
	if err := s.GetLog(6, &got); err != nil || got.Index != 6 || got.Term != 0 || !bytes.Equal(got.Extensions, []byte("ext")) ||
		!got.AppendedAt.Equal(at) || !bytes.Equal(got.Data, []byte{6}) {
		t.Fatalf("GetLog(6) = %+v, %v", got, err)
	}
	if err := s.GetLog(7, &got); err != nil || got.Type != hraft.LogBarrier || got.Data != nil {
		t.Fatalf("GetLog(7) = %+v, %v", got, err)
	}
	if err := s.GetLog(101, &got); !errors.Is(err, hraft.ErrLogNotFound) {
		t.Fatalf("GetLog past the end: %v", err)
	}
	// Compaction deletes a prefix; a leader rollback deletes a suffix, and
	// new entries then take the same indexes.
	if err := s.DeleteRange(1, 40); err != nil {
		t.Fatal(err)
	}
	if err := s.DeleteRange(91, 100); err != nil {
		t.Fatal(err)
	}
	check(41, 90)
	if err := s.StoreLog(&hraft.Log{Index: 91, Term: 20, Type: hraft.LogCommand, Data: []byte("new")}); err != nil {
		t.Fatal(err)
	}
	// Stable store; a missing key says "not found", as hashicorp/raft expects.
	if _, err := s.Get([]byte("CurrentTerm")); err == nil || err.Error() != "not found" {
		t.Fatalf("Get of a missing key: %v", err)
	}
	if err := s.SetUint64([]byte("CurrentTerm"), 7); err != nil {
		t.Fatal(err)
	}
	if err := s.Set([]byte("LastVoteCand"), []byte("n2")); err != nil {
		t.Fatal(err)
	}
	if err := s.Close(); err != nil {
		t.Fatal(err)
	}
	// Everything survives a reopen (the restart that raft-wal v0.4.0 failed).
	s, err = raft.OpenLogStore(path)
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	check(41, 91)
	if err := s.GetLog(91, &got); err != nil || string(got.Data) != "new" || got.Term != 20 {
		t.Fatalf("GetLog(91) after reopen = %+v, %v", got, err)
	}
	if v, err := s.GetUint64([]byte("CurrentTerm")); err != nil || v != 7 {
		t.Fatalf("CurrentTerm = %d, %v", v, err)
	}
	if v, err := s.Get([]byte("LastVoteCand")); err != nil || string(v) != "n2" {
		t.Fatalf("LastVoteCand = %q, %v", v, err)
	}
}
