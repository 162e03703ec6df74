package qualify

import (
	"crypto/aes"
	"crypto/rand"
	"crypto/rsa"
	"encoding/hex"
	"errors"
	"fmt"
	"os"
	"runtime"
	"strings"
	"unsafe"

	p11 "github.com/miekg/pkcs11"
)

// LabelPrefix starts the label of every token object Check creates; the
// rest is random per run, so it never matches an object it did not create.
const LabelPrefix = "custos-check-"

// runner is the state of one Check: the module, the logged-in session, and
// what earlier checks made for later ones.
type runner struct {
	cfg    Config
	c      *p11.Ctx
	owned  bool // we initialised the library: finalize it at the end
	slot   uint
	s      p11.SessionHandle
	prefix string // LabelPrefix + random hex, this run's labels
	report *Report

	// sessionObjs are destroyed at the end (closing the session would
	// do it too).
	sessionObjs []p11.ObjectHandle

	// Made by earlier checks for later ones (zero when they failed).
	aesKey  p11.ObjectHandle // generated AES-256, encrypt/decrypt
	gcmOK   bool             // the GCM round trip passed
	kwpKey  p11.ObjectHandle // generated AES-256 wrap/unwrap key, KWP
	kwpOK   bool
	rsaPub  p11.ObjectHandle // RSA-3072 session key pair
	rsaPriv p11.ObjectHandle
	rsaGo   *rsa.PublicKey
	oaep    *oaepVariant // the best RSA-OAEP variant that works, or nil
	goRSA   *rsa.PrivateKey
	// unwrapped is the key checkModifiable unwrapped with custos's
	// template, of value unwrappedValue.
	unwrapped      p11.ObjectHandle
	unwrappedValue []byte
}

// open loads the module, finds the token and logs in as user (CKU_USER,
// PIN cfg.PIN) or SO (CKU_SO, the SO PIN in cfg.PIN).
func open(cfg Config, user uint) (*runner, error) {
	if cfg.Module == "" {
		return nil, fmt.Errorf("%w: no module path given", ErrModule)
	}
	if _, err := os.Stat(cfg.Module); err != nil {
		return nil, fmt.Errorf("%w: %w", ErrModule, err)
	}
	c := p11.New(cfg.Module)
	if c == nil {
		return nil, fmt.Errorf("%w: %s: cannot load the library (not a PKCS#11 module?)", ErrModule, cfg.Module)
	}
	r := &runner{cfg: cfg, c: c, owned: true}
	if err := r.initialize(); err != nil {
		c.Destroy()
		return nil, err
	}
	info, err := c.GetInfo()
	if err != nil {
		r.close()
		return nil, fmt.Errorf("%w: C_GetInfo: %w", ErrModule, err)
	}
	r.report = &Report{
		Module: cfg.Module,
		Library: fmt.Sprintf("%s %s %d.%d", strings.TrimSpace(info.ManufacturerID),
			strings.TrimSpace(info.LibraryDescription), info.LibraryVersion.Major, info.LibraryVersion.Minor),
	}
	if err := r.findToken(); err != nil {
		r.close()
		return nil, err
	}
	s, err := c.OpenSession(r.slot, p11.CKF_SERIAL_SESSION|p11.CKF_RW_SESSION)
	if err != nil {
		r.close()
		return nil, fmt.Errorf("%w: C_OpenSession: %s", ErrToken, code(err))
	}
	r.s = s
	if err := c.Login(s, user, cfg.PIN); err != nil && !isRV(err, p11.CKR_USER_ALREADY_LOGGED_IN) {
		r.close()
		who := "user"
		if user == p11.CKU_SO {
			who = "SO"
		}
		return nil, fmt.Errorf("%w: C_Login as %s: %s", ErrLogin, who, code(err))
	}
	r.prefix = LabelPrefix + hex.EncodeToString(random(6))
	return r, nil
}

// initialize calls C_Initialize, with the NSS library parameters when
// given. A library someone else in this process initialised is used as it
// is, and not finalized at the end.
func (r *runner) initialize() error {
	var opts []p11.InitializeOption
	var params []byte
	if r.cfg.NSSConfig != "" {
		// NSS softokn reads its library parameters from the field after
		// flags (pReserved): a NUL-terminated string it copies.
		params = append([]byte(r.cfg.NSSConfig), 0)
		opts = append(opts, p11.InitializeWithReserved(unsafe.Pointer(&params[0])))
	}
	err := r.c.Initialize(opts...)
	runtime.KeepAlive(params)
	switch {
	case err == nil:
	case isRV(err, p11.CKR_CRYPTOKI_ALREADY_INITIALIZED):
		r.owned = false
	default:
		hint := ""
		if r.cfg.NSSConfig == "" && isRV(err, p11.CKR_ARGUMENTS_BAD) {
			hint = " (NSS softokn needs --nss-config)"
		}
		return fmt.Errorf("%w: %s: C_Initialize: %s%s", ErrModule, r.cfg.Module, code(err), hint)
	}
	return nil
}

// findToken finds the slot whose token has the configured label.
func (r *runner) findToken() error {
	slots, err := r.c.GetSlotList(true)
	if err != nil {
		return fmt.Errorf("%w: C_GetSlotList: %s", ErrToken, code(err))
	}
	var labels []string
	for _, sl := range slots {
		ti, err := r.c.GetTokenInfo(sl)
		if err != nil {
			continue
		}
		if ti.Flags&p11.CKF_TOKEN_INITIALIZED == 0 {
			continue
		}
		label := strings.TrimRight(ti.Label, " \x00")
		labels = append(labels, fmt.Sprintf("%q", label))
		if label != r.cfg.Token {
			continue
		}
		r.slot = sl
		r.report.Token = TokenInfo{
			Label:        label,
			Manufacturer: strings.TrimSpace(ti.ManufacturerID),
			Model:        strings.TrimSpace(ti.Model),
			Serial:       strings.TrimSpace(ti.SerialNumber),
			Firmware:     fmt.Sprintf("%d.%d", ti.FirmwareVersion.Major, ti.FirmwareVersion.Minor),
		}
		return nil
	}
	if len(labels) == 0 {
		return fmt.Errorf("%w: no initialised token %q: the module shows no tokens", ErrToken, r.cfg.Token)
	}
	return fmt.Errorf("%w: no initialised token %q (the module has %s)", ErrToken, r.cfg.Token, strings.Join(labels, ", "))
}

// close logs out and unloads the module.
func (r *runner) close() {
	if r.s != 0 {
		_ = r.c.Logout(r.s)
		_ = r.c.CloseSession(r.s)
	}
	if r.owned {
		_ = r.c.Finalize()
	}
	r.c.Destroy()
}

// cleanup destroys every object this run made, and says what is left.
func (r *runner) cleanup() string {
	for _, h := range r.sessionObjs {
		_ = r.c.DestroyObject(r.s, h)
	}
	r.sessionObjs = nil
	left, err := r.findByPrefix()
	if err != nil {
		return fmt.Sprintf("could not look for leftover objects labelled %s*: %s", r.prefix, code(err))
	}
	var failed []string
	for _, h := range left {
		if err := r.c.DestroyObject(r.s, h); err != nil {
			failed = append(failed, code(err))
		}
	}
	if len(failed) > 0 && r.cfg.SOPIN != "" && len(r.cfg.ChildCommand) > 0 {
		// The SO's public key: the user may not be allowed to destroy it.
		if _, err := r.child(childRequest{Op: opDestroy, PIN: r.cfg.SOPIN, Label: r.prefix}); err == nil {
			failed = nil
		}
	}
	if len(failed) > 0 {
		return fmt.Sprintf("%d token object(s) labelled %s* could not be destroyed (%s): destroy them by hand",
			len(failed), r.prefix, strings.Join(failed, ", "))
	}
	return ""
}

// findByPrefix returns the token objects whose label starts with this
// run's prefix. PKCS#11 matches whole labels only, so it lists the objects
// labelled with each label this run uses.
func (r *runner) findByPrefix() ([]p11.ObjectHandle, error) {
	var out []p11.ObjectHandle
	for _, suffix := range labelSuffixes {
		hs, err := r.find([]*p11.Attribute{
			p11.NewAttribute(p11.CKA_TOKEN, true),
			p11.NewAttribute(p11.CKA_LABEL, r.prefix+suffix),
		})
		if err != nil {
			return nil, err
		}
		out = append(out, hs...)
	}
	return out, nil
}

// labelSuffixes are the suffixes of every label a run gives a token
// object (after r.prefix).
var labelSuffixes = []string{"-trusted"}

// find runs C_FindObjects with tmpl.
func (r *runner) find(tmpl []*p11.Attribute) ([]p11.ObjectHandle, error) {
	if err := r.c.FindObjectsInit(r.s, tmpl); err != nil {
		return nil, err
	}
	hs, _, err := r.c.FindObjects(r.s, 100)
	_ = r.c.FindObjectsFinal(r.s)
	return hs, err
}

// keep records a session object for destruction at the end.
func (r *runner) keep(h p11.ObjectHandle) p11.ObjectHandle {
	r.sessionObjs = append(r.sessionObjs, h)
	return h
}

// attr is p11.NewAttribute.
var attr = p11.NewAttribute

// aesTemplate is a session AES-256 secret key, private, with extra
// attributes.
func aesTemplate(extra ...*p11.Attribute) []*p11.Attribute {
	return append([]*p11.Attribute{
		attr(p11.CKA_CLASS, p11.CKO_SECRET_KEY),
		attr(p11.CKA_KEY_TYPE, p11.CKK_AES),
		attr(p11.CKA_TOKEN, false),
		attr(p11.CKA_PRIVATE, true),
	}, extra...)
}

// createAES creates a session AES key of known value (for checks that
// compare with Go's AES), extractable so it can be wrapped.
func (r *runner) createAES(value []byte, extra ...*p11.Attribute) (p11.ObjectHandle, error) {
	t := aesTemplate(append([]*p11.Attribute{
		attr(p11.CKA_VALUE, value),
		attr(p11.CKA_SENSITIVE, true),
		attr(p11.CKA_EXTRACTABLE, true),
		attr(p11.CKA_ENCRYPT, true),
	}, extra...)...)
	h, err := r.c.CreateObject(r.s, t)
	if err != nil {
		return 0, err
	}
	return r.keep(h), nil
}

// boolAttr reads a CK_BBOOL attribute.
func (r *runner) boolAttr(h p11.ObjectHandle, typ uint) (bool, error) {
	as, err := r.c.GetAttributeValue(r.s, h, []*p11.Attribute{attr(typ, nil)})
	if err != nil {
		return false, err
	}
	return len(as) == 1 && len(as[0].Value) == 1 && as[0].Value[0] != 0, nil
}

// kcv encrypts a zero block with the key (CKM_AES_ECB) and compares with
// Go's AES under value: does the key in the module hold value?
func (r *runner) kcv(h p11.ObjectHandle, value []byte) error {
	if err := r.c.EncryptInit(r.s, []*p11.Mechanism{p11.NewMechanism(p11.CKM_AES_ECB, nil)}, h); err != nil {
		return fmt.Errorf("C_EncryptInit(CKM_AES_ECB): %w", err)
	}
	got, err := r.c.Encrypt(r.s, make([]byte, 16))
	if err != nil {
		return fmt.Errorf("C_Encrypt(CKM_AES_ECB): %w", err)
	}
	b, err := aes.NewCipher(value)
	if err != nil {
		return err
	}
	want := make([]byte, 16)
	b.Encrypt(want, make([]byte, 16))
	if string(got) != string(want) {
		return errors.New("the key's value differs from the one wrapped")
	}
	return nil
}

// random returns n random bytes from Go (test values, never keys custos
// keeps).
func random(n int) []byte {
	b := make([]byte, n)
	if _, err := rand.Read(b); err != nil {
		panic(err) // crypto/rand does not fail on supported platforms
	}
	return b
}

// code renders the PKCS#11 return code in err as "CKR_NAME (0xN)", or the
// error text when it holds none.
func code(err error) string {
	if err == nil {
		return "CKR_OK (0x0)"
	}
	var e p11.Error
	if errors.As(err, &e) {
		parts := strings.SplitN(e.Error(), ": ", 3)
		name := ""
		if len(parts) == 3 {
			name = parts[2]
		}
		if name == "" {
			name = "CKR_VENDOR_DEFINED"
		}
		return fmt.Sprintf("%s (0x%X)", name, uint(e))
	}
	return err.Error()
}

// isRV reports whether err is that PKCS#11 return code.
func isRV(err error, rv uint) bool {
	var e p11.Error
	return errors.As(err, &e) && uint(e) == rv
}

// result builders.
func pass(code, detail string, args ...any) Result {
	return Result{Status: Pass, Code: code, Detail: fmt.Sprintf(detail, args...)}
}

func fail(code, detail string, args ...any) Result {
	return Result{Status: Fail, Code: code, Detail: fmt.Sprintf(detail, args...)}
}

func warn(code, detail string, args ...any) Result {
	return Result{Status: Warn, Code: code, Detail: fmt.Sprintf(detail, args...)}
}

func skip(detail string, args ...any) Result {
	return Result{Status: Skip, Detail: fmt.Sprintf(detail, args...)}
}

// failErr is a FAIL whose code is err's.
func failErr(err error, detail string, args ...any) Result {
	return Result{Status: Fail, Code: code(err), Detail: fmt.Sprintf(detail, args...) + ": " + code(err)}
}
