package main

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"slices"
	"strings"
	"time"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/encoding/protojson"

	custos "github.com/custos-kms/custos/clients/go"
	"github.com/custos-kms/custos/kms/governance"
	custosv1 "github.com/custos-kms/custos/proto/custos/v1"
)

// Governance commands: the customer's security officers sign statements
// (docs/governance.md). Online commands sign with the local officer key and
// submit at once; `officer propose`, `officer sign` and `officer submit`
// pass a statement file from officer to officer.

// stmtFlags are the statement flags every signing command takes.
type stmtFlags struct {
	comment  string
	lifetime time.Duration
}

func (s *stmtFlags) register(fs *flag.FlagSet) {
	fs.StringVar(&s.comment, "comment", "", "why: recorded with the statement in the ledger")
	fs.DurationVar(&s.lifetime, "lifetime", time.Hour, "the statement expires after this long (at most 168h)")
}

// opFlags holds the operation flags shared by the online commands and
// `officer propose`.
type opFlags struct {
	key, principal, reason, file string
	uses                         uint
	ttl                          time.Duration
	// Sinks (officer sink add, officer propose sink-add).
	sinkName, webhook, hmacKeyFile, sinkPath string
	requiredForRelease                       bool
	// Admission (cluster admit, officer propose admit).
	transportKey, identityKey, oaep string
	// dataDigests scope a grant to ciphertexts (officer grant --data-digest).
	dataDigests [][]byte
	// rotation: approve the node's transport key for the running
	// domain-key rotation (cluster admit --rotation).
	rotation bool
	// Key destruction (key destroy, key cancel-destroy).
	version uint
	wait    time.Duration
	// Quotas (officer quotas set).
	quotaKeys, quotaPending uint
}

// grantLimits converts --uses and --ttl.
func (o *opFlags) grantLimits() (uint32, int64, error) {
	if o.uses > 1_000_000 {
		return 0, 0, usagef("--uses %d: at most 1000000", o.uses)
	}
	if o.ttl < 0 || (o.ttl > 0 && o.ttl < time.Second) {
		return 0, 0, usagef("--ttl %s: want at least 1s (0 for the default, 1h)", o.ttl)
	}
	return uint32(o.uses), int64(o.ttl / time.Second), nil
}

// buildOp returns the operation for op ("revoke", "enable", ...) from the
// flags and positional arguments.
func buildOp(op string, f *opFlags, pos []string) (func(*custosv1.Statement), error) {
	needKey := func() error {
		if f.key == "" {
			return usagef("--key is required")
		}
		return nil
	}
	switch op {
	case "revoke", "disable", "enable":
		if err := needKey(); err != nil {
			return nil, err
		}
		k := f.key
		return func(st *custosv1.Statement) {
			switch op {
			case "revoke":
				st.Operation = &custosv1.Statement_RevokeKey{RevokeKey: &custosv1.RevokeKey{Key: k}}
			case "disable":
				st.Operation = &custosv1.Statement_DisableKey{DisableKey: &custosv1.DisableKey{Key: k}}
			default:
				st.Operation = &custosv1.Statement_EnableKey{EnableKey: &custosv1.EnableKey{Key: k}}
			}
		}, nil
	case "policy":
		if err := needKey(); err != nil {
			return nil, err
		}
		if f.file == "" {
			return nil, usagef("--file is required")
		}
		pol, err := readPolicy(f.file)
		if err != nil {
			return nil, err
		}
		k := f.key
		return func(st *custosv1.Statement) {
			st.Operation = &custosv1.Statement_SetPolicy{SetPolicy: &custosv1.SetPolicy{Key: k, Policy: pol}}
		}, nil
	case "approve":
		uses, ttl, err := f.grantLimits()
		if err != nil {
			return nil, err
		}
		id := pos[0]
		return func(st *custosv1.Statement) {
			st.Operation = &custosv1.Statement_ApproveRequest{ApproveRequest: &custosv1.ApproveRequest{RequestId: id, Uses: uses, TtlSeconds: ttl}}
		}, nil
	case "deny":
		id := pos[0]
		return func(st *custosv1.Statement) {
			st.Operation = &custosv1.Statement_DenyRequest{DenyRequest: &custosv1.DenyRequest{RequestId: id}}
		}, nil
	case "grant":
		if f.principal == "" || f.key == "" || f.reason == "" {
			return nil, usagef("--principal, --key and --reason are required")
		}
		r, err := custos.ParseReasonOrUnspecified(f.reason)
		if err != nil {
			return nil, usagef("--reason: %s", strings.TrimPrefix(err.Error(), "custos: "))
		}
		uses, ttl, err := f.grantLimits()
		if err != nil {
			return nil, err
		}
		g := &custosv1.CreateGrant{Principal: f.principal, Key: f.key, Reason: r, Uses: uses, TtlSeconds: ttl, DataDigests: f.dataDigests}
		return func(st *custosv1.Statement) {
			st.Operation = &custosv1.Statement_CreateGrant{CreateGrant: g}
		}, nil
	case "revoke-grant":
		id := pos[0]
		return func(st *custosv1.Statement) {
			st.Operation = &custosv1.Statement_RevokeGrant{RevokeGrant: &custosv1.RevokeGrant{GrantId: id}}
		}, nil
	case "officers":
		if f.file == "" {
			return nil, usagef("--file is required")
		}
		so, err := readOfficers(f.file)
		if err != nil {
			return nil, err
		}
		return func(st *custosv1.Statement) {
			st.Operation = &custosv1.Statement_SetOfficers{SetOfficers: so}
		}, nil
	case "sink-add", "sink-remove", "notify-rules":
		return buildSinkOp(op, f, pos)
	case "admit", "revoke-admission":
		return buildAdmissionOp(op, f, pos)
	case "destroy", "cancel-destroy":
		return buildDestroyOp(op, f)
	case "accept-restore":
		return buildAcceptRestoreOp(pos)
	case "ca-add", "ca-remove":
		return buildClientAuthorityOp(op, pos)
	case "witness-add", "witness-remove":
		return buildWitnessOp(op, pos)
	case "quotas":
		return buildQuotasOp(f)
	case "set-min-version":
		return buildSetMinVersionOp(f)
	case "rotate-domain-key", "cancel-rotation":
		return buildRotationOp(op), nil
	}
	return nil, usagef("unknown operation %q", op)
}

// readPolicy reads a KeyPolicy in protojson form.
func readPolicy(path string) (*custosv1.KeyPolicy, error) {
	b, err := readSmall(path)
	if err != nil {
		return nil, err
	}
	p := &custosv1.KeyPolicy{}
	if err := protojson.Unmarshal(b, p); err != nil {
		return nil, fmt.Errorf("policy file %s: %v", path, err)
	}
	return p, nil
}

func readSmall(path string) ([]byte, error) {
	f, err := os.Open(path)
	if err != nil {
		return nil, err
	}
	defer f.Close()
	b, err := io.ReadAll(io.LimitReader(f, 1<<20+1))
	if err != nil {
		return nil, err
	}
	if len(b) > 1<<20 {
		return nil, fmt.Errorf("%s is larger than 1 MiB", path)
	}
	return b, nil
}

// hintError adds a line of advice, printed after the error.
type hintError struct {
	err  error
	hint string
}

func (e *hintError) Error() string { return e.err.Error() }
func (e *hintError) Unwrap() error { return e.err }

// proposeHint tells the user how to gather more signatures offline.
func proposeHint(propose string) string {
	return "custos: this operation needs the officer quorum. Gather the signatures offline:\n" +
		"  custos officer propose " + propose + " --out statement.json\n" +
		"  custos officer sign statement.json     (each officer, with their own key)\n" +
		"  custos officer submit statement.json"
}

// govern builds a statement for the cluster with setOp, signs it with the
// local officer's key, submits it and prints the outcome. propose is the
// `officer propose` arguments suggested when the quorum is not reached.
func (a *app) govern(ctx context.Context, c *custos.Client, of *officerFlags, sf *stmtFlags, setOp func(*custosv1.Statement), propose string) (*custosv1.Statement, *custosv1.SubmitResponse, error) {
	officer, closer, err := of.load(a)
	if err != nil {
		if errors.Is(err, errNoOfficer) && propose != "" {
			return nil, nil, &hintError{err, proposeHint(propose)}
		}
		return nil, nil, err
	}
	defer closer.Close()
	st, err := c.NewStatement(ctx, sf.comment, sf.lifetime)
	if err != nil {
		return nil, nil, err
	}
	setOp(st)
	b, err := governance.Marshal(st)
	if err != nil {
		return nil, nil, err
	}
	sig, err := governance.Sign(officer.Signer, officer.Name, b)
	if err != nil {
		return nil, nil, err
	}
	fmt.Fprintf(a.stdout, "statement: %s\n", governance.Describe(st))
	res, err := c.Submit(ctx, &custosv1.SignedStatement{Statement: b, Signatures: []*custosv1.OfficerSignature{sig}})
	if err != nil {
		if status.Code(err) == codes.PermissionDenied && governance.Need(st) == governance.Quorum && propose != "" {
			return st, nil, &hintError{err, proposeHint(propose)}
		}
		return st, nil, err
	}
	printSubmit(a.stdout, res)
	return st, res, nil
}

func printSubmit(w io.Writer, res *custosv1.SubmitResponse) {
	fmt.Fprintf(w, "applied: %s (signed by %s; ledger %d)\n", res.GetResult(), strings.Join(res.GetSigners(), ", "), res.GetLedgerSeq())
	if g := res.GetGrantId(); g != "" {
		fmt.Fprintf(w, "grant: %s\n", g)
	}
}

// showState prints the state a statement changed, read back from the
// cluster.
func (a *app) showState(ctx context.Context, c *custos.Client, st *custosv1.Statement, res *custosv1.SubmitResponse, asJSON bool) error {
	switch op := st.GetOperation().(type) {
	case *custosv1.Statement_RevokeKey, *custosv1.Statement_DisableKey, *custosv1.Statement_EnableKey:
		name := ""
		switch o := op.(type) {
		case *custosv1.Statement_RevokeKey:
			name = o.RevokeKey.GetKey()
		case *custosv1.Statement_DisableKey:
			name = o.DisableKey.GetKey()
		case *custosv1.Statement_EnableKey:
			name = o.EnableKey.GetKey()
		}
		k, err := c.GetKey(ctx, name)
		if err != nil {
			return err
		}
		return printKey(a.stdout, k, asJSON)
	case *custosv1.Statement_SetPolicy:
		p, err := c.GetPolicy(ctx, op.SetPolicy.GetKey())
		if err != nil {
			return err
		}
		return printPolicy(a.stdout, op.SetPolicy.GetKey(), p, asJSON)
	case *custosv1.Statement_ApproveRequest, *custosv1.Statement_DenyRequest:
		id := ""
		if o, ok := op.(*custosv1.Statement_ApproveRequest); ok {
			id = o.ApproveRequest.GetRequestId()
		} else {
			id = op.(*custosv1.Statement_DenyRequest).DenyRequest.GetRequestId()
		}
		r, err := c.GetRequest(ctx, id)
		if err != nil {
			return err
		}
		printRequest(a.stdout, r)
	case *custosv1.Statement_CreateGrant:
		gs, err := c.ListGrants(ctx, op.CreateGrant.GetKey())
		if err != nil {
			return err
		}
		for _, g := range gs {
			if g.GetGrantId() == res.GetGrantId() {
				printGrant(a.stdout, g)
			}
		}
	case *custosv1.Statement_RevokeGrant:
		fmt.Fprintf(a.stdout, "grant %s is no longer in force\n", op.RevokeGrant.GetGrantId())
	case *custosv1.Statement_SetOfficers:
		g, err := c.GetGovernance(ctx)
		if err != nil {
			return err
		}
		printGovernance(a.stdout, g)
	case *custosv1.Statement_SetQuotas:
		g, err := c.GetGovernance(ctx)
		if err != nil {
			return err
		}
		printQuotas(a.stdout, g)
	case *custosv1.Statement_AddWitness, *custosv1.Statement_RemoveWitness:
		g, err := c.GetGovernance(ctx)
		if err != nil {
			return err
		}
		printWitnesses(a.stdout, g)
	case *custosv1.Statement_AddClientAuthority, *custosv1.Statement_RemoveClientAuthority:
		g, err := c.GetGovernance(ctx)
		if err != nil {
			return err
		}
		return printClientAuthorities(a.stdout, g, asJSON)
	case *custosv1.Statement_AddSink, *custosv1.Statement_RemoveSink:
		g, err := c.GetGovernance(ctx)
		if err != nil {
			return err
		}
		return printSinks(a.stdout, g, asJSON)
	case *custosv1.Statement_SetNotifyRules:
		g, err := c.GetGovernance(ctx)
		if err != nil {
			return err
		}
		return printNotifyRules(a.stdout, g.GetNotifyRules(), asJSON)
	case *custosv1.Statement_ScheduleKeyDestruction, *custosv1.Statement_CancelKeyDestruction, *custosv1.Statement_SetKeyMinVersion:
		k, err := c.GetKey(ctx, st.GetScheduleKeyDestruction().GetKey()+st.GetCancelKeyDestruction().GetKey()+st.GetSetKeyMinVersion().GetKey())
		if err != nil {
			return err
		}
		return printKey(a.stdout, k, asJSON)
	case *custosv1.Statement_AdmitNode, *custosv1.Statement_RevokeAdmission:
		node := st.GetAdmitNode().GetNode() + st.GetRevokeAdmission().GetNode()
		cs, err := c.ClusterStatus(ctx)
		if err != nil {
			return err
		}
		return printAdmission(a.stdout, cs, node, asJSON)
	case *custosv1.Statement_RotateDomainKey, *custosv1.Statement_CancelDomainKeyRotation:
		cs, err := c.ClusterStatus(ctx)
		if err != nil {
			return err
		}
		if asJSON {
			b, err := statusJSON.Marshal(cs.GetRotation())
			if err != nil {
				return err
			}
			_, err = fmt.Fprintln(a.stdout, string(b))
			return err
		}
		printRotation(a.stdout, cs)
	case *custosv1.Statement_AcceptRestore:
		cs, err := c.ClusterStatus(ctx)
		if err != nil {
			return err
		}
		if asJSON {
			b, err := statusJSON.Marshal(cs.GetRestore())
			if err != nil {
				return err
			}
			_, err = fmt.Fprintln(a.stdout, string(b))
			return err
		}
		printRestore(a.stdout, cs.GetRestore())
	}
	return nil
}

func printRequest(w io.Writer, r *custosv1.ApprovalRequest) {
	fmt.Fprintf(w, "request %s state=%s key=%s version=%d principal=%q reason=%s text=%q ticket=%q created=%s expires=%s",
		r.GetRequestId(), strings.TrimPrefix(r.GetState().String(), "REQUEST_STATE_"), r.GetKey(), r.GetKeyVersion(),
		r.GetPrincipal(), custos.ReasonString(r.GetReason()), r.GetJustificationText(), r.GetTicket(),
		unixNano(r.GetCreateTimeUnixNano()), unixNano(r.GetExpireTimeUnixNano()))
	if d := r.GetDataDigest(); len(d) > 0 {
		fmt.Fprintf(w, " data=%x", d)
	}
	if g := r.GetGrantId(); g != "" {
		fmt.Fprintf(w, " grant=%s", g)
	}
	fmt.Fprintln(w)
}

func printGrant(w io.Writer, g *custosv1.Grant) {
	ctx := "any"
	if d := g.GetContextDigest(); len(d) > 0 {
		ctx = fmt.Sprintf("%x", d)
	}
	fmt.Fprintf(w, "grant %s key=%s principal=%q reason=%s context=%s uses_left=%d expires=%s",
		g.GetGrantId(), g.GetKey(), g.GetPrincipal(), custos.ReasonString(g.GetReason()), ctx, g.GetUsesLeft(), unixNano(g.GetExpireTimeUnixNano()))
	if r := g.GetRequestId(); r != "" {
		fmt.Fprintf(w, " request=%s", r)
	}
	data := "any"
	if ds := g.GetDataDigests(); len(ds) > 0 {
		hexes := make([]string, len(ds))
		for i, d := range ds {
			hexes[i] = fmt.Sprintf("%x", d)
		}
		data = strings.Join(hexes, ",")
	}
	fmt.Fprintf(w, " data=%s\n", data)
}

func printGovernance(w io.Writer, g *custosv1.Governance) {
	fmt.Fprintf(w, "cluster %s: %d officer(s), quorum %d of %d (governance version %d)\n",
		g.GetClusterId(), len(g.GetOfficers()), g.GetQuorum(), len(g.GetOfficers()), g.GetVersion())
	for _, o := range g.GetOfficers() {
		fp := "invalid-key"
		if pub, err := governance.ParsePublicKey(o.GetPublicKey()); err == nil {
			fp = governance.Fingerprint(pub)
		}
		fmt.Fprintf(w, "  %s fingerprint=%s\n", o.GetName(), fp)
		for _, c := range o.GetCredentials() {
			// A security key (docs/console.md): its id, and its public
			// key's fingerprint (the same form as an officer key's).
			cfp := "invalid-key"
			if pub, err := governance.ParsePublicKey(c.GetPublicKey()); err == nil {
				cfp = governance.Fingerprint(pub)
			}
			uv := ""
			if c.GetRequireUserVerification() {
				uv = " user-verification"
			}
			fmt.Fprintf(w, "    security key %s fingerprint=%s rp_id=%s%s %q\n",
				governance.CredentialIDString(c.GetCredentialId()), cfp, c.GetRpId(), uv, c.GetLabel())
		}
	}
	if gen := g.GetGenesisSha256(); gen != "" {
		// What clients pin ($CUSTOS_GENESIS) and auditors check
		// (audit verify --genesis): the chain hash of ledger record 1.
		fmt.Fprintf(w, "genesis %s\n", gen)
	}
}

var protoJSON = protojson.MarshalOptions{UseProtoNames: true, EmitUnpopulated: true, Multiline: true, Indent: "  "}

// printPolicy prints a key's policy as text or as protojson (the format
// `key policy set --file` reads).
func printPolicy(w io.Writer, key string, p *custosv1.KeyPolicy, asJSON bool) error {
	if asJSON {
		b, err := protoJSON.Marshal(p)
		if err != nil {
			return err
		}
		_, err = fmt.Fprintf(w, "%s\n", b)
		return err
	}
	fmt.Fprintf(w, "policy of key %s: version %d\n", key, p.GetVersion())
	fmt.Fprintf(w, "  encrypt principals: %s\n", listOrNone(p.GetEncryptPrincipals()))
	fmt.Fprintf(w, "  decrypt principals: %s\n", listOrNone(p.GetDecryptPrincipals()))
	for _, r := range p.GetReasons() {
		fmt.Fprintf(w, "  reason %s: %s\n", custos.ReasonString(r.GetReason()), strings.TrimPrefix(r.GetAction().String(), "ACTION_"))
	}
	if !slices.ContainsFunc(p.GetReasons(), func(r *custosv1.ReasonRule) bool { return r.GetReason() == custosv1.Reason_REASON_UNSPECIFIED }) {
		fmt.Fprintln(w, "  reason UNSPECIFIED (none given): as THIRD_PARTY_DATA_REQUEST")
	}
	fmt.Fprintln(w, "  other reasons: REQUIRE_APPROVAL")
	if n := p.GetMaxDecryptsPerPrincipalPerHour(); n > 0 {
		fmt.Fprintf(w, "  at most %d decrypts per principal per hour\n", n)
	}
	for _, tw := range p.GetWindows() {
		fmt.Fprintf(w, "  window: weekdays %v %02d:%02d-%02d:%02d UTC\n", tw.GetWeekdays(),
			tw.GetStartMinute()/60, tw.GetStartMinute()%60, tw.GetEndMinute()/60, tw.GetEndMinute()%60)
	}
	if p.GetNotifyAll() {
		fmt.Fprintln(w, "  notify on every decision")
	}
	if p.GetNotifyBeforeRelease() {
		fmt.Fprintln(w, "  release only after notification")
	}
	if s := p.GetWitnessMaxAgeSeconds(); s > 0 {
		fmt.Fprintf(w, "  release only after a witness cosignature at most %d s old\n", s)
	}
	if p.GetRequireRequestSignature() {
		fmt.Fprintln(w, "  release only to requests signed with the principal's certificate key")
	}
	return nil
}

func listOrNone(l []string) string {
	if len(l) == 0 {
		return "(none)"
	}
	return strings.Join(l, ", ")
}

// --- officer commands ---

func runOfficerList(ctx context.Context, a *app, args []string) error {
	fs := a.flags("officer list")
	asJSON := fs.Bool("json", false, "print the governance as JSON")
	if _, err := a.parse("officer list", fs, args, 0, 0); err != nil {
		return err
	}
	return a.withClient(ctx, func(c *custos.Client) error {
		g, err := c.GetGovernance(ctx)
		if err != nil {
			return err
		}
		if *asJSON {
			b, err := protoJSON.Marshal(g)
			if err != nil {
				return err
			}
			_, err = fmt.Fprintf(a.stdout, "%s\n", b)
			return err
		}
		printGovernance(a.stdout, g)
		return nil
	})
}

func runOfficerPending(ctx context.Context, a *app, args []string) error {
	fs := a.flags("officer pending")
	key := fs.String("key", "", "only requests for this key")
	if _, err := a.parse("officer pending", fs, args, 0, 0); err != nil {
		return err
	}
	return a.withClient(ctx, func(c *custos.Client) error {
		reqs, err := c.ListPending(ctx, *key)
		if err != nil {
			return err
		}
		if len(reqs) == 0 {
			fmt.Fprintln(a.stdout, "no pending requests")
		}
		for _, r := range reqs {
			printRequest(a.stdout, r)
		}
		return nil
	})
}

func runOfficerGrants(ctx context.Context, a *app, args []string) error {
	fs := a.flags("officer grants")
	key := fs.String("key", "", "only grants for this key")
	if _, err := a.parse("officer grants", fs, args, 0, 0); err != nil {
		return err
	}
	return a.withClient(ctx, func(c *custos.Client) error {
		gs, err := c.ListGrants(ctx, *key)
		if err != nil {
			return err
		}
		if len(gs) == 0 {
			fmt.Fprintln(a.stdout, "no grants in force")
		}
		for _, g := range gs {
			printGrant(a.stdout, g)
		}
		return nil
	})
}

// onlineCmd is a parsed online signing command.
type onlineCmd struct {
	of     officerFlags
	sf     stmtFlags
	f      opFlags
	asJSON bool
	pos    []string
}

// parseOnline parses an online signing command with npos positional
// arguments; setup adds the operation's flags.
func (a *app) parseOnline(cmdName string, args []string, npos int, setup func(*flag.FlagSet, *opFlags)) (*onlineCmd, error) {
	oc := &onlineCmd{}
	fs := a.flags(cmdName)
	if setup != nil {
		setup(fs, &oc.f)
	}
	fs.BoolVar(&oc.asJSON, "json", false, "print the resulting key or policy as JSON")
	oc.sf.register(fs)
	oc.of.register(fs)
	pos, err := a.parse(cmdName, fs, args, npos, npos)
	if err != nil {
		return nil, err
	}
	if oc.of.keyFile != "" && oc.of.pkcs11 != "" {
		return nil, usagef("give --officer-key or --officer-pkcs11, not both")
	}
	oc.pos = pos
	return oc, nil
}

// execOnline signs the operation op with the local officer, submits it and
// prints the outcome and the resulting state. For `key ...` commands the
// positional argument is the key.
func (a *app) execOnline(ctx context.Context, cmdName, op string, oc *onlineCmd) error {
	pos := oc.pos
	if strings.HasPrefix(cmdName, "key ") {
		oc.f.key, pos = oc.pos[0], nil
	}
	setOp, err := buildOp(op, &oc.f, pos)
	if err != nil {
		return err
	}
	return a.withClient(ctx, func(c *custos.Client) error {
		st, res, err := a.govern(ctx, c, &oc.of, &oc.sf, setOp, proposeArgs(op, &oc.f, pos))
		if err != nil {
			return err
		}
		return a.showState(ctx, c, st, res, oc.asJSON)
	})
}

// onlineOp parses and runs one online signing command.
func onlineOp(ctx context.Context, a *app, cmdName, op string, args []string, npos int, setup func(*flag.FlagSet, *opFlags)) error {
	oc, err := a.parseOnline(cmdName, args, npos, setup)
	if err != nil {
		return err
	}
	return a.execOnline(ctx, cmdName, op, oc)
}

// proposeArgs renders the `officer propose` arguments equivalent to an
// online command, for the hint.
func proposeArgs(op string, f *opFlags, pos []string) string {
	parts := []string{op}
	parts = append(parts, pos...)
	if f.key != "" {
		parts = append(parts, "--key", f.key)
	}
	if f.principal != "" {
		parts = append(parts, "--principal", f.principal)
	}
	if f.reason != "" {
		parts = append(parts, "--reason", f.reason)
	}
	if f.file != "" {
		parts = append(parts, "--file", f.file)
	}
	if f.uses != 0 {
		parts = append(parts, "--uses", fmt.Sprint(f.uses))
	}
	if f.ttl != 0 {
		parts = append(parts, "--ttl", f.ttl.String())
	}
	if f.sinkName != "" {
		parts = append(parts, "--name", f.sinkName)
	}
	if f.webhook != "" {
		parts = append(parts, "--webhook", f.webhook, "--hmac-key-file", f.hmacKeyFile)
	}
	if f.sinkPath != "" {
		parts = append(parts, "--file", f.sinkPath)
	}
	if f.requiredForRelease {
		parts = append(parts, "--required-for-release")
	}
	if f.transportKey != "" {
		parts = append(parts, "--transport-key", f.transportKey)
	}
	if f.identityKey != "" {
		parts = append(parts, "--identity-key", f.identityKey)
	}
	if f.oaep != "" {
		parts = append(parts, "--oaep", f.oaep)
	}
	if f.rotation {
		parts = append(parts, "--rotation")
	}
	for _, d := range f.dataDigests {
		parts = append(parts, "--data-digest", hex.EncodeToString(d))
	}
	if f.version != 0 {
		parts = append(parts, "--version", fmt.Sprint(f.version))
	}
	if f.wait != 0 {
		parts = append(parts, "--wait", f.wait.String())
	}
	return strings.Join(parts, " ")
}

func limitFlags(fs *flag.FlagSet, f *opFlags) {
	fs.UintVar(&f.uses, "uses", 0, "decrypts the grant allows (default 1)")
	fs.DurationVar(&f.ttl, "ttl", 0, "how long the grant lasts (default 1h)")
}

func grantFlags(fs *flag.FlagSet, f *opFlags) {
	fs.StringVar(&f.principal, "principal", "", "principal (certificate identity) the grant is for (required)")
	fs.StringVar(&f.key, "key", "", "key the grant is for (required)")
	fs.StringVar(&f.reason, "reason", "", "justification reason the grant covers (required): "+strings.Join(custos.ReasonNames(), ", ")+", UNSPECIFIED")
	fs.Func("data-digest", "cover only this ciphertext: `HEX` SHA-256 as `custos digest FILE` prints it (repeatable; default: any)", func(s string) error {
		d, err := hex.DecodeString(strings.TrimSpace(s))
		if err != nil || len(d) != sha256.Size {
			return fmt.Errorf("want 64 hex digits")
		}
		f.dataDigests = append(f.dataDigests, d)
		return nil
	})
	limitFlags(fs, f)
}

func keyFlag(fs *flag.FlagSet, f *opFlags) {
	fs.StringVar(&f.key, "key", "", "key name (required)")
}

func policyFlags(fs *flag.FlagSet, f *opFlags) {
	keyFlag(fs, f)
	fs.StringVar(&f.file, "file", "", "policy `FILE` in JSON, as printed by 'key policy get --json' (required)")
}

func officersFileFlag(fs *flag.FlagSet, f *opFlags) {
	fs.StringVar(&f.file, "file", "", "officers `FILE` in JSON: {\"officers\": [{\"name\": ..., \"public_key\": BASE64}], \"quorum\": M} (required)")
}

func runOfficerApprove(ctx context.Context, a *app, args []string) error {
	return onlineOp(ctx, a, "officer approve", "approve", args, 1, limitFlags)
}

func runOfficerDeny(ctx context.Context, a *app, args []string) error {
	return onlineOp(ctx, a, "officer deny", "deny", args, 1, nil)
}

func runOfficerGrant(ctx context.Context, a *app, args []string) error {
	return onlineOp(ctx, a, "officer grant", "grant", args, 0, grantFlags)
}

func runOfficerRevokeGrant(ctx context.Context, a *app, args []string) error {
	return onlineOp(ctx, a, "officer revoke-grant", "revoke-grant", args, 1, nil)
}

// runOfficerPropose returns the run function of `officer propose OP`.
func runOfficerPropose(op string, npos int, setup func(*flag.FlagSet, *opFlags)) func(context.Context, *app, []string) error {
	return func(ctx context.Context, a *app, args []string) error {
		name := "officer propose " + op
		fs := a.flags(name)
		var sf stmtFlags
		var f opFlags
		if setup != nil {
			setup(fs, &f)
		}
		out := fs.String("out", "", "statement `FILE` to write (required; not overwritten)")
		cluster := fs.String("cluster-id", "", "cluster id, to propose without connecting (default: asked from the cluster)")
		restoreID := fs.String("restore-id", "", "with --cluster-id: the restore id of a cluster restored from a snapshot file (custos cluster status shows it)")
		sf.register(fs)
		pos, err := a.parse(name, fs, args, npos, npos)
		if err != nil {
			return err
		}
		if *out == "" {
			return usagef("--out is required")
		}
		if _, err := os.Lstat(*out); err == nil {
			return fmt.Errorf("%s already exists: not overwriting a statement file", *out)
		}
		setOp, err := buildOp(op, &f, pos)
		if err != nil {
			return err
		}
		if sf.lifetime <= 0 || sf.lifetime > governance.MaxLifetime {
			return usagef("--lifetime %s: want more than 0 and at most %s", sf.lifetime, governance.MaxLifetime)
		}
		var st *custosv1.Statement
		if *cluster != "" {
			st, err = governance.NewStatement(*cluster, sf.lifetime, sf.comment)
			if st != nil {
				st.RestoreId = strings.ToLower(*restoreID)
			}
		} else if *restoreID != "" {
			return usagef("--restore-id goes with --cluster-id (without it, the cluster tells)")
		} else {
			c, cerr := a.client(ctx)
			if cerr != nil {
				return cerr
			}
			defer c.Close()
			st, err = c.NewStatement(ctx, sf.comment, sf.lifetime)
		}
		if err != nil {
			return err
		}
		setOp(st)
		if err := writeStatementFile(a, *out, st); err != nil {
			return err
		}
		fmt.Fprintf(a.stdout, "next: each officer runs 'custos officer sign %s'; then anyone runs 'custos officer submit %s'\n", *out, *out)
		return nil
	}
}

// writeStatementFile writes st, unsigned, to the statement file out and
// says what it holds.
func writeStatementFile(a *app, out string, st *custosv1.Statement) error {
	b, err := governance.Marshal(st)
	if err != nil {
		return err
	}
	file, err := governance.NewFile(b)
	if err != nil {
		return err
	}
	if err := governance.WriteFile(out, file); err != nil {
		return err
	}
	fmt.Fprintf(a.stdout, "wrote %s: %s\n", out, governance.Describe(st))
	return nil
}

// --- key commands that need officers ---

func runKeyRevoke(ctx context.Context, a *app, args []string) error {
	return onlineOp(ctx, a, "key revoke", "revoke", args, 1, nil)
}

func runKeyEnable(ctx context.Context, a *app, args []string) error {
	return onlineOp(ctx, a, "key enable", "enable", args, 1, nil)
}

func runKeyDisable(ctx context.Context, a *app, args []string) error {
	oc, err := a.parseOnline("key disable", args, 1, nil)
	if err != nil {
		return err
	}
	if oc.of.configured() {
		// A DisableKey statement, recorded as the officer's act.
		return a.execOnline(ctx, "key disable", "disable", oc)
	}
	// No officer key: SetKeyState, which principals named in the key's
	// policy may call.
	return a.withClient(ctx, func(c *custos.Client) error {
		k, err := c.DisableKey(ctx, oc.pos[0])
		if err != nil {
			return err
		}
		fmt.Fprintf(a.stdout, "key %s disabled (by SetKeyState; re-enabling needs the officer quorum)\n", k.GetName())
		return printKey(a.stdout, k, oc.asJSON)
	})
}

func runKeyPolicyGet(ctx context.Context, a *app, args []string) error {
	fs := a.flags("key policy get")
	asJSON := fs.Bool("json", false, "print the policy as JSON (the format 'key policy set --file' reads)")
	pos, err := a.parse("key policy get", fs, args, 1, 1)
	if err != nil {
		return err
	}
	return a.withClient(ctx, func(c *custos.Client) error {
		p, err := c.GetPolicy(ctx, pos[0])
		if err != nil {
			return err
		}
		return printPolicy(a.stdout, pos[0], p, *asJSON)
	})
}

func runKeyPolicySet(ctx context.Context, a *app, args []string) error {
	return onlineOp(ctx, a, "key policy set", "policy", args, 1, func(fs *flag.FlagSet, f *opFlags) {
		fs.StringVar(&f.file, "file", "", "policy `FILE` in JSON (as printed by 'key policy get --json'; required)")
	})
}
