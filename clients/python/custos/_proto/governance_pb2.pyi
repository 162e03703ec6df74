from . import common_pb2 as _common_pb2
from google.protobuf.internal import containers as _containers
from google.protobuf.internal import enum_type_wrapper as _enum_type_wrapper
from google.protobuf import descriptor as _descriptor
from google.protobuf import message as _message
from typing import ClassVar as _ClassVar, Iterable as _Iterable, Mapping as _Mapping, Optional as _Optional, Union as _Union

ACTION_ALLOW: Action
ACTION_DENY: Action
ACTION_REQUIRE_APPROVAL: Action
ACTION_UNSPECIFIED: Action
ADMISSION_STATE_ADMITTED: AdmissionState
ADMISSION_STATE_APPROVED: AdmissionState
ADMISSION_STATE_OFFERED: AdmissionState
ADMISSION_STATE_REVOKED: AdmissionState
ADMISSION_STATE_SENT: AdmissionState
ADMISSION_STATE_UNSPECIFIED: AdmissionState
DESCRIPTOR: _descriptor.FileDescriptor
KEY_TRANSPORT_HASH_SHA1: KeyTransportHash
KEY_TRANSPORT_HASH_SHA256: KeyTransportHash
KEY_TRANSPORT_HASH_UNSPECIFIED: KeyTransportHash
REQUEST_STATE_APPROVED: RequestState
REQUEST_STATE_DENIED: RequestState
REQUEST_STATE_EXPIRED: RequestState
REQUEST_STATE_PENDING: RequestState
REQUEST_STATE_UNSPECIFIED: RequestState
SINK_TYPE_FILE: SinkType
SINK_TYPE_UNSPECIFIED: SinkType
SINK_TYPE_WEBHOOK: SinkType

class AcceptRestore(_message.Message):
    __slots__ = ["snapshot_sha256"]
    SNAPSHOT_SHA256_FIELD_NUMBER: _ClassVar[int]
    snapshot_sha256: str
    def __init__(self, snapshot_sha256: _Optional[str] = ...) -> None: ...

class AddClientAuthority(_message.Message):
    __slots__ = ["certificate"]
    CERTIFICATE_FIELD_NUMBER: _ClassVar[int]
    certificate: bytes
    def __init__(self, certificate: _Optional[bytes] = ...) -> None: ...

class AddOfficerCredential(_message.Message):
    __slots__ = ["credential", "officer"]
    CREDENTIAL_FIELD_NUMBER: _ClassVar[int]
    OFFICER_FIELD_NUMBER: _ClassVar[int]
    credential: WebAuthnCredential
    officer: str
    def __init__(self, officer: _Optional[str] = ..., credential: _Optional[_Union[WebAuthnCredential, _Mapping]] = ...) -> None: ...

class AddSink(_message.Message):
    __slots__ = ["sink"]
    SINK_FIELD_NUMBER: _ClassVar[int]
    sink: Sink
    def __init__(self, sink: _Optional[_Union[Sink, _Mapping]] = ...) -> None: ...

class AddWitness(_message.Message):
    __slots__ = ["witness"]
    WITNESS_FIELD_NUMBER: _ClassVar[int]
    witness: Witness
    def __init__(self, witness: _Optional[_Union[Witness, _Mapping]] = ...) -> None: ...

class AdmitNode(_message.Message):
    __slots__ = ["domain_key_rotation", "hash", "identity_key_fingerprint", "node", "transport_key_fingerprint"]
    DOMAIN_KEY_ROTATION_FIELD_NUMBER: _ClassVar[int]
    HASH_FIELD_NUMBER: _ClassVar[int]
    IDENTITY_KEY_FINGERPRINT_FIELD_NUMBER: _ClassVar[int]
    NODE_FIELD_NUMBER: _ClassVar[int]
    TRANSPORT_KEY_FINGERPRINT_FIELD_NUMBER: _ClassVar[int]
    domain_key_rotation: bool
    hash: KeyTransportHash
    identity_key_fingerprint: str
    node: str
    transport_key_fingerprint: str
    def __init__(self, node: _Optional[str] = ..., transport_key_fingerprint: _Optional[str] = ..., identity_key_fingerprint: _Optional[str] = ..., hash: _Optional[_Union[KeyTransportHash, str]] = ..., domain_key_rotation: bool = ...) -> None: ...

class ApprovalRequest(_message.Message):
    __slots__ = ["context_digest", "create_time_unix_nano", "data_digest", "decision_seq", "expire_time_unix_nano", "grant_id", "justification_text", "key", "key_version", "principal", "reason", "request_id", "state", "ticket"]
    CONTEXT_DIGEST_FIELD_NUMBER: _ClassVar[int]
    CREATE_TIME_UNIX_NANO_FIELD_NUMBER: _ClassVar[int]
    DATA_DIGEST_FIELD_NUMBER: _ClassVar[int]
    DECISION_SEQ_FIELD_NUMBER: _ClassVar[int]
    EXPIRE_TIME_UNIX_NANO_FIELD_NUMBER: _ClassVar[int]
    GRANT_ID_FIELD_NUMBER: _ClassVar[int]
    JUSTIFICATION_TEXT_FIELD_NUMBER: _ClassVar[int]
    KEY_FIELD_NUMBER: _ClassVar[int]
    KEY_VERSION_FIELD_NUMBER: _ClassVar[int]
    PRINCIPAL_FIELD_NUMBER: _ClassVar[int]
    REASON_FIELD_NUMBER: _ClassVar[int]
    REQUEST_ID_FIELD_NUMBER: _ClassVar[int]
    STATE_FIELD_NUMBER: _ClassVar[int]
    TICKET_FIELD_NUMBER: _ClassVar[int]
    context_digest: bytes
    create_time_unix_nano: int
    data_digest: bytes
    decision_seq: int
    expire_time_unix_nano: int
    grant_id: str
    justification_text: str
    key: str
    key_version: int
    principal: str
    reason: _common_pb2.Reason
    request_id: str
    state: RequestState
    ticket: str
    def __init__(self, request_id: _Optional[str] = ..., principal: _Optional[str] = ..., key: _Optional[str] = ..., key_version: _Optional[int] = ..., reason: _Optional[_Union[_common_pb2.Reason, str]] = ..., justification_text: _Optional[str] = ..., ticket: _Optional[str] = ..., context_digest: _Optional[bytes] = ..., create_time_unix_nano: _Optional[int] = ..., expire_time_unix_nano: _Optional[int] = ..., state: _Optional[_Union[RequestState, str]] = ..., grant_id: _Optional[str] = ..., decision_seq: _Optional[int] = ..., data_digest: _Optional[bytes] = ...) -> None: ...

class ApproveRequest(_message.Message):
    __slots__ = ["request_id", "ttl_seconds", "uses"]
    REQUEST_ID_FIELD_NUMBER: _ClassVar[int]
    TTL_SECONDS_FIELD_NUMBER: _ClassVar[int]
    USES_FIELD_NUMBER: _ClassVar[int]
    request_id: str
    ttl_seconds: int
    uses: int
    def __init__(self, request_id: _Optional[str] = ..., uses: _Optional[int] = ..., ttl_seconds: _Optional[int] = ...) -> None: ...

class CancelDomainKeyRotation(_message.Message):
    __slots__ = []
    def __init__(self) -> None: ...

class CancelKeyDestruction(_message.Message):
    __slots__ = ["key", "version"]
    KEY_FIELD_NUMBER: _ClassVar[int]
    VERSION_FIELD_NUMBER: _ClassVar[int]
    key: str
    version: int
    def __init__(self, key: _Optional[str] = ..., version: _Optional[int] = ...) -> None: ...

class ClientAuthority(_message.Message):
    __slots__ = ["certificate", "sha256", "subject"]
    CERTIFICATE_FIELD_NUMBER: _ClassVar[int]
    SHA256_FIELD_NUMBER: _ClassVar[int]
    SUBJECT_FIELD_NUMBER: _ClassVar[int]
    certificate: bytes
    sha256: str
    subject: str
    def __init__(self, sha256: _Optional[str] = ..., subject: _Optional[str] = ..., certificate: _Optional[bytes] = ...) -> None: ...

class ClusterRestore(_message.Message):
    __slots__ = ["accept_time_unix_nano", "accepted", "created_unix_nano", "node", "reported", "restore_id", "restore_time_unix_nano", "snapshot_sha256", "source_node", "source_raft_index", "source_raft_term"]
    ACCEPTED_FIELD_NUMBER: _ClassVar[int]
    ACCEPT_TIME_UNIX_NANO_FIELD_NUMBER: _ClassVar[int]
    CREATED_UNIX_NANO_FIELD_NUMBER: _ClassVar[int]
    NODE_FIELD_NUMBER: _ClassVar[int]
    REPORTED_FIELD_NUMBER: _ClassVar[int]
    RESTORE_ID_FIELD_NUMBER: _ClassVar[int]
    RESTORE_TIME_UNIX_NANO_FIELD_NUMBER: _ClassVar[int]
    SNAPSHOT_SHA256_FIELD_NUMBER: _ClassVar[int]
    SOURCE_NODE_FIELD_NUMBER: _ClassVar[int]
    SOURCE_RAFT_INDEX_FIELD_NUMBER: _ClassVar[int]
    SOURCE_RAFT_TERM_FIELD_NUMBER: _ClassVar[int]
    accept_time_unix_nano: int
    accepted: bool
    created_unix_nano: int
    node: str
    reported: bool
    restore_id: str
    restore_time_unix_nano: int
    snapshot_sha256: str
    source_node: str
    source_raft_index: int
    source_raft_term: int
    def __init__(self, snapshot_sha256: _Optional[str] = ..., source_node: _Optional[str] = ..., source_raft_index: _Optional[int] = ..., source_raft_term: _Optional[int] = ..., created_unix_nano: _Optional[int] = ..., node: _Optional[str] = ..., restore_time_unix_nano: _Optional[int] = ..., reported: bool = ..., accepted: bool = ..., accept_time_unix_nano: _Optional[int] = ..., restore_id: _Optional[str] = ...) -> None: ...

class Cosignature(_message.Message):
    __slots__ = ["cluster_id", "head", "seq", "signature", "time_unix_nano", "witness"]
    CLUSTER_ID_FIELD_NUMBER: _ClassVar[int]
    HEAD_FIELD_NUMBER: _ClassVar[int]
    SEQ_FIELD_NUMBER: _ClassVar[int]
    SIGNATURE_FIELD_NUMBER: _ClassVar[int]
    TIME_UNIX_NANO_FIELD_NUMBER: _ClassVar[int]
    WITNESS_FIELD_NUMBER: _ClassVar[int]
    cluster_id: str
    head: bytes
    seq: int
    signature: bytes
    time_unix_nano: int
    witness: str
    def __init__(self, cluster_id: _Optional[str] = ..., witness: _Optional[str] = ..., seq: _Optional[int] = ..., head: _Optional[bytes] = ..., time_unix_nano: _Optional[int] = ..., signature: _Optional[bytes] = ...) -> None: ...

class CreateCluster(_message.Message):
    __slots__ = ["client_authorities", "officers", "profile", "quorum"]
    CLIENT_AUTHORITIES_FIELD_NUMBER: _ClassVar[int]
    OFFICERS_FIELD_NUMBER: _ClassVar[int]
    PROFILE_FIELD_NUMBER: _ClassVar[int]
    QUORUM_FIELD_NUMBER: _ClassVar[int]
    client_authorities: _containers.RepeatedScalarFieldContainer[bytes]
    officers: _containers.RepeatedCompositeFieldContainer[Officer]
    profile: str
    quorum: int
    def __init__(self, officers: _Optional[_Iterable[_Union[Officer, _Mapping]]] = ..., quorum: _Optional[int] = ..., client_authorities: _Optional[_Iterable[bytes]] = ..., profile: _Optional[str] = ...) -> None: ...

class CreateGrant(_message.Message):
    __slots__ = ["context_digest", "data_digests", "key", "principal", "reason", "ttl_seconds", "uses"]
    CONTEXT_DIGEST_FIELD_NUMBER: _ClassVar[int]
    DATA_DIGESTS_FIELD_NUMBER: _ClassVar[int]
    KEY_FIELD_NUMBER: _ClassVar[int]
    PRINCIPAL_FIELD_NUMBER: _ClassVar[int]
    REASON_FIELD_NUMBER: _ClassVar[int]
    TTL_SECONDS_FIELD_NUMBER: _ClassVar[int]
    USES_FIELD_NUMBER: _ClassVar[int]
    context_digest: bytes
    data_digests: _containers.RepeatedScalarFieldContainer[bytes]
    key: str
    principal: str
    reason: _common_pb2.Reason
    ttl_seconds: int
    uses: int
    def __init__(self, principal: _Optional[str] = ..., key: _Optional[str] = ..., reason: _Optional[_Union[_common_pb2.Reason, str]] = ..., context_digest: _Optional[bytes] = ..., uses: _Optional[int] = ..., ttl_seconds: _Optional[int] = ..., data_digests: _Optional[_Iterable[bytes]] = ...) -> None: ...

class DenyRequest(_message.Message):
    __slots__ = ["request_id"]
    REQUEST_ID_FIELD_NUMBER: _ClassVar[int]
    request_id: str
    def __init__(self, request_id: _Optional[str] = ...) -> None: ...

class DisableKey(_message.Message):
    __slots__ = ["key"]
    KEY_FIELD_NUMBER: _ClassVar[int]
    key: str
    def __init__(self, key: _Optional[str] = ...) -> None: ...

class DomainKeyRotation(_message.Message):
    __slots__ = ["epoch", "generator", "new_domain_key_check_value", "new_domain_key_id", "nodes", "request_time_unix_nano", "rewrapped", "to_rewrap"]
    EPOCH_FIELD_NUMBER: _ClassVar[int]
    GENERATOR_FIELD_NUMBER: _ClassVar[int]
    NEW_DOMAIN_KEY_CHECK_VALUE_FIELD_NUMBER: _ClassVar[int]
    NEW_DOMAIN_KEY_ID_FIELD_NUMBER: _ClassVar[int]
    NODES_FIELD_NUMBER: _ClassVar[int]
    REQUEST_TIME_UNIX_NANO_FIELD_NUMBER: _ClassVar[int]
    REWRAPPED_FIELD_NUMBER: _ClassVar[int]
    TO_REWRAP_FIELD_NUMBER: _ClassVar[int]
    epoch: int
    generator: str
    new_domain_key_check_value: bytes
    new_domain_key_id: bytes
    nodes: _containers.RepeatedCompositeFieldContainer[NodeAdmission]
    request_time_unix_nano: int
    rewrapped: int
    to_rewrap: int
    def __init__(self, epoch: _Optional[int] = ..., request_time_unix_nano: _Optional[int] = ..., generator: _Optional[str] = ..., new_domain_key_id: _Optional[bytes] = ..., new_domain_key_check_value: _Optional[bytes] = ..., nodes: _Optional[_Iterable[_Union[NodeAdmission, _Mapping]]] = ..., rewrapped: _Optional[int] = ..., to_rewrap: _Optional[int] = ...) -> None: ...

class EnableKey(_message.Message):
    __slots__ = ["key"]
    KEY_FIELD_NUMBER: _ClassVar[int]
    key: str
    def __init__(self, key: _Optional[str] = ...) -> None: ...

class GetGovernanceRequest(_message.Message):
    __slots__ = []
    def __init__(self) -> None: ...

class GetPolicyRequest(_message.Message):
    __slots__ = ["key"]
    KEY_FIELD_NUMBER: _ClassVar[int]
    key: str
    def __init__(self, key: _Optional[str] = ...) -> None: ...

class GetRequestRequest(_message.Message):
    __slots__ = ["request_id"]
    REQUEST_ID_FIELD_NUMBER: _ClassVar[int]
    request_id: str
    def __init__(self, request_id: _Optional[str] = ...) -> None: ...

class Governance(_message.Message):
    __slots__ = ["client_authorities", "client_authorities_pinned", "cluster_id", "genesis_sha256", "notify_rules", "officers", "profile", "quorum", "quotas", "restore_id", "sinks", "version", "witnesses"]
    CLIENT_AUTHORITIES_FIELD_NUMBER: _ClassVar[int]
    CLIENT_AUTHORITIES_PINNED_FIELD_NUMBER: _ClassVar[int]
    CLUSTER_ID_FIELD_NUMBER: _ClassVar[int]
    GENESIS_SHA256_FIELD_NUMBER: _ClassVar[int]
    NOTIFY_RULES_FIELD_NUMBER: _ClassVar[int]
    OFFICERS_FIELD_NUMBER: _ClassVar[int]
    PROFILE_FIELD_NUMBER: _ClassVar[int]
    QUORUM_FIELD_NUMBER: _ClassVar[int]
    QUOTAS_FIELD_NUMBER: _ClassVar[int]
    RESTORE_ID_FIELD_NUMBER: _ClassVar[int]
    SINKS_FIELD_NUMBER: _ClassVar[int]
    VERSION_FIELD_NUMBER: _ClassVar[int]
    WITNESSES_FIELD_NUMBER: _ClassVar[int]
    client_authorities: _containers.RepeatedCompositeFieldContainer[ClientAuthority]
    client_authorities_pinned: bool
    cluster_id: str
    genesis_sha256: str
    notify_rules: NotifyRules
    officers: _containers.RepeatedCompositeFieldContainer[Officer]
    profile: str
    quorum: int
    quotas: Quotas
    restore_id: str
    sinks: _containers.RepeatedCompositeFieldContainer[Sink]
    version: int
    witnesses: _containers.RepeatedCompositeFieldContainer[Witness]
    def __init__(self, cluster_id: _Optional[str] = ..., officers: _Optional[_Iterable[_Union[Officer, _Mapping]]] = ..., quorum: _Optional[int] = ..., version: _Optional[int] = ..., sinks: _Optional[_Iterable[_Union[Sink, _Mapping]]] = ..., notify_rules: _Optional[_Union[NotifyRules, _Mapping]] = ..., profile: _Optional[str] = ..., restore_id: _Optional[str] = ..., client_authorities: _Optional[_Iterable[_Union[ClientAuthority, _Mapping]]] = ..., client_authorities_pinned: bool = ..., witnesses: _Optional[_Iterable[_Union[Witness, _Mapping]]] = ..., quotas: _Optional[_Union[Quotas, _Mapping]] = ..., genesis_sha256: _Optional[str] = ...) -> None: ...

class Grant(_message.Message):
    __slots__ = ["context_digest", "data_digests", "expire_time_unix_nano", "grant_id", "key", "principal", "reason", "request_id", "uses_left"]
    CONTEXT_DIGEST_FIELD_NUMBER: _ClassVar[int]
    DATA_DIGESTS_FIELD_NUMBER: _ClassVar[int]
    EXPIRE_TIME_UNIX_NANO_FIELD_NUMBER: _ClassVar[int]
    GRANT_ID_FIELD_NUMBER: _ClassVar[int]
    KEY_FIELD_NUMBER: _ClassVar[int]
    PRINCIPAL_FIELD_NUMBER: _ClassVar[int]
    REASON_FIELD_NUMBER: _ClassVar[int]
    REQUEST_ID_FIELD_NUMBER: _ClassVar[int]
    USES_LEFT_FIELD_NUMBER: _ClassVar[int]
    context_digest: bytes
    data_digests: _containers.RepeatedScalarFieldContainer[bytes]
    expire_time_unix_nano: int
    grant_id: str
    key: str
    principal: str
    reason: _common_pb2.Reason
    request_id: str
    uses_left: int
    def __init__(self, grant_id: _Optional[str] = ..., principal: _Optional[str] = ..., key: _Optional[str] = ..., reason: _Optional[_Union[_common_pb2.Reason, str]] = ..., context_digest: _Optional[bytes] = ..., uses_left: _Optional[int] = ..., expire_time_unix_nano: _Optional[int] = ..., request_id: _Optional[str] = ..., data_digests: _Optional[_Iterable[bytes]] = ...) -> None: ...

class KeyPolicy(_message.Message):
    __slots__ = ["admin_principals", "decrypt_principals", "encrypt_principals", "max_decrypts_per_principal_per_hour", "notify_all", "notify_before_release", "reasons", "require_request_signature", "version", "windows", "witness_max_age_seconds", "witness_max_records"]
    ADMIN_PRINCIPALS_FIELD_NUMBER: _ClassVar[int]
    DECRYPT_PRINCIPALS_FIELD_NUMBER: _ClassVar[int]
    ENCRYPT_PRINCIPALS_FIELD_NUMBER: _ClassVar[int]
    MAX_DECRYPTS_PER_PRINCIPAL_PER_HOUR_FIELD_NUMBER: _ClassVar[int]
    NOTIFY_ALL_FIELD_NUMBER: _ClassVar[int]
    NOTIFY_BEFORE_RELEASE_FIELD_NUMBER: _ClassVar[int]
    REASONS_FIELD_NUMBER: _ClassVar[int]
    REQUIRE_REQUEST_SIGNATURE_FIELD_NUMBER: _ClassVar[int]
    VERSION_FIELD_NUMBER: _ClassVar[int]
    WINDOWS_FIELD_NUMBER: _ClassVar[int]
    WITNESS_MAX_AGE_SECONDS_FIELD_NUMBER: _ClassVar[int]
    WITNESS_MAX_RECORDS_FIELD_NUMBER: _ClassVar[int]
    admin_principals: _containers.RepeatedScalarFieldContainer[str]
    decrypt_principals: _containers.RepeatedScalarFieldContainer[str]
    encrypt_principals: _containers.RepeatedScalarFieldContainer[str]
    max_decrypts_per_principal_per_hour: int
    notify_all: bool
    notify_before_release: bool
    reasons: _containers.RepeatedCompositeFieldContainer[ReasonRule]
    require_request_signature: bool
    version: int
    windows: _containers.RepeatedCompositeFieldContainer[TimeWindow]
    witness_max_age_seconds: int
    witness_max_records: int
    def __init__(self, version: _Optional[int] = ..., encrypt_principals: _Optional[_Iterable[str]] = ..., decrypt_principals: _Optional[_Iterable[str]] = ..., reasons: _Optional[_Iterable[_Union[ReasonRule, _Mapping]]] = ..., max_decrypts_per_principal_per_hour: _Optional[int] = ..., windows: _Optional[_Iterable[_Union[TimeWindow, _Mapping]]] = ..., notify_all: bool = ..., notify_before_release: bool = ..., admin_principals: _Optional[_Iterable[str]] = ..., witness_max_age_seconds: _Optional[int] = ..., witness_max_records: _Optional[int] = ..., require_request_signature: bool = ...) -> None: ...

class ListGrantsRequest(_message.Message):
    __slots__ = ["key"]
    KEY_FIELD_NUMBER: _ClassVar[int]
    key: str
    def __init__(self, key: _Optional[str] = ...) -> None: ...

class ListGrantsResponse(_message.Message):
    __slots__ = ["grants"]
    GRANTS_FIELD_NUMBER: _ClassVar[int]
    grants: _containers.RepeatedCompositeFieldContainer[Grant]
    def __init__(self, grants: _Optional[_Iterable[_Union[Grant, _Mapping]]] = ...) -> None: ...

class ListPendingRequest(_message.Message):
    __slots__ = ["key"]
    KEY_FIELD_NUMBER: _ClassVar[int]
    key: str
    def __init__(self, key: _Optional[str] = ...) -> None: ...

class ListPendingResponse(_message.Message):
    __slots__ = ["requests"]
    REQUESTS_FIELD_NUMBER: _ClassVar[int]
    requests: _containers.RepeatedCompositeFieldContainer[ApprovalRequest]
    def __init__(self, requests: _Optional[_Iterable[_Union[ApprovalRequest, _Mapping]]] = ...) -> None: ...

class ListProposalsRequest(_message.Message):
    __slots__ = []
    def __init__(self) -> None: ...

class ListProposalsResponse(_message.Message):
    __slots__ = ["proposals"]
    PROPOSALS_FIELD_NUMBER: _ClassVar[int]
    proposals: _containers.RepeatedCompositeFieldContainer[Proposal]
    def __init__(self, proposals: _Optional[_Iterable[_Union[Proposal, _Mapping]]] = ...) -> None: ...

class NodeAdmission(_message.Message):
    __slots__ = ["approved_fingerprint", "hash", "identity_key_fingerprint", "node", "sent_by", "state", "transport_key_fingerprint", "transport_public_key", "update_time_unix_nano", "wrapped_domain_key"]
    APPROVED_FINGERPRINT_FIELD_NUMBER: _ClassVar[int]
    HASH_FIELD_NUMBER: _ClassVar[int]
    IDENTITY_KEY_FINGERPRINT_FIELD_NUMBER: _ClassVar[int]
    NODE_FIELD_NUMBER: _ClassVar[int]
    SENT_BY_FIELD_NUMBER: _ClassVar[int]
    STATE_FIELD_NUMBER: _ClassVar[int]
    TRANSPORT_KEY_FINGERPRINT_FIELD_NUMBER: _ClassVar[int]
    TRANSPORT_PUBLIC_KEY_FIELD_NUMBER: _ClassVar[int]
    UPDATE_TIME_UNIX_NANO_FIELD_NUMBER: _ClassVar[int]
    WRAPPED_DOMAIN_KEY_FIELD_NUMBER: _ClassVar[int]
    approved_fingerprint: str
    hash: KeyTransportHash
    identity_key_fingerprint: str
    node: str
    sent_by: str
    state: AdmissionState
    transport_key_fingerprint: str
    transport_public_key: bytes
    update_time_unix_nano: int
    wrapped_domain_key: bytes
    def __init__(self, node: _Optional[str] = ..., state: _Optional[_Union[AdmissionState, str]] = ..., transport_public_key: _Optional[bytes] = ..., transport_key_fingerprint: _Optional[str] = ..., approved_fingerprint: _Optional[str] = ..., identity_key_fingerprint: _Optional[str] = ..., hash: _Optional[_Union[KeyTransportHash, str]] = ..., wrapped_domain_key: _Optional[bytes] = ..., sent_by: _Optional[str] = ..., update_time_unix_nano: _Optional[int] = ...) -> None: ...

class NotifyRules(_message.Message):
    __slots__ = ["all", "customer_principals", "governance", "outcomes", "reasons"]
    ALL_FIELD_NUMBER: _ClassVar[int]
    CUSTOMER_PRINCIPALS_FIELD_NUMBER: _ClassVar[int]
    GOVERNANCE_FIELD_NUMBER: _ClassVar[int]
    OUTCOMES_FIELD_NUMBER: _ClassVar[int]
    REASONS_FIELD_NUMBER: _ClassVar[int]
    all: bool
    customer_principals: _containers.RepeatedScalarFieldContainer[str]
    governance: bool
    outcomes: _containers.RepeatedScalarFieldContainer[_common_pb2.Outcome]
    reasons: _containers.RepeatedScalarFieldContainer[_common_pb2.Reason]
    def __init__(self, reasons: _Optional[_Iterable[_Union[_common_pb2.Reason, str]]] = ..., outcomes: _Optional[_Iterable[_Union[_common_pb2.Outcome, str]]] = ..., customer_principals: _Optional[_Iterable[str]] = ..., governance: bool = ..., all: bool = ...) -> None: ...

class Officer(_message.Message):
    __slots__ = ["credentials", "name", "public_key"]
    CREDENTIALS_FIELD_NUMBER: _ClassVar[int]
    NAME_FIELD_NUMBER: _ClassVar[int]
    PUBLIC_KEY_FIELD_NUMBER: _ClassVar[int]
    credentials: _containers.RepeatedCompositeFieldContainer[WebAuthnCredential]
    name: str
    public_key: bytes
    def __init__(self, name: _Optional[str] = ..., public_key: _Optional[bytes] = ..., credentials: _Optional[_Iterable[_Union[WebAuthnCredential, _Mapping]]] = ...) -> None: ...

class OfficerSignature(_message.Message):
    __slots__ = ["officer", "signature", "webauthn"]
    OFFICER_FIELD_NUMBER: _ClassVar[int]
    SIGNATURE_FIELD_NUMBER: _ClassVar[int]
    WEBAUTHN_FIELD_NUMBER: _ClassVar[int]
    officer: str
    signature: bytes
    webauthn: WebAuthnAssertion
    def __init__(self, officer: _Optional[str] = ..., signature: _Optional[bytes] = ..., webauthn: _Optional[_Union[WebAuthnAssertion, _Mapping]] = ...) -> None: ...

class Proposal(_message.Message):
    __slots__ = ["create_time_unix_nano", "description", "id", "needed", "proof", "proposer", "signatures", "signers", "statement"]
    CREATE_TIME_UNIX_NANO_FIELD_NUMBER: _ClassVar[int]
    DESCRIPTION_FIELD_NUMBER: _ClassVar[int]
    ID_FIELD_NUMBER: _ClassVar[int]
    NEEDED_FIELD_NUMBER: _ClassVar[int]
    PROOF_FIELD_NUMBER: _ClassVar[int]
    PROPOSER_FIELD_NUMBER: _ClassVar[int]
    SIGNATURES_FIELD_NUMBER: _ClassVar[int]
    SIGNERS_FIELD_NUMBER: _ClassVar[int]
    STATEMENT_FIELD_NUMBER: _ClassVar[int]
    create_time_unix_nano: int
    description: str
    id: str
    needed: int
    proof: WebAuthnAssertion
    proposer: str
    signatures: _containers.RepeatedCompositeFieldContainer[OfficerSignature]
    signers: _containers.RepeatedScalarFieldContainer[str]
    statement: bytes
    def __init__(self, id: _Optional[str] = ..., statement: _Optional[bytes] = ..., signatures: _Optional[_Iterable[_Union[OfficerSignature, _Mapping]]] = ..., signers: _Optional[_Iterable[str]] = ..., needed: _Optional[int] = ..., proposer: _Optional[str] = ..., create_time_unix_nano: _Optional[int] = ..., proof: _Optional[_Union[WebAuthnAssertion, _Mapping]] = ..., description: _Optional[str] = ...) -> None: ...

class ProposeRequest(_message.Message):
    __slots__ = ["enrolment", "proof", "statement"]
    ENROLMENT_FIELD_NUMBER: _ClassVar[int]
    PROOF_FIELD_NUMBER: _ClassVar[int]
    STATEMENT_FIELD_NUMBER: _ClassVar[int]
    enrolment: bytes
    proof: WebAuthnAssertion
    statement: SignedStatement
    def __init__(self, statement: _Optional[_Union[SignedStatement, _Mapping]] = ..., proof: _Optional[_Union[WebAuthnAssertion, _Mapping]] = ..., enrolment: _Optional[bytes] = ...) -> None: ...

class ProposeResponse(_message.Message):
    __slots__ = ["applied", "proposal"]
    APPLIED_FIELD_NUMBER: _ClassVar[int]
    PROPOSAL_FIELD_NUMBER: _ClassVar[int]
    applied: SubmitResponse
    proposal: Proposal
    def __init__(self, proposal: _Optional[_Union[Proposal, _Mapping]] = ..., applied: _Optional[_Union[SubmitResponse, _Mapping]] = ...) -> None: ...

class Quotas(_message.Message):
    __slots__ = ["max_keys_per_principal", "max_pending_per_principal"]
    MAX_KEYS_PER_PRINCIPAL_FIELD_NUMBER: _ClassVar[int]
    MAX_PENDING_PER_PRINCIPAL_FIELD_NUMBER: _ClassVar[int]
    max_keys_per_principal: int
    max_pending_per_principal: int
    def __init__(self, max_keys_per_principal: _Optional[int] = ..., max_pending_per_principal: _Optional[int] = ...) -> None: ...

class ReasonRule(_message.Message):
    __slots__ = ["action", "reason"]
    ACTION_FIELD_NUMBER: _ClassVar[int]
    REASON_FIELD_NUMBER: _ClassVar[int]
    action: Action
    reason: _common_pb2.Reason
    def __init__(self, reason: _Optional[_Union[_common_pb2.Reason, str]] = ..., action: _Optional[_Union[Action, str]] = ...) -> None: ...

class RemoveClientAuthority(_message.Message):
    __slots__ = ["sha256"]
    SHA256_FIELD_NUMBER: _ClassVar[int]
    sha256: str
    def __init__(self, sha256: _Optional[str] = ...) -> None: ...

class RemoveOfficerCredential(_message.Message):
    __slots__ = ["credential_id", "officer"]
    CREDENTIAL_ID_FIELD_NUMBER: _ClassVar[int]
    OFFICER_FIELD_NUMBER: _ClassVar[int]
    credential_id: bytes
    officer: str
    def __init__(self, officer: _Optional[str] = ..., credential_id: _Optional[bytes] = ...) -> None: ...

class RemoveSink(_message.Message):
    __slots__ = ["name"]
    NAME_FIELD_NUMBER: _ClassVar[int]
    name: str
    def __init__(self, name: _Optional[str] = ...) -> None: ...

class RemoveWitness(_message.Message):
    __slots__ = ["name"]
    NAME_FIELD_NUMBER: _ClassVar[int]
    name: str
    def __init__(self, name: _Optional[str] = ...) -> None: ...

class RevokeAdmission(_message.Message):
    __slots__ = ["node"]
    NODE_FIELD_NUMBER: _ClassVar[int]
    node: str
    def __init__(self, node: _Optional[str] = ...) -> None: ...

class RevokeGrant(_message.Message):
    __slots__ = ["grant_id"]
    GRANT_ID_FIELD_NUMBER: _ClassVar[int]
    grant_id: str
    def __init__(self, grant_id: _Optional[str] = ...) -> None: ...

class RevokeKey(_message.Message):
    __slots__ = ["key"]
    KEY_FIELD_NUMBER: _ClassVar[int]
    key: str
    def __init__(self, key: _Optional[str] = ...) -> None: ...

class RotateDomainKey(_message.Message):
    __slots__ = []
    def __init__(self) -> None: ...

class ScheduleKeyDestruction(_message.Message):
    __slots__ = ["key", "version", "waiting_seconds"]
    KEY_FIELD_NUMBER: _ClassVar[int]
    VERSION_FIELD_NUMBER: _ClassVar[int]
    WAITING_SECONDS_FIELD_NUMBER: _ClassVar[int]
    key: str
    version: int
    waiting_seconds: int
    def __init__(self, key: _Optional[str] = ..., version: _Optional[int] = ..., waiting_seconds: _Optional[int] = ...) -> None: ...

class SetKeyMinVersion(_message.Message):
    __slots__ = ["key", "min_decryption_version"]
    KEY_FIELD_NUMBER: _ClassVar[int]
    MIN_DECRYPTION_VERSION_FIELD_NUMBER: _ClassVar[int]
    key: str
    min_decryption_version: int
    def __init__(self, key: _Optional[str] = ..., min_decryption_version: _Optional[int] = ...) -> None: ...

class SetNotifyRules(_message.Message):
    __slots__ = ["rules"]
    RULES_FIELD_NUMBER: _ClassVar[int]
    rules: NotifyRules
    def __init__(self, rules: _Optional[_Union[NotifyRules, _Mapping]] = ...) -> None: ...

class SetOfficers(_message.Message):
    __slots__ = ["officers", "quorum"]
    OFFICERS_FIELD_NUMBER: _ClassVar[int]
    QUORUM_FIELD_NUMBER: _ClassVar[int]
    officers: _containers.RepeatedCompositeFieldContainer[Officer]
    quorum: int
    def __init__(self, officers: _Optional[_Iterable[_Union[Officer, _Mapping]]] = ..., quorum: _Optional[int] = ...) -> None: ...

class SetPolicy(_message.Message):
    __slots__ = ["key", "policy"]
    KEY_FIELD_NUMBER: _ClassVar[int]
    POLICY_FIELD_NUMBER: _ClassVar[int]
    key: str
    policy: KeyPolicy
    def __init__(self, key: _Optional[str] = ..., policy: _Optional[_Union[KeyPolicy, _Mapping]] = ...) -> None: ...

class SetQuotas(_message.Message):
    __slots__ = ["quotas"]
    QUOTAS_FIELD_NUMBER: _ClassVar[int]
    quotas: Quotas
    def __init__(self, quotas: _Optional[_Union[Quotas, _Mapping]] = ...) -> None: ...

class SignedStatement(_message.Message):
    __slots__ = ["signatures", "statement"]
    SIGNATURES_FIELD_NUMBER: _ClassVar[int]
    STATEMENT_FIELD_NUMBER: _ClassVar[int]
    signatures: _containers.RepeatedCompositeFieldContainer[OfficerSignature]
    statement: bytes
    def __init__(self, statement: _Optional[bytes] = ..., signatures: _Optional[_Iterable[_Union[OfficerSignature, _Mapping]]] = ...) -> None: ...

class Sink(_message.Message):
    __slots__ = ["delivered_seq", "hmac_key", "name", "path", "required_for_release", "type", "url"]
    DELIVERED_SEQ_FIELD_NUMBER: _ClassVar[int]
    HMAC_KEY_FIELD_NUMBER: _ClassVar[int]
    NAME_FIELD_NUMBER: _ClassVar[int]
    PATH_FIELD_NUMBER: _ClassVar[int]
    REQUIRED_FOR_RELEASE_FIELD_NUMBER: _ClassVar[int]
    TYPE_FIELD_NUMBER: _ClassVar[int]
    URL_FIELD_NUMBER: _ClassVar[int]
    delivered_seq: int
    hmac_key: bytes
    name: str
    path: str
    required_for_release: bool
    type: SinkType
    url: str
    def __init__(self, name: _Optional[str] = ..., type: _Optional[_Union[SinkType, str]] = ..., url: _Optional[str] = ..., hmac_key: _Optional[bytes] = ..., path: _Optional[str] = ..., required_for_release: bool = ..., delivered_seq: _Optional[int] = ...) -> None: ...

class Statement(_message.Message):
    __slots__ = ["accept_restore", "add_client_authority", "add_officer_credential", "add_sink", "add_witness", "admit_node", "approve_request", "cancel_domain_key_rotation", "cancel_key_destruction", "cluster_id", "comment", "create_cluster", "create_grant", "deny_request", "disable_key", "enable_key", "nonce", "not_after_unix", "remove_client_authority", "remove_officer_credential", "remove_sink", "remove_witness", "restore_id", "revoke_admission", "revoke_grant", "revoke_key", "rotate_domain_key", "schedule_key_destruction", "set_key_min_version", "set_notify_rules", "set_officers", "set_policy", "set_quotas"]
    ACCEPT_RESTORE_FIELD_NUMBER: _ClassVar[int]
    ADD_CLIENT_AUTHORITY_FIELD_NUMBER: _ClassVar[int]
    ADD_OFFICER_CREDENTIAL_FIELD_NUMBER: _ClassVar[int]
    ADD_SINK_FIELD_NUMBER: _ClassVar[int]
    ADD_WITNESS_FIELD_NUMBER: _ClassVar[int]
    ADMIT_NODE_FIELD_NUMBER: _ClassVar[int]
    APPROVE_REQUEST_FIELD_NUMBER: _ClassVar[int]
    CANCEL_DOMAIN_KEY_ROTATION_FIELD_NUMBER: _ClassVar[int]
    CANCEL_KEY_DESTRUCTION_FIELD_NUMBER: _ClassVar[int]
    CLUSTER_ID_FIELD_NUMBER: _ClassVar[int]
    COMMENT_FIELD_NUMBER: _ClassVar[int]
    CREATE_CLUSTER_FIELD_NUMBER: _ClassVar[int]
    CREATE_GRANT_FIELD_NUMBER: _ClassVar[int]
    DENY_REQUEST_FIELD_NUMBER: _ClassVar[int]
    DISABLE_KEY_FIELD_NUMBER: _ClassVar[int]
    ENABLE_KEY_FIELD_NUMBER: _ClassVar[int]
    NONCE_FIELD_NUMBER: _ClassVar[int]
    NOT_AFTER_UNIX_FIELD_NUMBER: _ClassVar[int]
    REMOVE_CLIENT_AUTHORITY_FIELD_NUMBER: _ClassVar[int]
    REMOVE_OFFICER_CREDENTIAL_FIELD_NUMBER: _ClassVar[int]
    REMOVE_SINK_FIELD_NUMBER: _ClassVar[int]
    REMOVE_WITNESS_FIELD_NUMBER: _ClassVar[int]
    RESTORE_ID_FIELD_NUMBER: _ClassVar[int]
    REVOKE_ADMISSION_FIELD_NUMBER: _ClassVar[int]
    REVOKE_GRANT_FIELD_NUMBER: _ClassVar[int]
    REVOKE_KEY_FIELD_NUMBER: _ClassVar[int]
    ROTATE_DOMAIN_KEY_FIELD_NUMBER: _ClassVar[int]
    SCHEDULE_KEY_DESTRUCTION_FIELD_NUMBER: _ClassVar[int]
    SET_KEY_MIN_VERSION_FIELD_NUMBER: _ClassVar[int]
    SET_NOTIFY_RULES_FIELD_NUMBER: _ClassVar[int]
    SET_OFFICERS_FIELD_NUMBER: _ClassVar[int]
    SET_POLICY_FIELD_NUMBER: _ClassVar[int]
    SET_QUOTAS_FIELD_NUMBER: _ClassVar[int]
    accept_restore: AcceptRestore
    add_client_authority: AddClientAuthority
    add_officer_credential: AddOfficerCredential
    add_sink: AddSink
    add_witness: AddWitness
    admit_node: AdmitNode
    approve_request: ApproveRequest
    cancel_domain_key_rotation: CancelDomainKeyRotation
    cancel_key_destruction: CancelKeyDestruction
    cluster_id: str
    comment: str
    create_cluster: CreateCluster
    create_grant: CreateGrant
    deny_request: DenyRequest
    disable_key: DisableKey
    enable_key: EnableKey
    nonce: bytes
    not_after_unix: int
    remove_client_authority: RemoveClientAuthority
    remove_officer_credential: RemoveOfficerCredential
    remove_sink: RemoveSink
    remove_witness: RemoveWitness
    restore_id: str
    revoke_admission: RevokeAdmission
    revoke_grant: RevokeGrant
    revoke_key: RevokeKey
    rotate_domain_key: RotateDomainKey
    schedule_key_destruction: ScheduleKeyDestruction
    set_key_min_version: SetKeyMinVersion
    set_notify_rules: SetNotifyRules
    set_officers: SetOfficers
    set_policy: SetPolicy
    set_quotas: SetQuotas
    def __init__(self, cluster_id: _Optional[str] = ..., nonce: _Optional[bytes] = ..., not_after_unix: _Optional[int] = ..., comment: _Optional[str] = ..., restore_id: _Optional[str] = ..., revoke_key: _Optional[_Union[RevokeKey, _Mapping]] = ..., disable_key: _Optional[_Union[DisableKey, _Mapping]] = ..., enable_key: _Optional[_Union[EnableKey, _Mapping]] = ..., set_policy: _Optional[_Union[SetPolicy, _Mapping]] = ..., approve_request: _Optional[_Union[ApproveRequest, _Mapping]] = ..., deny_request: _Optional[_Union[DenyRequest, _Mapping]] = ..., create_grant: _Optional[_Union[CreateGrant, _Mapping]] = ..., revoke_grant: _Optional[_Union[RevokeGrant, _Mapping]] = ..., set_officers: _Optional[_Union[SetOfficers, _Mapping]] = ..., add_sink: _Optional[_Union[AddSink, _Mapping]] = ..., remove_sink: _Optional[_Union[RemoveSink, _Mapping]] = ..., set_notify_rules: _Optional[_Union[SetNotifyRules, _Mapping]] = ..., admit_node: _Optional[_Union[AdmitNode, _Mapping]] = ..., revoke_admission: _Optional[_Union[RevokeAdmission, _Mapping]] = ..., schedule_key_destruction: _Optional[_Union[ScheduleKeyDestruction, _Mapping]] = ..., cancel_key_destruction: _Optional[_Union[CancelKeyDestruction, _Mapping]] = ..., accept_restore: _Optional[_Union[AcceptRestore, _Mapping]] = ..., rotate_domain_key: _Optional[_Union[RotateDomainKey, _Mapping]] = ..., cancel_domain_key_rotation: _Optional[_Union[CancelDomainKeyRotation, _Mapping]] = ..., set_key_min_version: _Optional[_Union[SetKeyMinVersion, _Mapping]] = ..., add_client_authority: _Optional[_Union[AddClientAuthority, _Mapping]] = ..., remove_client_authority: _Optional[_Union[RemoveClientAuthority, _Mapping]] = ..., add_witness: _Optional[_Union[AddWitness, _Mapping]] = ..., remove_witness: _Optional[_Union[RemoveWitness, _Mapping]] = ..., set_quotas: _Optional[_Union[SetQuotas, _Mapping]] = ..., create_cluster: _Optional[_Union[CreateCluster, _Mapping]] = ..., add_officer_credential: _Optional[_Union[AddOfficerCredential, _Mapping]] = ..., remove_officer_credential: _Optional[_Union[RemoveOfficerCredential, _Mapping]] = ...) -> None: ...

class SubmitCosignatureResponse(_message.Message):
    __slots__ = ["ledger_seq"]
    LEDGER_SEQ_FIELD_NUMBER: _ClassVar[int]
    ledger_seq: int
    def __init__(self, ledger_seq: _Optional[int] = ...) -> None: ...

class SubmitResponse(_message.Message):
    __slots__ = ["grant_id", "ledger_seq", "result", "signers"]
    GRANT_ID_FIELD_NUMBER: _ClassVar[int]
    LEDGER_SEQ_FIELD_NUMBER: _ClassVar[int]
    RESULT_FIELD_NUMBER: _ClassVar[int]
    SIGNERS_FIELD_NUMBER: _ClassVar[int]
    grant_id: str
    ledger_seq: int
    result: str
    signers: _containers.RepeatedScalarFieldContainer[str]
    def __init__(self, result: _Optional[str] = ..., signers: _Optional[_Iterable[str]] = ..., ledger_seq: _Optional[int] = ..., grant_id: _Optional[str] = ...) -> None: ...

class TimeWindow(_message.Message):
    __slots__ = ["end_minute", "start_minute", "weekdays"]
    END_MINUTE_FIELD_NUMBER: _ClassVar[int]
    START_MINUTE_FIELD_NUMBER: _ClassVar[int]
    WEEKDAYS_FIELD_NUMBER: _ClassVar[int]
    end_minute: int
    start_minute: int
    weekdays: _containers.RepeatedScalarFieldContainer[int]
    def __init__(self, weekdays: _Optional[_Iterable[int]] = ..., start_minute: _Optional[int] = ..., end_minute: _Optional[int] = ...) -> None: ...

class WebAuthnAssertion(_message.Message):
    __slots__ = ["authenticator_data", "client_data_json", "credential_id", "signature"]
    AUTHENTICATOR_DATA_FIELD_NUMBER: _ClassVar[int]
    CLIENT_DATA_JSON_FIELD_NUMBER: _ClassVar[int]
    CREDENTIAL_ID_FIELD_NUMBER: _ClassVar[int]
    SIGNATURE_FIELD_NUMBER: _ClassVar[int]
    authenticator_data: bytes
    client_data_json: bytes
    credential_id: bytes
    signature: bytes
    def __init__(self, credential_id: _Optional[bytes] = ..., authenticator_data: _Optional[bytes] = ..., client_data_json: _Optional[bytes] = ..., signature: _Optional[bytes] = ...) -> None: ...

class WebAuthnCredential(_message.Message):
    __slots__ = ["credential_id", "label", "origins", "public_key", "require_user_verification", "rp_id"]
    CREDENTIAL_ID_FIELD_NUMBER: _ClassVar[int]
    LABEL_FIELD_NUMBER: _ClassVar[int]
    ORIGINS_FIELD_NUMBER: _ClassVar[int]
    PUBLIC_KEY_FIELD_NUMBER: _ClassVar[int]
    REQUIRE_USER_VERIFICATION_FIELD_NUMBER: _ClassVar[int]
    RP_ID_FIELD_NUMBER: _ClassVar[int]
    credential_id: bytes
    label: str
    origins: _containers.RepeatedScalarFieldContainer[str]
    public_key: bytes
    require_user_verification: bool
    rp_id: str
    def __init__(self, credential_id: _Optional[bytes] = ..., public_key: _Optional[bytes] = ..., rp_id: _Optional[str] = ..., origins: _Optional[_Iterable[str]] = ..., require_user_verification: bool = ..., label: _Optional[str] = ...) -> None: ...

class Witness(_message.Message):
    __slots__ = ["last", "name", "public_key"]
    LAST_FIELD_NUMBER: _ClassVar[int]
    NAME_FIELD_NUMBER: _ClassVar[int]
    PUBLIC_KEY_FIELD_NUMBER: _ClassVar[int]
    last: Cosignature
    name: str
    public_key: bytes
    def __init__(self, name: _Optional[str] = ..., public_key: _Optional[bytes] = ..., last: _Optional[_Union[Cosignature, _Mapping]] = ...) -> None: ...

class Action(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = []

class KeyTransportHash(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = []

class AdmissionState(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = []

class SinkType(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = []

class RequestState(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = []
