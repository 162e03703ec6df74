// Package flagusage prints a flag set's flags the way custos and custosd
// show them in their help: with two dashes, and each flag's default once.
package flagusage

import (
	"flag"
	"fmt"
	"io"
	"regexp"
	"strings"
	"time"
)

// mentionsDefault matches a usage text that states the default itself
// ("(default 1h)", "0: the default", "default: any"): such a flag's
// zero value stands for that default, so the flag's own value is not
// printed as well.
var mentionsDefault = regexp.MustCompile(`\bdefault\b`)

// Print writes every flag of fs except those in hide, in name order:
//
//	--name VALUE
//	  	usage (default D)
//
// The default is appended only when the usage does not state one itself
// and the flag's default is not its type's zero value (false, 0, 0s, "").
// Durations are written short: 1h, not 1h0m0s.
func Print(w io.Writer, fs *flag.FlagSet, hide ...string) {
	hidden := map[string]bool{}
	for _, h := range hide {
		hidden[h] = true
	}
	fs.VisitAll(func(f *flag.Flag) {
		if hidden[f.Name] {
			return
		}
		name, usage := flag.UnquoteUsage(f)
		line := "  --" + f.Name
		if name != "" {
			line += " " + name
		}
		fmt.Fprintf(w, "%s\n    \t%s", line, strings.ReplaceAll(usage, "\n", "\n    \t"))
		if d := Default(f); d != "" {
			fmt.Fprintf(w, " (default %s)", d)
		}
		fmt.Fprintln(w)
	})
}

// Default returns the default Print shows for f, or "" when it shows none:
// when f's usage states the default itself, or f's default is its zero
// value.
func Default(f *flag.Flag) string {
	if mentionsDefault.MatchString(f.Usage) {
		return ""
	}
	if g, ok := f.Value.(flag.Getter); ok {
		if d, ok := g.Get().(time.Duration); ok {
			if d == 0 {
				return ""
			}
			return ShortDuration(d)
		}
	}
	switch f.DefValue {
	case "", "0", "false", "[]", "0s":
		return ""
	}
	return f.DefValue
}

// ShortDuration formats d without zero minutes and seconds: 1h, 30m,
// 1h30m, 90s stays 1m30s.
func ShortDuration(d time.Duration) string {
	s := d.String()
	if strings.HasSuffix(s, "m0s") {
		s = strings.TrimSuffix(s, "0s")
	}
	if strings.HasSuffix(s, "h0m") {
		s = strings.TrimSuffix(s, "0m")
	}
	return s
}
