package main

import (
	"flag"
	"fmt"
	"io"

	custos "github.com/custos-kms/custos/clients/go"
)

// The connection flags go before the command. The client's TLS files are
// --tls-ca, --tls-cert and --tls-key: "--key" before the command used to
// name the client's private key file, and after it (encrypt --key,
// datakey --key, ...) names a custos key, so `custos --key payroll encrypt
// ...` quietly took "payroll" for a TLS key file. --key before the
// command is now refused with a pointer to --tls-key, and so is --ca:
// officer propose genesis has a --ca of its own (the client authorities).
// --cert means nothing else anywhere in the CLI, so it stays as a
// deprecated alias of --tls-cert (with a warning on standard error).

// legacyConnectionFlags are the old spellings, left out of the help.
var legacyConnectionFlags = []string{"ca", "cert", "key"}

// legacyFlags records the refused old spellings' values.
type legacyFlags struct {
	key, ca string
}

// registerConnectionFlags adds the connection flags to fs, the global flag
// set, and returns what check needs to judge the old spellings.
func (a *app) registerConnectionFlags(fs *flag.FlagSet) *legacyFlags {
	l := &legacyFlags{}
	fs.StringVar(&a.addr, "addr", "", "custos node address host:port, or a comma-separated list (default $"+custos.EnvAddr+")")
	fs.StringVar(&a.ca, "tls-ca", "", "CA bundle PEM `FILE` that signed the server certificates (default $"+custos.EnvCA+")")
	fs.StringVar(&a.cert, "tls-cert", "", "client certificate PEM `FILE` (default $"+custos.EnvCert+")")
	fs.StringVar(&a.key, "tls-key", "", "client private key PEM `FILE` (default $"+custos.EnvKey+")")
	fs.DurationVar(&a.timeout, "timeout", custos.DefaultCallTimeout, "bound on each call to custos (0: none)")
	// A deprecated alias (hidden from the help).
	fs.StringVar(&a.cert, "cert", "", "deprecated: --tls-cert")
	// Refused: see above.
	fs.StringVar(&l.key, "key", "", "refused: --tls-key")
	fs.StringVar(&l.ca, "ca", "", "refused: --tls-ca")
	return l
}

// check refuses --key before the command and warns about the deprecated
// aliases that were used.
func (l *legacyFlags) check(fs *flag.FlagSet, stderr io.Writer) error {
	set := map[string]bool{}
	fs.Visit(func(f *flag.Flag) { set[f.Name] = true })
	if set["key"] {
		return fmt.Errorf("--key %q before the command: the client's TLS private key is --tls-key FILE (or $%s); "+
			"a custos key is named after the command, as in 'custos encrypt --key NAME IN OUT'", l.key, custos.EnvKey)
	}
	if set["ca"] {
		return fmt.Errorf("--ca %q before the command: the CA bundle of the server certificates is --tls-ca FILE (or $%s); "+
			"a command's own --ca goes after the command, as in 'custos officer propose genesis --ca CA.pem ...'", l.ca, custos.EnvCA)
	}
	if set["cert"] {
		fmt.Fprintln(stderr, "custos: warning: --cert is deprecated: use --tls-cert")
	}
	return nil
}
