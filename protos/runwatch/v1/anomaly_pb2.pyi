from google.protobuf.internal import containers as _containers
from google.protobuf.internal import enum_type_wrapper as _enum_type_wrapper
from google.protobuf import descriptor as _descriptor
from google.protobuf import message as _message
from collections.abc import Iterable as _Iterable, Mapping as _Mapping
from typing import ClassVar as _ClassVar, Optional as _Optional, Union as _Union

DESCRIPTOR: _descriptor.FileDescriptor

class AnomalyKind(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    ANOMALY_KIND_UNSPECIFIED: _ClassVar[AnomalyKind]
    ANOMALY_KIND_NONFINITE: _ClassVar[AnomalyKind]
    ANOMALY_KIND_LOSS_SPIKE: _ClassVar[AnomalyKind]
    ANOMALY_KIND_DIVERGENCE_PREDICTED: _ClassVar[AnomalyKind]
    ANOMALY_KIND_EXPLODING_GRADIENT: _ClassVar[AnomalyKind]
    ANOMALY_KIND_VANISHING_GRADIENT: _ClassVar[AnomalyKind]
    ANOMALY_KIND_DEAD_UNITS: _ClassVar[AnomalyKind]
    ANOMALY_KIND_SATURATION: _ClassVar[AnomalyKind]
    ANOMALY_KIND_PLATEAU: _ClassVar[AnomalyKind]
    ANOMALY_KIND_OVERFITTING: _ClassVar[AnomalyKind]
    ANOMALY_KIND_STALLED: _ClassVar[AnomalyKind]
    ANOMALY_KIND_LATENCY: _ClassVar[AnomalyKind]
    ANOMALY_KIND_ERROR_RATE: _ClassVar[AnomalyKind]
    ANOMALY_KIND_LOG_PATTERN: _ClassVar[AnomalyKind]
    ANOMALY_KIND_RUN_OUTLIER: _ClassVar[AnomalyKind]
    ANOMALY_KIND_MEMORY_GROWTH: _ClassVar[AnomalyKind]
    ANOMALY_KIND_DATA_BOTTLENECK: _ClassVar[AnomalyKind]
    ANOMALY_KIND_SEQUENCE_OUTLIER: _ClassVar[AnomalyKind]
    ANOMALY_KIND_UPDATE_RATIO: _ClassVar[AnomalyKind]
    ANOMALY_KIND_RUN_FAILED: _ClassVar[AnomalyKind]
    ANOMALY_KIND_ACTIVATION_SPIKE: _ClassVar[AnomalyKind]

class Severity(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    SEVERITY_UNSPECIFIED: _ClassVar[Severity]
    SEVERITY_INFO: _ClassVar[Severity]
    SEVERITY_WARNING: _ClassVar[Severity]
    SEVERITY_ERROR: _ClassVar[Severity]
    SEVERITY_CRITICAL: _ClassVar[Severity]

class AnomalyState(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    ANOMALY_STATE_UNSPECIFIED: _ClassVar[AnomalyState]
    ANOMALY_STATE_OPEN: _ClassVar[AnomalyState]
    ANOMALY_STATE_UPDATED: _ClassVar[AnomalyState]
    ANOMALY_STATE_RESOLVED: _ClassVar[AnomalyState]
ANOMALY_KIND_UNSPECIFIED: AnomalyKind
ANOMALY_KIND_NONFINITE: AnomalyKind
ANOMALY_KIND_LOSS_SPIKE: AnomalyKind
ANOMALY_KIND_DIVERGENCE_PREDICTED: AnomalyKind
ANOMALY_KIND_EXPLODING_GRADIENT: AnomalyKind
ANOMALY_KIND_VANISHING_GRADIENT: AnomalyKind
ANOMALY_KIND_DEAD_UNITS: AnomalyKind
ANOMALY_KIND_SATURATION: AnomalyKind
ANOMALY_KIND_PLATEAU: AnomalyKind
ANOMALY_KIND_OVERFITTING: AnomalyKind
ANOMALY_KIND_STALLED: AnomalyKind
ANOMALY_KIND_LATENCY: AnomalyKind
ANOMALY_KIND_ERROR_RATE: AnomalyKind
ANOMALY_KIND_LOG_PATTERN: AnomalyKind
ANOMALY_KIND_RUN_OUTLIER: AnomalyKind
ANOMALY_KIND_MEMORY_GROWTH: AnomalyKind
ANOMALY_KIND_DATA_BOTTLENECK: AnomalyKind
ANOMALY_KIND_SEQUENCE_OUTLIER: AnomalyKind
ANOMALY_KIND_UPDATE_RATIO: AnomalyKind
ANOMALY_KIND_RUN_FAILED: AnomalyKind
ANOMALY_KIND_ACTIVATION_SPIKE: AnomalyKind
SEVERITY_UNSPECIFIED: Severity
SEVERITY_INFO: Severity
SEVERITY_WARNING: Severity
SEVERITY_ERROR: Severity
SEVERITY_CRITICAL: Severity
ANOMALY_STATE_UNSPECIFIED: AnomalyState
ANOMALY_STATE_OPEN: AnomalyState
ANOMALY_STATE_UPDATED: AnomalyState
ANOMALY_STATE_RESOLVED: AnomalyState

class EvidencePoint(_message.Message):
    __slots__ = ("metric", "step", "value")
    METRIC_FIELD_NUMBER: _ClassVar[int]
    STEP_FIELD_NUMBER: _ClassVar[int]
    VALUE_FIELD_NUMBER: _ClassVar[int]
    metric: str
    step: int
    value: float
    def __init__(self, metric: _Optional[str] = ..., step: _Optional[int] = ..., value: _Optional[float] = ...) -> None: ...

class Anomaly(_message.Message):
    __slots__ = ("id", "run_id", "project", "step", "wall_time", "detected_time", "kind", "severity", "score", "metrics", "layer", "explanation", "detector", "detector_version", "evidence", "first_step", "last_step", "occurrences", "revision", "state", "log_lines", "part_of")
    ID_FIELD_NUMBER: _ClassVar[int]
    RUN_ID_FIELD_NUMBER: _ClassVar[int]
    PROJECT_FIELD_NUMBER: _ClassVar[int]
    STEP_FIELD_NUMBER: _ClassVar[int]
    WALL_TIME_FIELD_NUMBER: _ClassVar[int]
    DETECTED_TIME_FIELD_NUMBER: _ClassVar[int]
    KIND_FIELD_NUMBER: _ClassVar[int]
    SEVERITY_FIELD_NUMBER: _ClassVar[int]
    SCORE_FIELD_NUMBER: _ClassVar[int]
    METRICS_FIELD_NUMBER: _ClassVar[int]
    LAYER_FIELD_NUMBER: _ClassVar[int]
    EXPLANATION_FIELD_NUMBER: _ClassVar[int]
    DETECTOR_FIELD_NUMBER: _ClassVar[int]
    DETECTOR_VERSION_FIELD_NUMBER: _ClassVar[int]
    EVIDENCE_FIELD_NUMBER: _ClassVar[int]
    FIRST_STEP_FIELD_NUMBER: _ClassVar[int]
    LAST_STEP_FIELD_NUMBER: _ClassVar[int]
    OCCURRENCES_FIELD_NUMBER: _ClassVar[int]
    REVISION_FIELD_NUMBER: _ClassVar[int]
    STATE_FIELD_NUMBER: _ClassVar[int]
    LOG_LINES_FIELD_NUMBER: _ClassVar[int]
    PART_OF_FIELD_NUMBER: _ClassVar[int]
    id: str
    run_id: str
    project: str
    step: int
    wall_time: float
    detected_time: float
    kind: AnomalyKind
    severity: Severity
    score: float
    metrics: _containers.RepeatedScalarFieldContainer[str]
    layer: str
    explanation: str
    detector: str
    detector_version: str
    evidence: _containers.RepeatedCompositeFieldContainer[EvidencePoint]
    first_step: int
    last_step: int
    occurrences: int
    revision: int
    state: AnomalyState
    log_lines: _containers.RepeatedScalarFieldContainer[str]
    part_of: str
    def __init__(self, id: _Optional[str] = ..., run_id: _Optional[str] = ..., project: _Optional[str] = ..., step: _Optional[int] = ..., wall_time: _Optional[float] = ..., detected_time: _Optional[float] = ..., kind: _Optional[_Union[AnomalyKind, str]] = ..., severity: _Optional[_Union[Severity, str]] = ..., score: _Optional[float] = ..., metrics: _Optional[_Iterable[str]] = ..., layer: _Optional[str] = ..., explanation: _Optional[str] = ..., detector: _Optional[str] = ..., detector_version: _Optional[str] = ..., evidence: _Optional[_Iterable[_Union[EvidencePoint, _Mapping]]] = ..., first_step: _Optional[int] = ..., last_step: _Optional[int] = ..., occurrences: _Optional[int] = ..., revision: _Optional[int] = ..., state: _Optional[_Union[AnomalyState, str]] = ..., log_lines: _Optional[_Iterable[str]] = ..., part_of: _Optional[str] = ...) -> None: ...
