from . import governance_pb2 as _governance_pb2
from google.protobuf.internal import containers as _containers
from google.protobuf import descriptor as _descriptor
from google.protobuf import message as _message
from typing import ClassVar as _ClassVar, Iterable as _Iterable, Mapping as _Mapping, Optional as _Optional, Union as _Union

DESCRIPTOR: _descriptor.FileDescriptor

class AddVoterRequest(_message.Message):
    __slots__ = ["id", "raft_addr"]
    ID_FIELD_NUMBER: _ClassVar[int]
    RAFT_ADDR_FIELD_NUMBER: _ClassVar[int]
    id: str
    raft_addr: str
    def __init__(self, id: _Optional[str] = ..., raft_addr: _Optional[str] = ...) -> None: ...

class ClusterStatus(_message.Message):
    __slots__ = ["admissions", "applied_index", "cluster_id", "commit_index", "domain_key_epoch", "has_domain_key", "hsm_detail", "hsm_healthy", "last_log_index", "leader_id", "leader_raft_addr", "ledger_seq", "node_id", "profile", "raft_state", "restore", "rotation", "servers", "term"]
    ADMISSIONS_FIELD_NUMBER: _ClassVar[int]
    APPLIED_INDEX_FIELD_NUMBER: _ClassVar[int]
    CLUSTER_ID_FIELD_NUMBER: _ClassVar[int]
    COMMIT_INDEX_FIELD_NUMBER: _ClassVar[int]
    DOMAIN_KEY_EPOCH_FIELD_NUMBER: _ClassVar[int]
    HAS_DOMAIN_KEY_FIELD_NUMBER: _ClassVar[int]
    HSM_DETAIL_FIELD_NUMBER: _ClassVar[int]
    HSM_HEALTHY_FIELD_NUMBER: _ClassVar[int]
    LAST_LOG_INDEX_FIELD_NUMBER: _ClassVar[int]
    LEADER_ID_FIELD_NUMBER: _ClassVar[int]
    LEADER_RAFT_ADDR_FIELD_NUMBER: _ClassVar[int]
    LEDGER_SEQ_FIELD_NUMBER: _ClassVar[int]
    NODE_ID_FIELD_NUMBER: _ClassVar[int]
    PROFILE_FIELD_NUMBER: _ClassVar[int]
    RAFT_STATE_FIELD_NUMBER: _ClassVar[int]
    RESTORE_FIELD_NUMBER: _ClassVar[int]
    ROTATION_FIELD_NUMBER: _ClassVar[int]
    SERVERS_FIELD_NUMBER: _ClassVar[int]
    TERM_FIELD_NUMBER: _ClassVar[int]
    admissions: _containers.RepeatedCompositeFieldContainer[_governance_pb2.NodeAdmission]
    applied_index: int
    cluster_id: str
    commit_index: int
    domain_key_epoch: int
    has_domain_key: bool
    hsm_detail: str
    hsm_healthy: bool
    last_log_index: int
    leader_id: str
    leader_raft_addr: str
    ledger_seq: int
    node_id: str
    profile: str
    raft_state: str
    restore: _governance_pb2.ClusterRestore
    rotation: _governance_pb2.DomainKeyRotation
    servers: _containers.RepeatedCompositeFieldContainer[Server]
    term: int
    def __init__(self, cluster_id: _Optional[str] = ..., node_id: _Optional[str] = ..., raft_state: _Optional[str] = ..., leader_id: _Optional[str] = ..., leader_raft_addr: _Optional[str] = ..., term: _Optional[int] = ..., commit_index: _Optional[int] = ..., applied_index: _Optional[int] = ..., last_log_index: _Optional[int] = ..., servers: _Optional[_Iterable[_Union[Server, _Mapping]]] = ..., hsm_healthy: bool = ..., hsm_detail: _Optional[str] = ..., has_domain_key: bool = ..., ledger_seq: _Optional[int] = ..., admissions: _Optional[_Iterable[_Union[_governance_pb2.NodeAdmission, _Mapping]]] = ..., profile: _Optional[str] = ..., restore: _Optional[_Union[_governance_pb2.ClusterRestore, _Mapping]] = ..., domain_key_epoch: _Optional[int] = ..., rotation: _Optional[_Union[_governance_pb2.DomainKeyRotation, _Mapping]] = ...) -> None: ...

class ClusterStatusRequest(_message.Message):
    __slots__ = []
    def __init__(self) -> None: ...

class RemoveServerRequest(_message.Message):
    __slots__ = ["id"]
    ID_FIELD_NUMBER: _ClassVar[int]
    id: str
    def __init__(self, id: _Optional[str] = ...) -> None: ...

class SaveSnapshotRequest(_message.Message):
    __slots__ = []
    def __init__(self) -> None: ...

class Server(_message.Message):
    __slots__ = ["id", "leader", "raft_addr", "suffrage"]
    ID_FIELD_NUMBER: _ClassVar[int]
    LEADER_FIELD_NUMBER: _ClassVar[int]
    RAFT_ADDR_FIELD_NUMBER: _ClassVar[int]
    SUFFRAGE_FIELD_NUMBER: _ClassVar[int]
    id: str
    leader: bool
    raft_addr: str
    suffrage: str
    def __init__(self, id: _Optional[str] = ..., raft_addr: _Optional[str] = ..., suffrage: _Optional[str] = ..., leader: bool = ...) -> None: ...

class SnapshotChunk(_message.Message):
    __slots__ = ["data"]
    DATA_FIELD_NUMBER: _ClassVar[int]
    data: bytes
    def __init__(self, data: _Optional[bytes] = ...) -> None: ...

class TransferLeadershipRequest(_message.Message):
    __slots__ = ["id"]
    ID_FIELD_NUMBER: _ClassVar[int]
    id: str
    def __init__(self, id: _Optional[str] = ...) -> None: ...
