package main

import (
	"context"
	"encoding/base64"
	"encoding/hex"
	"flag"
	"fmt"
	"io"
	"strings"

	"google.golang.org/protobuf/encoding/protojson"
	"google.golang.org/protobuf/proto"

	custos "github.com/custos-kms/custos/clients/go"
	custosv1 "github.com/custos-kms/custos/proto/custos/v1"
)

// Notification sinks and notify rules (docs/audit.md, "Notifications"):
// adding a sink takes one officer (the customer is told more); removing
// one or changing the notify rules takes the quorum. HMAC keys are read
// from files and never printed.

// minHMACKey is the shortest webhook HMAC key the cluster accepts.
const minHMACKey = 32

// sinkFlags are the flags of `officer sink add` and `officer propose sink-add`.
func sinkFlags(fs *flag.FlagSet, f *opFlags) {
	fs.StringVar(&f.sinkName, "name", "", "sink name (required)")
	fs.StringVar(&f.webhook, "webhook", "", "webhook `URL` (https://, or http:// to a loopback address) receiving HMAC-signed JSON")
	fs.StringVar(&f.hmacKeyFile, "hmac-key-file", "", "`FILE` holding the webhook's HMAC-SHA-256 key: at least 32 bytes, raw or as hex or base64 text (e.g. openssl rand -hex 32)")
	fs.StringVar(&f.sinkPath, "file", "", "file sink: absolute `PATH` on the node where JSON lines are appended")
	fs.BoolVar(&f.requiredForRelease, "required-for-release", false, "keys with notify_before_release are used only after this sink acknowledged")
}

func rulesFileFlag(fs *flag.FlagSet, f *opFlags) {
	fs.StringVar(&f.file, "file", "", "notify rules `FILE` in JSON (NotifyRules, as printed by 'officer notify-rules get --json'; required)")
}

// readHMACKey reads a webhook HMAC key: the file's text as hex or base64
// if it decodes as such, else its raw bytes.
func readHMACKey(path string) ([]byte, error) {
	b, err := readSmall(path)
	if err != nil {
		return nil, err
	}
	text := strings.TrimSpace(string(b))
	var key []byte
	if k, err := hex.DecodeString(text); err == nil && len(text) > 0 {
		key = k
	} else if k, err := base64.StdEncoding.DecodeString(text); err == nil && len(text) > 0 {
		key = k
	} else {
		key = b
	}
	if len(key) < minHMACKey {
		return nil, fmt.Errorf("HMAC key file %s holds %d bytes; the cluster needs at least %d (create one with: openssl rand -hex 32 > %s)", path, len(key), minHMACKey, path)
	}
	return key, nil
}

// buildSinkOp builds the sink and notify-rules operations of buildOp.
func buildSinkOp(op string, f *opFlags, pos []string) (func(*custosv1.Statement), error) {
	switch op {
	case "sink-add":
		if f.sinkName == "" {
			return nil, usagef("--name is required")
		}
		sk := &custosv1.Sink{Name: f.sinkName, RequiredForRelease: f.requiredForRelease}
		switch {
		case f.webhook != "" && f.sinkPath != "":
			return nil, usagef("give --webhook or --file, not both")
		case f.webhook != "":
			if f.hmacKeyFile == "" {
				return nil, usagef("--webhook needs --hmac-key-file")
			}
			key, err := readHMACKey(f.hmacKeyFile)
			if err != nil {
				return nil, err
			}
			sk.Type, sk.Url, sk.HmacKey = custosv1.SinkType_SINK_TYPE_WEBHOOK, f.webhook, key
		case f.sinkPath != "":
			if f.hmacKeyFile != "" {
				return nil, usagef("--hmac-key-file is for --webhook sinks")
			}
			sk.Type, sk.Path = custosv1.SinkType_SINK_TYPE_FILE, f.sinkPath
		default:
			return nil, usagef("give --webhook URL --hmac-key-file FILE, or --file PATH")
		}
		return func(st *custosv1.Statement) {
			st.Operation = &custosv1.Statement_AddSink{AddSink: &custosv1.AddSink{Sink: sk}}
		}, nil
	case "sink-remove":
		name := pos[0]
		return func(st *custosv1.Statement) {
			st.Operation = &custosv1.Statement_RemoveSink{RemoveSink: &custosv1.RemoveSink{Name: name}}
		}, nil
	case "notify-rules":
		if f.file == "" {
			return nil, usagef("--file is required")
		}
		b, err := readSmall(f.file)
		if err != nil {
			return nil, err
		}
		rules := &custosv1.NotifyRules{}
		if err := protojson.Unmarshal(b, rules); err != nil {
			return nil, fmt.Errorf("notify rules file %s: %v", f.file, err)
		}
		return func(st *custosv1.Statement) {
			st.Operation = &custosv1.Statement_SetNotifyRules{SetNotifyRules: &custosv1.SetNotifyRules{Rules: rules}}
		}, nil
	}
	return nil, usagef("unknown operation %q", op)
}

// printSinks prints the configured sinks, never an HMAC key.
func printSinks(w io.Writer, g *custosv1.Governance, asJSON bool) error {
	sinks := make([]*custosv1.Sink, 0, len(g.GetSinks()))
	for _, s := range g.GetSinks() {
		s = proto.Clone(s).(*custosv1.Sink)
		s.HmacKey = nil // the cluster blanks it; never print one anyway
		sinks = append(sinks, s)
	}
	if asJSON {
		fmt.Fprintln(w, "[")
		for i, s := range sinks {
			b, err := protojson.MarshalOptions{UseProtoNames: true, EmitUnpopulated: true}.Marshal(s)
			if err != nil {
				return err
			}
			sep := ","
			if i == len(sinks)-1 {
				sep = ""
			}
			fmt.Fprintf(w, "  %s%s\n", b, sep)
		}
		fmt.Fprintln(w, "]")
		return nil
	}
	if len(sinks) == 0 {
		fmt.Fprintln(w, "no notification sinks")
		return nil
	}
	for _, s := range sinks {
		fmt.Fprintf(w, "sink %s type=%s", s.GetName(), strings.TrimPrefix(s.GetType().String(), "SINK_TYPE_"))
		if u := s.GetUrl(); u != "" {
			fmt.Fprintf(w, " url=%s", u)
		}
		if p := s.GetPath(); p != "" {
			fmt.Fprintf(w, " path=%s", p)
		}
		fmt.Fprintf(w, " required_for_release=%t delivered_through_seq=%d\n", s.GetRequiredForRelease(), s.GetDeliveredSeq())
	}
	return nil
}

// printNotifyRules prints the cluster's notify rules.
func printNotifyRules(w io.Writer, r *custosv1.NotifyRules, asJSON bool) error {
	if asJSON {
		if r == nil {
			r = &custosv1.NotifyRules{}
		}
		b, err := protoJSON.Marshal(r)
		if err != nil {
			return err
		}
		_, err = fmt.Fprintf(w, "%s\n", b)
		return err
	}
	if r == nil {
		fmt.Fprintln(w, "notify rules: the defaults (THIRD_PARTY_DATA_REQUEST, every DENY and PENDING, every governance record)")
		return nil
	}
	var reasons, outcomes []string
	for _, x := range r.GetReasons() {
		reasons = append(reasons, custos.ReasonString(x))
	}
	for _, x := range r.GetOutcomes() {
		outcomes = append(outcomes, custos.OutcomeString(x))
	}
	fmt.Fprintln(w, "notify rules:")
	fmt.Fprintf(w, "  all records:          %t\n", r.GetAll())
	fmt.Fprintf(w, "  reasons:              %s\n", listOrNone(reasons))
	fmt.Fprintf(w, "  outcomes:             %s\n", listOrNone(outcomes))
	fmt.Fprintf(w, "  governance records:   %t\n", r.GetGovernance())
	fmt.Fprintf(w, "  customer principals:  %s (others are notified when the list is not empty)\n", listOrNone(r.GetCustomerPrincipals()))
	return nil
}

func runOfficerSinkAdd(ctx context.Context, a *app, args []string) error {
	return onlineOp(ctx, a, "officer sink add", "sink-add", args, 0, sinkFlags)
}

func runOfficerSinkRemove(ctx context.Context, a *app, args []string) error {
	return onlineOp(ctx, a, "officer sink remove", "sink-remove", args, 1, nil)
}

func runOfficerNotifyRulesSet(ctx context.Context, a *app, args []string) error {
	return onlineOp(ctx, a, "officer notify-rules set", "notify-rules", args, 0, rulesFileFlag)
}

func runOfficerSinkList(ctx context.Context, a *app, args []string) error {
	fs := a.flags("officer sink list")
	asJSON := fs.Bool("json", false, "print the sinks as JSON")
	if _, err := a.parse("officer sink list", fs, args, 0, 0); err != nil {
		return err
	}
	return a.withClient(ctx, func(c *custos.Client) error {
		g, err := c.GetGovernance(ctx)
		if err != nil {
			return err
		}
		return printSinks(a.stdout, g, *asJSON)
	})
}

func runOfficerNotifyRulesGet(ctx context.Context, a *app, args []string) error {
	fs := a.flags("officer notify-rules get")
	asJSON := fs.Bool("json", false, "print the rules as JSON (the format 'notify-rules set --file' reads)")
	if _, err := a.parse("officer notify-rules get", fs, args, 0, 0); err != nil {
		return err
	}
	return a.withClient(ctx, func(c *custos.Client) error {
		g, err := c.GetGovernance(ctx)
		if err != nil {
			return err
		}
		return printNotifyRules(a.stdout, g.GetNotifyRules(), *asJSON)
	})
}
