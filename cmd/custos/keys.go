package main

import (
	"context"
	"encoding/hex"
	"encoding/json"
	"flag"
	"fmt"
	"io"
	"math"
	"strconv"
	"strings"
	"time"

	custos "github.com/custos-kms/custos/clients/go"
	custosv1 "github.com/custos-kms/custos/proto/custos/v1"
)

// keyOp is the common shape of key subcommands that take NAME and print
// the resulting key.
func keyOp(ctx context.Context, a *app, name string, args []string, call func(*custos.Client, context.Context, string) (*custosv1.Key, error)) error {
	fs := a.flags(name)
	asJSON := fs.Bool("json", false, "print the key as one JSON object")
	pos, err := a.parse(name, fs, args, 1, 1)
	if err != nil {
		return err
	}
	return a.withClient(ctx, func(c *custos.Client) error {
		k, err := call(c, ctx, pos[0])
		if err != nil {
			return err
		}
		return printKey(a.stdout, k, *asJSON)
	})
}

func runKeyCreate(ctx context.Context, a *app, args []string) error {
	fs := a.flags("key create")
	desc := fs.String("description", "", "free-text description, at most 256 bytes")
	asJSON := fs.Bool("json", false, "print the key as one JSON object")
	pos, err := a.parse("key create", fs, args, 1, 1)
	if err != nil {
		return err
	}
	return a.withClient(ctx, func(c *custos.Client) error {
		k, err := c.CreateKey(ctx, pos[0], *desc)
		if err != nil {
			return err
		}
		return printKey(a.stdout, k, *asJSON)
	})
}

func runKeyList(ctx context.Context, a *app, args []string) error {
	fs := a.flags("key list")
	asJSON := fs.Bool("json", false, "print one JSON object per line")
	if _, err := a.parse("key list", fs, args, 0, 0); err != nil {
		return err
	}
	return a.withClient(ctx, func(c *custos.Client) error {
		for k, err := range c.AllKeys(ctx) {
			if err != nil {
				return err
			}
			if err := printKey(a.stdout, k, *asJSON); err != nil {
				return err
			}
		}
		return nil
	})
}

func runKeyGet(ctx context.Context, a *app, args []string) error {
	return keyOp(ctx, a, "key get", args, (*custos.Client).GetKey)
}

func runKeyRotate(ctx context.Context, a *app, args []string) error {
	return keyOp(ctx, a, "key rotate", args, (*custos.Client).RotateKey)
}

func runKeyMinVersion(ctx context.Context, a *app, args []string) error {
	fs := a.flags("key min-version")
	asJSON := fs.Bool("json", false, "print the key as one JSON object")
	pos, err := a.parse("key min-version", fs, args, 2, 2)
	if err != nil {
		return err
	}
	v, err := strconv.ParseUint(strings.TrimPrefix(pos[1], "v"), 10, 32)
	if err != nil || v == 0 {
		return usagef("VERSION %q: want a positive integer", pos[1])
	}
	return a.withClient(ctx, func(c *custos.Client) error {
		k, err := c.SetMinDecryptionVersion(ctx, pos[0], uint32(v))
		if err != nil {
			return err
		}
		return printKey(a.stdout, k, *asJSON)
	})
}

// keyJSON is the --json form of a key. Field names are stable.
type keyJSON struct {
	Name                 string        `json:"name"`
	Description          string        `json:"description"`
	State                string        `json:"state"`
	PrimaryVersion       uint32        `json:"primary_version"`
	MinDecryptionVersion uint32        `json:"min_decryption_version"`
	Versions             []versionJSON `json:"versions"`
	Algorithm            string        `json:"algorithm"`
	CreateTime           string        `json:"create_time,omitempty"`
	UpdateTime           string        `json:"update_time,omitempty"`
}

type versionJSON struct {
	Version       uint32 `json:"version"`
	CreateTime    string `json:"create_time,omitempty"`
	Origin        string `json:"origin,omitempty"`
	KeyCheckValue string `json:"key_check_value,omitempty"`
	// DestroyTime is set while the version is scheduled for destruction
	// and after it was destroyed (Destroyed).
	DestroyTime string `json:"destroy_time,omitempty"`
	Destroyed   bool   `json:"destroyed,omitempty"`
}

func unixNano(n int64) string {
	if n == 0 {
		return ""
	}
	return time.Unix(0, n).UTC().Format(time.RFC3339Nano)
}

func stateName(s custosv1.KeyState) string {
	return strings.TrimPrefix(s.String(), "KEY_STATE_")
}

// printKey prints k on one line, as key=value pairs or as JSON.
func printKey(w io.Writer, k *custosv1.Key, asJSON bool) error {
	if asJSON {
		j := keyJSON{
			Name:                 k.GetName(),
			Description:          k.GetDescription(),
			State:                stateName(k.GetState()),
			PrimaryVersion:       k.GetPrimaryVersion(),
			MinDecryptionVersion: k.GetMinDecryptionVersion(),
			Versions:             []versionJSON{},
			Algorithm:            k.GetAlgorithm(),
			CreateTime:           unixNano(k.GetCreateTimeUnixNano()),
			UpdateTime:           unixNano(k.GetUpdateTimeUnixNano()),
		}
		for _, v := range k.GetVersions() {
			j.Versions = append(j.Versions, versionJSON{Version: v.GetVersion(), CreateTime: unixNano(v.GetCreateTimeUnixNano()),
				Origin: strings.TrimPrefix(v.GetOrigin().String(), "KEY_ORIGIN_"), KeyCheckValue: hex.EncodeToString(v.GetKeyCheckValue()),
				DestroyTime: unixNano(v.GetDestroyTimeUnixNano()), Destroyed: v.GetDestroyed()})
		}
		b, err := json.Marshal(j)
		if err != nil {
			return err
		}
		_, err = fmt.Fprintf(w, "%s\n", b)
		return err
	}
	var destroy []string
	for _, v := range k.GetVersions() {
		switch {
		case v.GetDestroyed():
			destroy = append(destroy, fmt.Sprintf("v%d:destroyed", v.GetVersion()))
		case v.GetDestroyTimeUnixNano() != 0:
			destroy = append(destroy, fmt.Sprintf("v%d:%s", v.GetVersion(), unixNano(v.GetDestroyTimeUnixNano())))
		}
	}
	line := fmt.Sprintf("%s state=%s primary=%d min_decryption=%d versions=%d description=%q",
		k.GetName(), stateName(k.GetState()), k.GetPrimaryVersion(), k.GetMinDecryptionVersion(), len(k.GetVersions()), k.GetDescription())
	if len(destroy) > 0 {
		line += " destruction=" + strings.Join(destroy, ",")
	}
	_, err := fmt.Fprintln(w, line)
	return err
}

// setMinVersionFlags registers the flags of `officer propose set-min-version`.
func setMinVersionFlags(fs *flag.FlagSet, f *opFlags) {
	fs.StringVar(&f.key, "key", "", "the key (required)")
	fs.UintVar(&f.version, "version", 0, "the minimum decryption version to set, 1 to the primary version (required)")
}

// buildSetMinVersionOp builds a SetKeyMinVersion operation: the officers'
// way to lower a key's minimum decryption version.
func buildSetMinVersionOp(f *opFlags) (func(*custosv1.Statement), error) {
	if f.key == "" || f.version == 0 || f.version > math.MaxUint32 {
		return nil, usagef("--key and --version (1 or more) are required")
	}
	k, v := f.key, uint32(f.version)
	return func(st *custosv1.Statement) {
		st.Operation = &custosv1.Statement_SetKeyMinVersion{SetKeyMinVersion: &custosv1.SetKeyMinVersion{Key: k, MinDecryptionVersion: v}}
	}, nil
}

func runKeySetMinVersionOfficers(ctx context.Context, a *app, args []string) error {
	return onlineOp(ctx, a, "officer set-min-version", "set-min-version", args, 0, setMinVersionFlags)
}
