from google.protobuf.internal import enum_type_wrapper as _enum_type_wrapper
from google.protobuf import descriptor as _descriptor
from google.protobuf import message as _message
from typing import ClassVar as _ClassVar, Optional as _Optional, Union as _Union

DESCRIPTOR: _descriptor.FileDescriptor
OPERATION_ADMISSION: Operation
OPERATION_CHECKPOINT: Operation
OPERATION_CREATE_KEY: Operation
OPERATION_DECRYPT: Operation
OPERATION_DECRYPT_DATA_KEY: Operation
OPERATION_DESTROY_KEY: Operation
OPERATION_DISABLE_KEY: Operation
OPERATION_DOMAIN_KEY_ROTATION: Operation
OPERATION_GENESIS: Operation
OPERATION_GOVERNANCE: Operation
OPERATION_HSM_OBJECT_REJECTED: Operation
OPERATION_MEMBERSHIP: Operation
OPERATION_NODE_KEY: Operation
OPERATION_REENCRYPT: Operation
OPERATION_RELEASE_BLOCKED: Operation
OPERATION_RESTORE: Operation
OPERATION_ROTATE_KEY: Operation
OPERATION_SET_MIN_DECRYPTION_VERSION: Operation
OPERATION_STATE_MACHINE_UPGRADE: Operation
OPERATION_THROTTLED: Operation
OPERATION_UNSPECIFIED: Operation
OPERATION_WITNESS_COSIGNATURE: Operation
OUTCOME_ALLOW: Outcome
OUTCOME_DENY: Outcome
OUTCOME_PENDING: Outcome
OUTCOME_UNSPECIFIED: Outcome
REASON_CUSTOMER_INITIATED: Reason
REASON_CUSTOMER_WORKFLOW: Reason
REASON_EMERGENCY: Reason
REASON_PROVIDER_SERVICE: Reason
REASON_PROVIDER_SUPPORT: Reason
REASON_THIRD_PARTY_DATA_REQUEST: Reason
REASON_UNSPECIFIED: Reason

class Justification(_message.Message):
    __slots__ = ["reason", "text", "ticket"]
    REASON_FIELD_NUMBER: _ClassVar[int]
    TEXT_FIELD_NUMBER: _ClassVar[int]
    TICKET_FIELD_NUMBER: _ClassVar[int]
    reason: Reason
    text: str
    ticket: str
    def __init__(self, reason: _Optional[_Union[Reason, str]] = ..., text: _Optional[str] = ..., ticket: _Optional[str] = ...) -> None: ...

class RequestSignature(_message.Message):
    __slots__ = ["nonce", "signature", "time_unix_nano"]
    NONCE_FIELD_NUMBER: _ClassVar[int]
    SIGNATURE_FIELD_NUMBER: _ClassVar[int]
    TIME_UNIX_NANO_FIELD_NUMBER: _ClassVar[int]
    nonce: bytes
    signature: bytes
    time_unix_nano: int
    def __init__(self, nonce: _Optional[bytes] = ..., time_unix_nano: _Optional[int] = ..., signature: _Optional[bytes] = ...) -> None: ...

class Reason(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = []

class Operation(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = []

class Outcome(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = []
