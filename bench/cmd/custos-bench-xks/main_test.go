package main

import (
	"context"
	"testing"
)

// TestReadEnv: xks.env's lines, quoted as custosd dev writes them.
func TestReadEnv(t *testing.T) {
	env := readEnv([]byte("# comment\nexport XKS_PROXY_HOST=localhost:1234\nexport SECURE='--cacert /tmp/a b/ca.pem'\nURI_PREFIX=dev\n"))
	if env["XKS_PROXY_HOST"] != "localhost:1234" || env["SECURE"] != "--cacert /tmp/a b/ca.pem" || env["URI_PREFIX"] != "dev" || len(env) != 3 {
		t.Fatalf("readEnv = %v", env)
	}
}

// TestRunRejectsFlags: bad concurrencies and operations are refused before
// any process starts.
func TestRunRejectsFlags(t *testing.T) {
	for _, args := range [][]string{{"--concurrency", "0"}, {"--concurrency", "x"}, {"--ops", "sign"}, {"--custosd"}} {
		if err := run(context.Background(), args); err == nil {
			t.Errorf("run(%q) accepted", args)
		}
	}
}
