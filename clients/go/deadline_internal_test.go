package custos

import (
	"context"
	"errors"
	"fmt"
	"testing"
	"time"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
)

// pastDeadline is a context whose deadline has passed while its timer has
// not fired yet (Err still nil): what a loaded machine shows gRPC.
type pastDeadline struct{ context.Context }

func (pastDeadline) Deadline() (time.Time, bool) { return time.Now().Add(-time.Millisecond), true }
func (pastDeadline) Err() error                  { return nil }

func TestCallerDeadline(t *testing.T) {
	dl := status.Error(codes.DeadlineExceeded, "context deadline exceeded")
	wrapped := fmt.Errorf("custos: get request: %w", dl)
	if err := callerDeadline(pastDeadline{context.Background()}, wrapped); !errors.Is(err, context.DeadlineExceeded) {
		t.Errorf("deadline past, timer not fired: %v, want context.DeadlineExceeded", err)
	}
	// A server's DeadlineExceeded before the caller's deadline is not the
	// caller's.
	ctx, cancel := context.WithTimeout(context.Background(), time.Hour)
	defer cancel()
	if err := callerDeadline(ctx, wrapped); err != nil {
		t.Errorf("deadline ahead: %v, want nil", err)
	}
	if err := callerDeadline(pastDeadline{context.Background()}, status.Error(codes.Unavailable, "x")); err != nil {
		t.Errorf("Unavailable after the deadline: %v, want nil (not the deadline's doing)", err)
	}
	cctx, ccancel := context.WithCancel(context.Background())
	ccancel()
	if err := callerDeadline(cctx, dl); !errors.Is(err, context.Canceled) {
		t.Errorf("cancelled: %v", err)
	}
}
