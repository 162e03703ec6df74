from . import common_pb2 as _common_pb2
from . import ledger_pb2 as _ledger_pb2
from google.protobuf.internal import containers as _containers
from google.protobuf import descriptor as _descriptor
from google.protobuf import message as _message
from typing import ClassVar as _ClassVar, Iterable as _Iterable, Mapping as _Mapping, Optional as _Optional, Union as _Union

DESCRIPTOR: _descriptor.FileDescriptor

class DecisionFilter(_message.Message):
    __slots__ = ["key", "notify_only", "operations", "outcomes", "principal", "reasons", "since_unix_nano", "until_unix_nano"]
    KEY_FIELD_NUMBER: _ClassVar[int]
    NOTIFY_ONLY_FIELD_NUMBER: _ClassVar[int]
    OPERATIONS_FIELD_NUMBER: _ClassVar[int]
    OUTCOMES_FIELD_NUMBER: _ClassVar[int]
    PRINCIPAL_FIELD_NUMBER: _ClassVar[int]
    REASONS_FIELD_NUMBER: _ClassVar[int]
    SINCE_UNIX_NANO_FIELD_NUMBER: _ClassVar[int]
    UNTIL_UNIX_NANO_FIELD_NUMBER: _ClassVar[int]
    key: str
    notify_only: bool
    operations: _containers.RepeatedScalarFieldContainer[_common_pb2.Operation]
    outcomes: _containers.RepeatedScalarFieldContainer[_common_pb2.Outcome]
    principal: str
    reasons: _containers.RepeatedScalarFieldContainer[_common_pb2.Reason]
    since_unix_nano: int
    until_unix_nano: int
    def __init__(self, key: _Optional[str] = ..., principal: _Optional[str] = ..., reasons: _Optional[_Iterable[_Union[_common_pb2.Reason, str]]] = ..., outcomes: _Optional[_Iterable[_Union[_common_pb2.Outcome, str]]] = ..., operations: _Optional[_Iterable[_Union[_common_pb2.Operation, str]]] = ..., since_unix_nano: _Optional[int] = ..., until_unix_nano: _Optional[int] = ..., notify_only: bool = ...) -> None: ...

class ExportHeader(_message.Message):
    __slots__ = ["cluster_id", "first_seq", "public_keys", "time_unix_nano"]
    CLUSTER_ID_FIELD_NUMBER: _ClassVar[int]
    FIRST_SEQ_FIELD_NUMBER: _ClassVar[int]
    PUBLIC_KEYS_FIELD_NUMBER: _ClassVar[int]
    TIME_UNIX_NANO_FIELD_NUMBER: _ClassVar[int]
    cluster_id: str
    first_seq: int
    public_keys: _containers.RepeatedScalarFieldContainer[bytes]
    time_unix_nano: int
    def __init__(self, cluster_id: _Optional[str] = ..., first_seq: _Optional[int] = ..., public_keys: _Optional[_Iterable[bytes]] = ..., time_unix_nano: _Optional[int] = ...) -> None: ...

class ExportItem(_message.Message):
    __slots__ = ["header", "record", "trailer"]
    HEADER_FIELD_NUMBER: _ClassVar[int]
    RECORD_FIELD_NUMBER: _ClassVar[int]
    TRAILER_FIELD_NUMBER: _ClassVar[int]
    header: ExportHeader
    record: bytes
    trailer: _ledger_pb2.Checkpoint
    def __init__(self, header: _Optional[_Union[ExportHeader, _Mapping]] = ..., record: _Optional[bytes] = ..., trailer: _Optional[_Union[_ledger_pb2.Checkpoint, _Mapping]] = ...) -> None: ...

class ExportRequest(_message.Message):
    __slots__ = ["from_seq"]
    FROM_SEQ_FIELD_NUMBER: _ClassVar[int]
    from_seq: int
    def __init__(self, from_seq: _Optional[int] = ...) -> None: ...

class GetCheckpointRequest(_message.Message):
    __slots__ = []
    def __init__(self) -> None: ...

class GetCheckpointResponse(_message.Message):
    __slots__ = ["checkpoint", "cluster_id", "head_seq", "public_keys", "record_seq"]
    CHECKPOINT_FIELD_NUMBER: _ClassVar[int]
    CLUSTER_ID_FIELD_NUMBER: _ClassVar[int]
    HEAD_SEQ_FIELD_NUMBER: _ClassVar[int]
    PUBLIC_KEYS_FIELD_NUMBER: _ClassVar[int]
    RECORD_SEQ_FIELD_NUMBER: _ClassVar[int]
    checkpoint: _ledger_pb2.Checkpoint
    cluster_id: str
    head_seq: int
    public_keys: _containers.RepeatedScalarFieldContainer[bytes]
    record_seq: int
    def __init__(self, checkpoint: _Optional[_Union[_ledger_pb2.Checkpoint, _Mapping]] = ..., record_seq: _Optional[int] = ..., public_keys: _Optional[_Iterable[bytes]] = ..., cluster_id: _Optional[str] = ..., head_seq: _Optional[int] = ...) -> None: ...

class ListDecisionsRequest(_message.Message):
    __slots__ = ["filter", "from_seq", "page_size"]
    FILTER_FIELD_NUMBER: _ClassVar[int]
    FROM_SEQ_FIELD_NUMBER: _ClassVar[int]
    PAGE_SIZE_FIELD_NUMBER: _ClassVar[int]
    filter: DecisionFilter
    from_seq: int
    page_size: int
    def __init__(self, filter: _Optional[_Union[DecisionFilter, _Mapping]] = ..., from_seq: _Optional[int] = ..., page_size: _Optional[int] = ...) -> None: ...

class ListDecisionsResponse(_message.Message):
    __slots__ = ["head_seq", "next_seq", "records"]
    HEAD_SEQ_FIELD_NUMBER: _ClassVar[int]
    NEXT_SEQ_FIELD_NUMBER: _ClassVar[int]
    RECORDS_FIELD_NUMBER: _ClassVar[int]
    head_seq: int
    next_seq: int
    records: _containers.RepeatedCompositeFieldContainer[_ledger_pb2.DecisionRecord]
    def __init__(self, records: _Optional[_Iterable[_Union[_ledger_pb2.DecisionRecord, _Mapping]]] = ..., next_seq: _Optional[int] = ..., head_seq: _Optional[int] = ...) -> None: ...

class WatchDecisionsRequest(_message.Message):
    __slots__ = ["filter", "from_seq"]
    FILTER_FIELD_NUMBER: _ClassVar[int]
    FROM_SEQ_FIELD_NUMBER: _ClassVar[int]
    filter: DecisionFilter
    from_seq: int
    def __init__(self, from_seq: _Optional[int] = ..., filter: _Optional[_Union[DecisionFilter, _Mapping]] = ...) -> None: ...
