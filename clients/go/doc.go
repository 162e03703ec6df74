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
// Errors from the cluster are gRPC status errors, wrapped with %w: use
// status.Code(err) (codes.NotFound for an unknown key, FailedPrecondition for
// a disabled key or a version below the key's minimum decryption version,
// PermissionDenied when policy refuses, Unavailable when no node answers).
package custos
