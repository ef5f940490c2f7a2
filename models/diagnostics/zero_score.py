"""A quality metric that has been 0 since the run began: the model has not scored anything."""

from __future__ import annotations

import numpy as np
from pydantic import Field

from runwatch.models.base import Diagnostic, DiagnosticConfig
from runwatch.models.block import MetricBlock
from runwatch.models.findings import AnomalyKind, Finding, Severity
from runwatch.models.metric_names import is_score_metric


class ZeroScoreConfig(DiagnosticConfig):
    """Settings of :class:`ZeroScoreDiagnostic`.

    Parameters
    ----------
    patience
        Logged values of a score, from its first, that must all be at most ``max_value``.
        Default 10: a detector trained from scratch leaves 0 within its first few epochs
        (one of the 63 healthy Ultralytics runs of 2026-12-06 was at 0.0 and 0.0014 in its
        first two and 0.04 by its fifth).
    max_value
        What counts as 0: Ultralytics prints scores to 5 decimals, and a model that detects
        nothing scores 0.0 to 0.0006 there. Default 0.001.
    """

    patience: int = Field(default=10, ge=2)
    max_value: float = Field(default=0.001, ge=0.0)


class ZeroScoreDiagnostic(Diagnostic):
    """Flags a score (mAP, accuracy, F1, IoU) that has been 0 for its first ``patience`` values.

    A detector whose mAP stays at 0.000 epoch after epoch is the most common way an
    Ultralytics training fails: the label files are missing or empty, the class ids do not
    match the dataset file's names, or the evaluation reads the wrong split. Its losses fall
    all the same (the box and class losses are computed on whatever the loader gives), so no
    loss rule sees it. Nothing a healthy run logs scores exactly 0 for long: once a value
    is above ``max_value`` the metric is not watched any more. One finding per run.

    Raises ``PLATEAU`` (ERROR), score 1.

    Examples
    --------
    >>> d = ZeroScoreDiagnostic()
    >>> rows = [{"metrics/mAP50-95(B)": v, "train/box_loss": 1.0 - 0.01 * i} for i, v in enumerate([0.0] * 12)]
    >>> (f,) = d.observe_block(MetricBlock.from_rows(list(range(12)), [0.0] * 12, rows))
    >>> f.step, f.kind.name, f.severity.name, f.metric
    (9, 'PLATEAU', 'ERROR', 'metrics/mAP50-95(B)')
    >>> healthy = [{"val/acc": v} for v in [0.0, 0.0, 0.31, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0]]
    >>> ZeroScoreDiagnostic().observe_block(MetricBlock.from_rows(list(range(12)), [0.0] * 12, healthy))
    []
    """

    name = "zero_score"
    version = "1"
    config_class = ZeroScoreConfig
    reference = "Ultralytics' most reported training failure: mAP 0 from start to end (bench/real_runs_fresh_yolo_2026-12-06.md)"
    state_attributes = ("done", "zeros", "cleared", "since")

    config: ZeroScoreConfig

    def __init__(self, config: ZeroScoreConfig | None = None) -> None:
        super().__init__(config)
        self.done = False  # reported: idle from now on
        self.zeros: dict[str, int] = {}  # per score metric: its values so far, all at most max_value
        self.cleared: list[str] = []  # score metrics that scored above max_value (not watched any more)
        self.since: dict[str, int] = {}  # step of each watched metric's first value

    def watches(self, metric: str) -> bool:
        return is_score_metric(metric)

    def observe_block(self, block: MetricBlock) -> list[Finding]:
        if self.done:
            return []
        cfg = self.config
        for name, col in block.columns.items():
            if not is_score_metric(name) or name in self.cleared:
                continue
            rows = np.flatnonzero(np.isfinite(col.values))  # the block's finite values, by position
            if not len(rows):
                continue
            values = col.values[rows]
            self.since.setdefault(name, int(col.steps[rows[0]]))
            above = (values > cfg.max_value) | (values < 0.0)
            before = int(np.argmax(above)) if above.any() else len(values)
            have = self.zeros.get(name, 0)
            if have + before >= cfg.patience:
                at = rows[cfg.patience - have - 1]
                self.done = True
                return [self._finding(name, int(col.steps[at]), float(col.wall_times[at]))]
            if before < len(values):
                self.cleared.append(name)
                self.zeros.pop(name, None)
                self.since.pop(name, None)
            else:
                self.zeros[name] = have + before
        return []

    def _finding(self, name: str, step: int, wall: float) -> Finding:
        cfg = self.config
        return Finding(
            AnomalyKind.PLATEAU,
            Severity.ERROR,
            score=1.0,
            step=step,
            metric=name,
            explanation=(
                f"{name} has been at most {cfg.max_value:g} for its first {cfg.patience} logged values "
                f"(since step {self.since[name]}): the model has not scored anything; check the labels (missing or "
                f"empty label files, class ids that do not match the dataset's class names and count) and that "
                f"evaluation reads the right split"
            ),
            key="zero_score",
            wall_time=wall,
            since=self.since[name],
        )
