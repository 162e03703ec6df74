package notify

import (
	"context"
	"errors"
	"fmt"
	"sync"

	custosv1 "github.com/custos-kms/custos/proto/custos/v1"
	"google.golang.org/protobuf/proto"
)

// errStop ends a one-record ledger scan.
var errStop = errors.New("stop")

// DeliverNow delivers one record, synchronously, to every sink with
// required_for_release, retrying failed attempts with back-off, and returns
// nil only when each of them acknowledged it within ReleaseTimeout. With no
// such sink it returns ErrNoRequiredSink: a key that requires notification
// before release is not released without one. It is the kms.ReleaseNotifier
// Install sets. The record goes out in the webhook format, with
// X-Custos-Purpose "release", outside the ordered stream (it is usually an
// ALLOW that the stream does not carry; if the stream carries it too, the
// receiver sees the seq twice).
func (n *Notifier) DeliverNow(ctx context.Context, rec *custosv1.DecisionRecord) error {
	if rec == nil {
		return errors.New("notify: no record to deliver")
	}
	var required []*custosv1.Sink
	for _, sk := range n.st.Sinks() {
		if sk.RequiredForRelease {
			required = append(required, sk)
		}
	}
	if len(required) == 0 {
		return ErrNoRequiredSink
	}
	it, err := n.releaseItem(rec)
	if err != nil {
		return fmt.Errorf("notify: encode record %d: %v", rec.Seq, err)
	}
	ctx, cancel := context.WithTimeout(ctx, n.cfg.ReleaseTimeout)
	defer cancel()
	errs := make([]error, len(required))
	var wg sync.WaitGroup
	for i, sk := range required {
		wg.Go(func() {
			var last error
			ok := n.retry(ctx, n.lg.With("sink", sk.Name), "deliver", func() error {
				last = n.deliver(ctx, sk, []item{it}, "release")
				return last
			})
			if !ok {
				if last == nil {
					last = ctx.Err()
				}
				n.lg.Warn("release notification failed", "sink", sk.Name, "seq", rec.Seq, "key", rec.Key, "err", last)
				errs[i] = last
				return
			}
			n.lg.Info("release notification delivered", "sink", sk.Name, "seq", rec.Seq, "key", rec.Key)
		})
	}
	wg.Wait()
	if err := errors.Join(errs...); err != nil {
		return fmt.Errorf("notify: record %d not acknowledged by every sink required for release: %w", rec.Seq, err)
	}
	return nil
}

// releaseItem encodes rec with its stored bytes when the local ledger has
// them (it does once the decision is applied here), else with its
// deterministic encoding, which is how the ledger stores it.
func (n *Notifier) releaseItem(rec *custosv1.DecisionRecord) (item, error) {
	var stored []byte
	if rec.Seq > 0 {
		_ = n.st.ScanRecords(rec.Seq, func(seq uint64, data []byte) error {
			if seq == rec.Seq {
				stored = append([]byte(nil), data...)
			}
			return errStop
		})
	}
	r := rec
	if stored != nil {
		r = &custosv1.DecisionRecord{}
		if err := proto.Unmarshal(stored, r); err != nil || r.Seq != rec.Seq {
			stored, r = nil, rec
		}
	}
	if stored == nil {
		var err error
		if stored, err = (proto.MarshalOptions{Deterministic: true}).Marshal(rec); err != nil {
			return item{}, err
		}
	}
	j, err := recordJSON(r, stored)
	if err != nil {
		return item{}, err
	}
	return item{seq: rec.Seq, json: j}, nil
}
