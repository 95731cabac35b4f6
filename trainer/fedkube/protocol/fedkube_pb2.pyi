from google.protobuf.internal import containers as _containers
from google.protobuf import descriptor as _descriptor
from google.protobuf import message as _message
from collections.abc import Iterable as _Iterable, Mapping as _Mapping
from typing import ClassVar as _ClassVar, Optional as _Optional, Union as _Union

DESCRIPTOR: _descriptor.FileDescriptor

class JoinRequest(_message.Message):
    __slots__ = ("partition",)
    PARTITION_FIELD_NUMBER: _ClassVar[int]
    partition: int
    def __init__(self, partition: _Optional[int] = ...) -> None: ...

class JoinReply(_message.Message):
    __slots__ = ("job", "session", "rounds")
    JOB_FIELD_NUMBER: _ClassVar[int]
    SESSION_FIELD_NUMBER: _ClassVar[int]
    ROUNDS_FIELD_NUMBER: _ClassVar[int]
    job: str
    session: str
    rounds: int
    def __init__(self, job: _Optional[str] = ..., session: _Optional[str] = ..., rounds: _Optional[int] = ...) -> None: ...

class TaskRequest(_message.Message):
    __slots__ = ("partition", "session")
    PARTITION_FIELD_NUMBER: _ClassVar[int]
    SESSION_FIELD_NUMBER: _ClassVar[int]
    partition: int
    session: str
    def __init__(self, partition: _Optional[int] = ..., session: _Optional[str] = ...) -> None: ...

class TensorHeader(_message.Message):
    __slots__ = ("name", "dtype", "shape", "nbytes")
    NAME_FIELD_NUMBER: _ClassVar[int]
    DTYPE_FIELD_NUMBER: _ClassVar[int]
    SHAPE_FIELD_NUMBER: _ClassVar[int]
    NBYTES_FIELD_NUMBER: _ClassVar[int]
    name: str
    dtype: str
    shape: _containers.RepeatedScalarFieldContainer[int]
    nbytes: int
    def __init__(self, name: _Optional[str] = ..., dtype: _Optional[str] = ..., shape: _Optional[_Iterable[int]] = ..., nbytes: _Optional[int] = ...) -> None: ...

class RoundInfo(_message.Message):
    __slots__ = ("round", "rounds", "ticket", "config_json", "tensors", "inline")
    ROUND_FIELD_NUMBER: _ClassVar[int]
    ROUNDS_FIELD_NUMBER: _ClassVar[int]
    TICKET_FIELD_NUMBER: _ClassVar[int]
    CONFIG_JSON_FIELD_NUMBER: _ClassVar[int]
    TENSORS_FIELD_NUMBER: _ClassVar[int]
    INLINE_FIELD_NUMBER: _ClassVar[int]
    round: int
    rounds: int
    ticket: str
    config_json: str
    tensors: _containers.RepeatedCompositeFieldContainer[TensorHeader]
    inline: bytes
    def __init__(self, round: _Optional[int] = ..., rounds: _Optional[int] = ..., ticket: _Optional[str] = ..., config_json: _Optional[str] = ..., tensors: _Optional[_Iterable[_Union[TensorHeader, _Mapping]]] = ..., inline: _Optional[bytes] = ...) -> None: ...

class UpdateInfo(_message.Message):
    __slots__ = ("partition", "round", "ticket", "num_examples", "metrics", "tensors", "inline")
    class MetricsEntry(_message.Message):
        __slots__ = ("key", "value")
        KEY_FIELD_NUMBER: _ClassVar[int]
        VALUE_FIELD_NUMBER: _ClassVar[int]
        key: str
        value: float
        def __init__(self, key: _Optional[str] = ..., value: _Optional[float] = ...) -> None: ...
    PARTITION_FIELD_NUMBER: _ClassVar[int]
    ROUND_FIELD_NUMBER: _ClassVar[int]
    TICKET_FIELD_NUMBER: _ClassVar[int]
    NUM_EXAMPLES_FIELD_NUMBER: _ClassVar[int]
    METRICS_FIELD_NUMBER: _ClassVar[int]
    TENSORS_FIELD_NUMBER: _ClassVar[int]
    INLINE_FIELD_NUMBER: _ClassVar[int]
    partition: int
    round: int
    ticket: str
    num_examples: int
    metrics: _containers.ScalarMap[str, float]
    tensors: _containers.RepeatedCompositeFieldContainer[TensorHeader]
    inline: bytes
    def __init__(self, partition: _Optional[int] = ..., round: _Optional[int] = ..., ticket: _Optional[str] = ..., num_examples: _Optional[int] = ..., metrics: _Optional[_Mapping[str, float]] = ..., tensors: _Optional[_Iterable[_Union[TensorHeader, _Mapping]]] = ..., inline: _Optional[bytes] = ...) -> None: ...

class JobDone(_message.Message):
    __slots__ = ("succeeded", "message")
    SUCCEEDED_FIELD_NUMBER: _ClassVar[int]
    MESSAGE_FIELD_NUMBER: _ClassVar[int]
    succeeded: bool
    message: str
    def __init__(self, succeeded: _Optional[bool] = ..., message: _Optional[str] = ...) -> None: ...

class Envelope(_message.Message):
    __slots__ = ("round", "update", "data", "done", "next", "reply", "secagg", "secagg_reply")
    ROUND_FIELD_NUMBER: _ClassVar[int]
    UPDATE_FIELD_NUMBER: _ClassVar[int]
    DATA_FIELD_NUMBER: _ClassVar[int]
    DONE_FIELD_NUMBER: _ClassVar[int]
    NEXT_FIELD_NUMBER: _ClassVar[int]
    REPLY_FIELD_NUMBER: _ClassVar[int]
    SECAGG_FIELD_NUMBER: _ClassVar[int]
    SECAGG_REPLY_FIELD_NUMBER: _ClassVar[int]
    round: RoundInfo
    update: UpdateInfo
    data: bytes
    done: JobDone
    next: TaskRequest
    reply: SubmitReply
    secagg: SecAggRequest
    secagg_reply: SecAggReply
    def __init__(self, round: _Optional[_Union[RoundInfo, _Mapping]] = ..., update: _Optional[_Union[UpdateInfo, _Mapping]] = ..., data: _Optional[bytes] = ..., done: _Optional[_Union[JobDone, _Mapping]] = ..., next: _Optional[_Union[TaskRequest, _Mapping]] = ..., reply: _Optional[_Union[SubmitReply, _Mapping]] = ..., secagg: _Optional[_Union[SecAggRequest, _Mapping]] = ..., secagg_reply: _Optional[_Union[SecAggReply, _Mapping]] = ...) -> None: ...

class SubmitReply(_message.Message):
    __slots__ = ("accepted", "reason")
    ACCEPTED_FIELD_NUMBER: _ClassVar[int]
    REASON_FIELD_NUMBER: _ClassVar[int]
    accepted: bool
    reason: str
    def __init__(self, accepted: _Optional[bool] = ..., reason: _Optional[str] = ...) -> None: ...

class StatusRequest(_message.Message):
    __slots__ = ()
    def __init__(self) -> None: ...

class StatusReply(_message.Message):
    __slots__ = ("json",)
    JSON_FIELD_NUMBER: _ClassVar[int]
    json: str
    def __init__(self, json: _Optional[str] = ...) -> None: ...

class PeerKeys(_message.Message):
    __slots__ = ("partition", "cipher_key", "mask_key")
    PARTITION_FIELD_NUMBER: _ClassVar[int]
    CIPHER_KEY_FIELD_NUMBER: _ClassVar[int]
    MASK_KEY_FIELD_NUMBER: _ClassVar[int]
    partition: int
    cipher_key: bytes
    mask_key: bytes
    def __init__(self, partition: _Optional[int] = ..., cipher_key: _Optional[bytes] = ..., mask_key: _Optional[bytes] = ...) -> None: ...

class KeyList(_message.Message):
    __slots__ = ("peers",)
    PEERS_FIELD_NUMBER: _ClassVar[int]
    peers: _containers.RepeatedCompositeFieldContainer[PeerKeys]
    def __init__(self, peers: _Optional[_Iterable[_Union[PeerKeys, _Mapping]]] = ...) -> None: ...

class SealedShare(_message.Message):
    __slots__ = ("partition", "sealed")
    PARTITION_FIELD_NUMBER: _ClassVar[int]
    SEALED_FIELD_NUMBER: _ClassVar[int]
    partition: int
    sealed: bytes
    def __init__(self, partition: _Optional[int] = ..., sealed: _Optional[bytes] = ...) -> None: ...

class SealedShares(_message.Message):
    __slots__ = ("shares",)
    SHARES_FIELD_NUMBER: _ClassVar[int]
    shares: _containers.RepeatedCompositeFieldContainer[SealedShare]
    def __init__(self, shares: _Optional[_Iterable[_Union[SealedShare, _Mapping]]] = ...) -> None: ...

class UnmaskQuery(_message.Message):
    __slots__ = ()
    def __init__(self) -> None: ...

class Survivors(_message.Message):
    __slots__ = ("survived", "dropped")
    SURVIVED_FIELD_NUMBER: _ClassVar[int]
    DROPPED_FIELD_NUMBER: _ClassVar[int]
    survived: _containers.RepeatedScalarFieldContainer[int]
    dropped: _containers.RepeatedScalarFieldContainer[int]
    def __init__(self, survived: _Optional[_Iterable[int]] = ..., dropped: _Optional[_Iterable[int]] = ...) -> None: ...

class RevealedShare(_message.Message):
    __slots__ = ("partition", "share")
    PARTITION_FIELD_NUMBER: _ClassVar[int]
    SHARE_FIELD_NUMBER: _ClassVar[int]
    partition: int
    share: bytes
    def __init__(self, partition: _Optional[int] = ..., share: _Optional[bytes] = ...) -> None: ...

class RevealedShares(_message.Message):
    __slots__ = ("shares",)
    SHARES_FIELD_NUMBER: _ClassVar[int]
    shares: _containers.RepeatedCompositeFieldContainer[RevealedShare]
    def __init__(self, shares: _Optional[_Iterable[_Union[RevealedShare, _Mapping]]] = ...) -> None: ...

class SecAggRequest(_message.Message):
    __slots__ = ("round", "ticket", "advertise", "share", "unmask", "reveal")
    ROUND_FIELD_NUMBER: _ClassVar[int]
    TICKET_FIELD_NUMBER: _ClassVar[int]
    ADVERTISE_FIELD_NUMBER: _ClassVar[int]
    SHARE_FIELD_NUMBER: _ClassVar[int]
    UNMASK_FIELD_NUMBER: _ClassVar[int]
    REVEAL_FIELD_NUMBER: _ClassVar[int]
    round: int
    ticket: str
    advertise: PeerKeys
    share: SealedShares
    unmask: UnmaskQuery
    reveal: RevealedShares
    def __init__(self, round: _Optional[int] = ..., ticket: _Optional[str] = ..., advertise: _Optional[_Union[PeerKeys, _Mapping]] = ..., share: _Optional[_Union[SealedShares, _Mapping]] = ..., unmask: _Optional[_Union[UnmaskQuery, _Mapping]] = ..., reveal: _Optional[_Union[RevealedShares, _Mapping]] = ...) -> None: ...

class SecAggReply(_message.Message):
    __slots__ = ("keys", "shares", "survivors", "abandoned")
    KEYS_FIELD_NUMBER: _ClassVar[int]
    SHARES_FIELD_NUMBER: _ClassVar[int]
    SURVIVORS_FIELD_NUMBER: _ClassVar[int]
    ABANDONED_FIELD_NUMBER: _ClassVar[int]
    keys: KeyList
    shares: SealedShares
    survivors: Survivors
    abandoned: str
    def __init__(self, keys: _Optional[_Union[KeyList, _Mapping]] = ..., shares: _Optional[_Union[SealedShares, _Mapping]] = ..., survivors: _Optional[_Union[Survivors, _Mapping]] = ..., abandoned: _Optional[str] = ...) -> None: ...
