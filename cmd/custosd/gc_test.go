package main

import (
	"runtime/debug"
	"testing"
)

// TestTuneGC: custosd's collector defaults apply when the environment sets
// nothing, and GOGC / GOMEMLIMIT from the environment win.
func TestTuneGC(t *testing.T) {
	oldPercent := debug.SetGCPercent(100)
	oldLimit := debug.SetMemoryLimit(-1)
	t.Cleanup(func() { debug.SetGCPercent(oldPercent); debug.SetMemoryLimit(oldLimit) })

	tuneGC(func(string) string { return "" })
	if got := debug.SetGCPercent(100); got != defaultGCPercent {
		t.Errorf("GC percent = %d, want %d", got, defaultGCPercent)
	}
	if got := debug.SetMemoryLimit(-1); got != defaultMemoryLimit {
		t.Errorf("memory limit = %d, want %d", got, defaultMemoryLimit)
	}

	debug.SetMemoryLimit(oldLimit)
	tuneGC(func(k string) string { return map[string]string{"GOGC": "100", "GOMEMLIMIT": "64MiB"}[k] })
	if got := debug.SetGCPercent(100); got != 100 {
		t.Errorf("with GOGC set: GC percent = %d, want it left at 100", got)
	}
	if got := debug.SetMemoryLimit(-1); got != oldLimit {
		t.Errorf("with GOMEMLIMIT set: memory limit = %d, want it left at %d", got, oldLimit)
	}
}
