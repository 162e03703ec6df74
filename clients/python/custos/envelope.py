"""The custos envelope ciphertext format, version 1 (docs/envelope-format.md).

This is a byte-for-byte compatible implementation of clients/go/envelope: a
self-describing header followed by a stream of AES-256-GCM segments in the
STREAM construction, so that data of any size is encrypted and decrypted one
segment at a time and any truncation, reordering, duplication, extension or
bit flip is detected. The golden vectors in
clients/go/envelope/testdata/vectors.json pin the format.

The module is pure: it never talks to the network. Only CRYPTREC-listed
primitives are used: AES-256-GCM (cryptography's AESGCM), HMAC-SHA-256 and
SHA-256 (hashlib/hmac).

To encrypt: get a data key and its wrapped form from custos
(Client.generate_data_key), then::

    with Writer(dst, Header(key=..., key_version=..., wrapped_key=...,
                            context={...}), data_key) as w:
        w.write(plaintext)

To decrypt: ``h = read_header(src)``, ask custos for the data key
(Client.decrypt_data_key(h.wrapped_key, h.context, justification)), then read
``Reader(src, h, data_key)``. Reader returns a segment's plaintext only once
that segment is authenticated; if a later segment fails, what was already
returned is an authentic prefix, so callers that must not act on partial data
write to a temporary file until the end (Client.decrypt_file does).
"""

from __future__ import annotations

import hashlib
import hmac
import io
import os
import struct
from dataclasses import dataclass, field
from typing import BinaryIO, Callable, Dict, Mapping, Optional

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers.aead import AESGCM

from .errors import (
    DecryptionError,
    EnvelopeError,
    MalformedHeaderError,
    UnsupportedSuiteError,
    UnsupportedVersionError,
)

__all__ = [
    "VERSION",
    "SUITE_AES256GCM_HMACSHA256",
    "DATA_KEY_SIZE",
    "DEFAULT_SEGMENT_SIZE",
    "MIN_SEGMENT_SIZE",
    "MAX_SEGMENT_SIZE",
    "MAX_KEY_NAME_LEN",
    "MAX_WRAPPED_KEY_LEN",
    "MAX_CONTEXT_PAIRS",
    "MAX_CONTEXT_BYTES",
    "Header",
    "canonical_context",
    "context_digest",
    "read_header",
    "Writer",
    "Reader",
]

VERSION = 1
SUITE_AES256GCM_HMACSHA256 = 1
DATA_KEY_SIZE = 32
DEFAULT_SEGMENT_SIZE = 64 << 10
MIN_SEGMENT_SIZE = 4 << 10
MAX_SEGMENT_SIZE = 16 << 20
MAX_KEY_NAME_LEN = 256
MAX_WRAPPED_KEY_LEN = 1024
MAX_CONTEXT_PAIRS = 64
MAX_CONTEXT_BYTES = 8 << 10

_MAGIC = b"CSTE"
_SALT_SIZE = 32
_COMMIT_SIZE = 32
_NONCE_PREFIX = 7
_TAG_SIZE = 16
_MAX_SEGMENTS = 1 << 32

_LABEL_SEGMENT_KEY = b"custos envelope v1 segment key"
_LABEL_COMMITMENT = b"custos envelope v1 key commitment"
_LABEL_NONCE_PREFIX = b"custos envelope v1 nonce prefix"


@dataclass
class Header:
    """The cleartext header of an envelope ciphertext.

    ``suite`` and ``segment_size`` default when 0 on writing; read_header
    always sets them. ``salt`` and ``commitment`` are set by Writer and
    read_header.
    """

    key: str = ""
    key_version: int = 0
    wrapped_key: bytes = b""
    context: Dict[str, str] = field(default_factory=dict)
    segment_size: int = DEFAULT_SEGMENT_SIZE
    suite: int = SUITE_AES256GCM_HMACSHA256
    salt: bytes = field(default=b"", repr=False)
    commitment: bytes = field(default=b"", repr=False)

    def _encode_prefix(self) -> bytes:
        """Validates the header and encodes it up to, not including, the
        key commitment."""
        if self.suite != SUITE_AES256GCM_HMACSHA256:
            raise UnsupportedSuiteError(f"envelope: unsupported algorithm suite: {self.suite}")
        name = _utf8(self.key, "key name is not valid UTF-8")
        if not 1 <= len(name) <= MAX_KEY_NAME_LEN:
            raise MalformedHeaderError(f"envelope: malformed header: key name must be 1..{MAX_KEY_NAME_LEN} bytes")
        if not 0 <= self.key_version < 1 << 32:
            raise MalformedHeaderError("envelope: malformed header: key version must be a uint32")
        wrapped = bytes(self.wrapped_key)
        if not 1 <= len(wrapped) <= MAX_WRAPPED_KEY_LEN:
            raise MalformedHeaderError(
                f"envelope: malformed header: wrapped key must be 1..{MAX_WRAPPED_KEY_LEN} bytes")
        canon = canonical_context(self.context)
        if not MIN_SEGMENT_SIZE <= self.segment_size <= MAX_SEGMENT_SIZE:
            raise MalformedHeaderError(
                f"envelope: malformed header: segment size must be {MIN_SEGMENT_SIZE}..{MAX_SEGMENT_SIZE}")
        if len(self.salt) != _SALT_SIZE:
            raise MalformedHeaderError("envelope: malformed header: salt must be 32 bytes")
        return b"".join((
            _MAGIC,
            bytes((VERSION, self.suite)),
            struct.pack(">H", len(name)), name,
            struct.pack(">I", self.key_version),
            struct.pack(">H", len(wrapped)), wrapped,
            struct.pack(">H", len(self.context or {})), canon,
            struct.pack(">I", self.segment_size),
            bytes(self.salt),
        ))

    def encode(self) -> bytes:
        """Returns the full header bytes (commitment included)."""
        if len(self.commitment) != _COMMIT_SIZE:
            raise MalformedHeaderError("envelope: malformed header: no key commitment")
        return self._encode_prefix() + bytes(self.commitment)


def _utf8(s: str, msg: str) -> bytes:
    if not isinstance(s, str):
        raise MalformedHeaderError(f"envelope: malformed header: {msg}")
    try:
        return s.encode("utf-8")
    except UnicodeEncodeError:
        raise MalformedHeaderError(f"envelope: malformed header: {msg}") from None


def _context_items(ctx: Optional[Mapping[str, str]]):
    """Validates ctx and returns its (key, value) pairs as UTF-8 bytes in
    increasing byte order of keys."""
    ctx = ctx or {}
    if len(ctx) > MAX_CONTEXT_PAIRS:
        raise MalformedHeaderError(f"envelope: malformed header: more than {MAX_CONTEXT_PAIRS} context pairs")
    items = []
    total = 0
    for k, v in ctx.items():
        if k == "":
            raise MalformedHeaderError("envelope: malformed header: empty context key")
        kb = _utf8(k, "context is not valid UTF-8")
        vb = _utf8(v, "context is not valid UTF-8")
        total += len(kb) + len(vb)
        items.append((kb, vb))
    if total > MAX_CONTEXT_BYTES:
        raise MalformedHeaderError(f"envelope: malformed header: context longer than {MAX_CONTEXT_BYTES} bytes")
    items.sort(key=lambda kv: kv[0])
    return items


def canonical_context(ctx: Optional[Mapping[str, str]]) -> bytes:
    """The canonical encoding of an encryption context, as in the envelope
    header and on the custos server: for each pair in increasing byte order
    of keys, uint32 len(key) || key || uint32 len(value) || value. The empty
    context encodes to zero bytes. Raises MalformedHeaderError for a context
    outside the format's limits."""
    out = bytearray()
    for kb, vb in _context_items(ctx):
        out += struct.pack(">I", len(kb)) + kb + struct.pack(">I", len(vb)) + vb
    return bytes(out)


def context_digest(ctx: Optional[Mapping[str, str]]) -> bytes:
    """SHA-256(canonical_context(ctx))."""
    return hashlib.sha256(canonical_context(ctx)).digest()


def _read_exact(src: BinaryIO, n: int) -> bytes:
    """Reads up to n bytes, fewer only at the end of the input."""
    chunks = []
    got = 0
    while got < n:
        b = src.read(n - got)
        if not b:
            break
        chunks.append(b)
        got += len(b)
    return b"".join(chunks)


class _HeaderReader:
    def __init__(self, src: BinaryIO):
        self.src = src

    def read(self, n: int) -> bytes:
        try:
            b = _read_exact(self.src, n)
        except (OSError, ValueError) as e:
            raise EnvelopeError(f"envelope: reading header: {e}") from e
        if len(b) != n:
            raise MalformedHeaderError("envelope: malformed header: truncated header")
        return b

    def u8(self) -> int:
        return self.read(1)[0]

    def u16(self) -> int:
        return struct.unpack(">H", self.read(2))[0]

    def u32(self) -> int:
        return struct.unpack(">I", self.read(4))[0]

    def text(self, b: bytes, msg: str) -> str:
        try:
            return b.decode("utf-8")
        except UnicodeDecodeError:
            raise MalformedHeaderError(f"envelope: malformed header: {msg}") from None


def read_header(src: BinaryIO) -> Header:
    """Reads and validates an envelope header from the binary stream src,
    consuming exactly the header and leaving src at the first segment. It
    allocates no more than the format's limits allow, whatever src holds. It
    does not authenticate the header: Reader does, once the data key is
    known. Raises MalformedHeaderError, UnsupportedVersionError or
    UnsupportedSuiteError."""
    r = _HeaderReader(src)
    if r.read(len(_MAGIC)) != _MAGIC:
        raise MalformedHeaderError("envelope: malformed header: not a custos envelope")
    v = r.u8()
    if v != VERSION:
        raise UnsupportedVersionError(f"envelope: unsupported format version: {v}")
    suite = r.u8()
    if suite != SUITE_AES256GCM_HMACSHA256:
        raise UnsupportedSuiteError(f"envelope: unsupported algorithm suite: {suite}")
    n = r.u16()
    if not 1 <= n <= MAX_KEY_NAME_LEN:
        raise MalformedHeaderError(f"envelope: malformed header: key name must be 1..{MAX_KEY_NAME_LEN} bytes")
    key = r.text(r.read(n), "key name is not valid UTF-8")
    key_version = r.u32()
    w = r.u16()
    if not 1 <= w <= MAX_WRAPPED_KEY_LEN:
        raise MalformedHeaderError(
            f"envelope: malformed header: wrapped key must be 1..{MAX_WRAPPED_KEY_LEN} bytes")
    wrapped = r.read(w)
    pairs = r.u16()
    if pairs > MAX_CONTEXT_PAIRS:
        raise MalformedHeaderError(f"envelope: malformed header: more than {MAX_CONTEXT_PAIRS} context pairs")
    budget = MAX_CONTEXT_BYTES
    context: Dict[str, str] = {}
    prev = b""
    for i in range(pairs):
        raw = []
        for _ in range(2):
            ln = r.u32()
            if ln > budget:
                raise MalformedHeaderError(
                    f"envelope: malformed header: context longer than {MAX_CONTEXT_BYTES} bytes")
            budget -= ln
            raw.append(r.read(ln))
        kb, vb = raw
        if kb == b"":
            raise MalformedHeaderError("envelope: malformed header: empty context key")
        if i > 0 and kb <= prev:
            raise MalformedHeaderError("envelope: malformed header: context keys not in strictly increasing order")
        context[r.text(kb, "context is not valid UTF-8")] = r.text(vb, "context is not valid UTF-8")
        prev = kb
    seg = r.u32()
    if not MIN_SEGMENT_SIZE <= seg <= MAX_SEGMENT_SIZE:
        raise MalformedHeaderError(
            f"envelope: malformed header: segment size must be {MIN_SEGMENT_SIZE}..{MAX_SEGMENT_SIZE}")
    salt = r.read(_SALT_SIZE)
    commitment = r.read(_COMMIT_SIZE)
    return Header(key=key, key_version=key_version, wrapped_key=wrapped, context=context,
                  segment_size=seg, suite=suite, salt=salt, commitment=commitment)


def _kdf(data_key: bytes, prefix: bytes):
    """NIST SP 800-108r1 counter mode with HMAC-SHA-256, one block each:
    returns (segment key, commitment, nonce prefix)."""
    h0 = hashlib.sha256(prefix).digest()

    def block(label: bytes, bits: int) -> bytes:
        msg = struct.pack(">I", 1) + label + b"\x00" + h0 + struct.pack(">I", bits)
        return hmac.new(bytes(data_key), msg, hashlib.sha256).digest()

    seg_key = block(_LABEL_SEGMENT_KEY, 256)
    commitment = block(_LABEL_COMMITMENT, 256)
    nonce = block(_LABEL_NONCE_PREFIX, 8 * _NONCE_PREFIX)[:_NONCE_PREFIX]
    return seg_key, commitment, nonce


class _StreamKeys:
    __slots__ = ("aead", "nonce_prefix", "aad", "_commitment")

    def __init__(self, data_key, prefix: bytes):
        if len(data_key) != DATA_KEY_SIZE:
            raise ValueError("envelope: data key must be 32 bytes")
        seg_key, self._commitment, self.nonce_prefix = _kdf(data_key, prefix)
        # cryptography copies the key into its own context; Python gives no
        # way to zero the bytes object.
        self.aead = AESGCM(seg_key)
        del seg_key

    def nonce(self, counter: int, last: bool) -> bytes:
        return self.nonce_prefix + struct.pack(">I", counter) + (b"\x01" if last else b"\x00")


class Writer:
    """Encrypts everything written to it into dst in the envelope format.

    The header is written to dst at once. close() is mandatory: it writes the
    final segment, without which the ciphertext does not decrypt; it does
    not close dst. Used as a context manager, it writes the final segment
    only when the block succeeds: after an exception the ciphertext stays
    without a final segment and never decrypts (a garbage-collected writer
    is not sealed either). The salt comes from rand(32) (default
    os.urandom). The writer holds one segment of buffer and does not retain
    data_key.
    """

    def __init__(self, dst: BinaryIO, header: Header, data_key, rand: Optional[Callable[[int], bytes]] = None):
        if len(data_key) != DATA_KEY_SIZE:
            raise ValueError("envelope: data key must be 32 bytes")
        if not header.suite:
            header.suite = SUITE_AES256GCM_HMACSHA256
        if not header.segment_size:
            header.segment_size = DEFAULT_SEGMENT_SIZE
        salt = (rand or os.urandom)(_SALT_SIZE)
        if len(salt) != _SALT_SIZE:
            raise EnvelopeError("envelope: reading random salt: short read")
        header.salt = bytes(salt)
        prefix = header._encode_prefix()
        keys = _StreamKeys(data_key, prefix)
        header.commitment = keys._commitment
        full = prefix + header.commitment
        keys.aad = hashlib.sha256(full).digest()
        self.header = header
        self._dst = dst
        self._keys: Optional[_StreamKeys] = keys
        self._seg = header.segment_size
        self._buf = bytearray()
        self._counter = 0
        self._err: Optional[BaseException] = None
        self._done = False
        dst.write(full)

    def writable(self) -> bool:
        return True

    @property
    def closed(self) -> bool:
        return self._done

    def write(self, b) -> int:
        if self._done:
            raise ValueError("envelope: write on closed writer")
        if self._err is not None:
            raise self._err
        mv = memoryview(b).cast("B")
        n = len(mv)
        while len(mv):
            # A full buffer is flushed as non-final only once more data
            # arrives, so that close() can mark it final.
            if len(self._buf) == self._seg:
                self._flush(False)
            c = min(self._seg - len(self._buf), len(mv))
            self._buf += mv[:c]
            mv = mv[c:]
        return n

    def _flush(self, last: bool) -> None:
        try:
            # Non-final segments use counters 0..2^32-2, so that the final
            # one still has a counter.
            if not last and self._counter >= _MAX_SEGMENTS - 1:
                raise EnvelopeError("envelope: plaintext too long: segment counter would overflow")
            keys = self._keys
            ct = keys.aead.encrypt(keys.nonce(self._counter, last), bytes(self._buf), keys.aad)
            self._counter += 1
            _wipe(self._buf)
            self._dst.write(ct)
        except BaseException as e:
            self._err = e
            raise

    def close(self) -> None:
        """Writes the final segment and drops the segment key. Safe to call
        more than once; it does not close dst."""
        if self._done:
            return
        self._done = True
        try:
            if self._err is None:
                self._flush(True)
        finally:
            _wipe(self._buf)
            self._keys = None

    def __enter__(self) -> "Writer":
        return self

    def __exit__(self, exc_type, exc, tb):
        if exc_type is not None:
            # Do not seal a final segment over a failed copy.
            self._err = self._err or exc
            self._done = True
            _wipe(self._buf)
            self._keys = None
            return False
        self.close()
        return False


class Reader(io.RawIOBase):
    """Reads the plaintext of the body in src, which must be positioned just
    after the header h (as left by read_header); data_key is the data key
    custos unwrapped from h.wrapped_key with h.context.

    The constructor checks the key commitment first (in constant time): a
    wrong data key or a modified header raises DecryptionError before any
    body byte is read. read() then returns plaintext only once its whole
    segment is authenticated, returns b"" (end) only after the final
    segment, and raises DecryptionError for a truncated, extended,
    reordered or modified body. One segment of buffer is held.
    """

    def __init__(self, src: BinaryIO, h: Header, data_key):
        super().__init__()
        if h is None:
            raise MalformedHeaderError("envelope: malformed header: no header")
        if len(data_key) != DATA_KEY_SIZE:
            raise ValueError("envelope: data key must be 32 bytes")
        prefix = h._encode_prefix()
        keys = _StreamKeys(data_key, prefix)
        if len(h.commitment) != _COMMIT_SIZE or not hmac.compare_digest(keys._commitment, bytes(h.commitment)):
            raise DecryptionError()
        keys.aad = hashlib.sha256(prefix + keys._commitment).digest()
        self.header = h
        self._src = src
        self._keys: Optional[_StreamKeys] = keys
        self._segsize = h.segment_size + _TAG_SIZE
        self._plain = b""
        self._pos = 0
        self._counter = 0
        self._peek = b""
        self._done = False
        self._err: Optional[BaseException] = None

    def readable(self) -> bool:
        return True

    def readinto(self, b) -> int:
        mv = memoryview(b).cast("B")
        if len(mv) == 0:
            return 0
        while self._pos >= len(self._plain):
            if self._err is not None:
                raise self._err
            if self._done:
                return 0
            try:
                self._next()
            except BaseException as e:
                self._err = e
                self._wipe()
                raise
        n = min(len(mv), len(self._plain) - self._pos)
        mv[:n] = self._plain[self._pos:self._pos + n]
        self._pos += n
        if self._pos >= len(self._plain) and self._done:
            self._wipe()
        return n

    def segments(self):
        """Yields the plaintext one authenticated segment at a time."""
        while True:
            if self._pos < len(self._plain):
                chunk = self._plain[self._pos:]
                self._pos = len(self._plain)
                yield chunk
                continue
            if self._err is not None:
                raise self._err
            if self._done:
                self._wipe()
                return
            try:
                self._next()
            except BaseException as e:
                self._err = e
                self._wipe()
                raise

    def _next(self) -> None:
        if self._counter >= _MAX_SEGMENTS:
            raise DecryptionError()
        want = self._segsize - len(self._peek)
        try:
            data = self._peek + _read_exact(self._src, want)
            self._peek = b""
            last = False
            if len(data) == self._segsize:
                # A full segment is the final one only if the input ends here.
                nxt = _read_exact(self._src, 1)
                if nxt:
                    self._peek = nxt
                else:
                    last = True
            else:
                last = True
        except (OSError, ValueError) as e:
            raise EnvelopeError(f"envelope: reading ciphertext: {e}") from e
        if len(data) < _TAG_SIZE:
            raise DecryptionError()
        keys = self._keys
        try:
            pt = keys.aead.decrypt(keys.nonce(self._counter, last), data, keys.aad)
        except InvalidTag:
            raise DecryptionError() from None
        self._counter += 1
        self._plain = pt
        self._pos = 0
        self._done = last

    def _wipe(self) -> None:
        self._plain = b""
        self._pos = 0
        self._keys = None


def _wipe(buf: bytearray) -> None:
    """Overwrites buf with zeros and empties it (best effort: Python may
    have copied the bytes elsewhere)."""
    buf[:] = bytes(len(buf))
    del buf[:]
