"""Exceptions of the custos client. No exception carries key material."""

from __future__ import annotations

from typing import Optional

__all__ = [
    "CustosError",
    "ConfigError",
    "RPCError",
    "EnvelopeError",
    "MalformedHeaderError",
    "UnsupportedVersionError",
    "UnsupportedSuiteError",
    "DecryptionError",
    "ContextMismatchError",
    "KeyMismatchError",
]


class CustosError(Exception):
    """Base class of every exception raised by this package."""


class ConfigError(CustosError):
    """The client configuration (CUSTOS_* environment, TLS files) is
    incomplete or unreadable."""


class RPCError(CustosError):
    """A gRPC call failed. ``code`` is the grpc.StatusCode, ``code_name`` its
    name (e.g. "NOT_FOUND", "PERMISSION_DENIED", "FAILED_PRECONDITION",
    "UNAVAILABLE"), ``details`` the server's message. str() reads
    "custos: <what>: <CODE_NAME>: <details>"."""

    def __init__(self, what: str, code, details: str):
        self.what = what
        self.code = code
        self.code_name = getattr(code, "name", str(code))
        self.details = details or ""
        super().__init__(f"custos: {what}: {self.code_name}: {self.details}")

    @classmethod
    def from_grpc(cls, what: str, err) -> "RPCError":
        code = err.code() if callable(getattr(err, "code", None)) else None
        details = err.details() if callable(getattr(err, "details", None)) else str(err)
        if code is None:
            import grpc

            code = grpc.StatusCode.UNKNOWN
        e = cls(what, code, details)
        e.__cause__ = err
        return e


class EnvelopeError(CustosError):
    """An envelope could not be read or written (base of the envelope
    errors; also raised for I/O errors while reading one)."""


class MalformedHeaderError(EnvelopeError, ValueError):
    """The header does not follow the format or exceeds its limits."""


class UnsupportedVersionError(EnvelopeError):
    """The format version is not 1."""


class UnsupportedSuiteError(EnvelopeError):
    """The algorithm suite is not 1."""


class DecryptionError(EnvelopeError):
    """Authentication failed: wrong data key, modified header or body,
    truncated or extended stream. Always the same message."""

    def __init__(self, msg: Optional[str] = None):
        super().__init__(msg or "envelope: decryption failed")


class ContextMismatchError(CustosError):
    """The envelope's encryption context lacks a pair required by
    expected_context; raised before custos is asked for the data key."""


class KeyMismatchError(CustosError):
    """The envelope header names a different key or version than the
    wrapped data key it carries."""
