package main

import (
	"bufio"
	"bytes"
	"errors"
	"fmt"
	"os"
	"strconv"
	"strings"
	"syscall"
	"time"

	custos "github.com/custos-kms/custos/clients/go"
)

// clkTck is USER_HZ, the unit of utime and stime in /proc/PID/stat. It is
// 100 on every Linux architecture Go supports (it is part of the user-space
// ABI, whatever the kernel's HZ).
const clkTck = 100

// procCPU returns the user+system CPU time pid has used, from
// /proc/PID/stat (10 ms resolution; all threads of the process).
func procCPU(pid int) (time.Duration, error) {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
	if err != nil {
		return 0, err
	}
	return parseStatCPU(b)
}

// parseStatCPU extracts utime+stime from the contents of /proc/PID/stat.
// The command name (field 2) is in parentheses and may hold spaces and
// parentheses itself, so fields are counted after the last ')'.
func parseStatCPU(b []byte) (time.Duration, error) {
	i := bytes.LastIndexByte(b, ')')
	if i < 0 {
		return 0, errors.New("proc stat: no command name")
	}
	f := strings.Fields(string(b[i+1:]))
	// f[0] is field 3 (state): utime is field 14, stime field 15.
	if len(f) < 13 {
		return 0, fmt.Errorf("proc stat: %d fields after the command name", len(f))
	}
	ut, err1 := strconv.ParseUint(f[11], 10, 64)
	st, err2 := strconv.ParseUint(f[12], 10, 64)
	if err := errors.Join(err1, err2); err != nil {
		return 0, fmt.Errorf("proc stat: %w", err)
	}
	return time.Duration(ut+st) * time.Second / clkTck, nil
}

// memInfo is a process's resident memory, in KiB.
type memInfo struct {
	RSSKiB int64 `json:"rss_kib"` // VmRSS: now
	HWMKiB int64 `json:"hwm_kib"` // VmHWM: peak since the process started
}

// procMem reads VmRSS and VmHWM from /proc/PID/status.
func procMem(pid int) (memInfo, error) {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/status", pid))
	if err != nil {
		return memInfo{}, err
	}
	return parseStatusMem(b)
}

func parseStatusMem(b []byte) (memInfo, error) {
	var m memInfo
	var found int
	sc := bufio.NewScanner(bytes.NewReader(b))
	for sc.Scan() {
		name, val, ok := strings.Cut(sc.Text(), ":")
		if !ok {
			continue
		}
		var dst *int64
		switch name {
		case "VmRSS":
			dst = &m.RSSKiB
		case "VmHWM":
			dst = &m.HWMKiB
		default:
			continue
		}
		f := strings.Fields(val)
		if len(f) == 0 {
			continue
		}
		v, err := strconv.ParseInt(f[0], 10, 64)
		if err != nil {
			return m, fmt.Errorf("proc status %s: %w", name, err)
		}
		*dst = v
		found++
	}
	if found < 2 {
		return m, errors.New("proc status: no VmRSS/VmHWM")
	}
	return m, nil
}

// selfCPU returns the CPU time (user+system) this process has used.
func selfCPU() time.Duration {
	var ru syscall.Rusage
	if err := syscall.Getrusage(syscall.RUSAGE_SELF, &ru); err != nil {
		return 0
	}
	return time.Duration(ru.Utime.Nano() + ru.Stime.Nano())
}

// parseEnvFile reads the CUSTOS_* variables of a client.env written by
// custosd dev: lines "export NAME=VALUE" or "NAME=VALUE", VALUE possibly
// in single or double quotes ('\” inside single quotes, as shellQuote
// writes it). Comments and blank lines are skipped.
func parseEnvFile(b []byte) map[string]string {
	env := map[string]string{}
	sc := bufio.NewScanner(bytes.NewReader(b))
	for sc.Scan() {
		line := strings.TrimSpace(sc.Text())
		if line == "" || strings.HasPrefix(line, "#") {
			continue
		}
		line = strings.TrimSpace(strings.TrimPrefix(line, "export "))
		name, val, ok := strings.Cut(line, "=")
		if !ok {
			continue
		}
		env[strings.TrimSpace(name)] = unquote(strings.TrimSpace(val))
	}
	return env
}

// unquote undoes POSIX shell quoting of one word made of unquoted, '...'
// and "..." parts.
func unquote(s string) string {
	var out strings.Builder
	for i := 0; i < len(s); i++ {
		switch c := s[i]; c {
		case '\'':
			j := strings.IndexByte(s[i+1:], '\'')
			if j < 0 {
				out.WriteString(s[i+1:])
				return out.String()
			}
			out.WriteString(s[i+1 : i+1+j])
			i += j + 1
		case '"':
			i++
			for ; i < len(s) && s[i] != '"'; i++ {
				if s[i] == '\\' && i+1 < len(s) {
					i++
				}
				out.WriteByte(s[i])
			}
		case '\\':
			if i+1 < len(s) {
				i++
				out.WriteByte(s[i])
			}
		default:
			out.WriteByte(c)
		}
	}
	return out.String()
}

// configFromEnvFile returns the client configuration in a client.env file.
func configFromEnvFile(path string) (custos.Config, error) {
	b, err := os.ReadFile(path)
	if err != nil {
		return custos.Config{}, err
	}
	return configFromEnv(parseEnvFile(b), path)
}

func configFromEnv(env map[string]string, path string) (custos.Config, error) {
	cfg := custos.Config{
		Addrs:    custos.SplitAddrs(env[custos.EnvAddr]),
		CAFile:   env[custos.EnvCA],
		CertFile: env[custos.EnvCert],
		KeyFile:  env[custos.EnvKey],
	}
	var missing []string
	for _, n := range []string{custos.EnvAddr, custos.EnvCA, custos.EnvCert, custos.EnvKey} {
		if env[n] == "" {
			missing = append(missing, n)
		}
	}
	if len(missing) > 0 || len(cfg.Addrs) == 0 {
		return cfg, fmt.Errorf("%s: missing %s", path, strings.Join(missing, ", "))
	}
	return cfg, nil
}
