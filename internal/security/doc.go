// Package security holds end-to-end security tests of custos: real nodes
// (SoftHSM2 token, Raft, gRPC over mutual TLS) driven over the wire to
// check that secrets stay out of logs, errors, the ledger and the Raft log;
// that an HSM fault fails closed and recovers; that request limits hold;
// and that the TLS front door refuses what it must. It has no non-test code.
package security
