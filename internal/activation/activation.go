// Package activation implements systemd-style socket activation, both
// sides: Listeners takes over the listening sockets a service manager (a
// systemd .socket unit, or a parent process) passed to this process, and
// Pass hands open listeners to a child process the same way.
//
// The protocol is systemd's (sd_listen_fds(3)): the sockets are the file
// descriptors 3 .. 3+LISTEN_FDS-1, LISTEN_FDNAMES names them in order,
// colon-separated, and LISTEN_PID is the pid of the process they are meant
// for. A parent that starts the child with exec.Cmd cannot know the pid
// before the child runs, so, as most implementations outside systemd do,
// Listeners also accepts LISTEN_PID unset; a LISTEN_PID set to another
// process means the variables were inherited by mistake and are ignored.
// Either way Listeners unsets all three, so that the process's own
// children do not inherit them.
//
// Why: a listener handed over open keeps its port held from the moment the
// parent bound it, so no other process can take the port between the
// moment the parent learns it and the moment the child serves on it, and
// a parent that keeps its own copy can restart the child on the same port
// (docs/architecture.md, "Listeners").
package activation

import (
	"errors"
	"fmt"
	"net"
	"os"
	"os/exec"
	"strconv"
	"strings"
)

// The environment variables of the protocol and the first descriptor.
const (
	EnvPID     = "LISTEN_PID"
	EnvFDs     = "LISTEN_FDS"
	EnvFDNames = "LISTEN_FDNAMES"
	// FirstFD is the descriptor of the first passed socket
	// (SD_LISTEN_FDS_START).
	FirstFD = 3
	// maxFDs bounds LISTEN_FDS: a larger number is a mistake, not a
	// configuration.
	maxFDs = 64
)

// Listeners returns the listening sockets passed to this process, by name,
// or nil when none were (LISTEN_FDS unset or 0, or LISTEN_PID naming
// another process). It unsets LISTEN_PID, LISTEN_FDS and LISTEN_FDNAMES in
// every case. An error says what is wrong in one line: LISTEN_FDS or
// LISTEN_PID malformed, a name missing, empty or repeated, a descriptor
// that is not open, not a socket, or not a listening stream socket. The
// caller owns the listeners; on error, those already taken are closed.
func Listeners() (map[string]net.Listener, error) {
	pid, fds, names := os.Getenv(EnvPID), os.Getenv(EnvFDs), os.Getenv(EnvFDNames)
	for _, k := range []string{EnvPID, EnvFDs, EnvFDNames} {
		_ = os.Unsetenv(k)
	}
	return listeners(pid, fds, names, os.Getpid(), FirstFD)
}

// listeners is Listeners on the variables' values, this process's pid and
// the first descriptor (FirstFD; tests pass others).
func listeners(pidEnv, fdsEnv, namesEnv string, self, first int) (map[string]net.Listener, error) {
	if fdsEnv == "" {
		return nil, nil
	}
	if pidEnv != "" {
		pid, err := strconv.Atoi(pidEnv)
		if err != nil || pid < 1 {
			return nil, fmt.Errorf("socket activation: %s=%q is not a process id", EnvPID, pidEnv)
		}
		if pid != self {
			return nil, nil // meant for another process (inherited)
		}
	}
	n, err := strconv.Atoi(fdsEnv)
	if err != nil || n < 0 || n > maxFDs {
		return nil, fmt.Errorf("socket activation: %s=%q is not a number of descriptors (0 to %d)", EnvFDs, fdsEnv, maxFDs)
	}
	if n == 0 {
		return nil, nil
	}
	if namesEnv == "" {
		return nil, fmt.Errorf("socket activation: %s=%d but %s is not set: every passed socket needs a name (systemd: FileDescriptorName=)", EnvFDs, n, EnvFDNames)
	}
	names := strings.Split(namesEnv, ":")
	if len(names) != n {
		return nil, fmt.Errorf("socket activation: %s=%d but %s=%q names %d sockets", EnvFDs, n, EnvFDNames, namesEnv, len(names))
	}
	seen := map[string]int{}
	for i, name := range names {
		if name == "" {
			return nil, fmt.Errorf("socket activation: %s=%q: the name of descriptor %d is empty", EnvFDNames, namesEnv, first+i)
		}
		if j, dup := seen[name]; dup {
			return nil, fmt.Errorf("socket activation: %s=%q names descriptors %d and %d %q: give each socket its own name", EnvFDNames, namesEnv, first+j, first+i, name)
		}
		seen[name] = i
	}
	out := make(map[string]net.Listener, n)
	for i, name := range names {
		l, err := listenerFD(first+i, name)
		if err != nil {
			for _, l := range out {
				_ = l.Close()
			}
			return nil, fmt.Errorf("socket activation: %w", err)
		}
		out[name] = l
	}
	return out, nil
}

// Named is a listening socket to pass to a child process under a name.
type Named struct {
	Name string
	File *os.File
}

// Pass arranges for cmd, not yet started, to receive files as its passed
// sockets: cmd.ExtraFiles becomes the files, in order (descriptors 3, 4,
// …), and cmd.Env (os.Environ() if nil) gets LISTEN_FDS and LISTEN_FDNAMES
// instead of any inherited LISTEN_* variable. LISTEN_PID is left unset
// (the child's pid is not known before it starts; Listeners accepts that).
// cmd must have no ExtraFiles of its own. The caller keeps the files: the
// child gets duplicates, and the caller may close its copies once cmd has
// started, or keep them to hold the ports for a restart.
func Pass(cmd *exec.Cmd, files ...Named) error {
	if len(cmd.ExtraFiles) > 0 {
		return errors.New("socket activation: the command already has extra files; passed sockets must start at descriptor 3")
	}
	names := make([]string, len(files))
	extra := make([]*os.File, len(files))
	for i, f := range files {
		if f.Name == "" || strings.Contains(f.Name, ":") || f.File == nil {
			return fmt.Errorf("socket activation: socket %d: a name without colons and a file are required", i)
		}
		names[i], extra[i] = f.Name, f.File
	}
	env := cmd.Env
	if env == nil {
		env = os.Environ()
	}
	out := make([]string, 0, len(env)+2)
	for _, kv := range env {
		switch k, _, _ := strings.Cut(kv, "="); k {
		case EnvPID, EnvFDs, EnvFDNames:
		default:
			out = append(out, kv)
		}
	}
	if len(files) > 0 {
		out = append(out, EnvFDs+"="+strconv.Itoa(len(files)), EnvFDNames+"="+strings.Join(names, ":"))
		cmd.ExtraFiles = extra
	}
	cmd.Env = out
	return nil
}

// File returns a duplicate of l's socket as a file, for Pass. l stays
// open; closing one does not close the other (the port stays held while
// either is open).
func File(l net.Listener) (*os.File, error) {
	fl, ok := l.(interface{ File() (*os.File, error) })
	if !ok {
		return nil, fmt.Errorf("socket activation: a %T cannot be passed to another process", l)
	}
	f, err := fl.File()
	if err != nil {
		return nil, fmt.Errorf("socket activation: %w", err)
	}
	return f, nil
}
