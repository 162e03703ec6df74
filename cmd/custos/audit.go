package main

import (
	"bufio"
	"context"
	"crypto/ecdsa"
	"encoding/json"
	"encoding/pem"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"strings"
	"time"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/encoding/protojson"

	custos "github.com/custos-kms/custos/clients/go"
	"github.com/custos-kms/custos/internal/atomicfile"
	"github.com/custos-kms/custos/kms/audit"
	custosv1 "github.com/custos-kms/custos/proto/custos/v1"
)

// Audit commands: the customer's auditors read, export, verify and follow
// the decision ledger (docs/audit.md). Every command but `audit verify`
// needs a client certificate the cluster lists as an auditor; `audit
// verify` works offline on an export file.

// auditHint explains a PermissionDenied from the AuditService.
const auditHint = "custos: only the principals the cluster lists as auditors (the \"auditors\" of the custosd configuration) may read the ledger; connect with an auditor's client certificate (--tls-cert/--tls-key or CUSTOS_CERT/CUSTOS_KEY)"

// auditErr adds the auditor hint to a PermissionDenied.
func auditErr(err error) error {
	if err != nil && status.Code(err) == codes.PermissionDenied {
		return &hintError{err, auditHint}
	}
	return err
}

var recordJSON = protojson.MarshalOptions{UseProtoNames: true}

// printRecord prints one record on one line, or as one JSON object.
func printRecord(w io.Writer, r *custosv1.DecisionRecord, asJSON bool) error {
	if asJSON {
		b, err := recordJSON.Marshal(r)
		if err != nil {
			return err
		}
		_, err = fmt.Fprintf(w, "%s\n", b)
		return err
	}
	var b strings.Builder
	fmt.Fprintf(&b, "#%d %s %s %s", r.GetSeq(), unixNanoRFC(r.GetTimeUnixNano()), custos.OperationString(r.GetOperation()), outcomeOrDash(r.GetOutcome()))
	if k := r.GetKey(); k != "" {
		fmt.Fprintf(&b, " key=%s", k)
		if v := r.GetKeyVersion(); v != 0 {
			fmt.Fprintf(&b, " v%d", v)
		}
	}
	fmt.Fprintf(&b, " principal=%q", r.GetPrincipal())
	if iss := r.GetPrincipalIssuerSha256(); len(iss) > 0 {
		// The client authority that issued the caller's certificate
		// (custos officer ca list names the trusted ones).
		fmt.Fprintf(&b, " issuer=%x", iss)
	}
	// A key use always shows its reason, UNSPECIFIED when none was given;
	// other records have none.
	if r.GetReason() != custosv1.Reason_REASON_UNSPECIFIED || isKeyUse(r.GetOperation()) {
		fmt.Fprintf(&b, " reason=%s", custos.ReasonString(r.GetReason()))
	}
	if t := r.GetJustificationText(); t != "" {
		fmt.Fprintf(&b, " text=%q", t)
	}
	if t := r.GetTicket(); t != "" {
		fmt.Fprintf(&b, " ticket=%q", t)
	}
	if m := r.GetMatchedRule(); m != "" {
		fmt.Fprintf(&b, " rule=%s", m)
	}
	if id := r.GetRequestId(); id != "" {
		fmt.Fprintf(&b, " request=%s", id)
	}
	if s := r.GetSigners(); len(s) > 0 {
		fmt.Fprintf(&b, " signers=%s", strings.Join(s, ","))
	}
	if d := r.GetDetail(); d != "" {
		fmt.Fprintf(&b, " detail=%q", d)
	}
	if cs := r.GetCosignature(); cs != nil {
		fmt.Fprintf(&b, " cosignature=seq:%d,witness:%s", cs.GetSeq(), cs.GetWitness())
	}
	if cp := r.GetCheckpoint(); cp != nil {
		fmt.Fprintf(&b, " checkpoint=seq:%d,node:%s", cp.GetSeq(), cp.GetNode())
	}
	fmt.Fprintf(&b, " node=%s", r.GetNode())
	if r.GetNotify() {
		b.WriteString(" notify")
	}
	b.WriteByte('\n')
	_, err := io.WriteString(w, b.String())
	return err
}

// isKeyUse reports whether op is a decision on a key use (it carries the
// caller's justification).
func isKeyUse(op custosv1.Operation) bool {
	switch op {
	case custosv1.Operation_OPERATION_DECRYPT, custosv1.Operation_OPERATION_DECRYPT_DATA_KEY, custosv1.Operation_OPERATION_REENCRYPT:
		return true
	}
	return false
}

func outcomeOrDash(o custosv1.Outcome) string {
	if o == custosv1.Outcome_OUTCOME_UNSPECIFIED {
		return "-"
	}
	return custos.OutcomeString(o)
}

func unixNanoRFC(n int64) string {
	if n == 0 {
		return "-"
	}
	return time.Unix(0, n).UTC().Format(time.RFC3339Nano)
}

func runAuditPubkey(ctx context.Context, a *app, args []string) error {
	fs := a.flags("audit pubkey")
	if _, err := a.parse("audit pubkey", fs, args, 0, 0); err != nil {
		return err
	}
	return a.withClient(ctx, func(c *custos.Client) error {
		cp, err := c.GetCheckpoint(ctx)
		if err != nil {
			return auditErr(err)
		}
		if len(cp.GetPublicKeys()) == 0 {
			return fmt.Errorf("cluster %s has registered no checkpoint signing key yet", cp.GetClusterId())
		}
		if _, err := audit.ParseKeys(cp.GetPublicKeys()); err != nil {
			return fmt.Errorf("the cluster returned a bad checkpoint key: %v", err)
		}
		_, err = a.stdout.Write(custos.CheckpointKeysPEM(cp.GetPublicKeys()))
		return err
	})
}

func runAuditExport(ctx context.Context, a *app, args []string) error {
	fs := a.flags("audit export")
	from := fs.Uint64("from", 0, "first ledger sequence number `SEQ` to export (default 1; verification needs a full export)")
	force := fs.Bool("force", false, "replace OUT if it exists")
	pos, err := a.parse("audit export", fs, args, 1, 1)
	if err != nil {
		return err
	}
	if err := refuseExisting(pos[0], *force); err != nil {
		return err
	}
	return a.withClient(ctx, func(c *custos.Client) error {
		out := pos[0]
		info := a.stdout
		var st custos.ExportStats
		if out == "-" {
			info = a.stderr
			bw := bufio.NewWriterSize(a.stdout, 256<<10)
			st, err = c.ExportToStats(ctx, bw, *from)
			if err != nil {
				return auditErr(err)
			}
			if err := bw.Flush(); err != nil {
				return err
			}
		} else {
			st, err = writeAtomic(out, *force, func(w io.Writer) (custos.ExportStats, error) { return c.ExportToStats(ctx, w, *from) })
			if err != nil {
				return auditErr(existsErr(out, err))
			}
		}
		if st.Records == 0 {
			fmt.Fprintf(info, "exported 0 records to %s (the ledger is empty)\n", out)
			return nil
		}
		fmt.Fprintf(info, "exported %d records (seq %d to %d) to %s, with a trailer checkpoint over seq %d\n",
			st.Records, st.FirstSeq, st.FirstSeq+uint64(st.Records)-1, out, st.LastSeq)
		return nil
	})
}

// writeAtomic writes path through a temporary file in the same directory,
// synced and moved to path only when fill succeeded: renamed over it if
// overwrite, else never replacing a file that exists by then (an error
// wrapping fs.ErrExist). On any error no file is left.
func writeAtomic[T any](path string, overwrite bool, fill func(io.Writer) (T, error)) (res T, err error) {
	dir := filepath.Dir(path)
	f, err := os.CreateTemp(dir, "."+filepath.Base(path)+".tmp-*")
	if err != nil {
		return res, err
	}
	defer func() {
		if err != nil {
			f.Close()
			os.Remove(f.Name())
		}
	}()
	bw := bufio.NewWriterSize(f, 256<<10)
	if res, err = fill(bw); err != nil {
		return res, err
	}
	if err = bw.Flush(); err != nil {
		return res, err
	}
	if err = f.Sync(); err != nil {
		return res, err
	}
	if err = f.Close(); err != nil {
		return res, err
	}
	if err = os.Chmod(f.Name(), 0o644); err != nil {
		return res, err
	}
	err = atomicfile.Place(f.Name(), path, overwrite)
	return res, err
}

// stringList is a repeatable string flag.
type stringList []string

func (l *stringList) String() string     { return strings.Join(*l, ",") }
func (l *stringList) Set(s string) error { *l = append(*l, s); return nil }

// readPublicKeys reads every PUBLIC KEY PEM block of the files.
func readPublicKeys(files []string) ([][]byte, error) {
	var ders [][]byte
	for _, path := range files {
		b, err := readSmall(path)
		if err != nil {
			return nil, err
		}
		n := 0
		for {
			var blk *pem.Block
			blk, b = pem.Decode(b)
			if blk == nil {
				break
			}
			if blk.Type != "PUBLIC KEY" {
				continue
			}
			ders = append(ders, blk.Bytes)
			n++
		}
		if n == 0 {
			return nil, fmt.Errorf("%s holds no PUBLIC KEY PEM block (write it with 'custos audit pubkey > %s')", path, path)
		}
	}
	return ders, nil
}

func runAuditVerify(ctx context.Context, a *app, args []string) error {
	fs := a.flags("audit verify")
	var pubs stringList
	fs.Var(&pubs, "pubkey", "PEM `FILE` of trusted checkpoint public keys, as written by 'custos audit pubkey' (repeatable; this or --witness-key)")
	var witnessKeys stringList
	fs.Var(&witnessKeys, "witness-key", "PEM `FILE` of the customer's witness public key (repeatable): trust the checkpoint keys the ledger registered up to the newest head that witness cosigned (docs/audit.md)")
	asJSON := fs.Bool("json", false, "print the verification report as JSON")
	witnessState := fs.String("witness-state", "", "a witness's state `FILE` (custos audit witness --state): the export must hold the head it cosigned")
	genesis := fs.String("genesis", "", "the cluster's genesis fingerprint (`HEX`, custos officer list): record 1 of the export must be that genesis")
	pos, err := a.parse("audit verify", fs, args, 1, 1)
	if err != nil {
		return err
	}
	if len(pubs) == 0 && len(witnessKeys) == 0 {
		return usagef("--pubkey or --witness-key is required: verification trusts only keys you obtained yourself (custos audit pubkey > ledger.pem, or your witness's public key)")
	}
	var keys []*ecdsa.PublicKey
	if len(pubs) > 0 {
		ders, err := readPublicKeys(pubs)
		if err != nil {
			return err
		}
		if keys, err = audit.ParseKeys(ders); err != nil {
			return err
		}
	}
	var in io.Reader = a.stdin
	var f *os.File
	if pos[0] != "-" {
		if f, err = os.Open(pos[0]); err != nil {
			return err
		}
		defer f.Close()
		in = f
	}
	if *genesis != "" {
		if f == nil {
			return usagef("--genesis needs an export FILE, not '-'")
		}
		// The genesis fingerprint is the chain hash at seq 1.
		if err := audit.CheckHead(f, audit.Head{Seq: 1, Hash: strings.ToLower(strings.TrimSpace(*genesis))}); err != nil {
			return fmt.Errorf("%s is NOT the ledger of the pinned genesis: %w", pos[0], err)
		}
		if _, err := f.Seek(0, io.SeekStart); err != nil {
			return err
		}
	}
	var witnessed *audit.Head
	if *witnessState != "" {
		if f == nil {
			return usagef("--witness-state needs an export FILE, not '-'")
		}
		h, err := readWitnessState(*witnessState)
		if err != nil {
			return err
		}
		if h.Seq == 0 {
			return fmt.Errorf("witness state %s holds no head", *witnessState)
		}
		if err := audit.CheckHead(f, h); err != nil {
			return fmt.Errorf("%s does NOT hold the head the witness cosigned: %w", pos[0], err)
		}
		if _, err := f.Seek(0, io.SeekStart); err != nil {
			return err
		}
		witnessed = &h
	}
	var anchor *audit.Head
	var anchorWitness string
	var registered int
	if len(witnessKeys) > 0 {
		if f == nil {
			return usagef("--witness-key needs an export FILE, not '-'")
		}
		ders, err := readPublicKeys(witnessKeys)
		if err != nil {
			return err
		}
		wk, err := audit.ParseKeys(ders)
		if err != nil {
			return err
		}
		h, name, err := audit.WitnessAnchor(f, wk)
		if err != nil {
			return fmt.Errorf("%s: %w (verify with --pubkey instead, or export after the witness cosigned)", pos[0], err)
		}
		if _, err := f.Seek(0, io.SeekStart); err != nil {
			return err
		}
		if err := audit.CheckHead(f, h); err != nil {
			return fmt.Errorf("%s does NOT hold the head witness %s cosigned: %w", pos[0], name, err)
		}
		if _, err := f.Seek(0, io.SeekStart); err != nil {
			return err
		}
		regs, err := audit.RegisteredKeys(f, h.Seq)
		if err != nil {
			return err
		}
		if _, err := f.Seek(0, io.SeekStart); err != nil {
			return err
		}
		keys, registered = append(keys, regs...), len(regs)
		anchor, anchorWitness = &h, name
	}
	rep, verr := audit.Verify(in, keys)
	if verr != nil && !errors.Is(verr, audit.ErrBroken) {
		return fmt.Errorf("read %s: %w", pos[0], verr)
	}
	if *asJSON {
		b, err := json.MarshalIndent(rep, "", "  ")
		if err != nil {
			return err
		}
		fmt.Fprintf(a.stdout, "%s\n", b)
	}
	if verr != nil {
		return fmt.Errorf("%s does NOT verify: first broken link at seq %d: %s: %s (verified %d records before it)",
			pos[0], rep.ProblemSeq, rep.Kind, rep.Problem, rep.Records)
	}
	if !*asJSON {
		fmt.Fprintf(a.stdout, "verified %d records through seq %d, %d checkpoints", rep.Records, rep.LastSeq, rep.Checkpoints)
		if rep.Trailer {
			fmt.Fprint(a.stdout, " and the export trailer")
		}
		fmt.Fprintf(a.stdout, " (cluster %s)\n", rep.ClusterID)
		if *genesis != "" {
			fmt.Fprintf(a.stdout, "record 1 is the pinned genesis %s\n", strings.ToLower(strings.TrimSpace(*genesis)))
		}
		if len(rep.GenesisSigners) > 0 {
			fmt.Fprintf(a.stdout, "the genesis is signed by the officers %s (compare their fingerprints: custos officer list)\n", strings.Join(rep.GenesisSigners, ", "))
		} else if rep.FirstSeq == 1 {
			fmt.Fprintln(a.stdout, "the genesis is not officer-signed: its first officers came from the bootstrap node's configuration")
		}
		if rep.Recomputed {
			fmt.Fprintf(a.stdout, "the governed state was recomputed from the genesis and the officers' statements: all %d releases and every key change were permitted\n", rep.ReleasesChecked)
		} else if rep.NotRecomputed != "" {
			fmt.Fprintf(a.stdout, "note: the governed state was not recomputed from the officers' statements: %s\n", rep.NotRecomputed)
		}
		if witnessed != nil {
			fmt.Fprintf(a.stdout, "the export holds the head the witness cosigned at seq %d\n", witnessed.Seq)
		}
		if anchor != nil {
			fmt.Fprintf(a.stdout, "records 1..%d are anchored by witness %s's cosignature of that head; the %d checkpoint keys they registered verified the rest\n",
				anchor.Seq, anchorWitness, registered)
		}
		if rep.Partial {
			fmt.Fprintf(a.stdout, "note: the export starts at seq %d, so its link to earlier records was not checked; export from seq 1 for a full proof\n", rep.FirstSeq)
		}
	}
	return nil
}

func runAuditReport(ctx context.Context, a *app, args []string) error {
	fs := a.flags("audit report")
	var since, until string
	registerTimeFlags(fs, &since, &until)
	key := fs.String("key", "", "only records about this key")
	asJSON := fs.Bool("json", false, "print the report as JSON")
	exportFile := fs.String("export", "", "report offline on export `FILE`, verified first with the --pubkey keys (no connection)")
	var pubs stringList
	fs.Var(&pubs, "pubkey", "with --export: PEM `FILE` of trusted checkpoint public keys (repeatable)")
	if _, err := a.parse("audit report", fs, args, 0, 0); err != nil {
		return err
	}
	s, u, err := parseRange(since, until, time.Now())
	if err != nil {
		return err
	}
	if *exportFile != "" || len(pubs) > 0 {
		if *exportFile == "" || len(pubs) == 0 {
			return usagef("--export and --pubkey go together: the export is verified before it is reported on")
		}
		recs, err := verifiedRecords(*exportFile, pubs)
		if err != nil {
			return err
		}
		return printDisclosure(a.stdout, audit.Summarize(recs, s, u, *key), *asJSON)
	}
	// The time bounds go to the server; the key is applied by Summarize so
	// that the report still counts the period's checkpoints.
	df := &custosv1.DecisionFilter{}
	if !s.IsZero() {
		df.SinceUnixNano = s.UnixNano()
	}
	if !u.IsZero() {
		df.UntilUnixNano = u.UnixNano()
	}
	return a.withClient(ctx, func(c *custos.Client) error {
		var recs []*custosv1.DecisionRecord
		for r, err := range c.Decisions(ctx, df, 0) {
			if err != nil {
				return auditErr(err)
			}
			recs = append(recs, r)
		}
		return printDisclosure(a.stdout, audit.Summarize(recs, s, u, *key), *asJSON)
	})
}

func printDisclosure(w io.Writer, d *audit.Disclosure, asJSON bool) error {
	if asJSON {
		b, err := d.JSON()
		if err != nil {
			return err
		}
		_, err = fmt.Fprintf(w, "%s\n", b)
		return err
	}
	_, err := io.WriteString(w, d.Text())
	return err
}

// verifiedRecords verifies the export file with the keys in the PEM files
// and returns its records; a file that does not verify is an error naming
// the first broken link.
func verifiedRecords(path string, pemFiles []string) ([]*custosv1.DecisionRecord, error) {
	ders, err := readPublicKeys(pemFiles)
	if err != nil {
		return nil, err
	}
	keys, err := audit.ParseKeys(ders)
	if err != nil {
		return nil, err
	}
	f, err := os.Open(path)
	if err != nil {
		return nil, err
	}
	defer f.Close()
	rep, err := audit.Verify(f, keys)
	if err != nil {
		if errors.Is(err, audit.ErrBroken) {
			return nil, fmt.Errorf("%s does NOT verify: first broken link at seq %d: %s: %s; not reporting on it", path, rep.ProblemSeq, rep.Kind, rep.Problem)
		}
		return nil, err
	}
	if _, err := f.Seek(0, io.SeekStart); err != nil {
		return nil, err
	}
	return audit.ReadRecords(audit.NewReader(f))
}

func runAuditWatch(ctx context.Context, a *app, args []string) error {
	fs := a.flags("audit watch")
	var f filterFlags
	f.register(fs, false)
	fs.BoolVar(&f.notifyOnly, "notify-only", false, "only records the notify rules select")
	from := fs.Uint64("from", 0, "start at ledger sequence number `SEQ` (default: only new records)")
	asJSON := fs.Bool("json", false, "print one JSON object per record")
	if _, err := a.parse("audit watch", fs, args, 0, 0); err != nil {
		return err
	}
	df, err := f.build(time.Now())
	if err != nil {
		return err
	}
	return a.withClient(ctx, func(c *custos.Client) error {
		start := *from
		if start == 0 {
			cp, err := c.GetCheckpoint(ctx)
			if err != nil {
				return auditErr(err)
			}
			start = cp.GetHeadSeq() + 1
		}
		if !*asJSON {
			fmt.Fprintf(a.stderr, "custos: watching the ledger from seq %d (interrupt to stop)\n", start)
		}
		err = c.Watch(ctx, start, df, func(r *custosv1.DecisionRecord) error {
			return printRecord(a.stdout, r, *asJSON)
		})
		if ctx.Err() != nil && errors.Is(err, ctx.Err()) {
			return nil // interrupted: the normal end
		}
		return auditErr(err)
	})
}

func init() {
	longHelp["audit list"] = `Records are printed in ledger order, one per line: seq, time, operation,
outcome, key, principal, reason, justification, matched rule, request id
and, for governance records, the signers. Filters combine with AND; a
comma-separated --reason, --outcome or --operation matches any of its
values. --since and --until take an RFC 3339 time or a duration meaning
that long ago (24h, 90m, 7d). At most --limit records are printed; the
next --from is then printed to standard error. Only principals the
cluster lists as auditors may read the ledger.`
	longHelp["audit export"] = `The export holds a header, the exact stored bytes of every record from
--from (default 1) to the ledger head, and a trailer checkpoint signed by
the node's HSM key over the last record, so a truncated file is detected.
A file OUT is written to a temporary file next to it and renamed only on
success. Keep the export and verify it offline with 'custos audit verify'.`
	longHelp["audit verify"] = `Verification is offline: no connection, no credentials. It checks the
file's framing, that records carry contiguous sequence numbers, that each
record's prev_hash is the SHA-256 of the previous record's bytes, that
every checkpoint in the ledger and the export trailer is signed by one of
the trusted keys over the chain head at its seq, and it reports the first
broken link (a removed, altered, reordered or inserted record, a bad or
unknown signature, a truncated file) with exit code 1.

Only the keys given with --pubkey are trusted, never the keys in the
export's own header: fetch them once with 'custos audit pubkey >
ledger.pem' and keep them with your records.`
	longHelp["audit report"] = `The disclosure report covers the records in [--since, --until): allowed
key uses counted by principal, key, reason and operation; third-party
data requests; every denied and every pending attempt; the officers'
governance actions; releases blocked because a notification failed; and
the records the notify rules selected. For a report on evidence you have
verified yourself, 'audit report --export FILE --pubkey ledger.pem'
verifies the export offline and reports on it only if it verifies.`
	longHelp["audit watch"] = `Without --from, watching starts after the current ledger head. With
--from, the records from SEQ on are printed first (SEQ may be at most the
head plus one). If the connection breaks, custos reconnects and resumes
after the last record printed: nothing is skipped or repeated.`
	longHelp["officer sink add"] = `A webhook sink receives an HTTPS POST of each notified record as JSON,
signed with HMAC-SHA-256 under the key in --hmac-key-file (at least 32
bytes: raw, or hex or base64 text). A file sink appends JSON lines to an
absolute path on the leader. Adding a sink needs one officer; removing it
needs the quorum. The HMAC key is never printed and never returned by the
cluster.`
	longHelp["officer notify-rules set"] = `RULES.json is a NotifyRules message in JSON, for example
  {"reasons": ["REASON_THIRD_PARTY_DATA_REQUEST"], "outcomes": ["OUTCOME_DENY", "OUTCOME_PENDING"],
   "customer_principals": ["payroll-app"], "governance": true}
Print the rules in force with 'custos officer notify-rules get --json'.`
}
