package raft

import (
	hraft "github.com/hashicorp/raft"
)

// Pipelined replication is off in every custos node (docs/architecture.md,
// "Raft replication"). Read in hashicorp/raft v1.8.0 (replication.go,
// net_transport.go), the pipeline can wedge a follower's replication for
// good:
//
//   - NetworkTransport sizes the pipeline's inprogressCh and doneCh at
//     MaxRPCsInFlight-2: with the default of 2 both are unbuffered.
//   - When a follower answers a pipelined AppendEntries on a live
//     connection with Success=false (a gap in its log, a failed log write)
//     or a newer term, pipelineDecode returns and closes finishCh. Nobody
//     reads the pipeline's doneCh any more, so decodeResponses parks on it
//     after the next response. (A read error or timeout is harmless: it
//     closes the connection, so the next send fails.)
//   - pipelineReplicate's send loop selects between the closed finishCh and
//     a ready triggerCh (new entries), at random. When it picks triggerCh it
//     sends once more and parks in AppendEntries on inprogressCh, which
//     decodeResponses no longer reads. pipeline.Close, the only thing that
//     would release both, is deferred in that parked goroutine.
//   - replicate() never returns, so its heartbeat goroutine keeps running:
//     the follower looks healthy, never calls an election, and never
//     receives another entry. Raft.Shutdown waits for every raft goroutine
//     and so waits forever.
//
// TestPipelineFailureDoesNotWedgeReplication reproduces it with pipelining
// on: the follower stops at one log index while the leader runs on, and
// Shutdown hangs with the sender parked in netPipeline.AppendEntries
// (net_transport.go:882), decodeResponses parked sending to doneCh (:849)
// and shutdownFuture.Error in waitShutdown: two replication
// goroutines blocking each other, the shape of the hung three-node CLI test.
// Without the pipeline, replicate() sends one
// AppendEntries at a time and handles every failure itself (backoff, a
// lower nextIndex, a snapshot). Measured with BenchmarkThreeNodeApply on a
// loaded 2-core machine, pipelined and unpipelined builds interleaved, three
// runs each (ops/s, median and range): C=1 183 (183-183) vs 210
// (108-434); C=16 1735 (1487-1735) vs 2543 (1501-2803); C=64 6484
// (5032-8803) vs 4879 (4756-9034). The differences are inside the noise:
// group commit already packs concurrent commands into few, large entries,
// and hashicorp/raft's docs for MaxRPCsInFlight note that pipelining
// combines badly with batching.

// MaxRPCsInFlight for the NetworkTransports this package builds: 1 makes
// NetworkTransport.AppendEntriesPipeline return
// ErrPipelineReplicationNotSupported (see the comment above).
const maxRPCsInFlight = 1

// unpipelined is a transport that refuses AppendEntriesPipeline, so raft
// replicates with one AppendEntries at a time whatever the wrapped
// transport supports. Open wraps every transport, its own and
// Config.Transport, in one.
type unpipelined struct {
	hraft.Transport
}

// unpipelinedPreVote is unpipelined over a transport with the pre-vote RPC:
// raft uses pre-vote only when its transport implements WithPreVote, so the
// wrapper must not hide it.
type unpipelinedPreVote struct {
	unpipelined
	pv hraft.WithPreVote
}

var (
	_ hraft.WithClose   = unpipelined{}
	_ hraft.WithPreVote = unpipelinedPreVote{}
)

// withoutPipelining wraps t so that raft never replicates through an
// AppendPipeline. The wrapper keeps t's Close and RequestPreVote.
func withoutPipelining(t hraft.Transport) hraft.Transport {
	u := unpipelined{Transport: t}
	if pv, ok := t.(hraft.WithPreVote); ok {
		return unpipelinedPreVote{unpipelined: u, pv: pv}
	}
	return u
}

// AppendEntriesPipeline always refuses: raft falls back to synchronous
// AppendEntries (replication.go: pipelineReplicate's error path).
func (unpipelined) AppendEntriesPipeline(hraft.ServerID, hraft.ServerAddress) (hraft.AppendPipeline, error) {
	return nil, hraft.ErrPipelineReplicationNotSupported
}

// Close closes the wrapped transport if it can be closed (raft closes its
// transport on Shutdown when it implements hraft.WithClose).
func (u unpipelined) Close() error {
	if c, ok := u.Transport.(hraft.WithClose); ok {
		return c.Close()
	}
	return nil
}

// RequestPreVote forwards the pre-vote RPC to the wrapped transport.
func (u unpipelinedPreVote) RequestPreVote(id hraft.ServerID, target hraft.ServerAddress,
	args *hraft.RequestPreVoteRequest, resp *hraft.RequestPreVoteResponse) error {
	return u.pv.RequestPreVote(id, target, args, resp)
}
