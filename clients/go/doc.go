// Package custos is the Go client library of the custos key custody service.
//
// An application dials a cluster with mutual TLS, then either calls the key
// service directly or uses envelope encryption: EncryptStream asks custos
// for a fresh data key (GenerateDataKey), encrypts the data locally with
// AES-256-GCM in the envelope format of package envelope and stores the
// wrapped data key in the envelope header; DecryptStream reads the header,
// asks custos to unwrap the data key (Decrypt, with a Justification that the
// cluster records in its decision ledger before releasing anything) and
// decrypts locally. Data never reaches custos, only data keys do.
//
//	cfg, err := custos.ConfigFromEnv() // CUSTOS_ADDR, CUSTOS_CA, CUSTOS_CERT, CUSTOS_KEY
//	c, err := custos.Dial(ctx, cfg)
//	defer c.Close()
//	w, err := c.EncryptStream(ctx, file, "payroll", map[string]string{"dept": "hr"})
//	io.Copy(w, data)
//	err = w.Close() // mandatory
//
//	r, hdr, err := c.DecryptStream(ctx, file, custos.Justification{
//		Reason: custosv1.Reason_REASON_CUSTOMER_INITIATED, Text: "monthly run"},
//		custos.WithExpectedContext(map[string]string{"dept": "hr"}))
//
// When the client certificate's key is ECDSA P-256, every decrypt-type
// request carries the client's signature over what it asks, made afresh
// for each attempt (SignsRequests): a key whose policy requires signed
// requests releases only to them, so no custos node can decide in this
// client's name what it did not ask (docs/signed-requests.md).
//
// The customer's security officers govern key use with signed statements
// (docs/governance.md): NewStatement and SignAndSubmit sign and submit one
// with officer keys (Officer), GetPolicy, ListPending and ListGrants show
// the state they control. A decrypt that policy holds for approval fails
// with codes.FailedPrecondition; PendingRequestID returns its request id and
// WaitForApproval waits for the officers' decision, after which the decrypt
// is retried:
//
//	dk, err := c.DecryptDataKey(ctx, wrapped, encCtx, j)
//	if id, ok := custos.PendingRequestID(err); ok {
//		if _, err = c.WaitForApproval(ctx, id); err == nil {
//			dk, err = c.DecryptDataKey(ctx, wrapped, encCtx, j)
//		}
//	}
//
// Errors from the cluster are gRPC status errors, wrapped with %w: use
// status.Code(err) (codes.NotFound for an unknown key, FailedPrecondition for
// a disabled key or a version below the key's minimum decryption version,
// PermissionDenied when policy refuses, Unavailable when no node answers).
package custos
