"""The refit policy of the run-outlier detector: which runs teach a project's model, when it refits, its level.

A project starts cold on the shipped model. The policy (:class:`ProjectRefitConfig`):

- **Eligible runs**: a run that ended FINISHED with no WARNING-or-higher anomaly
  (:func:`eligible`). A RUN_OUTLIER from the shipped model does not disqualify it
  (``ignore_run_outlier``): that verdict is what a project whose healthy runs differ
  from the shipped reference needs revised, and without it such a project would never
  leave the cold start. A RUN_OUTLIER from the project's own model does: it knows the
  project, and a run unlike its runs must not teach it. A run's rows are its prefix
  summaries, one per checkpoint it reached (16, 32, 64, ... losses).
- **When**: fit points depend on the count of eligible runs alone (:func:`fit_point`):
  at ``min_runs``, then after every ``every_runs`` more. The model of a fit point
  ``n`` is fitted on the shipped reference plus the newest ``max_reference_runs`` of
  the project's first ``n`` eligible runs in the order they were stored, with the
  shipped seed: every instance reading the same store builds the same trees.
- **Level** (:func:`alert_level`): the shipped level flags a share ``r`` of the
  shipped reference (:func:`shipped_flag_rate`; 0 for the default artifact). The
  project's level is the lowest that flags at most ``r`` of the combined reference
  under the new model, and never below the shipped level: the refit is there to stop
  flagging the project's normal runs; healthy runs alone give no evidence for
  flagging more than the shipped model would.

Examples
--------
>>> policy = ProjectRefitConfig()
>>> [fit_point(n, policy) for n in (7, 8, 15, 16, 23, 24)]
[0, 8, 8, 16, 16, 24]
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence

import numpy as np
from pydantic import Field

from runwatch.models.base import DiagnosticConfig
from runwatch.models.findings import AnomalyKind, Severity
from runwatch.models.learned.project_models import ProjectModel
from runwatch.models.learned.run_outlier import RunOutlierDetector


class ProjectRefitConfig(DiagnosticConfig):
    """When the service refits a project's run-outlier detector (``settings.learned.project_refit``).

    Examples
    --------
    >>> cfg = ProjectRefitConfig(min_runs=4)
    >>> ProjectRefitConfig.from_json(cfg.to_json()) == cfg
    True
    """

    enabled: bool = Field(True, description="refit per project as its runs finish (off: every project uses the shipped model)")
    min_runs: int = Field(8, ge=1, description="eligible runs before a project's first refit")
    every_runs: int = Field(8, ge=1, description="refit again after this many more eligible runs")
    max_reference_runs: int = Field(512, ge=1, description="the project's newest eligible runs a refit uses, at most")
    ignore_run_outlier: bool = Field(
        True,
        description="a run whose only WARNING+ anomaly is a RUN_OUTLIER of the shipped model is still eligible "
        "(the verdict the refit revises); one of the project's own model always keeps a run out",
    )


def fit_point(eligible_runs: int, config: ProjectRefitConfig) -> int:
    """The eligible-run count the project's model is fitted at, given how many are stored (0 = none yet)."""
    if eligible_runs < config.min_runs:
        return 0
    return config.min_runs + (eligible_runs - config.min_runs) // config.every_runs * config.every_runs


def eligible(
    finished: bool, severities: Mapping[int, int], config: ProjectRefitConfig, project_flagged: bool = False
) -> bool:
    """Whether a run that ended teaches its project's model: finished, and no WARNING+ anomaly.

    ``severities``: the worst severity its alerts reached, per anomaly kind;
    ``project_flagged``: the project's own model raised a RUN_OUTLIER on it.

    >>> policy = ProjectRefitConfig()
    >>> eligible(True, {int(AnomalyKind.RUN_OUTLIER): 2, int(AnomalyKind.PLATEAU): 1}, policy)
    True
    >>> eligible(True, {int(AnomalyKind.RUN_OUTLIER): 2}, policy, project_flagged=True)
    False
    >>> eligible(True, {int(AnomalyKind.LOSS_SPIKE): 2}, policy), eligible(False, {}, policy)
    (False, False)
    """
    ignore = {int(AnomalyKind.RUN_OUTLIER)} if config.ignore_run_outlier and not project_flagged else set()
    worst = max((sev for kind, sev in severities.items() if kind not in ignore), default=0)
    return finished and worst < Severity.WARNING


def shipped_flag_rate(detector: RunOutlierDetector, alert: float) -> float:
    """The share of ``detector``'s own reference rows it scores at or above ``alert`` (as the diagnostic rounds)."""
    scores = np.round(detector.score_samples(detector.reference), 6)
    return float(np.mean(scores >= alert))


def alert_level(scores: np.ndarray, rate: float, floor: float) -> float:
    """The lowest level (at least ``floor``) flagging at most a share ``rate`` of ``scores``.

    Scores are compared as the diagnostic does, rounded to 6 decimals.

    >>> alert_level(np.array([0.1, 0.2, 0.3, 0.4]), rate=0.25, floor=0.0)
    0.300001
    >>> alert_level(np.array([0.1, 0.2, 0.3, 0.4]), rate=0.0, floor=0.5)
    0.5
    """
    ranked = np.sort(np.round(np.asarray(scores, dtype=np.float64), 6))[::-1]
    allowed = min(math.floor(rate * len(ranked)), len(ranked) - 1)
    return max(float(floor), round(float(ranked[allowed]) + 1e-6, 6))


def fit_project_model(
    shipped: RunOutlierDetector, shipped_alert: float, rate: float, runs: Sequence[np.ndarray], fit_at: int
) -> ProjectModel:
    """Fit a project's model on the shipped reference plus ``runs`` (each run's summary rows, oldest run first).

    >>> rng = np.random.default_rng(0)
    >>> shipped = RunOutlierDetector().fit(rng.normal(size=(200, 3)), ["a", "b", "c"])
    >>> runs = [rng.normal(loc=6.0, size=(4, 3)) for _ in range(8)]
    >>> model = fit_project_model(shipped, 0.2, 0.0, runs, fit_at=8)
    >>> model.n_runs, len(model.detector.reference), model.alert >= 0.2
    (8, 232, True)
    >>> bool(model.detector.score_samples(runs[0])[0] < shipped.score_samples(runs[0])[0])
    True
    """
    rows = np.concatenate([shipped.reference, *[np.asarray(r, dtype=np.float64) for r in runs]])
    detector = RunOutlierDetector(shipped.config).fit(rows, shipped.names)
    level = alert_level(detector.score_samples(rows), rate, shipped_alert)
    return ProjectModel(detector, level, len(runs), fit_at)
