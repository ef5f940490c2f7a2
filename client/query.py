"""Read runs, metric histories and anomalies from a runwatch server as pandas DataFrames.

:class:`Api` talks to ``RunService`` over gRPC with the SDK's connection
options (plaintext or TLS target, token; ``RUNWATCH_TOKEN`` etc. from the
environment). Its frames have the shapes of W&B's ``Api().run(...).history()``
and MLflow's ``search_runs`` (see :mod:`runwatch.client.frames`).

Examples
--------
>>> from runwatch.client import Api                                # doctest: +SKIP
>>> api = Api("127.0.0.1:50051")                                   # doctest: +SKIP
>>> runs = api.runs("mnist")              # one row per run, params.* columns   # doctest: +SKIP
>>> runs[runs.status == "FAILED"][["run_id", "incidents", "params.lr"]]       # doctest: +SKIP
>>> run = api.run(runs.run_id[0])                                  # doctest: +SKIP
>>> run.config["lr"], run.summary["loss"]                          # doctest: +SKIP
>>> run.history(["loss", "lr"]).plot(x="_step", y="loss")          # doctest: +SKIP
>>> api.anomalies(project="mnist", min_severity="ERROR")           # doctest: +SKIP
"""

from __future__ import annotations

import os
from collections import Counter
from typing import TYPE_CHECKING, Any, Self

from google.protobuf import json_format

from runwatch.client.connection import make_channel
from runwatch.client.convert import struct_to_dict
from runwatch.client.frames import anomalies_frame, history_frame, runs_frame
from runwatch.v1 import anomaly_pb2, runs_pb2, service_pb2, service_pb2_grpc

if TYPE_CHECKING:
    import pandas as pd

__all__ = ["Api", "RunRef"]

_SEVERITIES = ("INFO", "WARNING", "ERROR", "CRITICAL")
_STATUSES = ("RUNNING", "FINISHED", "FAILED", "KILLED")


def _severity(value: str | int) -> int:
    if isinstance(value, int):
        return value
    name = value.upper().removeprefix("SEVERITY_")
    if name not in _SEVERITIES:
        raise ValueError(f"min_severity: unknown severity {value!r}; use {', '.join(_SEVERITIES)}")
    return anomaly_pb2.Severity.Value("SEVERITY_" + name)


def _status(value: str | int | None) -> int:
    if value is None or isinstance(value, int):
        return value or 0
    name = value.upper().removeprefix("RUN_STATUS_")
    if name not in _STATUSES:
        raise ValueError(f"status: unknown run status {value!r}; use {', '.join(_STATUSES)}")
    return runs_pb2.RunStatus.Value("RUN_STATUS_" + name)


class Api:
    """A read-only handle on a runwatch server; ``target`` and the TLS/token options as the SDK's.

    ``timeout`` bounds each call, in seconds. Use as a context manager, or call :meth:`close`.
    """

    def __init__(
        self,
        target: str | None = None,
        *,
        token: str | None = None,
        ca_file: str | os.PathLike[str] | None = None,
        cert_file: str | os.PathLike[str] | None = None,
        key_file: str | os.PathLike[str] | None = None,
        timeout: float = 60.0,
    ) -> None:
        self.target = target or os.environ.get("RUNWATCH_TARGET", "127.0.0.1:50051")
        self.timeout = timeout
        self._channel = make_channel(
            self.target, token=token, ca_file=ca_file, cert_file=cert_file, key_file=key_file,
            options=[("grpc.max_receive_message_length", 256 << 20)],
        )  # fmt: skip
        self._stub = service_pb2_grpc.RunServiceStub(self._channel)

    def close(self) -> None:
        self._channel.close()

    def __enter__(self) -> Self:
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    # -- raw records ---------------------------------------------------------------------------

    def run_infos(
        self, project: str = "", status: str | int | None = None, limit: int = 1000
    ) -> list[service_pb2.RunInfo]:
        request = service_pb2.ListRunsRequest(project=project, status=_status(status), limit=limit)
        return list(self._stub.ListRuns(request, timeout=self.timeout).runs)

    def summary(self, run_id: str) -> service_pb2.RunSummary:
        return self._stub.GetRun(service_pb2.GetRunRequest(run_id=run_id), timeout=self.timeout)

    def events(
        self, run_id: str, metrics: list[str] | None = None, min_step: int | None = None, max_step: int | None = None
    ) -> list[runs_pb2.MetricEvent]:
        """A run's stored metric events in step order (``GetMetrics``)."""
        request = service_pb2.GetMetricsRequest(run_id=run_id, metrics=metrics or [])
        if min_step is not None:
            request.min_step = min_step
        if max_step is not None:
            request.max_step = max_step
        out: list[runs_pb2.MetricEvent] = []
        for chunk in self._stub.GetMetrics(request, timeout=self.timeout):
            out.extend(chunk.events)
        return out

    def anomaly_records(
        self, project: str = "", run_id: str = "", min_severity: str | int = "INFO", limit: int = 10_000
    ) -> list[anomaly_pb2.Anomaly]:
        request = service_pb2.ListAnomaliesRequest(
            project=project, run_id=run_id, min_severity=_severity(min_severity), limit=limit
        )
        return list(self._stub.ListAnomalies(request, timeout=self.timeout).anomalies)

    # -- frames --------------------------------------------------------------------------------

    def runs(
        self, project: str = "", *, status: str | None = None, limit: int = 1000, incidents_by_severity: bool = False
    ) -> pd.DataFrame:
        """Runs, newest first: one row each, hyperparameters as ``params.*`` (MLflow ``search_runs`` shape).

        ``incidents`` counts each run's incidents; ``incidents_by_severity`` adds
        ``incidents.<SEVERITY>`` columns (one more call, reading the project's anomalies).
        """
        infos = self.run_infos(project, status, limit)
        counts = None
        if incidents_by_severity:
            counts: dict[str, Counter] = {}
            for a in self.anomaly_records(project=project, limit=1_000_000):
                counts.setdefault(a.run_id, Counter())[
                    anomaly_pb2.Severity.Name(a.severity).removeprefix("SEVERITY_")
                ] += 1
        return runs_frame(infos, counts)

    def run(self, run_id: str) -> RunRef:
        """One run (as W&B's ``Api().run(path)``): its metadata, ``config``, ``summary``, ``history()``."""
        return RunRef(self, self.summary(run_id))

    def history(
        self, run_id: str, metrics: list[str] | None = None, *, min_step: int | None = None, max_step: int | None = None
    ) -> pd.DataFrame:
        """A run's metrics: one row per step, one column per metric (W&B ``run.history()`` shape)."""
        return history_frame(self.events(run_id, metrics, min_step, max_step), metrics)

    def anomalies(
        self, project: str = "", *, run_id: str = "", min_severity: str = "INFO", limit: int = 10_000
    ) -> pd.DataFrame:
        """Incidents (latest revision of each), oldest first, with their fields."""
        return anomalies_frame(self.anomaly_records(project, run_id, min_severity, limit))


class RunRef:
    """A run as :meth:`Api.run` read it: ``id``, ``project``, ``status``, ``config``, ``summary``, ``tags``."""

    def __init__(self, api: Api, summary: service_pb2.RunSummary) -> None:
        self._api = api
        self.record = summary
        info = summary.run
        self.id = info.run_id
        self.project = info.project
        self.status = runs_pb2.RunStatus.Name(info.status).removeprefix("RUN_STATUS_")
        self.tags = list(info.start.tags)
        self.config: dict[str, Any] = struct_to_dict(info.start.hyperparameters)
        #: Each metric's newest value (W&B's ``run.summary``); ``metric_stats`` has count, min, max...
        self.summary: dict[str, float] = {m.name: m.last for m in summary.metrics}
        self.metric_stats = {
            m.name: json_format.MessageToDict(m, preserving_proto_field_name=True) for m in summary.metrics
        }

    def __repr__(self) -> str:
        return f"<RunRef {self.project}/{self.id} ({self.status})>"

    def history(
        self, keys: list[str] | None = None, *, min_step: int | None = None, max_step: int | None = None
    ) -> pd.DataFrame:
        """This run's metrics, one row per step (``keys``: only these metrics)."""
        return self._api.history(self.id, keys, min_step=min_step, max_step=max_step)

    def anomalies(self) -> pd.DataFrame:
        """This run's incidents, as :meth:`Api.anomalies`."""
        return anomalies_frame(self.record.anomalies)
