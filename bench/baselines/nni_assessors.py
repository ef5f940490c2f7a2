"""NNI's Medianstop and Curvefitting assessors (``nni==3.0``, in-process) as "this run is bad" predictors.

An assessor judges a running trial from its intermediate results against the
trials that completed before it; ``AssessResult.Bad`` (NNI would kill the
trial) is an alert. Runs are trials in corpus order, grouped into studies of
comparable runs (same dataset and validation interval); a run that ended
normally is reported with ``trial_end(success=True)``, a crashed or hung one
with ``success=False``.

- ``MedianstopAssessor(optimize_mode="minimize", start_step=0)`` (NNI
  defaults, with the mode set for a loss) on ``val/loss`` at every
  validation point (real logs without a validation loss: the run's
  ``monitor`` metric and direction, e.g. MLPerf's ``val/acc``, maximised). Non-finite values are reported as 1e30 (a worse-than-any
  loss: NNI's median arithmetic cannot take NaN).
- ``CurvefittingAssessor(epoch_num=20, start_step=6, threshold=0.95, gap=1)``
  (NNI defaults). It needs an accuracy-like metric that is maximised
  (its docstring: "The intermediate result must be accuracy"), so it reads
  ``val/acc`` (classification runs only; regression runs are never judged).
  ``epoch_num`` is the number of reports a trial makes: each run reports 20
  times, the latest ``val/acc`` at every 1/20 of its planned steps. Curve
  fitting costs ~0.4 s per judgement, so the harness may judge only every
  ``stride``-th run of each study (the others still complete and set the
  study's best).
"""

from __future__ import annotations

import logging
import math
import warnings
from collections.abc import Callable

import numpy as np

from bench.baselines.base import BaselineRule
from runwatch.models.block import MetricBlock
from runwatch.models.findings import AnomalyKind, Finding

logging.getLogger("nni").setLevel(logging.ERROR)
logging.getLogger("curvefitting_Assessor").setLevel(logging.ERROR)

BAD_VALUE = 1e30


def _assessors():
    from nni.algorithms.hpo.curvefitting_assessor import CurvefittingAssessor
    from nni.algorithms.hpo.medianstop_assessor import MedianstopAssessor
    from nni.assessor import AssessResult

    return MedianstopAssessor, CurvefittingAssessor, AssessResult


class Studies:
    """One assessor per study key, shared by the runs of that study (in the order they arrive)."""

    def __init__(self, factory: Callable[..., object]) -> None:
        self.factory = factory
        self.by_key: dict[tuple, object] = {}
        self.seen: dict[tuple, int] = {}

    def get(self, key: tuple, *args) -> tuple[object, int]:
        if key not in self.by_key:
            self.by_key[key] = self.factory(*args)
            self.seen[key] = 0
        self.seen[key] += 1
        return self.by_key[key], self.seen[key] - 1


def study_key(meta: dict) -> tuple:
    spec = meta.get("spec", {})
    return (spec.get("dataset", meta.get("study", "")), spec.get("val_every", 0))


class Medianstop(BaselineRule):
    name = "nni.Medianstop"
    reference = "NNI 3.0 MedianstopAssessor(optimize_mode='minimize', start_step=0) on val/loss"

    def __init__(self, studies: Studies, meta: dict) -> None:
        _, _, self.result = _assessors()
        # the monitored metric and its direction: val/loss (minimise) unless the run says otherwise
        self.metric = meta.get("monitor", "val/loss")
        mode = meta.get("monitor_mode", "min") + "imize"
        self.assessor, _ = studies.get(study_key(meta) + (mode,), mode)
        self.trial = meta["run_id"]
        self.history: list[float] = []
        self.stopped = False

    def observe_block(self, block: MetricBlock) -> list[Finding]:
        col = block.columns.get(self.metric)
        if col is None or self.stopped:
            return []
        for s, v in zip(col.steps.tolist(), col.values.tolist()):
            self.history.append(v if math.isfinite(v) else BAD_VALUE)
            if self.assessor.assess_trial(self.trial, list(self.history)) == self.result.Bad:
                self.stopped = True
                return [self.finding(s, self.metric, f"best {self.metric} worse than the median of completed trials' running averages",
                                     1.0, AnomalyKind.RUN_OUTLIER, key="medianstop")]
        return []

    def end_run(self, meta: dict) -> None:
        if self.history:
            self.assessor.trial_end(self.trial, bool(meta.get("ended", True)) and meta.get("status", "completed") == "completed")


class Curvefitting(BaselineRule):
    name = "nni.Curvefitting"
    reference = "NNI 3.0 CurvefittingAssessor(epoch_num=20, start_step=6, threshold=0.95, gap=1) on val/acc"

    def __init__(self, studies: Studies, meta: dict, metric: str = "val/acc", reports: int = 20, stride: int = 1) -> None:
        _, _, self.result = _assessors()
        self.assessor, nth = studies.get(study_key(meta))
        self.judge = nth % stride == 0
        self.trial = meta["run_id"]
        self.metric, self.reports = metric, reports
        planned = int(meta.get("spec", {}).get("steps", 0)) or int(meta.get("planned_steps", 0))
        self.marks = [planned * (k + 1) / reports for k in range(reports)] if planned else []
        self.latest = math.nan
        self.history: list[float] = []
        self.stopped = False

    def observe_block(self, block: MetricBlock) -> list[Finding]:
        col = block.columns.get(self.metric)
        if col is None or self.stopped or not self.marks:
            return []
        for s, v in zip(col.steps.tolist(), col.values.tolist()):
            # reports due before this value arrives use the latest value seen so far
            while len(self.history) < self.reports and s + 1 > self.marks[len(self.history)] and not math.isnan(self.latest):
                if self._report(s):
                    return [self._bad(s)]
            self.latest = v if math.isfinite(v) else 0.0
        return []

    def _report(self, step: int) -> bool:
        self.history.append(self.latest)
        if not self.judge:
            return False
        np.random.seed(len(self.history))  # CurveModel's MCMC uses numpy's global RNG
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            verdict = self.assessor.assess_trial(self.trial, list(self.history))
        if verdict == self.result.Bad:
            self.stopped = True
            return True
        return False

    def _bad(self, step: int) -> Finding:
        return self.finding(step, self.metric, "predicted final val/acc below 0.95 x the best completed trial",
                            1.0, AnomalyKind.RUN_OUTLIER, key="curvefitting")

    def end_run(self, meta: dict) -> None:
        if self.stopped or not self.marks:
            return
        if not math.isnan(self.latest):
            while len(self.history) < self.reports:  # the final reports of a completed run
                self.history.append(self.latest)
        ok = bool(meta.get("ended", True)) and meta.get("status", "completed") == "completed"
        if self.history and ok:
            self.assessor.trial_history = list(self.history)  # trial_end reads the last assessed history
            self.assessor.trial_end(self.trial, True)
