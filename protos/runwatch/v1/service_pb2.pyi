from runwatch.v1 import anomaly_pb2 as _anomaly_pb2
from runwatch.v1 import runs_pb2 as _runs_pb2
from google.protobuf.internal import containers as _containers
from google.protobuf import descriptor as _descriptor
from google.protobuf import message as _message
from collections.abc import Iterable as _Iterable, Mapping as _Mapping
from typing import ClassVar as _ClassVar, Optional as _Optional, Union as _Union

DESCRIPTOR: _descriptor.FileDescriptor

class FieldViolation(_message.Message):
    __slots__ = ("field", "reason")
    FIELD_FIELD_NUMBER: _ClassVar[int]
    REASON_FIELD_NUMBER: _ClassVar[int]
    field: str
    reason: str
    def __init__(self, field: _Optional[str] = ..., reason: _Optional[str] = ...) -> None: ...

class IngestAck(_message.Message):
    __slots__ = ("sequence", "accepted", "duplicates", "rejected", "violations", "warnings")
    SEQUENCE_FIELD_NUMBER: _ClassVar[int]
    ACCEPTED_FIELD_NUMBER: _ClassVar[int]
    DUPLICATES_FIELD_NUMBER: _ClassVar[int]
    REJECTED_FIELD_NUMBER: _ClassVar[int]
    VIOLATIONS_FIELD_NUMBER: _ClassVar[int]
    WARNINGS_FIELD_NUMBER: _ClassVar[int]
    sequence: int
    accepted: int
    duplicates: int
    rejected: int
    violations: _containers.RepeatedCompositeFieldContainer[FieldViolation]
    warnings: _containers.RepeatedScalarFieldContainer[str]
    def __init__(self, sequence: _Optional[int] = ..., accepted: _Optional[int] = ..., duplicates: _Optional[int] = ..., rejected: _Optional[int] = ..., violations: _Optional[_Iterable[_Union[FieldViolation, _Mapping]]] = ..., warnings: _Optional[_Iterable[str]] = ...) -> None: ...

class WatchRequest(_message.Message):
    __slots__ = ("project", "run_id", "min_severity", "include_history")
    PROJECT_FIELD_NUMBER: _ClassVar[int]
    RUN_ID_FIELD_NUMBER: _ClassVar[int]
    MIN_SEVERITY_FIELD_NUMBER: _ClassVar[int]
    INCLUDE_HISTORY_FIELD_NUMBER: _ClassVar[int]
    project: str
    run_id: str
    min_severity: _anomaly_pb2.Severity
    include_history: bool
    def __init__(self, project: _Optional[str] = ..., run_id: _Optional[str] = ..., min_severity: _Optional[_Union[_anomaly_pb2.Severity, str]] = ..., include_history: _Optional[bool] = ...) -> None: ...

class GetRunRequest(_message.Message):
    __slots__ = ("run_id",)
    RUN_ID_FIELD_NUMBER: _ClassVar[int]
    run_id: str
    def __init__(self, run_id: _Optional[str] = ...) -> None: ...

class RunInfo(_message.Message):
    __slots__ = ("run_id", "project", "kind", "status", "start_time", "end_time", "end_reason", "last_step", "event_count", "anomaly_count", "last_event_time", "start")
    RUN_ID_FIELD_NUMBER: _ClassVar[int]
    PROJECT_FIELD_NUMBER: _ClassVar[int]
    KIND_FIELD_NUMBER: _ClassVar[int]
    STATUS_FIELD_NUMBER: _ClassVar[int]
    START_TIME_FIELD_NUMBER: _ClassVar[int]
    END_TIME_FIELD_NUMBER: _ClassVar[int]
    END_REASON_FIELD_NUMBER: _ClassVar[int]
    LAST_STEP_FIELD_NUMBER: _ClassVar[int]
    EVENT_COUNT_FIELD_NUMBER: _ClassVar[int]
    ANOMALY_COUNT_FIELD_NUMBER: _ClassVar[int]
    LAST_EVENT_TIME_FIELD_NUMBER: _ClassVar[int]
    START_FIELD_NUMBER: _ClassVar[int]
    run_id: str
    project: str
    kind: _runs_pb2.RunKind
    status: _runs_pb2.RunStatus
    start_time: float
    end_time: float
    end_reason: str
    last_step: int
    event_count: int
    anomaly_count: int
    last_event_time: float
    start: _runs_pb2.RunStart
    def __init__(self, run_id: _Optional[str] = ..., project: _Optional[str] = ..., kind: _Optional[_Union[_runs_pb2.RunKind, str]] = ..., status: _Optional[_Union[_runs_pb2.RunStatus, str]] = ..., start_time: _Optional[float] = ..., end_time: _Optional[float] = ..., end_reason: _Optional[str] = ..., last_step: _Optional[int] = ..., event_count: _Optional[int] = ..., anomaly_count: _Optional[int] = ..., last_event_time: _Optional[float] = ..., start: _Optional[_Union[_runs_pb2.RunStart, _Mapping]] = ...) -> None: ...

class MetricSummary(_message.Message):
    __slots__ = ("name", "count", "last", "min", "max", "nonfinite_count", "last_step")
    NAME_FIELD_NUMBER: _ClassVar[int]
    COUNT_FIELD_NUMBER: _ClassVar[int]
    LAST_FIELD_NUMBER: _ClassVar[int]
    MIN_FIELD_NUMBER: _ClassVar[int]
    MAX_FIELD_NUMBER: _ClassVar[int]
    NONFINITE_COUNT_FIELD_NUMBER: _ClassVar[int]
    LAST_STEP_FIELD_NUMBER: _ClassVar[int]
    name: str
    count: int
    last: float
    min: float
    max: float
    nonfinite_count: int
    last_step: int
    def __init__(self, name: _Optional[str] = ..., count: _Optional[int] = ..., last: _Optional[float] = ..., min: _Optional[float] = ..., max: _Optional[float] = ..., nonfinite_count: _Optional[int] = ..., last_step: _Optional[int] = ...) -> None: ...

class DiagnosticStatus(_message.Message):
    __slots__ = ("detector", "incidents", "max_severity")
    DETECTOR_FIELD_NUMBER: _ClassVar[int]
    INCIDENTS_FIELD_NUMBER: _ClassVar[int]
    MAX_SEVERITY_FIELD_NUMBER: _ClassVar[int]
    detector: str
    incidents: int
    max_severity: _anomaly_pb2.Severity
    def __init__(self, detector: _Optional[str] = ..., incidents: _Optional[int] = ..., max_severity: _Optional[_Union[_anomaly_pb2.Severity, str]] = ...) -> None: ...

class RunSummary(_message.Message):
    __slots__ = ("run", "anomalies", "metrics", "diagnostics")
    RUN_FIELD_NUMBER: _ClassVar[int]
    ANOMALIES_FIELD_NUMBER: _ClassVar[int]
    METRICS_FIELD_NUMBER: _ClassVar[int]
    DIAGNOSTICS_FIELD_NUMBER: _ClassVar[int]
    run: RunInfo
    anomalies: _containers.RepeatedCompositeFieldContainer[_anomaly_pb2.Anomaly]
    metrics: _containers.RepeatedCompositeFieldContainer[MetricSummary]
    diagnostics: _containers.RepeatedCompositeFieldContainer[DiagnosticStatus]
    def __init__(self, run: _Optional[_Union[RunInfo, _Mapping]] = ..., anomalies: _Optional[_Iterable[_Union[_anomaly_pb2.Anomaly, _Mapping]]] = ..., metrics: _Optional[_Iterable[_Union[MetricSummary, _Mapping]]] = ..., diagnostics: _Optional[_Iterable[_Union[DiagnosticStatus, _Mapping]]] = ...) -> None: ...

class ListRunsRequest(_message.Message):
    __slots__ = ("project", "status", "limit")
    PROJECT_FIELD_NUMBER: _ClassVar[int]
    STATUS_FIELD_NUMBER: _ClassVar[int]
    LIMIT_FIELD_NUMBER: _ClassVar[int]
    project: str
    status: _runs_pb2.RunStatus
    limit: int
    def __init__(self, project: _Optional[str] = ..., status: _Optional[_Union[_runs_pb2.RunStatus, str]] = ..., limit: _Optional[int] = ...) -> None: ...

class ListRunsResponse(_message.Message):
    __slots__ = ("runs",)
    RUNS_FIELD_NUMBER: _ClassVar[int]
    runs: _containers.RepeatedCompositeFieldContainer[RunInfo]
    def __init__(self, runs: _Optional[_Iterable[_Union[RunInfo, _Mapping]]] = ...) -> None: ...

class GetMetricsRequest(_message.Message):
    __slots__ = ("run_id", "metrics", "min_step", "max_step")
    RUN_ID_FIELD_NUMBER: _ClassVar[int]
    METRICS_FIELD_NUMBER: _ClassVar[int]
    MIN_STEP_FIELD_NUMBER: _ClassVar[int]
    MAX_STEP_FIELD_NUMBER: _ClassVar[int]
    run_id: str
    metrics: _containers.RepeatedScalarFieldContainer[str]
    min_step: int
    max_step: int
    def __init__(self, run_id: _Optional[str] = ..., metrics: _Optional[_Iterable[str]] = ..., min_step: _Optional[int] = ..., max_step: _Optional[int] = ...) -> None: ...

class MetricHistory(_message.Message):
    __slots__ = ("events",)
    EVENTS_FIELD_NUMBER: _ClassVar[int]
    events: _containers.RepeatedCompositeFieldContainer[_runs_pb2.MetricEvent]
    def __init__(self, events: _Optional[_Iterable[_Union[_runs_pb2.MetricEvent, _Mapping]]] = ...) -> None: ...

class ListAnomaliesRequest(_message.Message):
    __slots__ = ("project", "run_id", "min_severity", "limit")
    PROJECT_FIELD_NUMBER: _ClassVar[int]
    RUN_ID_FIELD_NUMBER: _ClassVar[int]
    MIN_SEVERITY_FIELD_NUMBER: _ClassVar[int]
    LIMIT_FIELD_NUMBER: _ClassVar[int]
    project: str
    run_id: str
    min_severity: _anomaly_pb2.Severity
    limit: int
    def __init__(self, project: _Optional[str] = ..., run_id: _Optional[str] = ..., min_severity: _Optional[_Union[_anomaly_pb2.Severity, str]] = ..., limit: _Optional[int] = ...) -> None: ...

class ListAnomaliesResponse(_message.Message):
    __slots__ = ("anomalies",)
    ANOMALIES_FIELD_NUMBER: _ClassVar[int]
    anomalies: _containers.RepeatedCompositeFieldContainer[_anomaly_pb2.Anomaly]
    def __init__(self, anomalies: _Optional[_Iterable[_Union[_anomaly_pb2.Anomaly, _Mapping]]] = ...) -> None: ...

class SuggestConstraints(_message.Message):
    __slots__ = ("max_params", "max_latency_ms", "num_suggestions")
    MAX_PARAMS_FIELD_NUMBER: _ClassVar[int]
    MAX_LATENCY_MS_FIELD_NUMBER: _ClassVar[int]
    NUM_SUGGESTIONS_FIELD_NUMBER: _ClassVar[int]
    max_params: int
    max_latency_ms: float
    num_suggestions: int
    def __init__(self, max_params: _Optional[int] = ..., max_latency_ms: _Optional[float] = ..., num_suggestions: _Optional[int] = ...) -> None: ...

class SuggestRequest(_message.Message):
    __slots__ = ("run_id", "project", "constraints", "target_metric")
    RUN_ID_FIELD_NUMBER: _ClassVar[int]
    PROJECT_FIELD_NUMBER: _ClassVar[int]
    CONSTRAINTS_FIELD_NUMBER: _ClassVar[int]
    TARGET_METRIC_FIELD_NUMBER: _ClassVar[int]
    run_id: str
    project: str
    constraints: SuggestConstraints
    target_metric: str
    def __init__(self, run_id: _Optional[str] = ..., project: _Optional[str] = ..., constraints: _Optional[_Union[SuggestConstraints, _Mapping]] = ..., target_metric: _Optional[str] = ...) -> None: ...

class ArchitectureChange(_message.Message):
    __slots__ = ("layer", "attribute", "before", "after", "description")
    LAYER_FIELD_NUMBER: _ClassVar[int]
    ATTRIBUTE_FIELD_NUMBER: _ClassVar[int]
    BEFORE_FIELD_NUMBER: _ClassVar[int]
    AFTER_FIELD_NUMBER: _ClassVar[int]
    DESCRIPTION_FIELD_NUMBER: _ClassVar[int]
    layer: str
    attribute: str
    before: str
    after: str
    description: str
    def __init__(self, layer: _Optional[str] = ..., attribute: _Optional[str] = ..., before: _Optional[str] = ..., after: _Optional[str] = ..., description: _Optional[str] = ...) -> None: ...

class PredictedEffect(_message.Message):
    __slots__ = ("metric", "predicted", "delta", "stddev")
    METRIC_FIELD_NUMBER: _ClassVar[int]
    PREDICTED_FIELD_NUMBER: _ClassVar[int]
    DELTA_FIELD_NUMBER: _ClassVar[int]
    STDDEV_FIELD_NUMBER: _ClassVar[int]
    metric: str
    predicted: float
    delta: float
    stddev: float
    def __init__(self, metric: _Optional[str] = ..., predicted: _Optional[float] = ..., delta: _Optional[float] = ..., stddev: _Optional[float] = ...) -> None: ...

class CostDelta(_message.Message):
    __slots__ = ("params", "flops")
    PARAMS_FIELD_NUMBER: _ClassVar[int]
    FLOPS_FIELD_NUMBER: _ClassVar[int]
    params: int
    flops: int
    def __init__(self, params: _Optional[int] = ..., flops: _Optional[int] = ...) -> None: ...

class Suggestion(_message.Message):
    __slots__ = ("rank", "changes", "effect", "evidence", "cost")
    RANK_FIELD_NUMBER: _ClassVar[int]
    CHANGES_FIELD_NUMBER: _ClassVar[int]
    EFFECT_FIELD_NUMBER: _ClassVar[int]
    EVIDENCE_FIELD_NUMBER: _ClassVar[int]
    COST_FIELD_NUMBER: _ClassVar[int]
    rank: int
    changes: _containers.RepeatedCompositeFieldContainer[ArchitectureChange]
    effect: PredictedEffect
    evidence: _containers.RepeatedScalarFieldContainer[str]
    cost: CostDelta
    def __init__(self, rank: _Optional[int] = ..., changes: _Optional[_Iterable[_Union[ArchitectureChange, _Mapping]]] = ..., effect: _Optional[_Union[PredictedEffect, _Mapping]] = ..., evidence: _Optional[_Iterable[str]] = ..., cost: _Optional[_Union[CostDelta, _Mapping]] = ...) -> None: ...

class SuggestResponse(_message.Message):
    __slots__ = ("run_id", "suggestions")
    RUN_ID_FIELD_NUMBER: _ClassVar[int]
    SUGGESTIONS_FIELD_NUMBER: _ClassVar[int]
    run_id: str
    suggestions: _containers.RepeatedCompositeFieldContainer[Suggestion]
    def __init__(self, run_id: _Optional[str] = ..., suggestions: _Optional[_Iterable[_Union[Suggestion, _Mapping]]] = ...) -> None: ...
