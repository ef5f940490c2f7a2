"""What the advisor knows about one run: the input every part of ``runwatch.nas`` shares.

A :class:`RunObservation` is built from the service's store, from a corpus run
or from a row of a tabular benchmark; the surrogate learns from many of them
and the advisor improves one of them.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from runwatch.nas.architecture import Genome

__all__ = ["Diagnosis", "RunObservation"]


@dataclass(frozen=True)
class Diagnosis:
    """One finding runwatch raised for a run, reduced to what advice needs.

    ``kind`` is the lower-case anomaly kind without prefix (``"vanishing_gradient"``,
    ``"dead_units"``, ``"overfitting"``, ``"plateau"``, ...); ``layer`` is the
    module path it concerns ("" for run-wide findings).
    """

    kind: str
    layer: str = ""
    metric: str = ""
    step: int = 0
    score: float = 0.0


@dataclass
class RunObservation:
    """A run as the advisor sees it.

    Attributes
    ----------
    run_id, project
        Identity.
    genome
        The editable view of the run's architecture, or ``None`` when the run
        has no architecture record (the advisor refuses such runs by name).
    hyperparameters
        Numbers and strings from ``RunStart.hyperparameters`` (lr, batch size, ...).
    series
        Logged metrics: name -> (steps, values), steps ascending. May be empty
        (tabular benchmarks only know the outcome).
    diagnoses
        Findings runwatch raised for the run.
    outcome
        Final values of target metrics when known (``{"val/loss": 0.12}``);
        empty for a run still in progress.
    """

    run_id: str
    genome: Genome | None
    project: str = "default"
    hyperparameters: dict[str, float | str] = field(default_factory=dict)
    series: dict[str, tuple[np.ndarray, np.ndarray]] = field(default_factory=dict)
    diagnoses: list[Diagnosis] = field(default_factory=list)
    outcome: dict[str, float] = field(default_factory=dict)
