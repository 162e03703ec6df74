"""Signed requests (docs/signed-requests.md): the client signs each decrypt
request with the private key of its mTLS certificate, so that every custos
replica and every auditor can check that this principal asked for exactly
this, whichever node forwarded it. A key whose policy sets
require_request_signature releases only to signed requests. The message
and the signature are the Go client's, byte for byte (the shared test
vector is kms/requestsig/testdata/vector.json)."""

from __future__ import annotations

import hashlib
import os
import struct
import time
from typing import Optional

from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec

from ._proto import common_pb2

CONTEXT = b"custos-request-v2\x00"
METHOD_DECRYPT = "Decrypt"
METHOD_REENCRYPT = "ReEncrypt"
NONCE_SIZE = 16


def header_of(ciphertext: bytes) -> bytes:
    """The ciphertext's header: its bytes up to and including the key
    version (format version, kind, key name length, key name, key
    version), which the signature covers so that it names the key, version
    and kind the cluster decides on."""
    if len(ciphertext) < 3:
        return bytes(ciphertext)
    n = 3 + ciphertext[2] + 4
    return bytes(ciphertext[:n]) if len(ciphertext) >= n else bytes(ciphertext)


def message(method: str, header: bytes, data_digest: bytes, context_digest: bytes, reason: int, text: str,
            ticket: str, nonce: bytes, time_unix_nano: int) -> bytes:
    """The bytes a request signature signs (SHA-256 of them, with ECDSA
    P-256): the context string, then each field as a big-endian uint32
    length and its bytes."""
    out = bytearray(CONTEXT)
    for f in (method.encode(), header, data_digest, context_digest, str(int(reason)).encode(), text.encode(),
              ticket.encode(), nonce, str(int(time_unix_nano)).encode()):
        out += struct.pack(">I", len(f)) + f
    return bytes(out)


def signer_from_pem(key_pem: bytes) -> Optional[ec.EllipticCurvePrivateKey]:
    """The certificate's private key when it can sign requests (ECDSA
    P-256, unencrypted PEM), else None: requests then go unsigned."""
    from cryptography.hazmat.primitives import serialization
    try:
        key = serialization.load_pem_private_key(key_pem, password=None)
    except (ValueError, TypeError):
        return None
    if isinstance(key, ec.EllipticCurvePrivateKey) and isinstance(key.curve, ec.SECP256R1):
        return key
    return None


def sign(key: ec.EllipticCurvePrivateKey, method: str, ciphertext: bytes, context_digest: bytes,
         justification) -> common_pb2.RequestSignature:
    """A fresh signature (new nonce, the current time) over a request."""
    nonce = os.urandom(NONCE_SIZE)
    now = time.time_ns()
    msg = message(method, header_of(ciphertext), hashlib.sha256(ciphertext).digest(), context_digest,
                  justification.reason,
                  justification.text, justification.ticket, nonce, now)
    sig = key.sign(msg, ec.ECDSA(hashes.SHA256()))
    return common_pb2.RequestSignature(nonce=nonce, time_unix_nano=now, signature=sig)
