package console

import (
	"bytes"
	"context"
	"crypto/ecdsa"
	"crypto/sha256"
	"encoding/hex"
	"fmt"
	"net/http"
	"slices"
	"strconv"
	"strings"
	"sync"
	"time"

	"google.golang.org/protobuf/encoding/protojson"

	"github.com/custos-kms/custos/kms"
	"github.com/custos-kms/custos/kms/audit"
	"github.com/custos-kms/custos/kms/governance"
	custosv1 "github.com/custos-kms/custos/proto/custos/v1"
)

func rfc3339(ns int64) string {
	if ns == 0 {
		return ""
	}
	return time.Unix(0, ns).UTC().Format(time.RFC3339)
}

func trimEnum(s, prefix string) string { return strings.TrimPrefix(s, prefix) }

func proposalJSON(p *custosv1.Proposal) map[string]any {
	out := map[string]any{"id": p.Id, "description": p.Description, "signers": nonNil(p.Signers), "needed": p.Needed,
		"proposer": p.Proposer, "create_time": rfc3339(p.CreateTimeUnixNano), "statement": b64u(p.Statement),
		"challenge": b64u(governance.SignedDigest(p.Statement))}
	if st, err := governance.Parse(p.Statement); err == nil {
		out["operation"] = governance.OperationName(st)
		out["expire_time"] = time.Unix(st.NotAfterUnix, 0).UTC().Format(time.RFC3339)
		if ar := st.GetApproveRequest(); ar != nil {
			out["request_id"] = ar.RequestId
		}
	}
	return out
}

func nonNil[T any](s []T) []T {
	if s == nil {
		return []T{}
	}
	return s
}

func (s *Server) overview(r *http.Request, p kms.Principal) (any, error) {
	st := s.d.Service.State()
	g := st.Governance()
	var officers []map[string]any
	for _, o := range g.GetOfficers() {
		fp := ""
		if pub, err := governance.ParsePublicKey(o.GetPublicKey()); err == nil {
			fp = governance.Fingerprint(pub)
		}
		var creds []map[string]any
		for _, c := range o.GetCredentials() {
			cj := map[string]any{"id": b64u(c.GetCredentialId()), "label": c.GetLabel(), "rp_id": c.GetRpId(),
				"user_verification": c.GetRequireUserVerification()}
			if pub, err := governance.ParsePublicKey(c.GetPublicKey()); err == nil {
				kfp := sha256.Sum256(governance.MarshalPublicKey(pub))
				cj["public_key_sha256"] = hex.EncodeToString(kfp[:])
			}
			creds = append(creds, cj)
		}
		officers = append(officers, map[string]any{"name": o.GetName(), "fingerprint": fp, "credentials": nonNil(creds)})
	}
	seq, _ := st.LedgerHead()
	return map[string]any{"cluster_id": g.GetClusterId(), "genesis": g.GetGenesisSha256(), "quorum": g.GetQuorum(),
		"state_machine_version": st.StateMachineVersion(), "officers": nonNil(officers), "ledger_seq": seq}, nil
}

func (s *Server) pending(r *http.Request, p kms.Principal) (any, error) {
	ctx := r.Context()
	pend, err := s.d.Service.ListPending(ctx, p, &custosv1.ListPendingRequest{})
	if err != nil {
		return nil, err
	}
	props, err := s.d.Service.ListProposals(ctx, p, &custosv1.ListProposalsRequest{})
	if err != nil {
		return nil, err
	}
	var proposals []map[string]any
	byRequest := map[string]map[string]any{}
	for _, pr := range props.GetProposals() {
		j := proposalJSON(pr)
		proposals = append(proposals, j)
		// The approval a request's row shows: the one furthest along
		// (the oldest of equals); any other is in the proposals list.
		if id, ok := j["request_id"].(string); ok && j["operation"] == "approve_request" &&
			(byRequest[id] == nil || len(pr.GetSignatures()) > len(byRequest[id]["signers"].([]string))) {
			byRequest[id] = j
		}
	}
	var reqs []map[string]any
	for _, q := range pend.GetRequests() {
		j := map[string]any{"request_id": q.RequestId, "principal": q.Principal, "key": q.Key,
			"reason":        trimEnum(q.Reason.String(), "REASON_"),
			"justification": q.JustificationText, "ticket": q.Ticket, "context_digest": hex.EncodeToString(q.ContextDigest), "key_version": q.KeyVersion,
			"data_digest": hex.EncodeToString(q.DataDigest), "create_time": rfc3339(q.CreateTimeUnixNano),
			"expire_time": rfc3339(q.ExpireTimeUnixNano), "approvals": []string{}, "proposal": nil}
		if pj := byRequest[q.RequestId]; pj != nil {
			j["approvals"], j["proposal"] = pj["signers"], pj
		}
		reqs = append(reqs, j)
	}
	return map[string]any{"requests": nonNil(reqs), "proposals": nonNil(proposals)}, nil
}

func (s *Server) keys(r *http.Request, p kms.Principal) (any, error) {
	ctx := r.Context()
	var out []map[string]any
	token := ""
	for {
		res, err := s.d.Service.ListKeys(ctx, p, &custosv1.ListKeysRequest{PageSize: 1000, PageToken: token})
		if err != nil {
			return nil, err
		}
		for _, k := range res.GetKeys() {
			pol, err := s.d.Service.GetPolicy(ctx, p, &custosv1.GetPolicyRequest{Key: k.Name})
			if err != nil {
				return nil, err
			}
			var versions []map[string]any
			for _, v := range k.Versions {
				state := "active"
				switch {
				case v.Destroyed:
					state = "destroyed"
				case v.DestroyTimeUnixNano != 0:
					state = "destruction scheduled"
				case v.Version < k.MinDecryptionVersion:
					state = "below minimum"
				}
				versions = append(versions, map[string]any{"version": v.Version, "state": state,
					"create_time": rfc3339(v.CreateTimeUnixNano), "key_check_value": hex.EncodeToString(v.KeyCheckValue)})
			}
			pj, _ := protojson.Marshal(pol)
			out = append(out, map[string]any{"name": k.Name, "description": k.Description,
				"state": strings.ToLower(trimEnum(k.State.String(), "KEY_STATE_")), "primary_version": k.PrimaryVersion,
				"min_decryption_version": k.MinDecryptionVersion, "versions": nonNil(versions),
				"policy_words": PolicyWords(pol), "policy": rawJSON(pj)})
		}
		if token = res.GetNextPageToken(); token == "" {
			break
		}
	}
	return map[string]any{"keys": nonNil(out)}, nil
}

// rawJSON embeds already-encoded JSON.
type rawJSON []byte

func (j rawJSON) MarshalJSON() ([]byte, error) {
	if len(j) == 0 {
		return []byte("{}"), nil
	}
	return j, nil
}

// PolicyWords says a key policy in sentences, for officers.
func PolicyWords(p *custosv1.KeyPolicy) []string {
	if p == nil {
		return []string{"No policy: nobody may use the key."}
	}
	list := func(ps []string) string {
		if len(ps) == 0 {
			return "nobody"
		}
		return strings.Join(ps, ", ")
	}
	out := []string{
		"May encrypt: " + list(p.EncryptPrincipals) + ".",
		"May decrypt: " + list(p.DecryptPrincipals) + ".",
	}
	if len(p.AdminPrincipals) > 0 {
		out = append(out, "May administer (rotate, disable): "+list(p.AdminPrincipals)+".")
	}
	for _, rr := range p.Reasons {
		act := map[custosv1.Action]string{custosv1.Action_ACTION_ALLOW: "allowed", custosv1.Action_ACTION_DENY: "refused",
			custosv1.Action_ACTION_REQUIRE_APPROVAL: "needs the officers' approval"}[rr.Action]
		if act == "" {
			act = "needs the officers' approval"
		}
		out = append(out, fmt.Sprintf("Decrypt for %s: %s.", trimEnum(rr.Reason.String(), "REASON_"), act))
	}
	out = append(out, "Any other reason: needs the officers' approval.")
	if n := p.MaxDecryptsPerPrincipalPerHour; n > 0 {
		out = append(out, fmt.Sprintf("At most %d decrypts per principal per hour.", n))
	}
	if len(p.Windows) > 0 {
		out = append(out, fmt.Sprintf("Only inside %d time window(s) (UTC).", len(p.Windows)))
	}
	if p.NotifyBeforeRelease {
		out = append(out, "The customer is notified before any key is released.")
	} else if p.NotifyAll {
		out = append(out, "The customer is notified of every decision.")
	}
	if p.WitnessMaxAgeSeconds > 0 {
		out = append(out, fmt.Sprintf("Release only while a witness cosigned the ledger in the last %d seconds.", p.WitnessMaxAgeSeconds))
	}
	if p.RequireRequestSignature {
		out = append(out, "Release only to requests the principal signed with its certificate's key.")
	}
	return out
}

// evidenceCache holds the ledger as last read, reread when the head moves.
type evidenceCache struct {
	mu      sync.Mutex
	seq     uint64
	records []*custosv1.DecisionRecord
	report  *audit.Report
	verr    string
	read    time.Time
}

// load returns the ledger's records and the chain's verification, reading
// a fresh export when the head moved (at most every two seconds).
func (s *Server) load(ctx context.Context, p kms.Principal) ([]*custosv1.DecisionRecord, *audit.Report, string, error) {
	c := s.evidence
	c.mu.Lock()
	defer c.mu.Unlock()
	seq, _ := s.d.Service.State().LedgerHead()
	if c.records != nil && (seq == c.seq || time.Since(c.read) < 2*time.Second) {
		return c.records, c.report, c.verr, nil
	}
	var buf bytes.Buffer
	w := audit.NewWriter(&buf)
	if err := s.d.Service.Export(ctx, p, &custosv1.ExportRequest{}, w.WriteItem); err != nil {
		return nil, nil, "", err
	}
	if err := w.Close(); err != nil {
		return nil, nil, "", err
	}
	data := buf.Bytes()
	recs, err := audit.ReadRecords(audit.NewReader(bytes.NewReader(data)))
	if err != nil {
		return nil, nil, "", err
	}
	// Checked against the checkpoint keys the cluster registered (what an
	// auditor who pins them does; docs/console.md says the difference).
	verr := ""
	var rep *audit.Report
	cp, err := s.d.Service.GetCheckpoint(ctx, p, &custosv1.GetCheckpointRequest{})
	if err == nil {
		var keys []*ecdsa.PublicKey
		if keys, err = audit.ParseKeys(cp.GetPublicKeys()); err == nil {
			rep, err = audit.Verify(bytes.NewReader(data), keys)
		}
	}
	if err != nil {
		verr = err.Error()
	}
	c.seq, c.records, c.report, c.verr, c.read = seq, recs, rep, verr, time.Now()
	return recs, rep, verr, nil
}

func (s *Server) decisions(r *http.Request, p kms.Principal) (any, error) {
	q := r.URL.Query()
	recs, _, _, err := s.load(r.Context(), p)
	if err != nil {
		return nil, err
	}
	limit := 200
	if v := q.Get("limit"); v != "" {
		n, err := strconv.Atoi(v)
		if err != nil || n < 1 || n > 5000 {
			return nil, badRequest("limit must be 1 to 5000")
		}
		limit = n
	}
	key, principal, reason, outcome := q.Get("key"), q.Get("principal"), strings.ToUpper(q.Get("reason")), strings.ToUpper(q.Get("outcome"))
	type hourKey struct{ hour, outcome, reason string }
	hourly := map[hourKey]int{}
	var out []map[string]any
	for i := len(recs) - 1; i >= 0; i-- {
		rec := recs[i]
		rs, os := trimEnum(rec.Reason.String(), "REASON_"), trimEnum(rec.Outcome.String(), "OUTCOME_")
		if (key != "" && rec.Key != key) || (principal != "" && rec.Principal != principal) ||
			(reason != "" && rs != reason) || (outcome != "" && os != outcome) {
			continue
		}
		h := time.Unix(0, rec.TimeUnixNano).UTC().Truncate(time.Hour).Format(time.RFC3339)
		hourly[hourKey{h, os, rs}]++
		if len(out) < limit {
			out = append(out, map[string]any{"seq": rec.Seq, "time": rfc3339(rec.TimeUnixNano),
				"operation": trimEnum(rec.Operation.String(), "OPERATION_"), "outcome": os, "principal": rec.Principal,
				"key": rec.Key, "reason": rs, "matched_rule": rec.MatchedRule, "detail": rec.Detail,
				"request_id": rec.RequestId, "signers": nonNil(rec.Signers)})
		}
	}
	var hours []map[string]any
	for k, n := range hourly {
		hours = append(hours, map[string]any{"hour": k.hour, "outcome": k.outcome, "reason": k.reason, "count": n})
	}
	slices.SortFunc(hours, func(a, b map[string]any) int {
		return strings.Compare(a["hour"].(string)+a["outcome"].(string)+a["reason"].(string), b["hour"].(string)+b["outcome"].(string)+b["reason"].(string))
	})
	return map[string]any{"records": nonNil(out), "hourly": nonNil(hours)}, nil
}

func (s *Server) report(w http.ResponseWriter, r *http.Request) {
	p, ok := s.principal(r)
	if !ok {
		writeError(w, &apiError{status: http.StatusUnauthorized, code: "Unauthenticated", msg: "sign in"})
		return
	}
	q := r.URL.Query()
	var since, until time.Time
	for _, b := range []struct {
		name string
		t    *time.Time
	}{{"since", &since}, {"until", &until}} {
		if v := q.Get(b.name); v != "" {
			t, err := time.Parse(time.RFC3339, v)
			if err != nil {
				writeError(w, badRequest("%s must be an RFC 3339 time", b.name))
				return
			}
			*b.t = t
		}
	}
	recs, _, _, err := s.load(r.Context(), p)
	if err != nil {
		writeError(w, err)
		return
	}
	d := audit.Summarize(recs, since, until, q.Get("key"))
	if q.Get("download") != "" {
		w.Header().Set("Content-Type", "text/plain; charset=utf-8")
		w.Header().Set("Content-Disposition", `attachment; filename="custos-disclosure-report.txt"`)
		_, _ = w.Write([]byte(d.Text()))
		return
	}
	writeJSON(w, map[string]any{"since": q.Get("since"), "until": q.Get("until"), "text": d.Text(), "summary": d})
}

func (s *Server) chain(r *http.Request, p kms.Principal) (any, error) {
	_, rep, verr, err := s.load(r.Context(), p)
	if err != nil {
		return nil, err
	}
	out := map[string]any{"verified": verr == "" && rep != nil && rep.Kind == "", "problems": []string{}}
	if verr != "" {
		out["problems"] = []string{verr}
	}
	if rep != nil {
		out["records"], out["verified_through"], out["checkpoints"] = rep.Records, rep.VerifiedThrough, rep.Checkpoints
		if rep.Kind != "" {
			out["problems"] = []string{fmt.Sprintf("%s at %d: %s", rep.Kind, rep.ProblemSeq, rep.Problem)}
		}
	}
	seq, head := s.d.Service.State().LedgerHead()
	out["seq"], out["head"] = seq, hex.EncodeToString(head[:])
	out["witness"] = nil
	var newest *custosv1.Cosignature
	for _, wt := range s.d.Service.State().Governance().GetWitnesses() {
		if l := wt.GetLast(); l != nil && (newest == nil || l.Seq > newest.Seq) {
			newest = l
		}
	}
	if newest != nil {
		out["witness"] = map[string]any{"name": newest.Witness, "seq": newest.Seq, "time": rfc3339(newest.TimeUnixNano)}
	}
	return out, nil
}

func (s *Server) cluster(r *http.Request, p kms.Principal) (any, error) {
	st := s.d.Status(r.Context())
	adm := map[string]*custosv1.NodeAdmission{}
	var admissions []map[string]any
	for _, a := range st.GetAdmissions() {
		adm[a.Node] = a
		admissions = append(admissions, map[string]any{"node": a.Node, "state": trimEnum(a.State.String(), "ADMISSION_STATE_"),
			"transport_key_fingerprint": a.TransportKeyFingerprint, "identity_key_fingerprint": a.IdentityKeyFingerprint})
	}
	var nodes []map[string]any
	for _, sv := range st.GetServers() {
		j := map[string]any{"id": sv.Id, "address": sv.RaftAddr, "suffrage": sv.Suffrage, "leader": sv.Leader,
			"admitted": adm[sv.Id] != nil && adm[sv.Id].State == custosv1.AdmissionState_ADMISSION_STATE_ADMITTED, "hsm": ""}
		if sv.Id == st.NodeId {
			j["hsm"] = "ok"
			if !st.HsmHealthy {
				j["hsm"] = "failing: " + st.HsmDetail
			}
		}
		nodes = append(nodes, j)
	}
	return map[string]any{"leader": st.LeaderId, "node": st.NodeId, "nodes": nonNil(nodes), "admissions": nonNil(admissions),
		"state_machine_version": s.d.Service.State().StateMachineVersion(), "ledger_seq": st.LedgerSeq}, nil
}

// events streams "change" whenever the ledger head or the proposals move,
// so that every open page shows what another officer just did.
func (s *Server) events(w http.ResponseWriter, r *http.Request) {
	p, ok := s.principal(r)
	if !ok {
		writeError(w, &apiError{status: http.StatusUnauthorized, code: "Unauthenticated", msg: "sign in"})
		return
	}
	_ = p
	fl, ok := w.(http.Flusher)
	if !ok {
		writeError(w, badRequest("streaming unsupported"))
		return
	}
	w.Header().Set("Content-Type", "text/event-stream")
	w.Header().Set("Cache-Control", "no-store")
	fingerprint := func() string {
		seq, _ := s.d.Service.State().LedgerHead()
		var b strings.Builder
		fmt.Fprintf(&b, "%d", seq)
		for _, pr := range s.d.Service.State().Proposals(time.Now()) {
			fmt.Fprintf(&b, " %s:%d", pr.Id, len(pr.Signatures))
		}
		return b.String()
	}
	last := ""
	tick := time.NewTicker(500 * time.Millisecond)
	defer tick.Stop()
	for {
		if f := fingerprint(); f != last {
			last = f
			seq, _ := s.d.Service.State().LedgerHead()
			if _, err := fmt.Fprintf(w, "event: change\ndata: %d\n\n", seq); err != nil {
				return
			}
			fl.Flush()
		}
		select {
		case <-r.Context().Done():
			return
		case <-tick.C:
		}
		if s.sessions.get(r) == nil {
			return // signed out or expired
		}
	}
}
