from google.protobuf import struct_pb2 as _struct_pb2
from google.protobuf.internal import containers as _containers
from google.protobuf.internal import enum_type_wrapper as _enum_type_wrapper
from google.protobuf import descriptor as _descriptor
from google.protobuf import message as _message
from collections.abc import Iterable as _Iterable, Mapping as _Mapping
from typing import ClassVar as _ClassVar, Optional as _Optional, Union as _Union

DESCRIPTOR: _descriptor.FileDescriptor

class RunKind(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    RUN_KIND_UNSPECIFIED: _ClassVar[RunKind]
    RUN_KIND_TRAINING: _ClassVar[RunKind]
    RUN_KIND_DEPLOYMENT: _ClassVar[RunKind]

class RunStatus(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    RUN_STATUS_UNSPECIFIED: _ClassVar[RunStatus]
    RUN_STATUS_RUNNING: _ClassVar[RunStatus]
    RUN_STATUS_FINISHED: _ClassVar[RunStatus]
    RUN_STATUS_FAILED: _ClassVar[RunStatus]
    RUN_STATUS_KILLED: _ClassVar[RunStatus]

class LogLevel(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    LOG_LEVEL_UNSPECIFIED: _ClassVar[LogLevel]
    LOG_LEVEL_DEBUG: _ClassVar[LogLevel]
    LOG_LEVEL_INFO: _ClassVar[LogLevel]
    LOG_LEVEL_WARNING: _ClassVar[LogLevel]
    LOG_LEVEL_ERROR: _ClassVar[LogLevel]
    LOG_LEVEL_CRITICAL: _ClassVar[LogLevel]
RUN_KIND_UNSPECIFIED: RunKind
RUN_KIND_TRAINING: RunKind
RUN_KIND_DEPLOYMENT: RunKind
RUN_STATUS_UNSPECIFIED: RunStatus
RUN_STATUS_RUNNING: RunStatus
RUN_STATUS_FINISHED: RunStatus
RUN_STATUS_FAILED: RunStatus
RUN_STATUS_KILLED: RunStatus
LOG_LEVEL_UNSPECIFIED: LogLevel
LOG_LEVEL_DEBUG: LogLevel
LOG_LEVEL_INFO: LogLevel
LOG_LEVEL_WARNING: LogLevel
LOG_LEVEL_ERROR: LogLevel
LOG_LEVEL_CRITICAL: LogLevel

class Layer(_message.Message):
    __slots__ = ("name", "type", "in_size", "out_size", "activation", "param_count", "attributes")
    class AttributesEntry(_message.Message):
        __slots__ = ("key", "value")
        KEY_FIELD_NUMBER: _ClassVar[int]
        VALUE_FIELD_NUMBER: _ClassVar[int]
        key: str
        value: str
        def __init__(self, key: _Optional[str] = ..., value: _Optional[str] = ...) -> None: ...
    NAME_FIELD_NUMBER: _ClassVar[int]
    TYPE_FIELD_NUMBER: _ClassVar[int]
    IN_SIZE_FIELD_NUMBER: _ClassVar[int]
    OUT_SIZE_FIELD_NUMBER: _ClassVar[int]
    ACTIVATION_FIELD_NUMBER: _ClassVar[int]
    PARAM_COUNT_FIELD_NUMBER: _ClassVar[int]
    ATTRIBUTES_FIELD_NUMBER: _ClassVar[int]
    name: str
    type: str
    in_size: int
    out_size: int
    activation: str
    param_count: int
    attributes: _containers.ScalarMap[str, str]
    def __init__(self, name: _Optional[str] = ..., type: _Optional[str] = ..., in_size: _Optional[int] = ..., out_size: _Optional[int] = ..., activation: _Optional[str] = ..., param_count: _Optional[int] = ..., attributes: _Optional[_Mapping[str, str]] = ...) -> None: ...

class Architecture(_message.Message):
    __slots__ = ("layers", "total_params")
    LAYERS_FIELD_NUMBER: _ClassVar[int]
    TOTAL_PARAMS_FIELD_NUMBER: _ClassVar[int]
    layers: _containers.RepeatedCompositeFieldContainer[Layer]
    total_params: int
    def __init__(self, layers: _Optional[_Iterable[_Union[Layer, _Mapping]]] = ..., total_params: _Optional[int] = ...) -> None: ...

class RunStart(_message.Message):
    __slots__ = ("run_id", "project", "kind", "start_time", "hyperparameters", "architecture", "framework", "tags", "environment", "resume")
    class EnvironmentEntry(_message.Message):
        __slots__ = ("key", "value")
        KEY_FIELD_NUMBER: _ClassVar[int]
        VALUE_FIELD_NUMBER: _ClassVar[int]
        key: str
        value: str
        def __init__(self, key: _Optional[str] = ..., value: _Optional[str] = ...) -> None: ...
    RUN_ID_FIELD_NUMBER: _ClassVar[int]
    PROJECT_FIELD_NUMBER: _ClassVar[int]
    KIND_FIELD_NUMBER: _ClassVar[int]
    START_TIME_FIELD_NUMBER: _ClassVar[int]
    HYPERPARAMETERS_FIELD_NUMBER: _ClassVar[int]
    ARCHITECTURE_FIELD_NUMBER: _ClassVar[int]
    FRAMEWORK_FIELD_NUMBER: _ClassVar[int]
    TAGS_FIELD_NUMBER: _ClassVar[int]
    ENVIRONMENT_FIELD_NUMBER: _ClassVar[int]
    RESUME_FIELD_NUMBER: _ClassVar[int]
    run_id: str
    project: str
    kind: RunKind
    start_time: float
    hyperparameters: _struct_pb2.Struct
    architecture: Architecture
    framework: str
    tags: _containers.RepeatedScalarFieldContainer[str]
    environment: _containers.ScalarMap[str, str]
    resume: bool
    def __init__(self, run_id: _Optional[str] = ..., project: _Optional[str] = ..., kind: _Optional[_Union[RunKind, str]] = ..., start_time: _Optional[float] = ..., hyperparameters: _Optional[_Union[_struct_pb2.Struct, _Mapping]] = ..., architecture: _Optional[_Union[Architecture, _Mapping]] = ..., framework: _Optional[str] = ..., tags: _Optional[_Iterable[str]] = ..., environment: _Optional[_Mapping[str, str]] = ..., resume: _Optional[bool] = ...) -> None: ...

class MetricEvent(_message.Message):
    __slots__ = ("run_id", "step", "wall_time", "metrics")
    class MetricsEntry(_message.Message):
        __slots__ = ("key", "value")
        KEY_FIELD_NUMBER: _ClassVar[int]
        VALUE_FIELD_NUMBER: _ClassVar[int]
        key: str
        value: float
        def __init__(self, key: _Optional[str] = ..., value: _Optional[float] = ...) -> None: ...
    RUN_ID_FIELD_NUMBER: _ClassVar[int]
    STEP_FIELD_NUMBER: _ClassVar[int]
    WALL_TIME_FIELD_NUMBER: _ClassVar[int]
    METRICS_FIELD_NUMBER: _ClassVar[int]
    run_id: str
    step: int
    wall_time: float
    metrics: _containers.ScalarMap[str, float]
    def __init__(self, run_id: _Optional[str] = ..., step: _Optional[int] = ..., wall_time: _Optional[float] = ..., metrics: _Optional[_Mapping[str, float]] = ...) -> None: ...

class LogLine(_message.Message):
    __slots__ = ("run_id", "time", "level", "text", "step")
    RUN_ID_FIELD_NUMBER: _ClassVar[int]
    TIME_FIELD_NUMBER: _ClassVar[int]
    LEVEL_FIELD_NUMBER: _ClassVar[int]
    TEXT_FIELD_NUMBER: _ClassVar[int]
    STEP_FIELD_NUMBER: _ClassVar[int]
    run_id: str
    time: float
    level: LogLevel
    text: str
    step: int
    def __init__(self, run_id: _Optional[str] = ..., time: _Optional[float] = ..., level: _Optional[_Union[LogLevel, str]] = ..., text: _Optional[str] = ..., step: _Optional[int] = ...) -> None: ...

class RunEnd(_message.Message):
    __slots__ = ("run_id", "status", "reason", "end_time")
    RUN_ID_FIELD_NUMBER: _ClassVar[int]
    STATUS_FIELD_NUMBER: _ClassVar[int]
    REASON_FIELD_NUMBER: _ClassVar[int]
    END_TIME_FIELD_NUMBER: _ClassVar[int]
    run_id: str
    status: RunStatus
    reason: str
    end_time: float
    def __init__(self, run_id: _Optional[str] = ..., status: _Optional[_Union[RunStatus, str]] = ..., reason: _Optional[str] = ..., end_time: _Optional[float] = ...) -> None: ...

class EventBatch(_message.Message):
    __slots__ = ("starts", "events", "logs", "ends", "sequence")
    STARTS_FIELD_NUMBER: _ClassVar[int]
    EVENTS_FIELD_NUMBER: _ClassVar[int]
    LOGS_FIELD_NUMBER: _ClassVar[int]
    ENDS_FIELD_NUMBER: _ClassVar[int]
    SEQUENCE_FIELD_NUMBER: _ClassVar[int]
    starts: _containers.RepeatedCompositeFieldContainer[RunStart]
    events: _containers.RepeatedCompositeFieldContainer[MetricEvent]
    logs: _containers.RepeatedCompositeFieldContainer[LogLine]
    ends: _containers.RepeatedCompositeFieldContainer[RunEnd]
    sequence: int
    def __init__(self, starts: _Optional[_Iterable[_Union[RunStart, _Mapping]]] = ..., events: _Optional[_Iterable[_Union[MetricEvent, _Mapping]]] = ..., logs: _Optional[_Iterable[_Union[LogLine, _Mapping]]] = ..., ends: _Optional[_Iterable[_Union[RunEnd, _Mapping]]] = ..., sequence: _Optional[int] = ...) -> None: ...
