"""Per-project run-outlier models: the map every run of a project reads its model from.

The service keeps one :class:`ProjectModels` (its refits fill it, see
:mod:`runwatch.service.outlier_refit`); each run's
:class:`~runwatch.models.learned.detector.LearnedDiagnostic` looks its
project up at every prefix checkpoint, so a refit reaches the runs being
monitored at their next checkpoint. A project not in the map uses the
shipped model.

Examples
--------
>>> import numpy as np
>>> from runwatch.models.learned.run_outlier import RunOutlierDetector
>>> det = RunOutlierDetector().fit(np.random.default_rng(0).normal(size=(64, 3)), ["a", "b", "c"])
>>> models = ProjectModels()
>>> models.put("vision", ProjectModel(det, alert=0.25, n_runs=8, fit_at=8))
>>> models.get("vision").label, models.get("nlp") is None
('project model, 8 runs', True)
"""

from __future__ import annotations

import threading
import time
from dataclasses import dataclass, field

from runwatch.models.learned.run_outlier import RunOutlierDetector


@dataclass(frozen=True)
class ProjectModel:
    """A run-outlier detector refitted for one project, with its own alert level.

    Parameters
    ----------
    detector
        Fitted on the shipped reference plus the project's reference rows.
    alert
        Score at or above which a prefix is a RUN_OUTLIER.
    n_runs
        The project's runs in its reference.
    fit_at
        The project's eligible runs stored when it was fitted (its fit point, see
        :func:`~runwatch.models.learned.project_refit.fit_point`).
    fitted_at
        When it was fitted (``time.time()``).
    """

    detector: RunOutlierDetector
    alert: float
    n_runs: int
    fit_at: int
    fitted_at: float = field(default_factory=time.time)

    @property
    def label(self) -> str:
        """How explanations name it."""
        return f"project model, {self.n_runs} runs"


class ProjectModels:
    """Thread-safe map project -> :class:`ProjectModel` (refits write it on their own thread)."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._models: dict[str, ProjectModel] = {}

    def get(self, project: str) -> ProjectModel | None:
        with self._lock:
            return self._models.get(project)

    def put(self, project: str, model: ProjectModel) -> None:
        with self._lock:
            self._models[project] = model

    def projects(self) -> list[str]:
        with self._lock:
            return sorted(self._models)

    def __len__(self) -> int:
        with self._lock:
            return len(self._models)
