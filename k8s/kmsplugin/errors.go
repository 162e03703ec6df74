package kmsplugin

import (
	"context"
	"encoding/binary"
	"errors"
	"fmt"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
)

// codeMap says which gRPC code the API server gets for each code custos
// answers. The API server treats every failed Decrypt as a failed read and
// every failed Encrypt as a failed DEK rotation, whatever the code; the
// codes show in its metrics and logs, so they must say what happened
// between the plugin and custos without blaming the API server:
//
//   - the key or the plugin's access is not as it must be (the key is
//     disabled, revoked, scheduled for destruction or unknown, its version
//     is below the minimum, the officers must approve, the plugin's
//     certificate is not accepted): FailedPrecondition; the policy refuses
//     the plugin's principal or reason: PermissionDenied;
//   - the ciphertext does not parse or authenticate: InvalidArgument;
//   - custos cannot answer now (no node, no leader, quota): Unavailable or
//     ResourceExhausted, worth retrying; DeadlineExceeded and Canceled as
//     they came;
//   - anything else custos should never answer here: Internal.
var codeMap = map[codes.Code]codes.Code{
	codes.InvalidArgument:    codes.InvalidArgument,
	codes.NotFound:           codes.FailedPrecondition,
	codes.FailedPrecondition: codes.FailedPrecondition,
	codes.PermissionDenied:   codes.PermissionDenied,
	codes.Unauthenticated:    codes.FailedPrecondition,
	codes.ResourceExhausted:  codes.ResourceExhausted,
	codes.Unavailable:        codes.Unavailable,
	codes.DeadlineExceeded:   codes.DeadlineExceeded,
	codes.Canceled:           codes.Canceled,
}

// Map turns an error from a custos call into the status error the API
// server gets: the code from codeMap (Internal for the rest) and custos's
// message, which never contains key material, after "custos <op>: ".
func Map(op string, err error) error {
	if err == nil {
		return nil
	}
	var st *status.Status
	switch {
	case errors.Is(err, context.DeadlineExceeded), errors.Is(err, context.Canceled):
		st = status.FromContextError(err)
	default:
		st = status.Convert(err)
	}
	code, ok := codeMap[st.Code()]
	if !ok {
		code = codes.Internal
	}
	msg := st.Message()
	if code != st.Code() {
		msg = fmt.Sprintf("%s (custos answered %s)", msg, st.Code())
	}
	return status.Errorf(code, "custos %s: %s", op, msg)
}

// Header is what the plugin reads of a custos ciphertext before sending it
// to custos (docs/wrapped-data-key.md): the key and version it names.
type Header struct {
	Key     string
	Version uint32
}

// Sizes of the custos wrapped format, version 1, payload kind.
const (
	wrappedV1      = 0x01
	kindPayload    = 0x02
	gcmIVSize      = 12
	gcmTagSize     = 16
	maxKeyNameLen  = 64
	maxWrappedSize = 1024 // the API server stores at most 1 KiB
)

// ParseHeader reads the header of a custos Encrypt ciphertext. Its errors
// never contain the bytes.
func ParseHeader(b []byte) (Header, error) {
	bad := func(what string) (Header, error) {
		return Header{}, fmt.Errorf("not a custos seed ciphertext: %s", what)
	}
	switch {
	case len(b) > maxWrappedSize:
		return bad(fmt.Sprintf("%d bytes, at most %d", len(b), maxWrappedSize))
	case len(b) < 3:
		return bad("too short")
	case b[0] != wrappedV1:
		return bad(fmt.Sprintf("format version %d", b[0]))
	case b[1] != kindPayload:
		return bad(fmt.Sprintf("kind %d", b[1]))
	}
	n := int(b[2])
	if n == 0 || n > maxKeyNameLen {
		return bad("key name length out of range")
	}
	if len(b) < 3+n+4+gcmIVSize+gcmTagSize+MinSeedSize {
		return bad("too short")
	}
	v := binary.BigEndian.Uint32(b[3+n:])
	if v == 0 {
		return bad("key version 0")
	}
	return Header{Key: string(b[3 : 3+n]), Version: v}, nil
}
