package kms

import (
	"context"
	"fmt"

	custosv1 "github.com/custos-kms/custos/proto/custos/v1"
	raftlogv1 "github.com/custos-kms/custos/proto/raftlog/v1"
)

// ReleaseNotifier delivers one ALLOW record to every sink required for
// release and returns nil only when all of them acknowledged it.
type ReleaseNotifier func(ctx context.Context, rec *custosv1.DecisionRecord) error

// SetReleaseNotifier installs the notifier used for keys whose policy sets
// notify_before_release. Without one, such keys release nothing.
func (s *Service) SetReleaseNotifier(n ReleaseNotifier) {
	s.kekMu.Lock()
	defer s.kekMu.Unlock()
	s.releaseNotifier = n
}

// notifyError is a failed notification before release: Error is what the
// caller is told, detail (the sinks' errors, which name no secret) goes into
// the RELEASE_BLOCKED record.
type notifyError struct {
	msg, detail string
}

func (e *notifyError) Error() string { return e.msg }
func (e *notifyError) Unwrap() error { return ErrNotificationFailed }

// notifyBeforeRelease runs after an ALLOW decision and before the HSM
// unwraps, for a key with notify_before_release (docs/architecture.md,
// invariant 6): it delivers the record to the required sinks and returns
// nil only when they acknowledged it. A failure matches
// ErrNotificationFailed; decideRelease then records a RELEASE_BLOCKED
// record (cause BlockCauseNotify) and fails closed.
func (s *Service) notifyBeforeRelease(ctx context.Context, rec *custosv1.DecisionRecord) error {
	s.kekMu.Lock()
	n := s.releaseNotifier
	s.kekMu.Unlock()
	err := fmt.Errorf("no notifier is configured on this node")
	if n != nil {
		err = n(ctx, rec)
	}
	if err == nil {
		return nil
	}
	return &notifyError{
		msg: fmt.Sprintf("%v: key %q requires notification before release and it could not be delivered; nothing released (decision %d)",
			ErrUnavailable, rec.Key, rec.Seq),
		detail: fmt.Sprintf("notification before release failed: %v", err),
	}
}

// AdvanceCursor records, through the log, that a sink acknowledged every
// notify record up to seq.
func (s *Service) AdvanceCursor(ctx context.Context, sink string, seq uint64) error {
	_, err := s.apply(ctx, Principal{Name: "custosd"}, &raftlogv1.Command{Op: &raftlogv1.Command_AdvanceCursor{
		AdvanceCursor: &raftlogv1.AdvanceCursor{Sink: sink, Seq: seq}}})
	return err
}
