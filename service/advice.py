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
from collections.abc import Callable
from dataclasses import dataclass

import grpc

from runwatch.service.store import RunStore
from runwatch.v1 import runs_pb2, service_pb2

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
    history_key: frozenset[tuple[str, int, int]]


class AdviceService:
    """Answers SuggestRequests from a store; keeps one fitted advisor per (project, target).

    A fitted advisor is reused while the project's runs (ids, statuses, event
    counts: what the store's run list says without reading any event) stay the
    same, so repeated questions do not re-read every run's events nor refit.
    ``prior`` are the runs of the ``--advisor-history`` file, added to every project's history.
    """

    def __init__(self, store: RunStore, prior: list | None = None) -> None:
        self.store = store
        self._prior = list(prior or [])  # runs of --advisor-history, read once by the server
        self._lock = threading.Lock()
        self._fitted: dict[tuple[str, str], _FittedAdvisor] = {}

    def suggest(self, request: service_pb2.SuggestRequest) -> service_pb2.SuggestResponse:
        _check_request(request)
        missing = missing_nas_modules()
        if missing:
            raise AdviceError(
                grpc.StatusCode.FAILED_PRECONDITION,
                "AdvisorService.Suggest needs the 'nas' extra, which this server lacks "
                f"(cannot import {', '.join(missing)}): pip install 'runwatch[nas]' and restart the server",
            )
        from runwatch.models.metric_names import canonical_name
        from runwatch.nas.advisor import Constraints
        from runwatch.nas.observations import history_from_store, is_outcome_metric, observation_from_store

        # the advisor reads stored runs under runwatch's names (eval_loss as val/loss): so does the request's target
        target = canonical_name(request.target_metric) if request.target_metric else "val/loss"
        if not is_outcome_metric(target):
            raise AdviceError(
                grpc.StatusCode.INVALID_ARGUMENT,
                f"target_metric: {request.target_metric!r} is not an outcome the advisor predicts; it predicts a run's "
                "final training loss ('loss') or a held-out metric (names under val/, eval/ or test/, e.g. val/loss, "
                "val/acc)",
            )
        self.store.flush()
        project_runs = None
        if request.run_id:
            run_id = request.run_id
        else:
            project_runs = history_from_store(self.store, project=request.project, limit=HISTORY_LIMIT)
            run_id = _best_run(project_runs, request.project, target)
        info = self.store.get_run(run_id)
        if info is None:
            raise AdviceError(grpc.StatusCode.NOT_FOUND, f"run_id: no run {run_id!r}")
        if request.run_id and request.project and request.project != (info.project or "default"):
            raise AdviceError(
                grpc.StatusCode.INVALID_ARGUMENT,
                f"project: run {run_id!r} belongs to project {info.project or 'default'!r}, not {request.project!r}",
            )
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

        def history() -> list:
            runs = project_runs
            if runs is None or project != request.project:
                runs = history_from_store(self.store, project=project, limit=HISTORY_LIMIT)
            return [h for h in runs + self._prior if h.run_id != run_id]

        advisor = self._advisor(project, target, run_id, history)
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

    def _advisor(self, project: str, target: str, run_id: str, history: Callable[[], list]) -> object:
        from runwatch.nas.advisor import Advisor, AdvisorConfig

        key = frozenset(
            (r.run_id, r.status, r.event_count)
            for r in self.store.list_runs(project=project, limit=HISTORY_LIMIT)
            if r.run_id != run_id and r.kind != runs_pb2.RUN_KIND_DEPLOYMENT
        )
        with self._lock:
            cached = self._fitted.get((project, target))
            if cached is not None and cached.history_key == key:
                return cached.advisor
        advisor = Advisor(AdvisorConfig(target_metric=target)).fit(history())
        with self._lock:
            self._fitted[(project, target)] = _FittedAdvisor(advisor, key)
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



def _best_run(runs: list, project: str, target: str) -> str:
    """The run of ``runs`` with the best finite ``target`` outcome."""
    from runwatch.nas.advisor import infer_direction

    finished = [r for r in runs if math.isfinite(r.outcome.get(target, math.nan))]  # diverged runs: NaN/Inf
    if not finished:
        raise AdviceError(
            grpc.StatusCode.FAILED_PRECONDITION,
            f"project: no finished run of project {project!r} reports {target!r}; name a run_id instead",
        )
    sign = 1.0 if infer_direction(target) == "maximize" else -1.0
    return max(finished, key=lambda r: sign * r.outcome[target]).run_id
