package robustness

import "syscall"

// childProcAttr makes a node process die with the test process (a go test
// timeout skips the cleanups). Pdeathsig fires when the thread that forked
// ends; the Go runtime ends threads only under a goroutine that exits
// locked to one, which this suite never does.
func childProcAttr() *syscall.SysProcAttr {
	return &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL}
}
