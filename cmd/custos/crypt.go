package main

import (
	"bytes"
	"context"
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"sort"
	"strings"
	"time"

	custos "github.com/custos-kms/custos/clients/go"
	"github.com/custos-kms/custos/internal/version"
	custosv1 "github.com/custos-kms/custos/proto/custos/v1"
)

// contextFlag collects repeated --context k=v flags.
type contextFlag map[string]string

func (c contextFlag) String() string {
	keys := make([]string, 0, len(c))
	for k := range c {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	for i, k := range keys {
		keys[i] = k + "=" + c[k]
	}
	return strings.Join(keys, ",")
}

func (c contextFlag) Set(s string) error {
	k, v, ok := strings.Cut(s, "=")
	if !ok || k == "" {
		return fmt.Errorf("want key=value")
	}
	if _, dup := c[k]; dup {
		return fmt.Errorf("context key %q given twice", k)
	}
	c[k] = v
	return nil
}

// orNil returns nil for an empty context, so that no context is sent.
func (c contextFlag) orNil() map[string]string {
	if len(c) == 0 {
		return nil
	}
	return c
}

var longHelp = map[string]string{
	"encrypt": `IN is read and OUT written in the custos envelope format; '-' means
standard input or output. A file OUT that exists is refused (exit code 1,
nothing written) unless --force. A file OUT is written to a temporary file
next to it and moved into place only on success: on any failure no OUT
file is created, and an existing one (with --force) is left as it was. The encryption context (--context) is
bound to the data key and stored, in clear, in the envelope header: the
same pairs are needed to decrypt. On success with a file OUT, one line
naming the key and version is printed.`,
	"decrypt": `The data key is unwrapped by custos only after the decision, with the
justification, is recorded in the cluster's ledger. Reasons: ` + strings.Join(custos.ReasonNames(), ", ") + `
(case-insensitive, REASON_ prefix optional).

A file OUT that exists is refused, before custos is asked, unless
--force. A file OUT is written to a temporary file next to it and moved
into place only once the whole input has been authenticated: on any
failure no OUT file is created, and an existing one (with --force) is left
as it was. With OUT '-' the plaintext is written to standard output segment
by segment as it is authenticated, so a failure (non-zero exit) can come
after some output: discard the output unless the exit code is 0.

When the key's policy sends the reason to the security officers
(REQUIRE_APPROVAL), the decrypt fails with "approval required: request
ID". With --wait, custos prints "waiting for approval of request ID..." to
standard error, polls until the officers decide, and decrypts once more
when they approve; a denied or expired request, or --wait-timeout, ends
with exit code 1 and nothing written.`,
	"officer sign": `Reads the statement file, shows what its bytes say (never the file's
description field), and adds your signature, rewriting FILE atomically.
Pass the file on to the next officer; anyone may then submit it.`,
	"officer propose enable": `Every 'officer propose' command writes an unsigned statement file for
offline signing ('officer sign', then 'officer submit'). The cluster id is
asked from the cluster unless --cluster-id is given. The statement expires
after --lifetime (default 1h, at most 168h).`,
	"key policy set": `The policy file is the JSON printed by 'key policy get --json'
(version is ignored). With one local officer key the statement is signed
and submitted; if the quorum needs more signatures, use
'officer propose policy', 'officer sign' and 'officer submit'.`,
	"key enable": `Re-enabling loosens access and needs the officer quorum. With one local
officer key custos signs and submits; if the quorum needs more signatures
it says so (exit 1): use 'officer propose enable', 'officer sign' and
'officer submit'.`,
	"datakey": `Prints one line: key=NAME version=N wrapped=BASE64, plus plaintext=BASE64
with --show-plaintext. Keep the plaintext secret and store only the
wrapped key.`,
	"key list": "Prints one line per key.",
}

func runEncrypt(ctx context.Context, a *app, args []string) error {
	fs := a.flags("encrypt")
	key := fs.String("key", "", "name of the custos key (required)")
	encCtx := contextFlag{}
	fs.Var(encCtx, "context", "encryption context pair `k=v`; repeat for more pairs")
	seg := fs.Int("segment-size", 0, "plaintext bytes per segment (default 65536)")
	force := fs.Bool("force", false, "replace OUT if it exists")
	pos, err := a.parse("encrypt", fs, args, 2, 2)
	if err != nil {
		return err
	}
	if *key == "" {
		return usagef("--key is required")
	}
	if err := refuseExisting(pos[1], *force); err != nil {
		return err
	}
	return a.withClient(ctx, func(c *custos.Client) error {
		opts := []custos.Option{custos.WithStdio(a.stdin, a.stdout)}
		if *seg != 0 {
			opts = append(opts, custos.WithSegmentSize(*seg))
		}
		if !*force {
			opts = append(opts, custos.WithNoOverwrite())
		}
		h, err := c.EncryptFile(ctx, pos[0], pos[1], *key, encCtx.orNil(), opts...)
		if err != nil {
			return existsErr(pos[1], err)
		}
		if pos[1] != "-" {
			fmt.Fprintf(a.stdout, "encrypted %s to %s with key %s version %d\n", pos[0], pos[1], h.Key, h.KeyVersion)
		}
		return nil
	})
}

func runDecrypt(ctx context.Context, a *app, args []string) error {
	fs := a.flags("decrypt")
	reason := fs.String("justification", "", "reason code: "+strings.Join(custos.ReasonNames(), ", ")+
		" (default none: recorded as UNSPECIFIED, which the key's policy treats as its own reason)")
	text := fs.String("text", "", "justification text shown to the customer's officers")
	ticket := fs.String("ticket", "", "ticket or case reference")
	expect := contextFlag{}
	fs.Var(expect, "expect-context", "refuse the file unless its encryption context has pair `k=v`; repeatable")
	wait := fs.Bool("wait", false, "if the officers' approval is required, wait for it and then decrypt")
	waitTimeout := fs.Duration("wait-timeout", time.Hour, "with --wait, give up after this long")
	poll := fs.Duration("poll-interval", custos.DefaultPollInterval, "with --wait, how often to ask whether the request was decided")
	force := fs.Bool("force", false, "replace OUT if it exists")
	pos, err := a.parse("decrypt", fs, args, 2, 2)
	if err != nil {
		return err
	}
	// Without --justification the reason is recorded as not given
	// (REASON_UNSPECIFIED), never as one the caller did not state.
	var r custosv1.Reason
	if *reason != "" {
		if r, err = custos.ParseReasonOrUnspecified(*reason); err != nil {
			return usagef("--justification: %s", strings.TrimPrefix(err.Error(), "custos: "))
		}
	}
	if *wait && (*waitTimeout <= 0 || *poll <= 0) {
		return usagef("--wait-timeout and --poll-interval must be positive")
	}
	// Before custos is asked: a decrypt is a recorded decision.
	if err := refuseExisting(pos[1], *force); err != nil {
		return err
	}
	return a.withClient(ctx, func(c *custos.Client) error {
		opts := []custos.Option{}
		if len(expect) > 0 {
			opts = append(opts, custos.WithExpectedContext(expect))
		}
		if !*force {
			opts = append(opts, custos.WithNoOverwrite())
		}
		j := custos.Justification{Reason: r, Text: *text, Ticket: *ticket}
		// Standard input can be read only once: with --wait, keep what the
		// first attempt read (the envelope header) to replay it on the retry.
		var rec *recorder
		stdin := a.stdin
		if *wait && pos[0] == "-" {
			rec = &recorder{r: a.stdin}
			stdin = rec
		}
		h, err := c.DecryptFile(ctx, pos[0], pos[1], j, append(opts, custos.WithStdio(stdin, a.stdout))...)
		if id, pending := custos.PendingRequestID(err); pending && *wait {
			fmt.Fprintf(a.stderr, "waiting for approval of request %s...\n", id)
			wctx, cancel := context.WithTimeout(ctx, *waitTimeout)
			req, werr := c.WaitForApproval(wctx, id, custos.WithPollInterval(*poll))
			cancel()
			switch {
			case errors.Is(werr, custos.ErrRequestDenied):
				return fmt.Errorf("request %s was denied by a security officer: nothing was decrypted", id)
			case errors.Is(werr, custos.ErrRequestExpired):
				return fmt.Errorf("request %s expired without a decision: nothing was decrypted", id)
			case errors.Is(werr, context.DeadlineExceeded) && ctx.Err() == nil:
				return fmt.Errorf("request %s is still pending after %s (--wait-timeout): nothing was decrypted; the officers can still approve it, then run decrypt again", id, *waitTimeout)
			case werr != nil:
				return werr
			}
			fmt.Fprintf(a.stderr, "request %s approved (grant %s); decrypting\n", id, req.GetGrantId())
			if rec != nil {
				stdin = io.MultiReader(bytes.NewReader(rec.buf.Bytes()), a.stdin)
			}
			h, err = c.DecryptFile(ctx, pos[0], pos[1], j, append(opts, custos.WithStdio(stdin, a.stdout))...)
		}
		if err != nil {
			if id, pending := custos.PendingRequestID(err); pending && !*wait {
				return &hintError{err, fmt.Sprintf("custos: the officers must approve request %s (custos officer approve %s); run again with --wait to wait for it", id, id)}
			}
			return existsErr(pos[1], err)
		}
		if pos[1] != "-" {
			fmt.Fprintf(a.stdout, "decrypted %s to %s with key %s version %d\n", pos[0], pos[1], h.Key, h.KeyVersion)
		}
		return nil
	})
}

// refuseExisting refuses a file output that exists, unless force: encrypt,
// decrypt and audit export replace a file only with --force (as officer
// keygen and officer propose never do). Standard output ("-") is not a
// file.
func refuseExisting(path string, force bool) error {
	if force || path == "-" {
		return nil
	}
	if _, err := os.Lstat(path); err == nil {
		return existsErr(path, fs.ErrExist)
	}
	return nil
}

// existsErr turns an error that says the output exists (checked again
// when the finished output is moved into place, which never replaces a
// file that appeared meanwhile) into the command's message.
func existsErr(path string, err error) error {
	if errors.Is(err, fs.ErrExist) {
		return fmt.Errorf("%s already exists: not overwriting it (--force replaces it)", path)
	}
	return err
}

// recorder keeps a copy of everything read through it.
type recorder struct {
	r   io.Reader
	buf bytes.Buffer
}

func (r *recorder) Read(p []byte) (int, error) {
	n, err := r.r.Read(p)
	r.buf.Write(p[:n])
	return n, err
}

func runDataKey(ctx context.Context, a *app, args []string) error {
	fs := a.flags("datakey")
	key := fs.String("key", "", "name of the custos key (required)")
	encCtx := contextFlag{}
	fs.Var(encCtx, "context", "encryption context pair `k=v`; repeat for more pairs")
	show := fs.Bool("show-plaintext", false, "also print the plaintext data key (secret!)")
	asJSON := fs.Bool("json", false, "print one JSON object")
	if _, err := a.parse("datakey", fs, args, 0, 0); err != nil {
		return err
	}
	if *key == "" {
		return usagef("--key is required")
	}
	return a.withClient(ctx, func(c *custos.Client) error {
		dk, err := c.GenerateDataKey(ctx, *key, encCtx.orNil())
		if err != nil {
			return err
		}
		defer dk.Zero()
		b64 := base64.StdEncoding.EncodeToString
		if *asJSON {
			out := map[string]any{"key": dk.Key, "version": dk.Version, "wrapped": b64(dk.Wrapped)}
			if *show {
				out["plaintext"] = b64(dk.Plaintext)
			}
			b, err := json.Marshal(out)
			if err != nil {
				return err
			}
			_, err = fmt.Fprintf(a.stdout, "%s\n", b)
			return err
		}
		line := fmt.Sprintf("key=%s version=%d wrapped=%s", dk.Key, dk.Version, b64(dk.Wrapped))
		if *show {
			line += " plaintext=" + b64(dk.Plaintext)
		}
		_, err = fmt.Fprintln(a.stdout, line)
		return err
	})
}

func runVersion(_ context.Context, a *app, args []string) error {
	fs := a.flags("version")
	if _, err := a.parse("version", fs, args, 0, 0); err != nil {
		return err
	}
	fmt.Fprintln(a.stdout, version.String("custos"))
	return nil
}
