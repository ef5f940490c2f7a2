"""One run's text log lines in; metric events and ``LOG_PATTERN`` findings out.

:class:`TextMonitor` is to log lines what :class:`~runwatch.models.monitor.RunMonitor`
is to metric values. Per line it mines the template (the project's shared
:class:`~runwatch.models.text.templates.TemplateMiner`), extracts metrics
(:mod:`~runwatch.models.text.extract`), checks failure signatures
(:mod:`~runwatch.models.text.signatures`), values printed as NaN/Inf where its
lines printed numbers (:mod:`~runwatch.models.text.nonfinite_slot`) and
template novelty, and, when an
artifact is configured, scores the template sequence with the DeepLog model
(:mod:`~runwatch.models.text.sequence`). The caller feeds the metric events to
the run's ``RunMonitor`` (so a text-only log gets every metric detector) and
passes the findings to :meth:`RunMonitor.report <runwatch.models.monitor.RunMonitor.report>`.

The run's state (context of earlier lines, an open traceback, an overflow
streak, ...) is JSON-safe (:meth:`TextMonitor.state_dict`); the template miner
is the project's and is saved apart.

Examples
--------
>>> tm = TextMonitor("run-1")
>>> events, findings = tm.observe_lines([
...     " iteration      100/    1000 | lm loss: 2.34 | grad norm: nan |",
...     "RuntimeError: CUDA out of memory. Tried to allocate 2.00 GiB",
... ])
>>> events
[(100, {'loss': 2.34, 'grad_norm': nan})]
>>> [(f.kind.name, f.severity.name, f.metric, f.step) for f in findings]
[('LOG_PATTERN', 'CRITICAL', 'log/cuda_oom', 100)]
"""

from __future__ import annotations

import bisect
import math
import re
from collections import deque
from collections.abc import Iterable
from pathlib import Path

import numpy as np
from pydantic import Field

from runwatch.models.base import DiagnosticConfig
from runwatch.models.findings import AnomalyKind, Finding, Severity
from runwatch.models.text.engine_stats import EngineStatsConfig, EngineStatsWatch
from runwatch.models.text.extract import SKIPPED_ITERATIONS, Event, MetricExtractor
from runwatch.models.text.nonfinite_slot import NonfiniteSlotWatch
from runwatch.models.text.sequence import NextTemplateModel, NoveltyConfig, TemplateNovelty, Vocabulary
from runwatch.models.text.signatures import LogFinding, SignatureConfig, SignatureMatcher, is_error_record
from runwatch.models.text.templates import TemplateConfig, TemplateMiner

DETECTOR = "log_text"
VERSION = "1"
#: Step changes remembered to date held findings: a traceback ends at the first line with metric values.
STEP_HISTORY = 256
_SPLIT = re.compile(r"[\r\n]+")
_ANSI = re.compile(r"\x1b\[[0-9;?]*[A-Za-z]")  # CSI sequences: colours, cursor moves


class TextMonitorConfig(DiagnosticConfig):
    """What a run's text goes through.

    Parameters
    ----------
    extract_metrics
        Read metric events from iteration/epoch lines.
    templates
        Masking and mining of the project's templates.
    signatures
        Thresholds of the stateful failure signatures.
    engine
        Stall and saturation checks on inference servers' stats lines (vLLM, SGLang).
    novelty
        When a template never seen in the project is a finding.
    sequence_model
        Folder of a :class:`~runwatch.models.text.sequence.NextTemplateModel` artifact
        (``""``: off). Its vocabulary is template text, matched to this project's templates.
    sequence_top_k
        A next template ranked at or below this (0 = first guess) is unexpected.
    max_line_chars
        Longer lines are cut before any analysis (each line of a text holding several).
    """

    extract_metrics: bool = True
    templates: TemplateConfig = Field(default_factory=TemplateConfig)
    signatures: SignatureConfig = Field(default_factory=SignatureConfig)
    engine: EngineStatsConfig = Field(default_factory=EngineStatsConfig)
    novelty: NoveltyConfig = Field(default_factory=NoveltyConfig)
    sequence_model: str = ""
    sequence_top_k: int = Field(default=9, ge=1)
    max_line_chars: int = Field(default=4096, ge=64)


class TextMonitor:
    """Per-run text analysis (see the module docstring).

    Parameters
    ----------
    run_id
        The run (for messages only).
    config
        Settings; see :class:`TextMonitorConfig`.
    miner
        The project's template miner (shared by its runs); a private one when None.
    sequence_model
        A loaded next-template model (overrides ``config.sequence_model``).
    """

    name = DETECTOR
    version = VERSION

    def __init__(
        self,
        run_id: str,
        config: TextMonitorConfig | None = None,
        miner: TemplateMiner | None = None,
        sequence_model: NextTemplateModel | None = None,
    ) -> None:
        self.run_id = run_id
        self.config = config or TextMonitorConfig()
        self.miner = miner if miner is not None else TemplateMiner(self.config.templates)
        self.extractor = MetricExtractor()
        self.matcher = SignatureMatcher(self.config.signatures)
        self.engine = EngineStatsWatch(self.config.engine, self.config.signatures.max_evidence)
        self.novelty = TemplateNovelty(self.config.novelty)
        self.nonfinite = NonfiniteSlotWatch()
        if sequence_model is None and self.config.sequence_model:
            sequence_model = NextTemplateModel.load(Path(self.config.sequence_model))
        self.sequence_model = sequence_model
        window = sequence_model.config.window if sequence_model is not None else 1
        self._window: deque[int] = deque([Vocabulary.PAD] * (window - 1) + [Vocabulary.BOS], maxlen=window)
        self.lines = 0  # lines seen in this run
        self.finding_lines: list[int] = []
        self.step = 0  # the run's step as the text tells it (the last extracted step, or a line's own step)
        # (line index, step) at each line that moved the step, the latest STEP_HISTORY of them: the step a held
        # finding (a traceback reported when the lines after it show it ended) is dated at, however lines are batched.
        self._steps: deque[tuple[int, int]] = deque(maxlen=STEP_HISTORY)

    # -- feeding ------------------------------------------------------------------------------

    def observe_lines(self, lines: Iterable[str | tuple[str, int]]) -> tuple[list[Event], list[Finding]]:
        """Analyse a batch of lines in order; return its metric events and findings.

        Each item is a line, or ``(line, step)`` where ``step`` > 0 is the step the
        sender attached to it. Text holding several lines (``\\n`` or tqdm's ``\\r``)
        is split.
        """
        events: list[Event] = []
        found: list[tuple[LogFinding, int]] = []
        unexpected: list[tuple[np.ndarray, int, int, str]] = []
        cfg = self.config
        for item in lines:
            text, given = (item, 0) if isinstance(item, str) else (item[0], int(item[1]))
            if given > self.step:
                self.step = given
                self._steps.append((self.lines, given))
            # Split first, then cut each line: a multi-line record (a traceback shipped as one message) ends
            # with the line that names the error, and a redrawn progress bar with its latest values.
            for line in _SPLIT.split(text) if ("\n" in text or "\r" in text) else (text,):
                if line and not line.isspace():
                    self._line(line[: cfg.max_line_chars], events, found, unexpected)
        for f in self.matcher.flush():
            found.append((f, self._step_of(f)))
        pairs = [(self._finding(f, step), f.line) for f, step in found]
        pairs.extend(self._sequence_findings(unexpected))
        pairs.sort(key=lambda p: (p[0].step, p[1]))
        #: Index (in this run's line stream) of the first offending line of each finding returned last.
        self.finding_lines = [line for _, line in pairs]
        return events, [f for f, _ in pairs]

    @property
    def holds_back(self) -> bool:
        """Whether :meth:`flush` has something to give: a progress bar's values waiting for the next line."""
        return self.config.extract_metrics and self.extractor.holds_back

    def flush(self) -> tuple[list[Event], list[Finding]]:
        """End of the run, or a quiet spell: what is still held back (a progress bar's last values).

        Lines may follow a flush: a bar that moves on reports its next steps as usual.
        """
        events = self.extractor.flush() if self.config.extract_metrics else []
        if events and events[-1][0] > self.step:
            self.step = events[-1][0]
            self._steps.append((self.lines, self.step))
        held = self.matcher.flush()
        self.finding_lines = [f.line for f in held]
        return events, [self._finding(f, self._step_of(f)) for f in held]

    def _step_of(self, f: LogFinding) -> int:
        """The step a finding is dated at: where its first line was, for one reported after lines that followed it."""
        if not f.held or not self._steps or f.line >= self._steps[-1][0]:
            return self.step
        at = bisect.bisect_right(self._steps, (f.line, math.inf)) - 1
        return self._steps[at][1] if at >= 0 else self._steps[0][1]

    def _line(self, line: str, events: list, found: list, unexpected: list) -> None:
        if "\x1b" in line:  # terminal colours (Keras 3's bar, rich, loguru): not part of what the line says
            line = _ANSI.sub("", line)
        index = self.lines
        self.lines += 1
        match = self.miner.add(line)
        extracted: list[Event] = self.extractor.extract(line) if self.config.extract_metrics else []
        if extracted:
            events.extend(extracted)
            if extracted[-1][0] > self.step:
                self.step = extracted[-1][0]
                self._steps.append((index, self.step))
        signed = self.matcher.feed(line, extracted=bool(extracted))
        signed += self.engine.feed(line, index)
        for _, metrics in extracted:
            signed += self._loss_scale(metrics, line)
        found.extend((f, self._step_of(f)) for f in signed)
        # A line a signature or the metric reader already explains is no news: it gets no second incident.
        read = self.config.extract_metrics and self.extractor.read_values
        explained = self.matcher.claimed or read or any(f.line == index for f in signed)
        nonfinite = self.nonfinite.observe(match.masked, line, index, report=not explained)
        if nonfinite is not None:
            found.append((nonfinite, self.step))
            explained = True
        if self.novelty.observe(match.new and not explained, self.miner.lines_seen):
            found.append((_new_template(match.id, line, index), self.step))
        model = self.sequence_model
        if model is not None:
            target = model.vocab.index.get(match.template, Vocabulary.OOV)
            unexpected.append((np.fromiter(self._window, np.int64), target, self.step, line, index))
            self._window.append(target)

    def _loss_scale(self, metrics: dict[str, float], line: str) -> list[LogFinding]:
        """The overflow streak's part of an iteration line's values: its loss scale and skipped iterations."""
        scale = metrics.get("loss_scale", math.nan)
        skipped = metrics.get(SKIPPED_ITERATIONS, 0.0)
        if math.isnan(scale) and not skipped > 0:
            return []
        return self.matcher.loss_scale(scale, line, skipped)

    # -- findings -----------------------------------------------------------------------------

    def _finding(self, f: LogFinding, step: int) -> Finding:
        key = f.signature
        explanation = f"{f.title}: {f.message}"
        if f.hint:
            explanation += f" | fix: {f.hint}"
        return Finding(
            AnomalyKind.LOG_PATTERN,
            f.severity,
            float(f.severity),
            step,
            f"log/{key.split(':', 1)[0]}",
            explanation[:1000],
            key=key,
            detector=DETECTOR,
            detector_version=VERSION,
            lines=list(f.lines),
        )

    def _sequence_findings(self, pending: list) -> list[tuple[Finding, int]]:
        if not pending:
            return []
        model = self.sequence_model
        windows = np.stack([p[0] for p in pending])
        targets = np.array([p[1] for p in pending], np.int64)
        ranks = model.ranks(windows, targets)
        out = []
        for (_, _, step, line, index), rank in zip(pending, ranks.tolist()):
            if rank >= self.config.sequence_top_k:
                lf = LogFinding(
                    "unexpected_sequence", Severity.INFO, index, [line], line.strip()[:500],
                    f"log line unexpected after the previous ones (rank {int(rank)} in the sequence model)",
                    "the order of events differs from the runs the model learned from",
                )
                out.append((self._finding(lf, step), index))
        return out

    # -- state --------------------------------------------------------------------------------

    def state_dict(self) -> dict:
        """JSON-safe per-run state (the project's template miner is saved apart)."""
        return {
            "name": DETECTOR,
            "version": VERSION,
            "config": self.config.to_dict(),
            "lines": self.lines,
            "step": self.step,
            "extractor": self.extractor.state_dict(),
            "matcher": self.matcher.state_dict(),
            "novelty": self.novelty.state_dict(),
            "engine": self.engine.state_dict(),
            "nonfinite": self.nonfinite.state_dict(),
            "window": list(self._window),
            "steps": [list(x) for x in self._steps],
        }

    def load_state_dict(self, state: dict) -> bool:
        """Restore :meth:`state_dict` output; False (left fresh) when it comes from another version or config."""
        if (state.get("name"), state.get("version")) != (DETECTOR, VERSION) or not self._config_fits(state.get("config")):
            return False
        try:
            self.lines = int(state["lines"])
            self.step = int(state["step"])
            self.extractor.load_state_dict(state["extractor"])
            self.matcher.load_state_dict(state["matcher"])
            self.novelty.load_state_dict(state["novelty"])
            self.engine.load_state_dict(state.get("engine", {}))  # absent in checkpoints from before the engine checks
            self.nonfinite.load_state_dict(state.get("nonfinite", {}))  # absent in checkpoints from before this check
            window = [int(x) for x in state["window"]]
            self._steps.extend((int(i), int(st)) for i, st in state.get("steps", []))  # absent before held findings were dated
        except (KeyError, TypeError, ValueError, IndexError) as exc:
            raise ValueError(f"text monitor state: {type(exc).__name__}: {exc}") from None
        if len(window) == self._window.maxlen:
            self._window.extend(window)
        return True

    def _config_fits(self, saved: object) -> bool:
        # Settings added since a checkpoint was written take their defaults, so it still fits.
        if not isinstance(saved, dict):
            return False
        try:
            return TextMonitorConfig.model_validate(saved) == self.config
        except ValueError:
            return False


def _new_template(template_id: int, line: str, index: int) -> LogFinding:
    """The finding of a line whose template the project never saw.

    A new shape is context, not a problem (start-up lines of a framework the project has not run, a config print):
    INFO, and a run's such lines share one incident (key ``new_template:context``) instead of one each. A line
    that is an error-level record by its level field is a WARNING of its own (key ``new_template:<template id>``).
    """
    error = is_error_record(line)
    return LogFinding(
        f"new_template:{template_id}" if error else "new_template:context",
        Severity.WARNING if error else Severity.INFO, index, [line], line.strip()[:500],
        "log line of a shape never seen in this project",
        "new after a change, or a sign of a new problem: compare with the run's other lines",
    )
