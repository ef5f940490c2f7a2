"""Text log lines through detection: each run's TextMonitor, each project's template miner.

The pipeline hands every accepted batch of a run's log lines here. Metric
events read from the text go into the run's ``RunMonitor`` as if they had been
sent as metrics (names the run already sends as metrics are left to those) and are
stored as its metric history (charts, `runwatch show`, export), and
``LOG_PATTERN`` findings go through the same alert policy, so dedupe, ids,
the anomaly topic and the watch stream treat them like any anomaly.

A project's template miner lives in the store (table ``text_templates``) as
JSON text through a Drain3 persistence handler; it is written at most every
``save_interval`` seconds while it changes, off the batch's own writes (losing
the last templates to a crash only means mining them again).
"""

from __future__ import annotations

import logging
import time
from functools import partial

from runwatch.models.alerting import Alert
from runwatch.models.block import MetricBlock
from runwatch.models.metric_names import canonical_name
from runwatch.models.text.extract import Event
from runwatch.models.text.monitor import TextMonitor, TextMonitorConfig
from runwatch.models.text.templates import JsonStatePersistence, TemplateMiner
from runwatch.service import store as store_ops

log = logging.getLogger("runwatch.service")


class LogTextAnalysis:
    """Per-project template miners and per-run text monitors for one pipeline."""

    def __init__(self, store, config: TextMonitorConfig | None = None, save_interval: float = 1.0) -> None:
        self.store = store
        self.config = config or TextMonitorConfig()
        self.save_interval = save_interval
        self.miners: dict[str, TemplateMiner] = {}
        self._saved_at: dict[str, float] = {}

    def miner(self, project: str) -> TemplateMiner:
        m = self.miners.get(project)
        if m is not None:
            return m
        def save(text: str) -> None:
            self.store.submit([store_ops.save_templates_op(project, text)])

        try:
            m = TemplateMiner(
                self.config.templates,
                persistence=JsonStatePersistence(load=partial(self.store.template_state, project), save=save),
            )
        except ValueError as exc:
            log.warning("project %s: stored log templates not used (%s); mining afresh", project, exc)
            m = TemplateMiner(self.config.templates, persistence=JsonStatePersistence(save=save))
        self.miners[project] = m
        return m

    def monitor(self, state) -> TextMonitor:
        tm = state.text
        if tm is None:
            tm = state.text = TextMonitor(state.run_id, self.config, miner=self.miner(state.project))
        return tm

    def analyse(self, state, items: list[tuple[str, int]], now: float) -> tuple[list[Alert], list[Event]]:
        """One run's accepted lines of a batch, in order: the alerts they raised, and the metric events read
        from them that went to the run's monitor (to be stored with the lines, as the run's metric history)."""
        if state.monitor is None or not items:
            return [], []
        events, findings = self.monitor(state).observe_lines(items)
        alerts, read = self._deliver(state, events, findings, now)
        self._save(state.project)
        return alerts, read

    def end(self, state, now: float) -> tuple[list[Alert], list[Event]]:
        """The run's text stream ended (its ``RunEnd``) or went quiet: what its monitor still held back (the last
        state of a progress bar, which is only known to be final once nothing follows), as :meth:`analyse` returns
        it. At a RunEnd, to be called before the run's monitor ends and its text state is dropped."""
        if state.monitor is None or state.text is None or not state.text.holds_back:
            return [], []
        events, findings = state.text.flush()
        return self._deliver(state, events, findings, now)

    def _deliver(self, state, events: list[Event], findings: list, now: float) -> tuple[list[Alert], list[Event]]:
        """Metric events read from a run's text into its monitor (names it sends as metrics are left to those) and
        its text findings through the alert policy: the alerts raised, and the events delivered."""
        monitor = state.monitor
        alerts: list[Alert] = []
        read: list[Event] = []
        if events:
            # Names from text are runwatch's (val_loss is read as val/loss): compare them with the run's own names as
            # the detectors read those, so a printed copy of a logged metric makes no second, rounded series.
            sent = set().union(*state.valid_names) if state.valid_names else set()
            sent |= {canonical_name(n) for n in sent}
            steps, walls, names, values = [], [], [], []
            for step, metrics in events:
                kept = [(k, v) for k, v in metrics.items() if k not in sent]
                if kept:
                    read.append((step, dict(kept)))
                    steps.append(step)
                    walls.append(now)
                    names.append(tuple(k for k, _ in kept))
                    values.append([v for _, v in kept])
            if steps:
                alerts.extend(monitor.observe_block(MetricBlock.from_values(steps, walls, names, values)))
        if findings:
            alerts.extend(monitor.report(findings, now))
        return alerts, read

    def _save(self, project: str) -> None:
        m = self.miners.get(project)
        if m is None or not m.dirty:
            return
        now = time.monotonic()
        if now - self._saved_at.get(project, -1e9) >= self.save_interval:
            self._saved_at[project] = now
            m.save()

    def flush(self) -> None:
        """Write every changed miner now (on shutdown)."""
        for project, m in self.miners.items():
            if m.dirty:
                m.save()
                self._saved_at[project] = time.monotonic()

    @staticmethod
    def snapshot(state) -> dict | None:
        return None if state.text is None else state.text.state_dict()

    def restore(self, state, doc: dict | None) -> bool:
        """Install a run's text state from a checkpoint; False when it does not fit (left fresh)."""
        if not doc:
            return True
        return self.monitor(state).load_state_dict(doc)
