"""Build :class:`~runwatch.nas.history.RunObservation` s from the service's store, and keep them as JSON.

- ``genome``: :meth:`Genome.from_architecture` of the run's ``RunStart.architecture``
  (``None`` when it has no layers).
- ``hyperparameters``: ``RunStart.hyperparameters``, nested objects flattened
  with dots (``{"optimizer": {"lr": 0.1}}`` -> ``"optimizer.lr"``); numbers,
  booleans and strings are kept.
- ``series``: every metric of the run's events, steps ascending.
- ``diagnoses``: the run's anomaly incidents (latest revision of each): the
  kind as a lower-case name without ``ANOMALY_KIND_``, the layer, the primary
  metric, the incident's first step and the detector score.
- ``outcome``: for ended runs only, the last logged value of each outcome
  metric: by default ``loss`` and every metric under ``val/``, ``test/`` or
  ``eval/``. A run whose training loss (``loss``) ended non-finite diverged:
  its model is broken whatever its last validation said, so every outcome is
  that non-finite value (the surrogate leaves such runs out of its fit).
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING, Any

import numpy as np

from runwatch.models.metric_names import rename_map
from runwatch.nas.architecture import Genome
from runwatch.nas.history import Diagnosis, RunObservation

if TYPE_CHECKING:
    from runwatch.service.store import RunStore
    from runwatch.v1 import anomaly_pb2, service_pb2

__all__ = [
    "history_from_store",
    "is_outcome_metric",
    "observation_from_dict",
    "observation_from_store",
    "observation_to_dict",
]

_OUTCOME_PREFIXES = ("val/", "test/", "eval/")
_RUNNING = 1  # runs_pb2.RUN_STATUS_RUNNING, without importing the protos at module load
_DEPLOYMENT = 2  # runs_pb2.RUN_KIND_DEPLOYMENT


def is_outcome_metric(name: str) -> bool:
    """Default outcome metrics: ``loss`` and anything under ``val/``, ``test/`` or ``eval/``.

    >>> is_outcome_metric("val/acc"), is_outcome_metric("grad_norm")
    (True, False)
    """
    return name == "loss" or name.startswith(_OUTCOME_PREFIXES)


def _flatten(obj: Mapping[str, Any], prefix: str = "") -> dict[str, float | str]:
    out: dict[str, float | str] = {}
    for k, v in obj.items():
        key = f"{prefix}{k}"
        if isinstance(v, Mapping):
            out.update(_flatten(v, key + "."))
        elif isinstance(v, bool):
            out[key] = float(v)
        elif isinstance(v, (int, float, str)):
            out[key] = v
    return out


def _kind_name(kind: int) -> str:
    from runwatch.v1 import anomaly_pb2

    name = anomaly_pb2.AnomalyKind.Name(kind) if kind in anomaly_pb2.AnomalyKind.values() else f"KIND_{kind}"
    return name.removeprefix("ANOMALY_KIND_").lower()


def _diagnosis(a: anomaly_pb2.Anomaly, names: Mapping[str, str]) -> Diagnosis:
    metric = a.metrics[0] if a.metrics else ""
    return Diagnosis(
        kind=_kind_name(a.kind),
        layer=a.layer,
        metric=names.get(metric, metric),
        step=int(a.first_step or a.step),
        score=float(a.score),
    )


def _observation(
    store: RunStore, info: service_pb2.RunInfo, outcome_metrics: Sequence[str] | None, strict: bool
) -> RunObservation:
    from runwatch.client.convert import struct_to_dict

    run_id = info.run_id
    genome = None
    if len(info.start.architecture.layers):
        try:
            genome = Genome.from_architecture(info.start.architecture)
        except ValueError:
            if strict:
                raise
    steps: dict[str, list[int]] = {}
    values: dict[str, list[float]] = {}
    for ev in store.events(run_id):
        for name, value in ev.metrics.items():
            if name not in steps:
                steps[name], values[name] = [], []
            steps[name].append(ev.step)
            values[name].append(value)
    # What the run logged as train_loss / eval_loss / learning_rate, under the names the advisor reads.
    names = rename_map(steps)
    series = {}
    for name in sorted(steps):
        s, v = np.asarray(steps[name], dtype=np.int64), np.asarray(values[name], dtype=float)
        order = np.argsort(s, kind="stable")  # events are stored in step order; be safe with late chunks
        series[names[name]] = (s[order], v[order])
    outcome: dict[str, float] = {}
    if info.status != _RUNNING:
        wanted = outcome_metrics if outcome_metrics is not None else [n for n in series if is_outcome_metric(n)]
        for name in wanted:
            if name in series and len(series[name][1]):
                outcome[name] = float(series[name][1][-1])
        final_loss = float(series["loss"][1][-1]) if "loss" in series and len(series["loss"][1]) else 0.0
        if not math.isfinite(final_loss):
            outcome = dict.fromkeys(outcome, final_loss)
    return RunObservation(
        run_id=run_id,
        genome=genome,
        project=info.project or "default",
        hyperparameters=_flatten(struct_to_dict(info.start.hyperparameters)),
        series=series,
        diagnoses=[_diagnosis(a, names) for a in store.anomalies(run_id=run_id)],
        outcome=outcome,
    )


def observation_from_store(
    store: RunStore, run_id: str, outcome_metrics: Sequence[str] | None = None
) -> RunObservation:
    """The run ``run_id`` as the advisor sees it.

    Parameters
    ----------
    store
        The service's :class:`~runwatch.service.store.RunStore`.
    run_id
        Run to read.
    outcome_metrics
        Metrics whose last value is the outcome of an ended run; default
        :func:`is_outcome_metric`.

    Raises
    ------
    KeyError
        Unknown run.
    ValueError
        The run's architecture record has nothing editable (from
        :meth:`Genome.from_architecture`, naming its layers).

    Examples
    --------
    >>> import tempfile
    >>> from pathlib import Path
    >>> from runwatch.service.store import RunStore, end_run_op
    >>> from runwatch.v1 import runs_pb2
    >>> store = RunStore(Path(tempfile.mkdtemp()) / "runwatch.db")
    >>> store.open_run(runs_pb2.RunStart(run_id="r1", project="p", start_time=1.0)).result()
    >>> store.submit([end_run_op("r1", runs_pb2.RUN_STATUS_FINISHED, 2.0, "completed")]).result()
    >>> obs = observation_from_store(store, "r1")
    >>> obs.project, obs.genome, obs.outcome
    ('p', None, {})
    >>> store.close()
    """
    info = store.get_run(run_id)
    if info is None:
        raise KeyError(f"unknown run {run_id!r}")
    return _observation(store, info, outcome_metrics, strict=True)


def history_from_store(
    store: RunStore, project: str = "", limit: int = 1000, outcome_metrics: Sequence[str] | None = None
) -> list[RunObservation]:
    """Training runs of ``project`` ("" = all projects), newest first, at most ``limit``.

    Deployment runs are skipped. A run whose architecture record has nothing
    editable gets ``genome=None`` instead of failing the whole history.
    """
    out = []
    for info in store.list_runs(project=project, limit=limit):
        if info.kind == _DEPLOYMENT:
            continue
        out.append(_observation(store, info, outcome_metrics, strict=False))
    return out


# -- JSON ----------------------------------------------------------------------------------------


def _num(x: float) -> float | str | None:
    if math.isnan(x):
        return None
    if math.isinf(x):
        return "inf" if x > 0 else "-inf"
    return x


def _from_num(x: Any) -> float:
    if x is None:
        return math.nan
    if x == "inf":
        return math.inf
    if x == "-inf":
        return -math.inf
    return float(x)


def observation_to_dict(obs: RunObservation) -> dict[str, Any]:
    """A JSON-ready dict of ``obs`` (NaN as ``null``, infinities as ``"inf"``/``"-inf"``).

    Examples
    --------
    >>> import json, math
    >>> obs = RunObservation("r", None, series={"loss": (np.array([0, 1]), np.array([1.0, math.nan]))})
    >>> back = observation_from_dict(json.loads(json.dumps(observation_to_dict(obs))))
    >>> back.series["loss"][0].tolist(), math.isnan(back.series["loss"][1][1])
    ([0, 1], True)
    """
    return {
        "run_id": obs.run_id,
        "project": obs.project,
        "genome": obs.genome.to_dict() if obs.genome is not None else None,
        "hyperparameters": dict(obs.hyperparameters),
        "series": {
            k: {"steps": np.asarray(s).astype(int).tolist(), "values": [_num(float(v)) for v in vals]}
            for k, (s, vals) in obs.series.items()
        },
        "diagnoses": [
            {"kind": d.kind, "layer": d.layer, "metric": d.metric, "step": d.step, "score": d.score}
            for d in obs.diagnoses
        ],
        "outcome": {k: _num(v) for k, v in obs.outcome.items()},
    }


def observation_from_dict(d: Mapping[str, Any]) -> RunObservation:
    """Inverse of :func:`observation_to_dict`."""
    return RunObservation(
        run_id=d["run_id"],
        genome=Genome.from_dict(d["genome"]) if d.get("genome") is not None else None,
        project=d.get("project", "default"),
        hyperparameters=dict(d.get("hyperparameters", {})),
        series={
            k: (np.asarray(v["steps"], dtype=np.int64), np.asarray([_from_num(x) for x in v["values"]], dtype=float))
            for k, v in d.get("series", {}).items()
        },
        diagnoses=[Diagnosis(**x) for x in d.get("diagnoses", [])],
        outcome={k: _from_num(v) for k, v in d.get("outcome", {}).items()},
    )
