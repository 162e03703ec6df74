"""custos: the Python client library of the custos key custody service.

An application connects to a cluster with mutual TLS (from the CUSTOS_*
environment: CUSTOS_ADDR, CUSTOS_CA, CUSTOS_CERT, CUSTOS_KEY), then either
calls the key service directly or uses envelope encryption: encrypt_stream
asks custos for a fresh data key, encrypts the data locally with
AES-256-GCM in the envelope format (docs/envelope-format.md, the same bytes
as the Go client) and stores the wrapped data key in the header;
decrypt_stream reads the header, asks custos to unwrap the data key (with a
Justification that the cluster records in its decision ledger before
releasing anything) and decrypts locally. Data never reaches custos.

    import custos

    with custos.connect() as c:
        c.encrypt_file("report.pdf", "report.pdf.cst", "payroll", {"dept": "hr"})
        c.decrypt_file("report.pdf.cst", "report.pdf",
                       custos.Justification("customer-initiated", "monthly run"))

Failed calls raise custos.RPCError (``code_name`` is the gRPC status code
name: NOT_FOUND, PERMISSION_DENIED, FAILED_PRECONDITION, UNAVAILABLE, ...);
corrupt or truncated ciphertext raises custos.DecryptionError.
"""

from .errors import (
    ConfigError,
    ContextMismatchError,
    CustosError,
    DecryptionError,
    EnvelopeError,
    KeyMismatchError,
    MalformedHeaderError,
    RPCError,
    UnsupportedSuiteError,
    UnsupportedVersionError,
)
from .client import (
    DEFAULT_CALL_TIMEOUT,
    DEFAULT_CONNECT_TIMEOUT,
    ENV_ADDR,
    ENV_CA,
    ENV_CERT,
    ENV_KEY,
    Client,
    Config,
    DataKey,
    Justification,
    connect,
    parse_reason,
    reason_names,
    reason_string,
    split_addrs,
)
from . import envelope

__version__ = "0.1.0"

__all__ = [
    "Client", "Config", "connect", "split_addrs", "DataKey", "Justification",
    "parse_reason", "reason_names", "reason_string",
    "ENV_ADDR", "ENV_CA", "ENV_CERT", "ENV_KEY", "DEFAULT_CALL_TIMEOUT", "DEFAULT_CONNECT_TIMEOUT",
    "CustosError", "ConfigError", "RPCError", "EnvelopeError", "MalformedHeaderError",
    "UnsupportedVersionError", "UnsupportedSuiteError", "DecryptionError",
    "ContextMismatchError", "KeyMismatchError", "envelope",
]
