// Package qualify checks that a PKCS#11 module does what custos relies on:
// the mechanisms (AES-256-GCM with a 12-byte IV and a 16-byte tag, AES key
// wrap with padding per RFC 5649, RSA-OAEP key transport, ECDSA P-256) and
// the attribute policy (CKA_WRAP_WITH_TRUSTED, CKA_TRUSTED set by the SO
// only, CKA_UNWRAP_TEMPLATE, CKA_MODIFIABLE, sensitivity of unwrapped keys),
// plus session-object isolation between processes and concurrent use.
//
// Check runs every check against one token and returns a Report: one
// Result per check (PASS, FAIL, WARN or SKIP, with the PKCS#11 return code
// that decided it) and a verdict for each custos profile. It creates only
// temporary objects: session objects where it can; the one token object it
// needs (a trusted public key, created by the SO) is labelled with a random
// "custos-check-" prefix and destroyed at the end, on failure too. It never
// reads, changes or destroys any other object. See docs/operations.md,
// "Qualifying an HSM".
package qualify

import (
	"context"
	"errors"
	"time"

	p11 "github.com/miekg/pkcs11"
)

// Status is the outcome of one check.
type Status string

// The outcomes of a check.
const (
	// Pass: the module does what custos relies on.
	Pass Status = "PASS"
	// Fail: it does not; a profile that needs the check is not met.
	Fail Status = "FAIL"
	// Warn: the module is laxer than it should be, but custos guards
	// against it itself (e.g. it refuses bad GCM sizes before calling).
	Warn Status = "WARN"
	// Skip: the check could not run (no SO PIN, or a prerequisite failed).
	Skip Status = "SKIP"
)

// Profile names a set of checks a module must pass to back a custos node.
type Profile string

// The custos profiles (docs/operations.md, "Qualifying an HSM").
const (
	// Production: RSA-OAEP with SHA-256 for key transport and the
	// attribute policy enforced, trusted-key marking by the SO shown.
	Production Profile = "production"
	// Development: as production, but RSA-OAEP with SHA-1 is enough and
	// the SO check may be skipped (SoftHSM).
	Development Profile = "development"
)

// Profiles lists the profiles in the order reports show them.
var Profiles = []Profile{Production, Development}

// Result is one check: a row of the table.
type Result struct {
	// ID is the stable identifier of the check (e.g. "oaep-sha256").
	ID string `json:"id"`
	// Name is what the check shows, for humans.
	Name string `json:"name"`
	// Status is the outcome.
	Status Status `json:"status"`
	// Code is the PKCS#11 return code that decided the outcome, as
	// "CKR_ARGUMENTS_BAD (0x7)"; "CKR_OK (0x0)" when the calls succeeded;
	// empty when no call decided it.
	Code string `json:"code,omitempty"`
	// Detail says what was done and seen, in one line.
	Detail string `json:"detail,omitempty"`
	// Elapsed is how long the check took.
	Elapsed time.Duration `json:"elapsed_ns"`
}

// Verdict says whether the module meets one profile.
type Verdict struct {
	// Profile is the profile judged.
	Profile Profile `json:"profile"`
	// Met is true when every check the profile needs passed (or warned).
	Met bool `json:"met"`
	// Missing names the checks that kept the profile from being met, with
	// their status ("oaep-sha256 FAIL").
	Missing []string `json:"missing,omitempty"`
}

// Report is the outcome of Check.
type Report struct {
	// Module is the path of the PKCS#11 library.
	Module string `json:"module"`
	// Library describes it, from C_GetInfo ("SoftHSM 2.6").
	Library string `json:"library"`
	// Token describes the token, from C_GetTokenInfo.
	Token TokenInfo `json:"token"`
	// Results are the checks, in the order they ran.
	Results []Result `json:"results"`
	// Verdicts judge the results against each of Profiles.
	Verdicts []Verdict `json:"verdicts"`
	// Cleanup is empty when every temporary object was destroyed;
	// otherwise it says what was left (with the labels to look for).
	Cleanup string `json:"cleanup,omitempty"`
}

// TokenInfo identifies the token checked.
type TokenInfo struct {
	Label        string `json:"label"`
	Manufacturer string `json:"manufacturer"`
	Model        string `json:"model"`
	Serial       string `json:"serial"`
	Firmware     string `json:"firmware"`
}

// Result returns the result of the check with that ID, or nil.
func (r *Report) Result(id string) *Result {
	for i := range r.Results {
		if r.Results[i].ID == id {
			return &r.Results[i]
		}
	}
	return nil
}

// Meets reports whether the module meets profile p.
func (r *Report) Meets(p Profile) bool {
	for _, v := range r.Verdicts {
		if v.Profile == p {
			return v.Met
		}
	}
	return false
}

// Config says which module and token to check, and how.
type Config struct {
	// Module is the path of the PKCS#11 library.
	Module string
	// Token is the label of the token.
	Token string
	// PIN is the user PIN. It is never printed or logged.
	PIN string
	// SOPIN is the security officer PIN, optional: without it the check
	// that the SO can mark a key CKA_TRUSTED is skipped.
	SOPIN string
	// NSSConfig, when set, is passed to C_Initialize as the NSS softokn
	// library parameters (pReserved), e.g.
	// "configdir='sql:/path' certPrefix='' keyPrefix='' secmod='secmod.db' flags=".
	NSSConfig string
	// ChildCommand is the argv of a process that runs MaybeChild first
	// thing (custos itself, or a test binary): the isolation check and
	// the SO check run in such a second process, since PKCS#11 login and
	// session objects are per process. Empty: those checks are skipped.
	ChildCommand []string
	// Workers and OpsPerWorker size the concurrency check (defaults 4
	// goroutines × 200 AES-GCM encryptions, each on its own session).
	Workers, OpsPerWorker int
}

// Errors of Check, for bad input; the checks themselves never make Check
// fail, they become results.
var (
	// ErrModule: the library cannot be loaded or initialised.
	ErrModule = errors.New("cannot load PKCS#11 module")
	// ErrToken: no initialised token has that label.
	ErrToken = errors.New("token not found")
	// ErrLogin: C_Login with the user PIN failed (wrong PIN, locked).
	ErrLogin = errors.New("login failed")
)

// Check runs every check against the token and returns the report. It
// returns an error (wrapping ErrModule, ErrToken or ErrLogin) only when the
// checks cannot start; the failures of checks are results.
func Check(ctx context.Context, cfg Config) (*Report, error) {
	if cfg.Workers <= 0 {
		cfg.Workers = 4
	}
	if cfg.OpsPerWorker <= 0 {
		cfg.OpsPerWorker = 200
	}
	r, err := open(cfg, p11.CKU_USER)
	if err != nil {
		return nil, err
	}
	defer r.close()
	for _, c := range checks {
		if err := ctx.Err(); err != nil {
			return nil, err
		}
		start := time.Now()
		res := c.run(r)
		res.ID, res.Name, res.Elapsed = c.id, c.name, time.Since(start)
		r.report.Results = append(r.report.Results, res)
	}
	r.report.Cleanup = r.cleanup()
	r.report.Verdicts = verdicts(r.report)
	return r.report, nil
}

// check is one row of the table.
type check struct {
	id, name string
	run      func(r *runner) Result
	// need lists the profiles that need it to PASS (or WARN).
	need []Profile
}

var both = []Profile{Production, Development}

// verdicts judges the results against every profile. Development takes
// RSA-OAEP with SHA-1 where production needs SHA-256, and lets the SO check
// be skipped.
func verdicts(rep *Report) []Verdict {
	byID := map[string]check{}
	for _, c := range checks {
		byID[c.id] = c
	}
	var out []Verdict
	for _, p := range Profiles {
		v := Verdict{Profile: p, Met: true}
		for _, res := range rep.Results {
			c := byID[res.ID]
			needed := false
			for _, q := range c.need {
				needed = needed || q == p
			}
			ok := res.Status == Pass || res.Status == Warn
			switch {
			case p == Development && res.ID == idTrustedBySO && res.Status == Skip:
				ok = true
			case p == Development && (res.ID == idOAEP256 || res.ID == idOAEP1):
				// Either hash will do.
				needed = false
			}
			if needed && !ok {
				v.Met = false
				v.Missing = append(v.Missing, res.ID+" "+string(res.Status))
			}
		}
		if p == Development {
			a, b := rep.Result(idOAEP256), rep.Result(idOAEP1)
			if (a == nil || a.Status != Pass) && (b == nil || b.Status != Pass) {
				v.Met = false
				v.Missing = append(v.Missing, "RSA-OAEP (SHA-256 or SHA-1)")
			}
		}
		out = append(out, v)
	}
	return out
}
