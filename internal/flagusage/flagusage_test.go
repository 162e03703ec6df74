package flagusage

import (
	"bytes"
	"flag"
	"strings"
	"testing"
	"time"
)

// TestPrintShowsEachDefaultOnce: a usage that states the default keeps
// it and gets no second one from the flag's zero value; other defaults are
// appended once, durations short; zero values show none.
func TestPrintShowsEachDefaultOnce(t *testing.T) {
	fs := flag.NewFlagSet("t", flag.ContinueOnError)
	fs.Duration("ttl", 0, "how long the grant lasts (default 1h)")
	fs.Uint("uses", 0, "decrypts the grant allows (default 1)")
	fs.Int("segment-size", 0, "plaintext bytes per segment (default 65536)")
	fs.Uint64("from", 0, "start at ledger sequence number `SEQ` (default 1)")
	fs.Duration("lifetime", time.Hour, "the statement expires after this long")
	fs.Duration("poll", 1500*time.Millisecond, "how often")
	fs.Duration("wait", 90*time.Minute, "how long")
	fs.Int("limit", 100, "print at most `N` records (0 for all)")
	fs.String("listen", "127.0.0.1:7400", "gRPC listen address")
	fs.Bool("json", false, "print JSON")
	fs.String("name", "", "a name")
	fs.String("secret", "", "hidden")
	var b bytes.Buffer
	Print(&b, fs, "secret")
	out := b.String()
	for _, want := range []string{
		"  --ttl duration\n    \thow long the grant lasts (default 1h)\n",
		"  --uses uint\n    \tdecrypts the grant allows (default 1)\n",
		"  --segment-size int\n    \tplaintext bytes per segment (default 65536)\n",
		"  --from SEQ\n    \tstart at ledger sequence number SEQ (default 1)\n",
		"  --lifetime duration\n    \tthe statement expires after this long (default 1h)\n",
		"how often (default 1.5s)\n",
		"how long (default 1h30m)\n",
		"  --limit N\n    \tprint at most N records (0 for all) (default 100)\n",
		"gRPC listen address (default 127.0.0.1:7400)\n",
		"  --json\n    \tprint JSON\n",
		"  --name string\n    \ta name\n",
	} {
		if !strings.Contains(out, want) {
			t.Errorf("output lacks %q:\n%s", want, out)
		}
	}
	if strings.Contains(out, "secret") {
		t.Errorf("hidden flag printed:\n%s", out)
	}
	for _, line := range strings.Split(out, "\n") {
		if strings.Count(line, "(default") > 1 || strings.HasPrefix(line, "  -") && !strings.HasPrefix(line, "  --") {
			t.Errorf("line %q: two defaults, or a single dash", line)
		}
	}
}

func TestShortDuration(t *testing.T) {
	for d, want := range map[time.Duration]string{
		time.Hour: "1h", 30 * time.Minute: "30m", 90 * time.Second: "1m30s", 168 * time.Hour: "168h",
		time.Second: "1s", 10 * time.Millisecond: "10ms", time.Hour + time.Second: "1h0m1s",
	} {
		if got := ShortDuration(d); got != want {
			t.Errorf("ShortDuration(%v) = %q, want %q", d, got, want)
		}
	}
}
