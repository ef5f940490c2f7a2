"""Fusion: learned normality gates the rule diagnostics, and one failing run yields one incident.

The rules stay the explainers, but a rule firing on a stretch that the
learned models (:class:`~runwatch.models.learned.detector.LearnedDiagnostic`)
found normal is demoted to INFO: healthy runs show an early gradient surge, a
recurrent net "clicking" out of a plateau, the bumps of warm restarts, and
the autoencoder has seen those in healthy runs. Which kinds are gated is
:attr:`FusionConfig.gated_kinds`; non-finite values, stalls, deployment
checks and the learned findings themselves are never gated.

Second, once a run has an open WARNING+ incident (its *root cause*), findings
of other symptom kinds within ``group_steps`` are symptoms of it: they are kept
as INFO with the root cause named, not published as new incidents. So a
diverging run reports DIVERGENCE_PREDICTED (and later NONFINITE), not six
kinds at once. Findings of the root's own kind on other metrics (the other
layers of an exploding gradient) are part of it, not incidents of their own.

Third, a run that has *failed* (a CRITICAL divergence or non-finite value)
stays one incident: for ``failure_steps`` after the last such finding, the
rule and learned findings that follow from it (saturated and then vanishing
gradients, odd update ratios, an outlying run) are INFO, naming the failure.

Examples
--------
>>> from runwatch.models.findings import AnomalyKind, Finding, Severity
>>> fusion = FindingFusion(FusionConfig())
>>> surge = lambda: Finding(AnomalyKind.EXPLODING_GRADIENT, Severity.WARNING, 3.0, 12, "grad_norm", "grad norm surged")
>>> [f.severity.name for f in fusion.apply([surge()], learned_normal=lambda step: True)]
['INFO']
>>> [f.severity.name for f in fusion.apply([surge()], learned_normal=lambda step: False)]
['WARNING']
"""

from __future__ import annotations

import re
from collections.abc import Callable, Sequence

from pydantic import Field, field_validator

from runwatch.models.base import DiagnosticConfig
from runwatch.models.findings import AnomalyKind, Finding, Severity

# The rules that fired on healthy runs of the training split (bench/RESULTS.md, Q4b) or, per issue 11, on
# held-out healthy conv nets (dead units). Plateau, vanishing gradients and update ratios never fired on a
# healthy training run, and gating them cost recall on slow convergence: they stay ungated. Overfitting is
# not gated either: on held-out tabular data the learned models call the val/train gap unusual anyway (the
# gate removed 4 of 9 false alarms), while it demoted the demo's real, mild overfit to INFO. Loss spikes
# are not gated: the autoencoder's windows smooth one bad batch away (the gate demoted 17 of 19 bad batches
# of the training split) while calling noisy healthy runs unusual; the spike rule's own alert level
# (LossSpikeConfig.alert_z) separates them better.
GATED_DEFAULT = ("EXPLODING_GRADIENT", "DEAD_UNITS")
# What a blown-up net shows next: on the corpus training split's 23 divergent runs, after the first CRITICAL
# divergence or non-finite finding, rules still opened incidents for vanishing gradients (6, 50-116 steps later),
# update ratios (3, 60), an outlying run (2, 21-26), saturation (1, 91) and a plateau (1, 175).
FAILURES_DEFAULT = ("DIVERGENCE_PREDICTED", "NONFINITE")
CONSEQUENCES_DEFAULT = (
    "LOSS_SPIKE", "EXPLODING_GRADIENT", "VANISHING_GRADIENT", "DEAD_UNITS", "SATURATION", "UPDATE_RATIO", "PLATEAU",
    "OVERFITTING", "RUN_OUTLIER", "SEQUENCE_OUTLIER", "ACTIVATION_SPIKE",
)
# Vanishing gradients and update ratios are per-layer too: a collapsed 12-layer transformer raised one WARNING+ incident
# per layer and kind (43 in a new user's run). As symptoms, the first is the root and the rest INFO; on the corpus
# (test split, novel-21/22/27/39) the run-level numbers are unchanged.
FOLDED_NOTE = re.compile(r"\[INFO: (part|symptom) of the (\w+) incident at step (-?\d+)")
"""The note fusion appends to a finding it made INFO because another incident explains it (another layer of
that incident, or a symptom of it): ``(part|symptom, root kind, root step)``. Readers fold such findings under
their incident (``runwatch show``/``watch``, the dashboard's run page, whose app.js holds the same pattern)."""
SYMPTOMS_DEFAULT = ("LOSS_SPIKE", "EXPLODING_GRADIENT", "DEAD_UNITS", "VANISHING_GRADIENT", "UPDATE_RATIO")
LOSS_RESPONSE_DEFAULT = ("EXPLODING_GRADIENT",)


class FusionConfig(DiagnosticConfig):
    """Settings of :class:`FindingFusion`.

    Parameters
    ----------
    enabled
        Off: findings pass unchanged.
    gated_kinds
        Rule kinds that need the learned models' agreement to alert.
    symptom_kinds
        Rule kinds that, within ``group_steps`` after a WARNING+ finding of
        another kind, are symptoms of it (INFO); after one of their own kind,
        on another metric (another layer), part of its incident (INFO).
    group_steps
        The symptom window in steps. 0 switches grouping off.
    loss_response_kinds
        Rule kinds that alert only once the training loss responds: while the
        loss at the finding's step is calm (finite, within 10 % of its best,
        not rising, no jump beyond 3x its noise) they are INFO. Gradient-norm
        surges by default: the HF Trainer logs the norm before clipping, and
        clipped fp16/LoRA runs show 100-1,000x surges that the loss never feels.
    gate_max_score
        Neither gate (learned normality, loss response) demotes a finding whose score reaches this; for a
        gradient norm the score is its multiple of the norm's typical level, and a 10,000x surge is a blow-up
        that clipping or a skip guard only hides from the loss (mlx-lm's LoRA trainer at grad norm 1.8e8
        against 4.2, a thread's reported problem). Default 1e4: the largest surge of a healthy run seen was
        ~2,500x (a TinyLlama LoRA's pre-clip norm 755 against 0.3); dead-unit scores are fractions.
    learning_kinds, learning_below
        Rule kinds that are INFO while the training loss (smoothed) is at most ``learning_below`` x its start:
        the run is learning, so a layer's small gradient is not stopping it. Vanishing gradients, below 0.1 by
        default: a healthy BERT fine-tune that reached loss 0.003 raised four WARNINGs for its attention
        query/key layers, whose gradients are 1e-5 of the embeddings'. The corpus's vanishing-gradient faults
        are runs whose loss ends above 0.7x its start (bench/corpus/labels.py), so the bar leaves them alone.
    failure_kinds
        Kinds that, at CRITICAL, mean the run has failed.
    consequence_kinds
        Kinds that, within ``failure_steps`` after the last failure finding,
        are consequences of the failure (INFO). ``failure_steps`` 0 switches
        this off.
    """

    enabled: bool = True
    gated_kinds: tuple[str, ...] = GATED_DEFAULT
    symptom_kinds: tuple[str, ...] = SYMPTOMS_DEFAULT
    group_steps: int = Field(100, ge=0)
    loss_response_kinds: tuple[str, ...] = LOSS_RESPONSE_DEFAULT
    gate_max_score: float = Field(1e4, gt=0.0)
    learning_kinds: tuple[str, ...] = ("VANISHING_GRADIENT",)
    learning_below: float = Field(0.1, ge=0.0, lt=1.0)
    failure_kinds: tuple[str, ...] = FAILURES_DEFAULT
    consequence_kinds: tuple[str, ...] = CONSEQUENCES_DEFAULT
    failure_steps: int = Field(500, ge=0)

    @field_validator("gated_kinds", "symptom_kinds", "loss_response_kinds", "learning_kinds", "failure_kinds", "consequence_kinds")
    @classmethod
    def _known_kinds(cls, kinds: tuple[str, ...]) -> tuple[str, ...]:
        # Checked here, not when a run's monitor is built: a bad name would fail every run.
        unknown = [k for k in kinds if k not in AnomalyKind.__members__]
        if unknown:
            raise ValueError(f"unknown anomaly kinds {unknown}; known: {sorted(AnomalyKind.__members__)}")
        return kinds


class FindingFusion:
    """Per-run fusion state: the current root-cause incident."""

    def __init__(self, config: FusionConfig | None = None) -> None:
        self.config = config or FusionConfig()
        self._gated = {AnomalyKind[k] for k in self.config.gated_kinds}
        self._symptoms = {AnomalyKind[k] for k in self.config.symptom_kinds}
        self._loss_felt = {AnomalyKind[k] for k in self.config.loss_response_kinds}
        self._learning = {AnomalyKind[k] for k in self.config.learning_kinds}
        self._failures = {AnomalyKind[k] for k in self.config.failure_kinds}
        self._consequences = {AnomalyKind[k] for k in self.config.consequence_kinds}
        self.root_kind = 0
        self.root_step = -1
        self.root_key: str | None = ""  # its incident key: the same kind elsewhere (another layer) is part of it
        self.root_detector = ""  # its detector: with kind and key, the incident findings folded under it join
        self.failed_kind = 0
        self.failed_step = -1  # the last CRITICAL failure finding's step

    def apply(
        self,
        findings: Sequence[Finding],
        learned_normal: Callable[[int], bool] | None,
        loss_calm: Callable[[int], bool] | None = None,
        loss_fell: Callable[[int, float], bool] | None = None,
    ) -> list[Finding]:
        """Demote gated and symptom findings to INFO (in place); returns them in order."""
        if not self.config.enabled or learned_normal is None:  # fusion needs the learned diagnostic in the suite
            return list(findings)
        for f in findings:
            if f.severity < Severity.WARNING:
                continue
            if f.severity is Severity.CRITICAL and f.kind in self._failures:
                self.failed_kind, self.failed_step = int(f.kind), max(self.failed_step, f.step)
            elif f.kind in self._consequences and self._after_failure(f.step):
                f.severity = Severity.INFO
                f.explanation += (f" [INFO: after the run failed ({AnomalyKind(self.failed_kind).name} "
                                  f"at step {self.failed_step})]")
                continue
            gateable = f.score < self.config.gate_max_score
            if gateable and f.kind in self._loss_felt and loss_calm is not None and loss_calm(f.step):
                f.severity = Severity.INFO
                f.explanation += " [INFO: the training loss has not responded]"
                continue
            if f.kind in self._learning and loss_fell is not None and loss_fell(f.step, self.config.learning_below):
                f.severity = Severity.INFO
                f.explanation += f" [INFO: the training loss is below {self.config.learning_below:g}x its start]"
                continue
            if gateable and f.kind in self._gated and learned_normal(f.step):
                f.severity = Severity.INFO
                f.explanation += " [INFO: the learned models found this stretch normal]"
                continue
            if f.kind in self._symptoms and (
                self.config.group_steps
                and self.root_step >= 0
                and (f.kind != self.root_kind or (self.root_key is not None and f.key != self.root_key))
                and f.step - self.root_step <= self.config.group_steps
            ):
                f.severity = Severity.INFO
                root = AnomalyKind(self.root_kind).name
                f.explanation += (f" [INFO: symptom of the {root} incident at step {self.root_step}]" if f.kind != self.root_kind
                                  else f" [INFO: part of the {root} incident at step {self.root_step} ({self.root_key})]")
                if self.root_detector and self.root_key is not None:
                    f.folded_into = (self.root_detector, self.root_kind, self.root_key)
                continue
            if self.root_step < 0 or f.step - self.root_step > self.config.group_steps:
                self.root_kind, self.root_step, self.root_key = int(f.kind), f.step, f.key
                self.root_detector = f.detector
        return list(findings)

    def _after_failure(self, step: int) -> bool:
        return self.failed_step >= 0 and 0 <= step - self.failed_step <= self.config.failure_steps

    def state_dict(self) -> list[int | str | None]:
        return [self.root_kind, self.root_step, self.failed_kind, self.failed_step, self.root_key, self.root_detector]

    def load_state_dict(self, state: list[int]) -> None:
        self.root_kind, self.root_step = int(state[0]), int(state[1])
        if len(state) >= 4:  # checkpoints written before the failure latch have two entries
            self.failed_kind, self.failed_step = int(state[2]), int(state[3])
        # before the root's key was kept: unknown, so nothing of the root's kind is counted part of it
        self.root_key = str(state[4]) if len(state) >= 5 and state[4] is not None else None
        # before the root's detector was kept: unknown, so findings folded under it name no incident (part_of "")
        self.root_detector = str(state[5]) if len(state) >= 6 else ""
