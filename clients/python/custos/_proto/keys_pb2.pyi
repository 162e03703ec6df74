from . import common_pb2 as _common_pb2
from google.protobuf.internal import containers as _containers
from google.protobuf.internal import enum_type_wrapper as _enum_type_wrapper
from google.protobuf import descriptor as _descriptor
from google.protobuf import message as _message
from typing import ClassVar as _ClassVar, Iterable as _Iterable, Mapping as _Mapping, Optional as _Optional, Union as _Union

DESCRIPTOR: _descriptor.FileDescriptor
IMPORT_WRAPPING_ALGORITHM_UNSPECIFIED: ImportWrappingAlgorithm
KEY_ORIGIN_EXTERNAL: KeyOrigin
KEY_ORIGIN_HSM: KeyOrigin
KEY_ORIGIN_UNSPECIFIED: KeyOrigin
KEY_STATE_DESTROYED: KeyState
KEY_STATE_DISABLED: KeyState
KEY_STATE_ENABLED: KeyState
KEY_STATE_PENDING_DESTRUCTION: KeyState
KEY_STATE_REVOKED: KeyState
KEY_STATE_UNSPECIFIED: KeyState
RSAES_OAEP_SHA_1: ImportWrappingAlgorithm
RSAES_OAEP_SHA_256: ImportWrappingAlgorithm
RSA_AES_KEY_WRAP_SHA_1: ImportWrappingAlgorithm
RSA_AES_KEY_WRAP_SHA_256: ImportWrappingAlgorithm

class BatchDecryptRequest(_message.Message):
    __slots__ = ["requests"]
    REQUESTS_FIELD_NUMBER: _ClassVar[int]
    requests: _containers.RepeatedCompositeFieldContainer[DecryptRequest]
    def __init__(self, requests: _Optional[_Iterable[_Union[DecryptRequest, _Mapping]]] = ...) -> None: ...

class BatchDecryptResponse(_message.Message):
    __slots__ = ["results"]
    RESULTS_FIELD_NUMBER: _ClassVar[int]
    results: _containers.RepeatedCompositeFieldContainer[BatchDecryptResult]
    def __init__(self, results: _Optional[_Iterable[_Union[BatchDecryptResult, _Mapping]]] = ...) -> None: ...

class BatchDecryptResult(_message.Message):
    __slots__ = ["error", "response"]
    ERROR_FIELD_NUMBER: _ClassVar[int]
    RESPONSE_FIELD_NUMBER: _ClassVar[int]
    error: ItemError
    response: DecryptResponse
    def __init__(self, response: _Optional[_Union[DecryptResponse, _Mapping]] = ..., error: _Optional[_Union[ItemError, _Mapping]] = ...) -> None: ...

class CreateKeyRequest(_message.Message):
    __slots__ = ["description", "name"]
    DESCRIPTION_FIELD_NUMBER: _ClassVar[int]
    NAME_FIELD_NUMBER: _ClassVar[int]
    description: str
    name: str
    def __init__(self, name: _Optional[str] = ..., description: _Optional[str] = ...) -> None: ...

class DecryptRequest(_message.Message):
    __slots__ = ["ciphertext", "encryption_context", "justification", "request_signature"]
    class EncryptionContextEntry(_message.Message):
        __slots__ = ["key", "value"]
        KEY_FIELD_NUMBER: _ClassVar[int]
        VALUE_FIELD_NUMBER: _ClassVar[int]
        key: str
        value: str
        def __init__(self, key: _Optional[str] = ..., value: _Optional[str] = ...) -> None: ...
    CIPHERTEXT_FIELD_NUMBER: _ClassVar[int]
    ENCRYPTION_CONTEXT_FIELD_NUMBER: _ClassVar[int]
    JUSTIFICATION_FIELD_NUMBER: _ClassVar[int]
    REQUEST_SIGNATURE_FIELD_NUMBER: _ClassVar[int]
    ciphertext: bytes
    encryption_context: _containers.ScalarMap[str, str]
    justification: _common_pb2.Justification
    request_signature: _common_pb2.RequestSignature
    def __init__(self, ciphertext: _Optional[bytes] = ..., encryption_context: _Optional[_Mapping[str, str]] = ..., justification: _Optional[_Union[_common_pb2.Justification, _Mapping]] = ..., request_signature: _Optional[_Union[_common_pb2.RequestSignature, _Mapping]] = ...) -> None: ...

class DecryptResponse(_message.Message):
    __slots__ = ["decision_seq", "key", "key_version", "plaintext", "request_id"]
    DECISION_SEQ_FIELD_NUMBER: _ClassVar[int]
    KEY_FIELD_NUMBER: _ClassVar[int]
    KEY_VERSION_FIELD_NUMBER: _ClassVar[int]
    PLAINTEXT_FIELD_NUMBER: _ClassVar[int]
    REQUEST_ID_FIELD_NUMBER: _ClassVar[int]
    decision_seq: int
    key: str
    key_version: int
    plaintext: bytes
    request_id: str
    def __init__(self, key: _Optional[str] = ..., key_version: _Optional[int] = ..., plaintext: _Optional[bytes] = ..., decision_seq: _Optional[int] = ..., request_id: _Optional[str] = ...) -> None: ...

class EncryptRequest(_message.Message):
    __slots__ = ["encryption_context", "key", "plaintext"]
    class EncryptionContextEntry(_message.Message):
        __slots__ = ["key", "value"]
        KEY_FIELD_NUMBER: _ClassVar[int]
        VALUE_FIELD_NUMBER: _ClassVar[int]
        key: str
        value: str
        def __init__(self, key: _Optional[str] = ..., value: _Optional[str] = ...) -> None: ...
    ENCRYPTION_CONTEXT_FIELD_NUMBER: _ClassVar[int]
    KEY_FIELD_NUMBER: _ClassVar[int]
    PLAINTEXT_FIELD_NUMBER: _ClassVar[int]
    encryption_context: _containers.ScalarMap[str, str]
    key: str
    plaintext: bytes
    def __init__(self, key: _Optional[str] = ..., plaintext: _Optional[bytes] = ..., encryption_context: _Optional[_Mapping[str, str]] = ...) -> None: ...

class EncryptResponse(_message.Message):
    __slots__ = ["ciphertext", "key", "key_version"]
    CIPHERTEXT_FIELD_NUMBER: _ClassVar[int]
    KEY_FIELD_NUMBER: _ClassVar[int]
    KEY_VERSION_FIELD_NUMBER: _ClassVar[int]
    ciphertext: bytes
    key: str
    key_version: int
    def __init__(self, key: _Optional[str] = ..., key_version: _Optional[int] = ..., ciphertext: _Optional[bytes] = ...) -> None: ...

class GenerateDataKeyRequest(_message.Message):
    __slots__ = ["encryption_context", "key"]
    class EncryptionContextEntry(_message.Message):
        __slots__ = ["key", "value"]
        KEY_FIELD_NUMBER: _ClassVar[int]
        VALUE_FIELD_NUMBER: _ClassVar[int]
        key: str
        value: str
        def __init__(self, key: _Optional[str] = ..., value: _Optional[str] = ...) -> None: ...
    ENCRYPTION_CONTEXT_FIELD_NUMBER: _ClassVar[int]
    KEY_FIELD_NUMBER: _ClassVar[int]
    encryption_context: _containers.ScalarMap[str, str]
    key: str
    def __init__(self, key: _Optional[str] = ..., encryption_context: _Optional[_Mapping[str, str]] = ...) -> None: ...

class GenerateDataKeyResponse(_message.Message):
    __slots__ = ["key", "key_version", "plaintext", "wrapped_data_key"]
    KEY_FIELD_NUMBER: _ClassVar[int]
    KEY_VERSION_FIELD_NUMBER: _ClassVar[int]
    PLAINTEXT_FIELD_NUMBER: _ClassVar[int]
    WRAPPED_DATA_KEY_FIELD_NUMBER: _ClassVar[int]
    key: str
    key_version: int
    plaintext: bytes
    wrapped_data_key: bytes
    def __init__(self, key: _Optional[str] = ..., key_version: _Optional[int] = ..., plaintext: _Optional[bytes] = ..., wrapped_data_key: _Optional[bytes] = ...) -> None: ...

class GetKeyRequest(_message.Message):
    __slots__ = ["name"]
    NAME_FIELD_NUMBER: _ClassVar[int]
    name: str
    def __init__(self, name: _Optional[str] = ...) -> None: ...

class GetParametersForImportRequest(_message.Message):
    __slots__ = ["algorithm", "key"]
    ALGORITHM_FIELD_NUMBER: _ClassVar[int]
    KEY_FIELD_NUMBER: _ClassVar[int]
    algorithm: ImportWrappingAlgorithm
    key: str
    def __init__(self, key: _Optional[str] = ..., algorithm: _Optional[_Union[ImportWrappingAlgorithm, str]] = ...) -> None: ...

class ImportKeyMaterialRequest(_message.Message):
    __slots__ = ["description", "encrypted_key_material", "import_token", "key"]
    DESCRIPTION_FIELD_NUMBER: _ClassVar[int]
    ENCRYPTED_KEY_MATERIAL_FIELD_NUMBER: _ClassVar[int]
    IMPORT_TOKEN_FIELD_NUMBER: _ClassVar[int]
    KEY_FIELD_NUMBER: _ClassVar[int]
    description: str
    encrypted_key_material: bytes
    import_token: str
    key: str
    def __init__(self, key: _Optional[str] = ..., import_token: _Optional[str] = ..., encrypted_key_material: _Optional[bytes] = ..., description: _Optional[str] = ...) -> None: ...

class ImportParameters(_message.Message):
    __slots__ = ["algorithm", "expire_time_unix_nano", "import_token", "key", "node_id", "public_key"]
    ALGORITHM_FIELD_NUMBER: _ClassVar[int]
    EXPIRE_TIME_UNIX_NANO_FIELD_NUMBER: _ClassVar[int]
    IMPORT_TOKEN_FIELD_NUMBER: _ClassVar[int]
    KEY_FIELD_NUMBER: _ClassVar[int]
    NODE_ID_FIELD_NUMBER: _ClassVar[int]
    PUBLIC_KEY_FIELD_NUMBER: _ClassVar[int]
    algorithm: ImportWrappingAlgorithm
    expire_time_unix_nano: int
    import_token: str
    key: str
    node_id: str
    public_key: bytes
    def __init__(self, import_token: _Optional[str] = ..., public_key: _Optional[bytes] = ..., algorithm: _Optional[_Union[ImportWrappingAlgorithm, str]] = ..., expire_time_unix_nano: _Optional[int] = ..., node_id: _Optional[str] = ..., key: _Optional[str] = ...) -> None: ...

class ItemError(_message.Message):
    __slots__ = ["code", "decision_seq", "message", "request_id"]
    CODE_FIELD_NUMBER: _ClassVar[int]
    DECISION_SEQ_FIELD_NUMBER: _ClassVar[int]
    MESSAGE_FIELD_NUMBER: _ClassVar[int]
    REQUEST_ID_FIELD_NUMBER: _ClassVar[int]
    code: int
    decision_seq: int
    message: str
    request_id: str
    def __init__(self, code: _Optional[int] = ..., message: _Optional[str] = ..., decision_seq: _Optional[int] = ..., request_id: _Optional[str] = ...) -> None: ...

class Key(_message.Message):
    __slots__ = ["algorithm", "create_time_unix_nano", "description", "min_decryption_version", "name", "primary_version", "state", "update_time_unix_nano", "versions"]
    ALGORITHM_FIELD_NUMBER: _ClassVar[int]
    CREATE_TIME_UNIX_NANO_FIELD_NUMBER: _ClassVar[int]
    DESCRIPTION_FIELD_NUMBER: _ClassVar[int]
    MIN_DECRYPTION_VERSION_FIELD_NUMBER: _ClassVar[int]
    NAME_FIELD_NUMBER: _ClassVar[int]
    PRIMARY_VERSION_FIELD_NUMBER: _ClassVar[int]
    STATE_FIELD_NUMBER: _ClassVar[int]
    UPDATE_TIME_UNIX_NANO_FIELD_NUMBER: _ClassVar[int]
    VERSIONS_FIELD_NUMBER: _ClassVar[int]
    algorithm: str
    create_time_unix_nano: int
    description: str
    min_decryption_version: int
    name: str
    primary_version: int
    state: KeyState
    update_time_unix_nano: int
    versions: _containers.RepeatedCompositeFieldContainer[KeyVersion]
    def __init__(self, name: _Optional[str] = ..., description: _Optional[str] = ..., state: _Optional[_Union[KeyState, str]] = ..., primary_version: _Optional[int] = ..., min_decryption_version: _Optional[int] = ..., versions: _Optional[_Iterable[_Union[KeyVersion, _Mapping]]] = ..., algorithm: _Optional[str] = ..., create_time_unix_nano: _Optional[int] = ..., update_time_unix_nano: _Optional[int] = ...) -> None: ...

class KeyVersion(_message.Message):
    __slots__ = ["create_time_unix_nano", "destroy_time_unix_nano", "destroyed", "key_check_value", "origin", "version"]
    CREATE_TIME_UNIX_NANO_FIELD_NUMBER: _ClassVar[int]
    DESTROYED_FIELD_NUMBER: _ClassVar[int]
    DESTROY_TIME_UNIX_NANO_FIELD_NUMBER: _ClassVar[int]
    KEY_CHECK_VALUE_FIELD_NUMBER: _ClassVar[int]
    ORIGIN_FIELD_NUMBER: _ClassVar[int]
    VERSION_FIELD_NUMBER: _ClassVar[int]
    create_time_unix_nano: int
    destroy_time_unix_nano: int
    destroyed: bool
    key_check_value: bytes
    origin: KeyOrigin
    version: int
    def __init__(self, version: _Optional[int] = ..., create_time_unix_nano: _Optional[int] = ..., origin: _Optional[_Union[KeyOrigin, str]] = ..., key_check_value: _Optional[bytes] = ..., destroy_time_unix_nano: _Optional[int] = ..., destroyed: bool = ...) -> None: ...

class ListKeysRequest(_message.Message):
    __slots__ = ["page_size", "page_token"]
    PAGE_SIZE_FIELD_NUMBER: _ClassVar[int]
    PAGE_TOKEN_FIELD_NUMBER: _ClassVar[int]
    page_size: int
    page_token: str
    def __init__(self, page_size: _Optional[int] = ..., page_token: _Optional[str] = ...) -> None: ...

class ListKeysResponse(_message.Message):
    __slots__ = ["keys", "next_page_token"]
    KEYS_FIELD_NUMBER: _ClassVar[int]
    NEXT_PAGE_TOKEN_FIELD_NUMBER: _ClassVar[int]
    keys: _containers.RepeatedCompositeFieldContainer[Key]
    next_page_token: str
    def __init__(self, keys: _Optional[_Iterable[_Union[Key, _Mapping]]] = ..., next_page_token: _Optional[str] = ...) -> None: ...

class ReEncryptRequest(_message.Message):
    __slots__ = ["ciphertext", "encryption_context", "justification", "request_signature"]
    class EncryptionContextEntry(_message.Message):
        __slots__ = ["key", "value"]
        KEY_FIELD_NUMBER: _ClassVar[int]
        VALUE_FIELD_NUMBER: _ClassVar[int]
        key: str
        value: str
        def __init__(self, key: _Optional[str] = ..., value: _Optional[str] = ...) -> None: ...
    CIPHERTEXT_FIELD_NUMBER: _ClassVar[int]
    ENCRYPTION_CONTEXT_FIELD_NUMBER: _ClassVar[int]
    JUSTIFICATION_FIELD_NUMBER: _ClassVar[int]
    REQUEST_SIGNATURE_FIELD_NUMBER: _ClassVar[int]
    ciphertext: bytes
    encryption_context: _containers.ScalarMap[str, str]
    justification: _common_pb2.Justification
    request_signature: _common_pb2.RequestSignature
    def __init__(self, ciphertext: _Optional[bytes] = ..., encryption_context: _Optional[_Mapping[str, str]] = ..., justification: _Optional[_Union[_common_pb2.Justification, _Mapping]] = ..., request_signature: _Optional[_Union[_common_pb2.RequestSignature, _Mapping]] = ...) -> None: ...

class ReEncryptResponse(_message.Message):
    __slots__ = ["ciphertext", "decision_seq", "key", "key_version", "request_id", "source_key_version"]
    CIPHERTEXT_FIELD_NUMBER: _ClassVar[int]
    DECISION_SEQ_FIELD_NUMBER: _ClassVar[int]
    KEY_FIELD_NUMBER: _ClassVar[int]
    KEY_VERSION_FIELD_NUMBER: _ClassVar[int]
    REQUEST_ID_FIELD_NUMBER: _ClassVar[int]
    SOURCE_KEY_VERSION_FIELD_NUMBER: _ClassVar[int]
    ciphertext: bytes
    decision_seq: int
    key: str
    key_version: int
    request_id: str
    source_key_version: int
    def __init__(self, key: _Optional[str] = ..., key_version: _Optional[int] = ..., source_key_version: _Optional[int] = ..., ciphertext: _Optional[bytes] = ..., decision_seq: _Optional[int] = ..., request_id: _Optional[str] = ...) -> None: ...

class RotateKeyRequest(_message.Message):
    __slots__ = ["name"]
    NAME_FIELD_NUMBER: _ClassVar[int]
    name: str
    def __init__(self, name: _Optional[str] = ...) -> None: ...

class SetKeyStateRequest(_message.Message):
    __slots__ = ["name", "state"]
    NAME_FIELD_NUMBER: _ClassVar[int]
    STATE_FIELD_NUMBER: _ClassVar[int]
    name: str
    state: KeyState
    def __init__(self, name: _Optional[str] = ..., state: _Optional[_Union[KeyState, str]] = ...) -> None: ...

class SetMinDecryptionVersionRequest(_message.Message):
    __slots__ = ["min_decryption_version", "name"]
    MIN_DECRYPTION_VERSION_FIELD_NUMBER: _ClassVar[int]
    NAME_FIELD_NUMBER: _ClassVar[int]
    min_decryption_version: int
    name: str
    def __init__(self, name: _Optional[str] = ..., min_decryption_version: _Optional[int] = ...) -> None: ...

class KeyOrigin(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = []

class ImportWrappingAlgorithm(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = []

class KeyState(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = []
