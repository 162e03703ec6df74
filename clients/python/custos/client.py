"""The custos gRPC client: mutual TLS, failover across addresses, key
service calls and streaming envelope encryption (same API shape as the Go
client, clients/go)."""

from __future__ import annotations

import os
import sys
import tempfile
import threading
from dataclasses import dataclass, field
from typing import BinaryIO, Callable, Dict, Iterator, List, Mapping, Optional, Sequence, Union

import grpc

from . import envelope, requestsig
from ._proto import common_pb2, keys_pb2, keys_pb2_grpc
from .errors import (
    ConfigError,
    ContextMismatchError,
    CustosError,
    KeyMismatchError,
    RPCError,
)

__all__ = [
    "ENV_ADDR",
    "ENV_CA",
    "ENV_CERT",
    "ENV_KEY",
    "DEFAULT_CONNECT_TIMEOUT",
    "DEFAULT_CALL_TIMEOUT",
    "Config",
    "Client",
    "connect",
    "split_addrs",
    "DataKey",
    "Justification",
    "parse_reason",
    "reason_names",
    "reason_string",
]

ENV_ADDR = "CUSTOS_ADDR"
ENV_CA = "CUSTOS_CA"
ENV_CERT = "CUSTOS_CERT"
ENV_KEY = "CUSTOS_KEY"

DEFAULT_CONNECT_TIMEOUT = 5.0
DEFAULT_CALL_TIMEOUT = 30.0

_COPY_SIZE = 64 << 10


def split_addrs(s: str) -> List[str]:
    """Splits a comma-separated address list, dropping blanks."""
    return [a.strip() for a in (s or "").split(",") if a.strip()]


@dataclass
class Config:
    """How to reach a custos cluster.

    addrs are host:port addresses tried in order; ca_file, cert_file and
    key_file are PEM files: the CA bundle that verifies the server and the
    client certificate and key presented for mutual TLS. connect_timeout
    bounds the wait for a connection to one address before the next is
    tried; call_timeout bounds each RPC attempt (None: no bound).
    """

    addrs: List[str] = field(default_factory=list)
    ca_file: str = ""
    cert_file: str = ""
    key_file: str = ""
    connect_timeout: float = DEFAULT_CONNECT_TIMEOUT
    call_timeout: Optional[float] = DEFAULT_CALL_TIMEOUT

    @classmethod
    def from_env(cls, environ: Optional[Mapping[str, str]] = None) -> "Config":
        """Reads CUSTOS_ADDR (comma-separated host:port list), CUSTOS_CA,
        CUSTOS_CERT and CUSTOS_KEY. The ConfigError names every variable
        that is missing or empty."""
        env = os.environ if environ is None else environ
        missing = []

        def get(name: str) -> str:
            v = (env.get(name) or "").strip()
            if not v:
                missing.append(name)
            return v

        cfg = cls(addrs=split_addrs(get(ENV_ADDR)), ca_file=get(ENV_CA),
                  cert_file=get(ENV_CERT), key_file=get(ENV_KEY))
        if missing:
            verb = "are" if len(missing) > 1 else "is"
            raise ConfigError(f"custos: {', '.join(missing)} {verb} not set (custosd dev writes them to client.env)")
        if not cfg.addrs:
            raise ConfigError(f"custos: {ENV_ADDR} holds no address")
        return cfg

    def _credentials(self) -> grpc.ChannelCredentials:
        missing = [n for n, v in (("ca_file", self.ca_file), ("cert_file", self.cert_file),
                                  ("key_file", self.key_file)) if not v]
        if missing:
            raise ConfigError(f"custos: config: no {', '.join(missing)}")
        files = {}
        for what, path in (("CA file", self.ca_file), ("client certificate", self.cert_file),
                           ("client key", self.key_file)):
            try:
                with open(path, "rb") as f:
                    files[what] = f.read()
            except OSError as e:
                raise ConfigError(f"custos: {what} {path}: {e.strerror or e}") from None
        if b"-----BEGIN CERTIFICATE-----" not in files["CA file"]:
            raise ConfigError(f"custos: CA file {self.ca_file}: no PEM certificate")
        if b"-----BEGIN CERTIFICATE-----" not in files["client certificate"]:
            raise ConfigError(f"custos: client certificate {self.cert_file}: no PEM certificate")
        if b"PRIVATE KEY-----" not in files["client key"]:
            raise ConfigError(f"custos: client key {self.key_file}: no PEM private key")
        return grpc.ssl_channel_credentials(root_certificates=files["CA file"],
                                            private_key=files["client key"],
                                            certificate_chain=files["client certificate"])

    def _request_signer(self):
        """The client key when it can sign requests (ECDSA P-256), else None
        (docs/signed-requests.md). Read after _credentials checked it."""
        with open(self.key_file, "rb") as f:
            return requestsig.signer_from_pem(f.read())


_REASON_PREFIX = "REASON_"


def reason_names() -> List[str]:
    """The reason codes parse_reason accepts, without the REASON_ prefix, in
    enum order."""
    return [v.name[len(_REASON_PREFIX):] for v in common_pb2.Reason.DESCRIPTOR.values if v.number != 0]


def parse_reason(s: Union[str, int]) -> int:
    """Parses a reason code such as "CUSTOMER_INITIATED",
    "customer-initiated" or "REASON_CUSTOMER_INITIATED" (case-insensitive,
    '-' taken as '_') into its custos.v1.Reason number. An int is checked.
    REASON_UNSPECIFIED is refused with ValueError."""
    if isinstance(s, int) and not isinstance(s, bool):
        if s in common_pb2.Reason.values() and s != common_pb2.REASON_UNSPECIFIED:
            return s
        raise ValueError(f"custos: unknown justification reason {s!r} (want one of {', '.join(reason_names())})")
    name = str(s).strip().replace("-", "_").upper()
    if not name.startswith(_REASON_PREFIX):
        name = _REASON_PREFIX + name
    try:
        v = common_pb2.Reason.Value(name)
    except ValueError:
        v = 0
    if v == common_pb2.REASON_UNSPECIFIED:
        raise ValueError(f"custos: unknown justification reason {s!r} (want one of {', '.join(reason_names())})")
    return v


def reason_string(r: int) -> str:
    """The reason's name without the REASON_ prefix, e.g. "EMERGENCY"."""
    return common_pb2.Reason.Name(r)[len(_REASON_PREFIX):]


@dataclass(frozen=True)
class Justification:
    """Why a decryption is requested; written to the cluster's decision
    ledger and matched against the key's policy. reason is a name accepted
    by parse_reason ("customer-initiated", "EMERGENCY", ...) or a
    custos.v1.Reason number; None (the default) gives no reason, recorded
    as REASON_UNSPECIFIED, which the key's policy decides as a reason of its
    own (by default as strictly as THIRD_PARTY_DATA_REQUEST), as the Go
    client does for a zero Reason. text is shown to the customer's officers
    (at most 1024 bytes); ticket is an optional case reference (at most 256
    bytes)."""

    reason: Union[str, int, None] = None
    text: str = ""
    ticket: str = ""

    def __post_init__(self):
        if self.reason is None:
            object.__setattr__(self, "reason", common_pb2.REASON_UNSPECIFIED)
        else:
            object.__setattr__(self, "reason", parse_reason(self.reason))

    def to_proto(self) -> common_pb2.Justification:
        return common_pb2.Justification(reason=self.reason, text=self.text, ticket=self.ticket)


class DataKey:
    """A data key from generate_data_key: 32 bytes for AES-256-GCM
    (``plaintext``, a bytearray) and their wrapped form (``wrapped``, not
    secret: store it with the data), bound to ``key`` version ``version``.
    Call zero() as soon as plaintext is no longer needed (best effort:
    Python may have copied the bytes)."""

    __slots__ = ("key", "version", "plaintext", "wrapped")

    def __init__(self, key: str, version: int, plaintext, wrapped: bytes):
        self.key = key
        self.version = version
        self.plaintext = bytearray(plaintext)
        self.wrapped = bytes(wrapped)

    def zero(self) -> None:
        if self.plaintext is not None:
            self.plaintext[:] = bytes(len(self.plaintext))
            self.plaintext = None

    def __repr__(self) -> str:
        return f"DataKey(key={self.key!r}, version={self.version}, wrapped=<{len(self.wrapped)} bytes>)"

    def __enter__(self) -> "DataKey":
        return self

    def __exit__(self, *exc) -> bool:
        self.zero()
        return False


# Methods that may be repeated on another node after UNAVAILABLE (as in
# clients/go retryable): reads, idempotent state changes and cryptographic
# calls that change no key state. CreateKey and RotateKey are not repeated.
_RETRYABLE = {
    "GetKey", "ListKeys", "SetKeyState", "SetMinDecryptionVersion",
    "GenerateDataKey", "Encrypt", "Decrypt", "ReEncrypt",
}


class Client:
    """Talks to a custos cluster over gRPC with mutual TLS. Safe to share
    between threads. Close it when done (or use it as a context manager).

    At most one channel per address is kept. When an address cannot be
    reached (with several addresses), a call moves on to the next one
    before anything is sent; a call safe to repeat is also repeated on the
    next address when a node answers UNAVAILABLE. Failed calls raise
    RPCError, whose code_name is the gRPC status code name.
    """

    def __init__(self, config: Optional[Config] = None):
        cfg = config if config is not None else Config.from_env()
        if not cfg.addrs:
            raise ConfigError("custos: dial: no address (set Config.addrs or CUSTOS_ADDR)")
        for a in cfg.addrs:
            if not a.strip() or "," in a:
                raise ConfigError(f"custos: dial: bad address {a!r}: want host:port")
        self._creds = cfg._credentials()
        self._signer = cfg._request_signer()
        self._addrs = list(cfg.addrs)
        self._connect_timeout = cfg.connect_timeout if cfg.connect_timeout and cfg.connect_timeout > 0 \
            else DEFAULT_CONNECT_TIMEOUT
        self._call_timeout = cfg.call_timeout
        self._lock = threading.Lock()
        self._channels: List[Optional[grpc.Channel]] = [None] * len(self._addrs)
        self._stubs: List[Optional[keys_pb2_grpc.KeyServiceStub]] = [None] * len(self._addrs)
        self._current = 0
        self._closed = False

    @classmethod
    def from_env(cls) -> "Client":
        """A client configured from the CUSTOS_* environment."""
        return cls(Config.from_env())

    def close(self) -> None:
        """Closes every channel; calls in flight fail."""
        with self._lock:
            if self._closed:
                return
            self._closed = True
            chans = [c for c in self._channels if c is not None]
            self._channels = [None] * len(self._addrs)
            self._stubs = [None] * len(self._addrs)
        for c in chans:
            c.close()

    def __enter__(self) -> "Client":
        return self

    def __exit__(self, *exc) -> bool:
        self.close()
        return False

    # -- connection handling -------------------------------------------------

    def _stub(self, i: int):
        with self._lock:
            if self._closed:
                raise RPCError("client", grpc.StatusCode.CANCELLED, "custos: client is closed")
            if self._channels[i] is None:
                ch = grpc.secure_channel(self._addrs[i], self._creds, options=[
                    ("grpc.initial_reconnect_backoff_ms", 100),
                    ("grpc.max_reconnect_backoff_ms", 3000),
                    ("grpc.min_reconnect_backoff_ms", int(self._connect_timeout * 1000)),
                ])
                self._channels[i] = ch
                self._stubs[i] = keys_pb2_grpc.KeyServiceStub(ch)
            return self._channels[i], self._stubs[i]

    def _ready(self, ch: grpc.Channel) -> bool:
        try:
            grpc.channel_ready_future(ch).result(timeout=self._connect_timeout)
            return True
        except grpc.FutureTimeoutError:
            return False

    def _invoke(self, what: str, method: str, request, prepare=None):
        n = len(self._addrs)
        start = self._current
        order = [(start + k) % n for k in range(n)]
        last: Optional[grpc.RpcError] = None
        attempts = 0

        def once(i: int, stub):
            nonlocal attempts
            attempts += 1
            if prepare is not None:
                prepare(request)
            try:
                resp = getattr(stub, method)(request, timeout=self._call_timeout)
            except grpc.RpcError as e:
                if e.code() != grpc.StatusCode.UNAVAILABLE:
                    self._current = i  # this node answered
                raise
            self._current = i
            return resp

        for i in order:
            ch, stub = self._stub(i)
            if n > 1 and not self._ready(ch):
                continue  # nothing sent: safe for every method
            try:
                return once(i, stub)
            except grpc.RpcError as e:
                last = e
                if e.code() != grpc.StatusCode.UNAVAILABLE or method not in _RETRYABLE:
                    raise RPCError.from_grpc(what, e) from None
        if attempts == 0:
            # No address became ready: call the preferred one anyway so
            # that the caller sees the real connection error.
            ch, stub = self._stub(order[0])
            try:
                return once(order[0], stub)
            except grpc.RpcError as e:
                last = e
        assert last is not None
        err = RPCError.from_grpc(what, last)
        if n > 1 and err.code == grpc.StatusCode.UNAVAILABLE:
            err = RPCError(what, err.code, f"no custos node answered (tried {', '.join(self._addrs)}): {err.details}")
        raise err from None

    # -- key service -----------------------------------------------------------

    def create_key(self, name: str, description: str = "") -> keys_pb2.Key:
        """Creates an AES-256-GCM key with version 1. The caller becomes its
        user."""
        return self._invoke(f"create key {name!r}", "CreateKey",
                            keys_pb2.CreateKeyRequest(name=name, description=description))

    def get_key(self, name: str) -> keys_pb2.Key:
        """A key's metadata."""
        return self._invoke(f"get key {name!r}", "GetKey", keys_pb2.GetKeyRequest(name=name))

    def iter_keys(self) -> Iterator[keys_pb2.Key]:
        """Every key in name order, fetching pages as it goes."""
        token = ""
        while True:
            resp = self._invoke("list keys", "ListKeys", keys_pb2.ListKeysRequest(page_token=token))
            yield from resp.keys
            nxt = resp.next_page_token
            if not nxt:
                return
            if nxt == token:
                raise CustosError("custos: list keys: server returned the same page token twice")
            token = nxt

    def list_keys(self) -> List[keys_pb2.Key]:
        """Every key in name order, following all pages."""
        return list(self.iter_keys())

    def rotate_key(self, name: str) -> keys_pb2.Key:
        """Adds a version to the key and makes it the primary one."""
        return self._invoke(f"rotate key {name!r}", "RotateKey", keys_pb2.RotateKeyRequest(name=name))

    def disable_key(self, name: str) -> keys_pb2.Key:
        """Disables a key: it no longer encrypts or decrypts. Re-enabling
        needs the officer quorum."""
        return self._invoke(f"disable key {name!r}", "SetKeyState",
                            keys_pb2.SetKeyStateRequest(name=name, state=keys_pb2.KEY_STATE_DISABLED))

    def generate_data_key(self, key: str, context: Optional[Mapping[str, str]] = None) -> DataKey:
        """A fresh data key and its wrapped form, bound to the encryption
        context (which may be None)."""
        resp = self._invoke(f"generate data key with key {key!r}", "GenerateDataKey",
                            keys_pb2.GenerateDataKeyRequest(key=key, encryption_context=dict(context or {})))
        return DataKey(resp.key, resp.key_version, resp.plaintext, resp.wrapped_data_key)

    def _decrypt(self, what: str, ciphertext: bytes, context, justification: Justification):
        if not isinstance(justification, Justification):
            raise TypeError("custos: justification must be a custos.Justification")
        req = keys_pb2.DecryptRequest(
            ciphertext=bytes(ciphertext), encryption_context=dict(context or {}),
            justification=justification.to_proto())
        prepare = None
        if self._signer is not None:
            cd = envelope.context_digest(context)

            def prepare(r):
                # Signed afresh for every attempt: the cluster decides a
                # signed request once.
                r.request_signature.CopyFrom(requestsig.sign(self._signer, requestsig.METHOD_DECRYPT,
                                                             r.ciphertext, cd, justification))
        return self._invoke(what, "Decrypt", req, prepare)

    @property
    def signs_requests(self) -> bool:
        """Whether decrypt requests are signed with the certificate's key
        (it is an ECDSA P-256 key): docs/signed-requests.md."""
        return self._signer is not None

    def decrypt_data_key(self, wrapped: bytes, context: Optional[Mapping[str, str]],
                         justification: Justification) -> bytearray:
        """Asks custos to unwrap a wrapped data key. context must equal the
        one it was generated with. The request, with the justification, is
        recorded in the cluster's decision ledger before anything is
        released. Zero the returned bytearray when done."""
        resp = self._decrypt("decrypt data key", wrapped, context, justification)
        return bytearray(resp.plaintext)

    def encrypt(self, key: str, plaintext: bytes, context: Optional[Mapping[str, str]] = None) -> bytes:
        """Encrypts a small payload (at most 64 KiB) in the HSM under the
        key's primary version. Use encrypt_stream for anything larger."""
        resp = self._invoke(f"encrypt with key {key!r}", "Encrypt", keys_pb2.EncryptRequest(
            key=key, plaintext=bytes(plaintext), encryption_context=dict(context or {})))
        return resp.ciphertext

    def decrypt(self, ciphertext: bytes, context: Optional[Mapping[str, str]],
                justification: Justification) -> bytes:
        """Decrypts a ciphertext from encrypt; a recorded decision like
        decrypt_data_key."""
        return self._decrypt("decrypt", ciphertext, context, justification).plaintext

    # -- envelope encryption ---------------------------------------------------

    def encrypt_stream(self, src: BinaryIO, dst: BinaryIO, key: str,
                       context: Optional[Mapping[str, str]] = None,
                       segment_size: int = envelope.DEFAULT_SEGMENT_SIZE,
                       rand: Optional[Callable[[int], bytes]] = None) -> envelope.Header:
        """Encrypts everything read from src into dst in the envelope format
        (clients/go/envelope), under a fresh data key from one
        generate_data_key call on key with the encryption context. One
        segment of memory is used whatever the size. Returns the header. If
        reading src or writing dst fails, the exception propagates and dst
        holds no final segment, so it does not decrypt."""
        if not envelope.MIN_SEGMENT_SIZE <= segment_size <= envelope.MAX_SEGMENT_SIZE:
            raise ValueError(f"custos: encrypt: segment size {segment_size} out of range "
                             f"{envelope.MIN_SEGMENT_SIZE}..{envelope.MAX_SEGMENT_SIZE}")
        ctx = dict(context or {})
        envelope.canonical_context(ctx)  # validate before asking custos
        dk = self.generate_data_key(key, ctx)
        try:
            h = envelope.Header(key=dk.key or key, key_version=dk.version, wrapped_key=dk.wrapped,
                                context=ctx, segment_size=segment_size)
            w = envelope.Writer(dst, h, dk.plaintext, rand)
        finally:
            dk.zero()
        with w:
            _copy(src, w)
        return h

    def _open_envelope(self, src: BinaryIO, justification: Justification,
                       expected_context: Optional[Mapping[str, str]]) -> envelope.Reader:
        h = envelope.read_header(src)
        _check_context(h.context, expected_context)
        resp = self._decrypt(f"decrypt data key of key {h.key!r} version {h.key_version}",
                             h.wrapped_key, h.context, justification)
        data_key = bytearray(resp.plaintext)
        try:
            if (resp.key and resp.key != h.key) or (resp.key_version and resp.key_version != h.key_version):
                raise KeyMismatchError(
                    f"custos: envelope header does not match its wrapped data key: header names {h.key!r} "
                    f"version {h.key_version}, data key is from {resp.key!r} version {resp.key_version}")
            return envelope.Reader(src, h, data_key)
        finally:
            data_key[:] = bytes(len(data_key))

    def decrypt_stream(self, src: BinaryIO, dst: BinaryIO, justification: Justification,
                       expected_context: Optional[Mapping[str, str]] = None) -> envelope.Header:
        """Reads an envelope from src, asks custos to unwrap its data key
        with the header's encryption context and the justification (a
        decision recorded in the ledger), and writes the plaintext to dst
        one authenticated segment at a time (constant memory). Raises
        DecryptionError for a modified, truncated or extended ciphertext;
        what was written to dst before must then be discarded (decrypt_file
        does that for you). With expected_context, an envelope whose context
        lacks one of its pairs raises ContextMismatchError before custos is
        asked. Returns the header."""
        r = self._open_envelope(src, justification, expected_context)
        for chunk in r.segments():
            dst.write(chunk)
        return r.header

    def encrypt_file(self, in_path: str, out_path: str, key: str,
                     context: Optional[Mapping[str, str]] = None,
                     segment_size: int = envelope.DEFAULT_SEGMENT_SIZE) -> envelope.Header:
        """Encrypts the file in_path into out_path with encrypt_stream ("-"
        means standard input/output). The output is written to a temporary
        file in the destination directory (mode 0600) and renamed over
        out_path only once everything succeeded; on failure no output file
        is left behind."""
        with _open_input(in_path) as src:
            return _write_output(out_path, lambda dst: self.encrypt_stream(
                src, dst, key, context, segment_size=segment_size))

    def decrypt_file(self, in_path: str, out_path: str, justification: Justification,
                     expected_context: Optional[Mapping[str, str]] = None) -> envelope.Header:
        """Decrypts the envelope file in_path into out_path with
        decrypt_stream ("-" means standard input/output). The plaintext is
        written to a temporary file in the destination directory (mode 0600)
        and renamed over out_path only once the whole ciphertext has been
        authenticated; on any failure (refused decision, tampering,
        truncation) no output file is left behind. Standard output cannot
        be made atomic: on an exception, discard what was written."""
        with _open_input(in_path) as src:
            return _write_output(out_path, lambda dst: self.decrypt_stream(
                src, dst, justification, expected_context))


def connect(config: Optional[Config] = None) -> Client:
    """A Client for config, or for the CUSTOS_* environment when config is
    None. Like the Go Dial it does not wait for a connection: the first
    call connects."""
    return Client(config)


def _check_context(got: Mapping[str, str], want: Optional[Mapping[str, str]]) -> None:
    if not want:
        return
    bad = []
    for k, v in want.items():
        if k not in got:
            bad.append(f"{k!r} missing (want {v!r})")
        elif got[k] != v:
            bad.append(f"{k!r} is {got[k]!r} (want {v!r})")
    if bad:
        raise ContextMismatchError("custos: encryption context does not match: " + ", ".join(sorted(bad)))


def _copy(src: BinaryIO, dst) -> None:
    buf = bytearray(_COPY_SIZE)
    mv = memoryview(buf)
    try:
        readinto = getattr(src, "readinto", None)
        while True:
            if readinto is not None:
                n = readinto(mv)
                if not n:
                    return
                dst.write(mv[:n])
            else:
                b = src.read(_COPY_SIZE)
                if not b:
                    return
                dst.write(b)
    finally:
        mv.release()
        buf[:] = bytes(len(buf))  # it may have held plaintext


class _Std:
    """Context manager over a standard stream that does not close it."""

    def __init__(self, f):
        self.f = f

    def __enter__(self):
        return self.f

    def __exit__(self, *exc):
        return False


def _open_input(path: str):
    if path == "-":
        return _Std(sys.stdin.buffer)
    return open(path, "rb")


def _write_output(path: str, fill):
    if path == "-":
        out = sys.stdout.buffer
        result = fill(out)
        out.flush()
        return result
    d = os.path.dirname(os.path.abspath(path))
    fd, tmp = tempfile.mkstemp(dir=d, prefix="." + os.path.basename(path) + ".tmp-")
    ok = False
    try:
        with os.fdopen(fd, "wb") as f:
            result = fill(f)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
        ok = True
        return result
    finally:
        if not ok:
            try:
                os.unlink(tmp)
            except OSError:
                pass
