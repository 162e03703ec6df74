from . import common_pb2 as _common_pb2
from . import governance_pb2 as _governance_pb2
from google.protobuf.internal import containers as _containers
from google.protobuf import descriptor as _descriptor
from google.protobuf import message as _message
from typing import ClassVar as _ClassVar, Iterable as _Iterable, Mapping as _Mapping, Optional as _Optional, Union as _Union

DESCRIPTOR: _descriptor.FileDescriptor

class Checkpoint(_message.Message):
    __slots__ = ["cluster_id", "head", "key_id", "node", "seq", "signature", "time_unix_nano"]
    CLUSTER_ID_FIELD_NUMBER: _ClassVar[int]
    HEAD_FIELD_NUMBER: _ClassVar[int]
    KEY_ID_FIELD_NUMBER: _ClassVar[int]
    NODE_FIELD_NUMBER: _ClassVar[int]
    SEQ_FIELD_NUMBER: _ClassVar[int]
    SIGNATURE_FIELD_NUMBER: _ClassVar[int]
    TIME_UNIX_NANO_FIELD_NUMBER: _ClassVar[int]
    cluster_id: str
    head: bytes
    key_id: bytes
    node: str
    seq: int
    signature: bytes
    time_unix_nano: int
    def __init__(self, cluster_id: _Optional[str] = ..., seq: _Optional[int] = ..., head: _Optional[bytes] = ..., time_unix_nano: _Optional[int] = ..., node: _Optional[str] = ..., key_id: _Optional[bytes] = ..., signature: _Optional[bytes] = ...) -> None: ...

class DecisionRecord(_message.Message):
    __slots__ = ["checkpoint", "context_digest", "cosignature", "data_digest", "detail", "genesis", "grant", "justification_text", "key", "key_version", "matched_rule", "node", "node_public_key", "notify", "officers", "operation", "outcome", "prev_hash", "principal", "principal_cert_sha256", "principal_certificate", "principal_issuer_sha256", "quorum", "raft_index", "reason", "registered_node_keys", "request_id", "request_signature", "revoked_grant_id", "seq", "signed_statement", "signers", "state_digest", "state_digest_before", "state_digest_version", "statement_hash", "ticket", "time_unix_nano"]
    CHECKPOINT_FIELD_NUMBER: _ClassVar[int]
    CONTEXT_DIGEST_FIELD_NUMBER: _ClassVar[int]
    COSIGNATURE_FIELD_NUMBER: _ClassVar[int]
    DATA_DIGEST_FIELD_NUMBER: _ClassVar[int]
    DETAIL_FIELD_NUMBER: _ClassVar[int]
    GENESIS_FIELD_NUMBER: _ClassVar[int]
    GRANT_FIELD_NUMBER: _ClassVar[int]
    JUSTIFICATION_TEXT_FIELD_NUMBER: _ClassVar[int]
    KEY_FIELD_NUMBER: _ClassVar[int]
    KEY_VERSION_FIELD_NUMBER: _ClassVar[int]
    MATCHED_RULE_FIELD_NUMBER: _ClassVar[int]
    NODE_FIELD_NUMBER: _ClassVar[int]
    NODE_PUBLIC_KEY_FIELD_NUMBER: _ClassVar[int]
    NOTIFY_FIELD_NUMBER: _ClassVar[int]
    OFFICERS_FIELD_NUMBER: _ClassVar[int]
    OPERATION_FIELD_NUMBER: _ClassVar[int]
    OUTCOME_FIELD_NUMBER: _ClassVar[int]
    PREV_HASH_FIELD_NUMBER: _ClassVar[int]
    PRINCIPAL_CERTIFICATE_FIELD_NUMBER: _ClassVar[int]
    PRINCIPAL_CERT_SHA256_FIELD_NUMBER: _ClassVar[int]
    PRINCIPAL_FIELD_NUMBER: _ClassVar[int]
    PRINCIPAL_ISSUER_SHA256_FIELD_NUMBER: _ClassVar[int]
    QUORUM_FIELD_NUMBER: _ClassVar[int]
    RAFT_INDEX_FIELD_NUMBER: _ClassVar[int]
    REASON_FIELD_NUMBER: _ClassVar[int]
    REGISTERED_NODE_KEYS_FIELD_NUMBER: _ClassVar[int]
    REQUEST_ID_FIELD_NUMBER: _ClassVar[int]
    REQUEST_SIGNATURE_FIELD_NUMBER: _ClassVar[int]
    REVOKED_GRANT_ID_FIELD_NUMBER: _ClassVar[int]
    SEQ_FIELD_NUMBER: _ClassVar[int]
    SIGNED_STATEMENT_FIELD_NUMBER: _ClassVar[int]
    SIGNERS_FIELD_NUMBER: _ClassVar[int]
    STATEMENT_HASH_FIELD_NUMBER: _ClassVar[int]
    STATE_DIGEST_BEFORE_FIELD_NUMBER: _ClassVar[int]
    STATE_DIGEST_FIELD_NUMBER: _ClassVar[int]
    STATE_DIGEST_VERSION_FIELD_NUMBER: _ClassVar[int]
    TICKET_FIELD_NUMBER: _ClassVar[int]
    TIME_UNIX_NANO_FIELD_NUMBER: _ClassVar[int]
    checkpoint: Checkpoint
    context_digest: bytes
    cosignature: _governance_pb2.Cosignature
    data_digest: bytes
    detail: str
    genesis: Genesis
    grant: _governance_pb2.Grant
    justification_text: str
    key: str
    key_version: int
    matched_rule: str
    node: str
    node_public_key: bytes
    notify: bool
    officers: _containers.RepeatedCompositeFieldContainer[_governance_pb2.Officer]
    operation: _common_pb2.Operation
    outcome: _common_pb2.Outcome
    prev_hash: bytes
    principal: str
    principal_cert_sha256: bytes
    principal_certificate: bytes
    principal_issuer_sha256: bytes
    quorum: int
    raft_index: int
    reason: _common_pb2.Reason
    registered_node_keys: _containers.RepeatedScalarFieldContainer[bytes]
    request_id: str
    request_signature: _common_pb2.RequestSignature
    revoked_grant_id: str
    seq: int
    signed_statement: _governance_pb2.SignedStatement
    signers: _containers.RepeatedScalarFieldContainer[str]
    state_digest: bytes
    state_digest_before: bytes
    state_digest_version: int
    statement_hash: bytes
    ticket: str
    time_unix_nano: int
    def __init__(self, seq: _Optional[int] = ..., time_unix_nano: _Optional[int] = ..., node: _Optional[str] = ..., principal: _Optional[str] = ..., key: _Optional[str] = ..., key_version: _Optional[int] = ..., operation: _Optional[_Union[_common_pb2.Operation, str]] = ..., reason: _Optional[_Union[_common_pb2.Reason, str]] = ..., justification_text: _Optional[str] = ..., ticket: _Optional[str] = ..., context_digest: _Optional[bytes] = ..., outcome: _Optional[_Union[_common_pb2.Outcome, str]] = ..., matched_rule: _Optional[str] = ..., request_id: _Optional[str] = ..., prev_hash: _Optional[bytes] = ..., raft_index: _Optional[int] = ..., signers: _Optional[_Iterable[str]] = ..., statement_hash: _Optional[bytes] = ..., detail: _Optional[str] = ..., checkpoint: _Optional[_Union[Checkpoint, _Mapping]] = ..., notify: bool = ..., data_digest: _Optional[bytes] = ..., principal_issuer_sha256: _Optional[bytes] = ..., principal_cert_sha256: _Optional[bytes] = ..., cosignature: _Optional[_Union[_governance_pb2.Cosignature, _Mapping]] = ..., genesis: _Optional[_Union[Genesis, _Mapping]] = ..., state_digest: _Optional[bytes] = ..., state_digest_version: _Optional[int] = ..., node_public_key: _Optional[bytes] = ..., grant: _Optional[_Union[_governance_pb2.Grant, _Mapping]] = ..., revoked_grant_id: _Optional[str] = ..., state_digest_before: _Optional[bytes] = ..., registered_node_keys: _Optional[_Iterable[bytes]] = ..., signed_statement: _Optional[_Union[_governance_pb2.SignedStatement, _Mapping]] = ..., officers: _Optional[_Iterable[_Union[_governance_pb2.Officer, _Mapping]]] = ..., quorum: _Optional[int] = ..., request_signature: _Optional[_Union[_common_pb2.RequestSignature, _Mapping]] = ..., principal_certificate: _Optional[bytes] = ...) -> None: ...

class Genesis(_message.Message):
    __slots__ = ["client_authorities", "cluster_id", "domain_key_check_value", "domain_key_id", "officers", "profile", "quorum", "state_machine_version", "statement"]
    CLIENT_AUTHORITIES_FIELD_NUMBER: _ClassVar[int]
    CLUSTER_ID_FIELD_NUMBER: _ClassVar[int]
    DOMAIN_KEY_CHECK_VALUE_FIELD_NUMBER: _ClassVar[int]
    DOMAIN_KEY_ID_FIELD_NUMBER: _ClassVar[int]
    OFFICERS_FIELD_NUMBER: _ClassVar[int]
    PROFILE_FIELD_NUMBER: _ClassVar[int]
    QUORUM_FIELD_NUMBER: _ClassVar[int]
    STATEMENT_FIELD_NUMBER: _ClassVar[int]
    STATE_MACHINE_VERSION_FIELD_NUMBER: _ClassVar[int]
    client_authorities: _containers.RepeatedCompositeFieldContainer[_governance_pb2.ClientAuthority]
    cluster_id: str
    domain_key_check_value: bytes
    domain_key_id: bytes
    officers: _containers.RepeatedCompositeFieldContainer[_governance_pb2.Officer]
    profile: str
    quorum: int
    state_machine_version: int
    statement: _governance_pb2.SignedStatement
    def __init__(self, cluster_id: _Optional[str] = ..., officers: _Optional[_Iterable[_Union[_governance_pb2.Officer, _Mapping]]] = ..., quorum: _Optional[int] = ..., domain_key_id: _Optional[bytes] = ..., domain_key_check_value: _Optional[bytes] = ..., profile: _Optional[str] = ..., client_authorities: _Optional[_Iterable[_Union[_governance_pb2.ClientAuthority, _Mapping]]] = ..., state_machine_version: _Optional[int] = ..., statement: _Optional[_Union[_governance_pb2.SignedStatement, _Mapping]] = ...) -> None: ...
