package kms

import (
	"bytes"
	"context"
	"crypto/sha256"
	"errors"
	"fmt"
	"time"

	"github.com/custos-kms/custos/hsm"
	"github.com/custos-kms/custos/kms/governance"
	"github.com/custos-kms/custos/kms/ledger"
	custosv1 "github.com/custos-kms/custos/proto/custos/v1"
	raftlogv1 "github.com/custos-kms/custos/proto/raftlog/v1"
)

// Audit read limits.
const (
	maxAuditPage = 1000
	// maxScanPerPage bounds the records one ListDecisions call examines.
	maxScanPerPage = 100_000
)

// canAudit allows the configured auditor identities and officers signed in
// to the console, and no one else.
func (s *Service) canAudit(p Principal) error {
	if s.auditors[p.Name] || p.ConsoleOfficer != "" {
		return nil
	}
	return fmt.Errorf("%w: principal %q is not an auditor", ErrPermissionDenied, p.Name)
}

// ListDecisions lists ledger records in order, filtered, paginated by seq.
func (s *Service) ListDecisions(ctx context.Context, p Principal, req *custosv1.ListDecisionsRequest) (*custosv1.ListDecisionsResponse, error) {
	if err := s.canAudit(p); err != nil {
		return nil, err
	}
	size := int(req.GetPageSize())
	switch {
	case size < 0 || size > maxAuditPage:
		return nil, fmt.Errorf("%w: page_size must be between 0 and %d", ErrInvalidArgument, maxAuditPage)
	case size == 0:
		size = 100
	}
	head, _ := s.state.LedgerHead()
	resp := &custosv1.ListDecisionsResponse{HeadSeq: head}
	scanned := 0
	err := s.state.ScanRecords(req.GetFromSeq(), func(seq uint64, data []byte) error {
		if len(resp.Records) == size || scanned == maxScanPerPage {
			resp.NextSeq = seq
			return errStop
		}
		scanned++
		r, err := decodeRecord(seq, data)
		if err != nil {
			return err
		}
		if Matches(req.GetFilter(), r) {
			resp.Records = append(resp.Records, r)
		}
		return ctx.Err()
	})
	if err != nil && !errors.Is(err, errStop) {
		return nil, err
	}
	return resp, nil
}

// GetCheckpoint returns the newest checkpoint and the signing keys.
func (s *Service) GetCheckpoint(ctx context.Context, p Principal, _ *custosv1.GetCheckpointRequest) (*custosv1.GetCheckpointResponse, error) {
	if err := s.canAudit(p); err != nil {
		return nil, err
	}
	cp, rec, keys := s.state.Checkpoint()
	head, _ := s.state.LedgerHead()
	resp := &custosv1.GetCheckpointResponse{Checkpoint: cp, RecordSeq: rec, ClusterId: s.state.ClusterID(), HeadSeq: head}
	for _, k := range keys {
		resp.PublicKeys = append(resp.PublicKeys, k.PublicKey)
	}
	return resp, nil
}

// Export sends a header, the stored bytes of every record from from_seq to
// the head, and a trailer checkpoint signed now over the last record sent.
func (s *Service) Export(ctx context.Context, p Principal, req *custosv1.ExportRequest, send func(*custosv1.ExportItem) error) error {
	if err := s.canAudit(p); err != nil {
		return err
	}
	release, err := s.streams.acquire(p.Name)
	if err != nil {
		return err
	}
	defer release()
	head, headHash := s.state.LedgerHead()
	from := max(req.GetFromSeq(), 1)
	if head > 0 && from > head {
		return fmt.Errorf("%w: from_seq %d is beyond the ledger head %d", ErrInvalidArgument, from, head)
	}
	_, _, keys := s.state.Checkpoint()
	hdr := &custosv1.ExportHeader{ClusterId: s.state.ClusterID(), FirstSeq: from, TimeUnixNano: s.now().UnixNano()}
	for _, k := range keys {
		hdr.PublicKeys = append(hdr.PublicKeys, k.PublicKey)
	}
	if err := send(&custosv1.ExportItem{Item: &custosv1.ExportItem_Header{Header: hdr}}); err != nil {
		return err
	}
	err = s.state.ScanRecords(from, func(seq uint64, data []byte) error {
		if seq > head {
			return errStop
		}
		return send(&custosv1.ExportItem{Item: &custosv1.ExportItem_Record{Record: append([]byte(nil), data...)}})
	})
	if err != nil && !errors.Is(err, errStop) {
		return err
	}
	if head == 0 {
		return nil
	}
	cp, err := s.signCheckpoint(ctx, head, headHash[:])
	if err != nil {
		return err
	}
	return send(&custosv1.ExportItem{Item: &custosv1.ExportItem_Trailer{Trailer: cp}})
}

// WatchDecisions sends matching records from from_seq on, then follows the
// ledger until ctx ends.
func (s *Service) WatchDecisions(ctx context.Context, p Principal, req *custosv1.WatchDecisionsRequest, send func(*custosv1.DecisionRecord) error) error {
	if err := s.canAudit(p); err != nil {
		return err
	}
	release, err := s.streams.acquire(p.Name)
	if err != nil {
		return err
	}
	defer release()
	next := max(req.GetFromSeq(), 1)
	if head, _ := s.state.LedgerHead(); next > head+1 {
		return fmt.Errorf("%w: from_seq %d is beyond the ledger head %d (the next record will be %d)", ErrInvalidArgument, next, head, head+1)
	}
	for {
		err := s.state.ScanRecords(next, func(seq uint64, data []byte) error {
			r, err := decodeRecord(seq, data)
			if err != nil {
				return err
			}
			next = seq + 1
			if Matches(req.GetFilter(), r) {
				return send(r)
			}
			return nil
		})
		if err != nil {
			return err
		}
		if err := s.state.WaitBeyond(ctx, next-1); err != nil {
			return err
		}
	}
}

// checkpointKeyID is this node's checkpoint signing key in its HSM.
func (s *Service) checkpointKeyID() []byte { return []byte("custos/checkpoint/" + s.node) }

// EnsureCheckpointKey makes this node's HSM-resident checkpoint signing key
// if it is missing and registers its public key through the log.
func (s *Service) EnsureCheckpointKey(ctx context.Context) error {
	id := s.checkpointKeyID()
	pub, err := s.hsm.PublicKey(ctx, id)
	if errors.Is(err, hsm.ErrKeyNotFound) {
		pub, err = s.hsm.GenerateECKey(ctx, id, "custos checkpoint key "+s.node)
	}
	if err != nil {
		return hsmError("checkpoint key", err)
	}
	der := governance.MarshalPublicKey(pub)
	if s.state.hasNodeKey(s.node, der, "", 0) {
		// Registered before (every restart but the first): nothing to
		// propose, so a restart does not need the leader to be reachable
		// (AdvertiseAPIAddr reports a new release's version).
		return nil
	}
	_, err = s.apply(ctx, Principal{Name: "custosd"}, &raftlogv1.Command{Op: &raftlogv1.Command_RegisterNodeKey{
		RegisterNodeKey: &raftlogv1.RegisterNodeKey{Node: s.node, PublicKey: der, MaxStateMachineVersion: s.maxSMV}}})
	return err
}

// AdvertiseAPIAddr records this node's gRPC address with its checkpoint
// key (EnsureCheckpointKey first), so followers can forward to it when it
// leads, and the newest state machine version it can apply
// (smversion.go).
func (s *Service) AdvertiseAPIAddr(ctx context.Context, addr string) error {
	pub, err := s.hsm.PublicKey(ctx, s.checkpointKeyID())
	if err != nil {
		return hsmError("checkpoint key", err)
	}
	der := governance.MarshalPublicKey(pub)
	if s.state.hasNodeKey(s.node, der, addr, s.maxSMV) {
		return nil // already advertised at this address and version
	}
	_, err = s.apply(ctx, Principal{Name: "custosd"}, &raftlogv1.Command{Op: &raftlogv1.Command_RegisterNodeKey{
		RegisterNodeKey: &raftlogv1.RegisterNodeKey{Node: s.node, PublicKey: der, ApiAddr: addr, MaxStateMachineVersion: s.maxSMV}}})
	return err
}

// hasNodeKey reports whether node's checkpoint key pkix is registered, with
// the gRPC address addr unless addr is "" and the state machine version
// smv unless it is 0.
func (s *State) hasNodeKey(node string, pkix []byte, addr string, smv uint32) bool {
	s.mu.RLock()
	defer s.mu.RUnlock()
	for _, k := range s.nodeKeys {
		if k.Node == node && bytes.Equal(k.PublicKey, pkix) {
			return (addr == "" || k.ApiAddr == addr) && (smv == 0 || k.MaxStateMachineVersion == smv)
		}
	}
	return false
}

// NodeAPIAddr returns the gRPC address a node advertised, or "".
func (s *State) NodeAPIAddr(node string) string {
	s.mu.RLock()
	defer s.mu.RUnlock()
	for _, k := range s.nodeKeys {
		if k.Node == node && k.ApiAddr != "" {
			return k.ApiAddr
		}
	}
	return ""
}

// signCheckpoint signs (seq, head) with this node's HSM key.
func (s *Service) signCheckpoint(ctx context.Context, seq uint64, head []byte) (*custosv1.Checkpoint, error) {
	pub, err := s.hsm.PublicKey(ctx, s.checkpointKeyID())
	if err != nil {
		return nil, hsmError("checkpoint key", err)
	}
	cid := s.state.ClusterID()
	digest := sha256.Sum256(ledger.CheckpointMessage(cid, seq, head))
	sig, err := s.hsm.SignECDSA(ctx, s.checkpointKeyID(), digest[:])
	if err != nil {
		return nil, hsmError("sign checkpoint", err)
	}
	return &custosv1.Checkpoint{ClusterId: cid, Seq: seq, Head: head, TimeUnixNano: s.now().UnixNano(), Node: s.node,
		KeyId: CheckpointKeyID(governance.MarshalPublicKey(pub)), Signature: sig}, nil
}

// Checkpoint signs the current chain head and records the checkpoint in
// the ledger, unless nothing was recorded since the last one.
func (s *Service) Checkpoint(ctx context.Context) (*custosv1.Checkpoint, error) {
	head, hash := s.state.LedgerHead()
	last, lastRecord, _ := s.state.Checkpoint()
	if head == 0 || (last != nil && head <= lastRecord) {
		return last, nil // nothing recorded since the last checkpoint
	}
	cp, err := s.signCheckpoint(ctx, head, hash[:])
	if err != nil {
		return nil, err
	}
	if _, err := s.apply(ctx, Principal{Name: "custosd"}, &raftlogv1.Command{Op: &raftlogv1.Command_RecordCheckpoint{
		RecordCheckpoint: &raftlogv1.RecordCheckpoint{Checkpoint: cp}}}); err != nil {
		return nil, err
	}
	return cp, nil
}

// RunCheckpointer records a checkpoint whenever `every` records have been
// appended since the last one, or `interval` has passed with new records,
// until ctx ends. Run it on the leader.
func (s *Service) RunCheckpointer(ctx context.Context, every uint64, interval time.Duration) {
	every = max(every, 1)
	tick := time.NewTicker(interval)
	defer tick.Stop()
	for {
		_, lastRecord, _ := s.state.Checkpoint()
		wctx, cancel := context.WithCancel(ctx)
		go func() {
			select {
			case <-tick.C:
				cancel()
			case <-wctx.Done():
			}
		}()
		err := s.state.WaitBeyond(wctx, lastRecord+every-1)
		cancel()
		if ctx.Err() != nil {
			return
		}
		_ = err // woken by the ticker or by enough records: checkpoint either way
		if _, err := s.Checkpoint(ctx); err != nil && ctx.Err() == nil {
			s.lg.Warn("checkpoint failed", "err", err)
		}
	}
}
