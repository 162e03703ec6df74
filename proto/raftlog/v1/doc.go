// Package raftlogv1 holds the generated protobuf messages of the commands
// custos writes to its Raft log and the node-to-node Replication service
// (proto/raftlog/v1/raftlog.proto, docs/raft-log.md; regenerate with
// `make proto`). This file is written by hand; the rest is generated.
package raftlogv1
