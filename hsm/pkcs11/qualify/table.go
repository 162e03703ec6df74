package qualify

import (
	"fmt"
	"io"
	"strings"
	"text/tabwriter"
)

// WriteTable writes the report for humans: what was checked, one row per
// check (name, result, return code, detail), and the verdict per profile.
func WriteTable(w io.Writer, rep *Report) error {
	var b strings.Builder
	fmt.Fprintf(&b, "Module:  %s (%s)\n", rep.Module, rep.Library)
	t := rep.Token
	fmt.Fprintf(&b, "Token:   %q (%s %s, serial %s, firmware %s)\n\n", t.Label, t.Manufacturer, t.Model, t.Serial, t.Firmware)
	tw := tabwriter.NewWriter(&b, 0, 8, 2, ' ', 0)
	fmt.Fprintln(tw, "CHECK\tRESULT\tCODE\tDETAIL")
	for _, r := range rep.Results {
		c := r.Code
		if c == "" {
			c = "-"
		}
		fmt.Fprintf(tw, "%s\t%s\t%s\t%s\n", r.Name, r.Status, c, r.Detail)
	}
	if err := tw.Flush(); err != nil {
		return err
	}
	fmt.Fprintln(&b)
	for _, v := range rep.Verdicts {
		if v.Met {
			fmt.Fprintf(&b, "Profile %-12s MET\n", v.Profile+":")
		} else {
			fmt.Fprintf(&b, "Profile %-12s NOT MET (%s)\n", v.Profile+":", strings.Join(v.Missing, ", "))
		}
	}
	fmt.Fprintf(&b, "Verdict: %s\n", Summary(rep))
	if rep.Cleanup != "" {
		fmt.Fprintf(&b, "Cleanup: %s\n", rep.Cleanup)
	}
	_, err := io.WriteString(w, b.String())
	return err
}

// Summary says in one sentence what the module is good for.
func Summary(rep *Report) string {
	prod, dev := rep.Meets(Production), rep.Meets(Development)
	policy := true
	for _, id := range []string{idWrapWithTrusted, idTrustedByUser, idUnwrapTemplate} {
		if r := rep.Result(id); r == nil || r.Status != Pass {
			policy = false
		}
	}
	switch {
	case prod:
		return "acceptable for production (and development)"
	case dev && !policy:
		return "development profile only; the module does not enforce the key policy"
	case dev:
		return "development profile only: not acceptable for production"
	case !policy:
		return "not acceptable for custos: the module does not enforce the key policy (CKA_WRAP_WITH_TRUSTED, CKA_TRUSTED, CKA_UNWRAP_TEMPLATE), whatever its mechanisms do"
	}
	return "not acceptable for custos: a mechanism custos needs failed"
}
