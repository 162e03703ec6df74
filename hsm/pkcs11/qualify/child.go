package qualify

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"strings"
	"time"

	p11 "github.com/miekg/pkcs11"
)

// ChildEnv is set in the environment of the second process Check starts
// (Config.ChildCommand); MaybeChild acts on it.
const ChildEnv = "CUSTOS_HSMCHECK_CHILD"

// What the second process does.
const (
	opFind    = "find"    // as user: look for objects by label and handle
	opTrust   = "trust"   // as SO: create a trusted public token key
	opDestroy = "destroy" // as SO: destroy this run's token objects
)

// childRequest is sent on the child's standard input (never in its
// arguments or environment: it holds a PIN).
type childRequest struct {
	Op        string
	Module    string
	Token     string
	NSSConfig string
	PIN       string
	Label     string
	Handles   []uint
	Modulus   []byte
	Exponent  []byte
}

// childResponse comes back on its standard output.
type childResponse struct {
	Found      int      `json:",omitempty"` // objects found with the label
	HandleErrs []string `json:",omitempty"` // per handle: the return code, or "label=..." if readable
	Error      string   `json:",omitempty"`
	Code       string   `json:",omitempty"`
}

// MaybeChild serves one request of a parent Check and exits, when this
// process was started as its child (ChildEnv set); otherwise it returns at
// once. Call it first thing in main (custos) or TestMain.
func MaybeChild() {
	if os.Getenv(ChildEnv) == "" {
		return
	}
	var req childRequest
	var resp childResponse
	if err := json.NewDecoder(os.Stdin).Decode(&req); err != nil {
		resp.Error = "reading the request: " + err.Error()
	} else {
		resp = serve(req)
	}
	_ = json.NewEncoder(os.Stdout).Encode(resp)
	os.Exit(0)
}

// serve performs req in this process.
func serve(req childRequest) childResponse {
	user := uint(p11.CKU_USER)
	if req.Op != opFind {
		user = p11.CKU_SO
	}
	r, err := open(Config{Module: req.Module, Token: req.Token, NSSConfig: req.NSSConfig, PIN: req.PIN}, user)
	if err != nil {
		return childResponse{Error: err.Error()}
	}
	defer r.close()
	switch req.Op {
	case opFind:
		hs, err := r.find([]*p11.Attribute{attr(p11.CKA_LABEL, req.Label)})
		if err != nil {
			return childResponse{Error: "C_FindObjects: " + code(err), Code: code(err)}
		}
		resp := childResponse{Found: len(hs)}
		for _, h := range req.Handles {
			as, err := r.c.GetAttributeValue(r.s, p11.ObjectHandle(h), []*p11.Attribute{attr(p11.CKA_LABEL, nil)})
			if err != nil {
				resp.HandleErrs = append(resp.HandleErrs, code(err))
			} else {
				resp.HandleErrs = append(resp.HandleErrs, "label="+string(as[0].Value))
			}
		}
		return resp
	case opTrust:
		k := publicKeyTemplate(req.Modulus, req.Exponent, attr(p11.CKA_TOKEN, true), attr(p11.CKA_PRIVATE, false),
			attr(p11.CKA_TRUSTED, true), attr(p11.CKA_LABEL, req.Label), attr(p11.CKA_ID, random(8)))
		if _, err := r.c.CreateObject(r.s, k); err != nil {
			return childResponse{Error: "C_CreateObject of a trusted public key as SO: " + code(err), Code: code(err)}
		}
		return childResponse{Code: code(nil)}
	case opDestroy:
		if !strings.HasPrefix(req.Label, LabelPrefix) {
			return childResponse{Error: "refusing to destroy objects not labelled " + LabelPrefix + "*"}
		}
		r.prefix = req.Label
		hs, err := r.findByPrefix()
		if err != nil {
			return childResponse{Error: "C_FindObjects: " + code(err), Code: code(err)}
		}
		for _, h := range hs {
			if err := r.c.DestroyObject(r.s, h); err != nil {
				return childResponse{Error: "C_DestroyObject as SO: " + code(err), Code: code(err)}
			}
		}
		return childResponse{Code: code(nil)}
	}
	return childResponse{Error: "unknown request " + req.Op}
}

// child runs req in a second process (Config.ChildCommand) and returns its
// answer.
func (r *runner) child(req childRequest) (*childResponse, error) {
	if len(r.cfg.ChildCommand) == 0 {
		return nil, errors.New("no child command configured")
	}
	req.Module, req.Token, req.NSSConfig = r.cfg.Module, r.cfg.Token, r.cfg.NSSConfig
	in, err := json.Marshal(req)
	if err != nil {
		return nil, fmt.Errorf("request: %w", err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	cmd := exec.CommandContext(ctx, r.cfg.ChildCommand[0], r.cfg.ChildCommand[1:]...)
	cmd.Env = append(os.Environ(), ChildEnv+"=1")
	cmd.Stdin = bytes.NewReader(in)
	var out, errOut bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &errOut
	if err := cmd.Run(); err != nil {
		return nil, fmt.Errorf("child process: %w: %s", err, strings.TrimSpace(errOut.String()))
	}
	var resp childResponse
	if err := json.Unmarshal(out.Bytes(), &resp); err != nil {
		return nil, fmt.Errorf("child process answered %q: %w", strings.TrimSpace(out.String()), err)
	}
	return &resp, nil
}

// checkIsolation creates a private and a public session object and asks a
// second process, logged in with the same PIN, to find them by label and
// to read them by handle: it must do neither. custos keeps session copies
// of keys (docs/hsm-notes.md) on the premise that they are private to the
// process.
func checkIsolation(r *runner) Result {
	if len(r.cfg.ChildCommand) == 0 {
		return skip("no child command to run the second process")
	}
	label := r.prefix + "-iso"
	k, err := r.c.GenerateKey(r.s, []*p11.Mechanism{p11.NewMechanism(p11.CKM_AES_KEY_GEN, nil)},
		aesTemplate(attr(p11.CKA_VALUE_LEN, 32), attr(p11.CKA_SENSITIVE, true),
			attr(p11.CKA_EXTRACTABLE, false), attr(p11.CKA_ENCRYPT, true), attr(p11.CKA_LABEL, label)))
	if err != nil {
		return failErr(err, "C_GenerateKey of a session key")
	}
	r.keep(k)
	d, err := r.c.CreateObject(r.s, []*p11.Attribute{
		attr(p11.CKA_CLASS, p11.CKO_DATA), attr(p11.CKA_TOKEN, false), attr(p11.CKA_PRIVATE, false),
		attr(p11.CKA_LABEL, label), attr(p11.CKA_VALUE, []byte("custos-check")),
	})
	if err != nil {
		return failErr(err, "C_CreateObject of a public session data object")
	}
	r.keep(d)
	resp, err := r.child(childRequest{Op: opFind, PIN: r.cfg.PIN, Label: label, Handles: []uint{uint(k), uint(d)}})
	if err != nil {
		return fail("", "second process: %v", err)
	}
	if resp.Error != "" {
		return fail(resp.Code, "second process: %s", resp.Error)
	}
	if resp.Found > 0 {
		return fail(code(nil), "the second process found %d of the 2 session objects by label", resp.Found)
	}
	for _, e := range resp.HandleErrs {
		if e == "label="+label {
			return fail(code(nil), "the second process read a session object by its handle")
		}
	}
	c := ""
	if len(resp.HandleErrs) > 0 {
		c = resp.HandleErrs[0]
	}
	return pass(c, "neither found by label nor readable by handle (private key, public data object)")
}
