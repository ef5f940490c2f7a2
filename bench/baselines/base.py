"""Common shape of the baseline rules: each is a diagnostic the runwatch monitor can run.

A baseline rule has ``name``, ``version`` and ``reference`` (the rule it
implements and where its defaults are documented), and
``observe_block(block) -> list[Finding]`` like runwatch's own diagnostics,
so the harness streams every detector through the same
:class:`~runwatch.models.monitor.RunMonitor` and alert policy. Rules that
look at several runs (NNI's assessors) also get ``end_run(meta)`` when a run
is over.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator

from runwatch.models.block import MetricBlock
from runwatch.models.findings import AnomalyKind, Finding, Severity


class BaselineRule:
    """Base of the baseline rules (per-value Python; these are references, not the product)."""

    name = "baseline"
    version = "1"
    reference = ""

    def observe_block(self, block: MetricBlock) -> list[Finding]:
        raise NotImplementedError

    def on_idle(self, now: float, last_wall_time: float, last_step: int) -> Finding | None:
        return None

    def end_run(self, meta: dict) -> None:
        """Called once the run is over (ended or abandoned)."""

    def finding(
        self,
        step: int,
        metric: str,
        explanation: str,
        score: float = 1.0,
        kind: AnomalyKind = AnomalyKind.RUN_OUTLIER,
        severity: Severity = Severity.WARNING,
        key: str = "",
    ) -> Finding:
        return Finding(kind, severity, float(score), int(step), metric, explanation, key=key or metric)


def by_step(block: MetricBlock, names: Iterable[str]) -> Iterator[tuple[int, dict[str, float]]]:
    """The block's values of ``names``, grouped by step, in step order."""
    rows: dict[int, dict[str, float]] = {}
    for name in names:
        col = block.columns.get(name)
        if col is None:
            continue
        for s, v in zip(col.steps.tolist(), col.values.tolist()):
            rows.setdefault(s, {})[name] = v
    for s in sorted(rows):
        yield s, rows[s]


def with_prefix(block: MetricBlock, prefix: str) -> list[str]:
    return [n for n in block.columns if n.startswith(prefix)]
