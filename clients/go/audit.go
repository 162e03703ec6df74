package custos

import (
	"context"
	"encoding/binary"
	"encoding/pem"
	"errors"
	"fmt"
	"io"
	"iter"
	"strings"
	"time"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/proto"

	custosv1 "github.com/custos-kms/custos/proto/custos/v1"
)

// Audit: the customer's auditors read, export and follow the decision
// ledger (docs/audit.md, docs/ledger.md). Only principals the cluster lists
// as auditors may call these; everyone else gets codes.PermissionDenied.

// Audit returns the raw AuditService client, with the same failover as the
// convenience methods.
func (c *Client) Audit() custosv1.AuditServiceClient { return c.audit }

// ListDecisions returns one page of ledger records matching filter (nil
// matches everything), from sequence number from (0 = 1) on, at most
// pageSize of them (0 = the server default, 100; at most 1000). Pass the
// response's NextSeq as from for the next page; it is 0 at the ledger's
// end.
func (c *Client) ListDecisions(ctx context.Context, filter *custosv1.DecisionFilter, from uint64, pageSize int) (*custosv1.ListDecisionsResponse, error) {
	if pageSize < 0 || pageSize > 1000 {
		return nil, fmt.Errorf("custos: list decisions: page size %d is outside 0..1000", pageSize)
	}
	resp, err := c.audit.ListDecisions(ctx, &custosv1.ListDecisionsRequest{Filter: filter, FromSeq: from, PageSize: int32(pageSize)})
	if err != nil {
		return nil, fmt.Errorf("custos: list decisions: %w", err)
	}
	return resp, nil
}

// Decisions iterates over every record matching filter from sequence
// number from (0 = 1) up to the ledger head as it was read page by page,
// in ledger order. An error ends the iteration after being yielded.
func (c *Client) Decisions(ctx context.Context, filter *custosv1.DecisionFilter, from uint64) iter.Seq2[*custosv1.DecisionRecord, error] {
	return func(yield func(*custosv1.DecisionRecord, error) bool) {
		for {
			resp, err := c.ListDecisions(ctx, filter, from, 1000)
			if err != nil {
				yield(nil, err)
				return
			}
			for _, r := range resp.GetRecords() {
				if !yield(r, nil) {
					return
				}
			}
			next := resp.GetNextSeq()
			if next == 0 {
				return
			}
			if next <= from && from != 0 {
				yield(nil, fmt.Errorf("custos: list decisions: server returned next_seq %d after from_seq %d", next, from))
				return
			}
			from = next
		}
	}
}

// GetCheckpoint returns the newest signed checkpoint, the public keys that
// sign checkpoints (PKIX DER, one per node), the cluster id and the ledger
// head.
func (c *Client) GetCheckpoint(ctx context.Context) (*custosv1.GetCheckpointResponse, error) {
	resp, err := c.audit.GetCheckpoint(ctx, &custosv1.GetCheckpointRequest{})
	if err != nil {
		return nil, fmt.Errorf("custos: get checkpoint: %w", err)
	}
	return resp, nil
}

// CheckpointKeysPEM encodes checkpoint public keys (PKIX DER, as in
// GetCheckpointResponse.PublicKeys) as "PUBLIC KEY" PEM blocks, the form
// `custos audit verify --pubkey` reads.
func CheckpointKeysPEM(keys [][]byte) []byte {
	var b []byte
	for _, k := range keys {
		b = append(b, pem.EncodeToMemory(&pem.Block{Type: "PUBLIC KEY", Bytes: k})...)
	}
	return b
}

// Export streams a ledger export from sequence number from (0 = 1): a
// header, the stored bytes of every record up to the head, and a trailer
// checkpoint signed over the last record. fn is called for each item in
// order; an error from fn ends the export and is returned.
func (c *Client) Export(ctx context.Context, from uint64, fn func(*custosv1.ExportItem) error) error {
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	s, err := c.audit.Export(ctx, &custosv1.ExportRequest{FromSeq: from})
	if err != nil {
		return fmt.Errorf("custos: export: %w", err)
	}
	for {
		it, err := s.Recv()
		if errors.Is(err, io.EOF) {
			return nil
		}
		if err != nil {
			return fmt.Errorf("custos: export: %w", err)
		}
		if err := fn(it); err != nil {
			return err
		}
	}
}

// ExportStats describes a written export.
type ExportStats struct {
	// Records is the number of records written.
	Records int
	// FirstSeq is the header's first sequence number, LastSeq the trailer's
	// (0 for an empty ledger).
	FirstSeq, LastSeq uint64
}

// ExportTo writes a ledger export from sequence number from (0 = 1) to w
// in the export file format (docs/ledger.md, "Export file"), which
// `custos audit verify` checks offline. A full export (from 0 or 1) is
// needed to verify the chain from its start. On error w holds a partial
// file: write to a temporary file and rename it on success.
func (c *Client) ExportTo(ctx context.Context, w io.Writer, from uint64) error {
	_, err := c.ExportToStats(ctx, w, from)
	return err
}

// ExportToStats is ExportTo that also reports what it wrote.
func (c *Client) ExportToStats(ctx context.Context, w io.Writer, from uint64) (ExportStats, error) {
	var st ExportStats
	ew := &exportWriter{w: w}
	err := c.Export(ctx, from, func(it *custosv1.ExportItem) error {
		switch v := it.GetItem().(type) {
		case *custosv1.ExportItem_Header:
			st.FirstSeq = v.Header.GetFirstSeq()
		case *custosv1.ExportItem_Record:
			st.Records++
		case *custosv1.ExportItem_Trailer:
			st.LastSeq = v.Trailer.GetSeq()
		}
		if err := ew.writeItem(it); err != nil {
			return fmt.Errorf("custos: export: write: %w", err)
		}
		return nil
	})
	if err != nil {
		return st, err
	}
	if err := ew.close(); err != nil {
		return st, fmt.Errorf("custos: export: write: %w", err)
	}
	return st, nil
}

// Watch calls fn for every record matching filter (nil matches everything)
// from sequence number from (0 = 1) on, in ledger order, then for each new
// matching record as it is committed, until ctx ends or fn returns an
// error. When the stream breaks (codes.Unavailable, a node restarting or
// failing over, or the server ending the stream) Watch reconnects, with
// backoff, and resumes after the last record it saw: no record is skipped
// or repeated. It returns ctx's error when ctx ends, fn's error, or any
// other error from the cluster (for example codes.InvalidArgument when
// from is beyond the ledger head plus one, or codes.PermissionDenied).
func (c *Client) Watch(ctx context.Context, from uint64, filter *custosv1.DecisionFilter, fn func(*custosv1.DecisionRecord) error) error {
	next := max(from, 1)
	const (
		minDelay = 100 * time.Millisecond
		maxDelay = 5 * time.Second
	)
	delay := minDelay
	for {
		progressed, err := c.watchOnce(ctx, next, filter, func(r *custosv1.DecisionRecord) error {
			if r.GetSeq() < next {
				return nil // never repeat a record
			}
			if err := fn(r); err != nil {
				return &callbackError{err}
			}
			next = r.GetSeq() + 1
			return nil
		})
		if ce, ok := errors.AsType[*callbackError](err); ok {
			return ce.err
		}
		if cerr := callerDeadline(ctx, err); cerr != nil {
			return cerr
		}
		if err != nil && status.Code(err) != codes.Unavailable {
			return fmt.Errorf("custos: watch decisions: %w", err)
		}
		// The stream broke or ended: reconnect after a pause.
		if progressed {
			delay = minDelay
		}
		t := time.NewTimer(delay)
		select {
		case <-ctx.Done():
			t.Stop()
			return ctx.Err()
		case <-t.C:
		}
		delay = min(delay*2, maxDelay)
	}
}

// callbackError carries an error returned by Watch's callback.
type callbackError struct{ err error }

func (e *callbackError) Error() string { return e.err.Error() }

// watchOnce runs one WatchDecisions stream from next until it ends. It
// reports whether any record arrived. A clean end of stream is reported as
// codes.Unavailable: the server went away.
func (c *Client) watchOnce(ctx context.Context, next uint64, filter *custosv1.DecisionFilter, fn func(*custosv1.DecisionRecord) error) (bool, error) {
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	s, err := c.audit.WatchDecisions(ctx, &custosv1.WatchDecisionsRequest{FromSeq: next, Filter: filter})
	if err != nil {
		return false, err
	}
	progressed := false
	for {
		r, err := s.Recv()
		if errors.Is(err, io.EOF) {
			return progressed, status.Error(codes.Unavailable, "watch stream ended")
		}
		if err != nil {
			return progressed, err
		}
		progressed = true
		if err := fn(r); err != nil {
			return progressed, err
		}
	}
}

// ParseOutcome parses an outcome such as "ALLOW", "deny" or
// "OUTCOME_PENDING" (case-insensitive). OUTCOME_UNSPECIFIED is refused.
func ParseOutcome(s string) (custosv1.Outcome, error) {
	name := strings.ToUpper(strings.TrimSpace(s))
	if !strings.HasPrefix(name, "OUTCOME_") {
		name = "OUTCOME_" + name
	}
	v, ok := custosv1.Outcome_value[name]
	if !ok || v == int32(custosv1.Outcome_OUTCOME_UNSPECIFIED) {
		return 0, fmt.Errorf("custos: unknown outcome %q (want ALLOW, DENY or PENDING)", s)
	}
	return custosv1.Outcome(v), nil
}

// OutcomeString returns o without the OUTCOME_ prefix, e.g. "DENY".
func OutcomeString(o custosv1.Outcome) string { return strings.TrimPrefix(o.String(), "OUTCOME_") }

// OperationString returns o without the OPERATION_ prefix, e.g. "DECRYPT".
func OperationString(o custosv1.Operation) string {
	return strings.TrimPrefix(o.String(), "OPERATION_")
}

// Export file framing (docs/ledger.md, "Export file"). The library writes
// it itself rather than importing kms/audit, which would pull the PKCS#11
// (cgo) packages into every application; a test checks that kms/audit's
// reader and verifier accept what it writes.
const (
	exportMagic   = "CUSTOS-LEDGER-EXPORT\n"
	exportVersion = 1
	maxExportItem = 16 << 20
)

// exportWriter frames export items: magic and version once, then
// uvarint(len(body)) body per item, body being the deterministic protobuf
// encoding of the ExportItem.
type exportWriter struct {
	w       io.Writer
	started bool
	buf     []byte
}

func (e *exportWriter) start() error {
	if e.started {
		return nil
	}
	e.started = true
	_, err := io.WriteString(e.w, exportMagic+string([]byte{exportVersion}))
	return err
}

func (e *exportWriter) writeItem(it *custosv1.ExportItem) error {
	if it.GetItem() == nil {
		return errors.New("empty export item")
	}
	if err := e.start(); err != nil {
		return err
	}
	body, err := proto.MarshalOptions{Deterministic: true}.Marshal(it)
	if err != nil {
		return err
	}
	if len(body) == 0 || len(body) > maxExportItem {
		return fmt.Errorf("export item of %d bytes is outside 1..%d", len(body), maxExportItem)
	}
	e.buf = binary.AppendUvarint(e.buf[:0], uint64(len(body)))
	e.buf = append(e.buf, body...)
	_, err = e.w.Write(e.buf)
	return err
}

// close writes the magic and version if no item was written.
func (e *exportWriter) close() error { return e.start() }
