package nodetest

import "testing"

// RefusedAddr returns a loopback address where nothing listens and
// nothing can start listening while the test runs: connecting to it fails
// at once (connection refused, or reset where the platform cannot hold a
// port without listening). For clients that must skip or report a dead
// node. A port taken from a listener that was closed again would not do:
// any process on the machine could listen on it in between
// (docs/architecture.md, "Listeners").
func RefusedAddr(tb testing.TB) string {
	tb.Helper()
	addr, closeFn, err := refusedAddr()
	if err != nil {
		tb.Fatalf("nodetest: an address that refuses connections: %v", err)
	}
	tb.Cleanup(closeFn)
	return addr
}
