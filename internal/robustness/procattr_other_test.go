//go:build !linux

package robustness

import "syscall"

// childProcAttr: without Pdeathsig, the node processes outlive a test
// process that is killed before its cleanups run.
func childProcAttr() *syscall.SysProcAttr { return nil }
