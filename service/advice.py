"""AdvisorService glue: a SuggestRequest in, ranked architecture suggestions out.

The advisor itself lives in ``runwatch.nas`` and needs the ``nas`` extra (NNI,
scikit-learn, torch). This module only validates the request, gathers the run
and its project's history from the store, and converts the answer to protobuf;
every refusal is an :class:`AdviceError` carrying the gRPC status to answer with.
"""

from __future__ import annotations

import importlib
import math
import threading
from dataclasses import dataclass
from pathlib import Path

import grpc

from runwatch.service.store import RunStore
from runwatch.v1 import service_pb2

__all__ = ["AdviceError", "AdviceService", "missing_nas_modules"]

# What `pip install 'runwatch[nas]'` brings that the advisor imports.
NAS_MODULES = ("nni", "sklearn", "torch")
MAX_SUGGESTIONS = 20
DEFAULT_SUGGESTIONS = 3
HISTORY_LIMIT = 2000


class AdviceError(Exception):
    """A request the advisor refuses, with the gRPC status code to answer with."""

    def __init__(self, code: grpc.StatusCode, message: str) -> None:
        super().__init__(message)
        self.code = code


def missing_nas_modules() -> list[str]:
    """Modules of the ``nas`` extra that cannot be imported here."""
    missing = []
    for name in NAS_MODULES:
        try:
            importlib.import_module(name)
        except ImportError:
            missing.append(name)
    return missing


def _check_request(request: service_pb2.SuggestRequest) -> None:
    c = request.constraints
    if not request.run_id and not request.project:
        raise AdviceError(grpc.StatusCode.INVALID_ARGUMENT, "run_id: set run_id, or project to improve its best run")
    if c.max_params < 0:
        raise AdviceError(grpc.StatusCode.INVALID_ARGUMENT, f"constraints.max_params: must be >= 0, got {c.max_params}")
    if not c.max_latency_ms >= 0:  # also rejects NaN
        raise AdviceError(
            grpc.StatusCode.INVALID_ARGUMENT, f"constraints.max_latency_ms: must be >= 0, got {c.max_latency_ms}"
        )
    if c.num_suggestions > MAX_SUGGESTIONS:
        raise AdviceError(
            grpc.StatusCode.INVALID_ARGUMENT,
            f"constraints.num_suggestions: at most {MAX_SUGGESTIONS}, got {c.num_suggestions}",
        )


@dataclass
class _FittedAdvisor:
    advisor: object
    history_ids: frozenset[str]


class AdviceService:
    """Answers SuggestRequests from a store; keeps one fitted advisor per (project, target).

    A fitted advisor is reused until the project's set of finished runs changes,
    so repeated questions about a project do not refit the surrogate.
    """

    def __init__(self, store: RunStore, history_file: Path | None = None) -> None:
        self.store = store
        self.history_file = history_file
        self._prior: list | None = None
        self._lock = threading.Lock()
        self._fitted: dict[tuple[str, str], _FittedAdvisor] = {}

    def _prior_runs(self) -> list:
        """Runs of the history file (read on first use; the settings already checked it)."""
        if self._prior is None:
            from runwatch.nas.history_file import read_history

            self._prior = read_history(self.history_file) if self.history_file is not None else []
        return self._prior

    def suggest(self, request: service_pb2.SuggestRequest) -> service_pb2.SuggestResponse:
        _check_request(request)
        missing = missing_nas_modules()
        if missing:
            raise AdviceError(
                grpc.StatusCode.FAILED_PRECONDITION,
                "AdvisorService.Suggest needs the 'nas' extra, which this server lacks "
                f"(cannot import {', '.join(missing)}): pip install 'runwatch[nas]' and restart the server",
            )
        from runwatch.nas.advisor import Constraints
        from runwatch.nas.observations import history_from_store, observation_from_store

        target = request.target_metric or "val/loss"
        self.store.flush()
        run_id = request.run_id or self._best_run(request.project, target)
        info = self.store.get_run(run_id)
        if info is None:
            raise AdviceError(grpc.StatusCode.NOT_FOUND, f"run_id: no run {run_id!r}")
        try:
            run = observation_from_store(self.store, run_id)
        except ValueError as exc:  # an architecture record with nothing the advisor can edit
            raise AdviceError(grpc.StatusCode.FAILED_PRECONDITION, f"run_id: run {run_id!r}: {exc}") from exc
        if run.genome is None:
            raise AdviceError(
                grpc.StatusCode.FAILED_PRECONDITION,
                f"run_id: run {run_id!r} has no architecture record; send RunStart.architecture "
                "(the Python client fills it from runwatch.client.torch_watch.describe_architecture)",
            )
        project = info.project or "default"
        history = [
            h
            for h in history_from_store(self.store, project=project, limit=HISTORY_LIMIT)
            if h.run_id != run_id
        ]
        history += [h for h in self._prior_runs() if h.run_id != run_id]
        advisor = self._advisor(project, target, history)
        c = request.constraints
        constraints = Constraints(
            max_params=int(c.max_params),
            max_latency_ms=float(c.max_latency_ms),
            num_suggestions=int(c.num_suggestions or DEFAULT_SUGGESTIONS),
        )
        try:
            suggestions = advisor.suggest(run, constraints)
        except ValueError as exc:  # the advisor names the field and the reason
            raise AdviceError(grpc.StatusCode.FAILED_PRECONDITION, str(exc)) from exc
        return self._response(run_id, suggestions)

    def _best_run(self, project: str, target: str) -> str:
        from runwatch.nas.observations import history_from_store

        runs = [
            r
            for r in history_from_store(self.store, project=project, limit=HISTORY_LIMIT)
            if math.isfinite(r.outcome.get(target, math.nan))  # diverged runs carry non-finite outcomes
        ]
        if not runs:
            raise AdviceError(
                grpc.StatusCode.FAILED_PRECONDITION,
                f"project: no finished run of project {project!r} reports {target!r}; name a run_id instead",
            )
        from runwatch.nas.advisor import infer_direction

        maximize = infer_direction(target) == "maximize"
        best = max(runs, key=lambda r: r.outcome[target] if maximize else -r.outcome[target])
        return best.run_id

    def _advisor(self, project: str, target: str, history: list) -> object:
        from runwatch.nas.advisor import Advisor, AdvisorConfig

        ids = frozenset(h.run_id for h in history)
        with self._lock:
            cached = self._fitted.get((project, target))
            if cached is not None and cached.history_ids == ids:
                return cached.advisor
        advisor = Advisor(AdvisorConfig(target_metric=target)).fit(history)
        with self._lock:
            self._fitted[(project, target)] = _FittedAdvisor(advisor, ids)
        return advisor

    @staticmethod
    def _response(run_id: str, suggestions: list) -> service_pb2.SuggestResponse:
        response = service_pb2.SuggestResponse(run_id=run_id)
        for s in suggestions:
            out = response.suggestions.add(rank=s.rank, evidence=list(s.evidence))
            for ch in s.changes:
                out.changes.add(
                    layer=ch.layer, attribute=ch.attribute, before=ch.before, after=ch.after, description=ch.description
                )
            out.effect.CopyFrom(
                service_pb2.PredictedEffect(
                    metric=s.effect.metric,
                    predicted=float(s.effect.predicted),
                    delta=float(s.effect.delta),
                    stddev=float(s.effect.stddev),
                )
            )
            out.cost.CopyFrom(service_pb2.CostDelta(params=int(s.params_delta), flops=int(s.flops_delta)))
        return response

