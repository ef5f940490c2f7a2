"""Named diagnostics, imported lazily, and the suite that builds them per run.

Names map to ``"module:Class"`` strings so a service that disables a
diagnostic never imports it (the learned detectors pull in torch).
"""

from __future__ import annotations

import importlib
from collections.abc import Mapping
from typing import Any

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from runwatch.models.alerting import IncidentPolicyConfig
from runwatch.models.base import Diagnostic, DiagnosticConfig, RunContext
from runwatch.models.fusion import FusionConfig
from runwatch.models.monitor import RunMonitor

_PKG = "runwatch.models.diagnostics"

DIAGNOSTICS: dict[str, str] = {
    "nonfinite": f"{_PKG}.nonfinite:NonFiniteDiagnostic",
    "loss_spike": f"{_PKG}.loss_spike:LossSpikeDiagnostic",
    "divergence": f"{_PKG}.divergence:DivergenceDiagnostic",
    "lr_jump": f"{_PKG}.learning_rate:LearningRateJumpDiagnostic",
    "step_size": f"{_PKG}.step_size:StepSizeDiagnostic",
    "start_blowup": f"{_PKG}.start_blowup:StartBlowupDiagnostic",
    "exploding_gradient": f"{_PKG}.gradients:ExplodingGradientDiagnostic",
    "vanishing_gradient": f"{_PKG}.gradients:VanishingGradientDiagnostic",
    "update_ratio": f"{_PKG}.gradients:UpdateRatioDiagnostic",
    "dead_units": f"{_PKG}.activations:DeadUnitsDiagnostic",
    "saturation": f"{_PKG}.activations:SaturationDiagnostic",
    "activation_spike": f"{_PKG}.activation_spike:ActivationSpikeDiagnostic",
    "plateau": f"{_PKG}.plateau:PlateauDiagnostic",
    "no_learning": f"{_PKG}.no_learning:NoLearningDiagnostic",
    "chance_level": f"{_PKG}.chance_level:ChanceLevelDiagnostic",
    "zero_loss": f"{_PKG}.zero_loss:ZeroLossDiagnostic",
    "frozen_loss": f"{_PKG}.frozen_loss:FrozenLossDiagnostic",
    "zero_score": f"{_PKG}.zero_score:ZeroScoreDiagnostic",
    "zero_box_loss": f"{_PKG}.zero_box_loss:ZeroBoxLossDiagnostic",
    "relapse": f"{_PKG}.relapse:RelapseDiagnostic",
    "overfitting": f"{_PKG}.overfitting:OverfittingDiagnostic",
    "stalled": f"{_PKG}.stalled:StalledRunDiagnostic",
    "memory_growth": f"{_PKG}.resources:MemoryGrowthDiagnostic",
    "data_bottleneck": f"{_PKG}.resources:DataBottleneckDiagnostic",
    "latency": f"{_PKG}.deployment:LatencyDiagnostic",
    "latency_drift": f"{_PKG}.latency_drift:LatencyDriftDiagnostic",
    "error_rate": f"{_PKG}.deployment:ErrorRateDiagnostic",
    "error_rate_drift": f"{_PKG}.latency_drift:ErrorRateDriftDiagnostic",
    "learned": "runwatch.models.learned.detector:LearnedDiagnostic",
}


def diagnostic_class(name: str) -> type[Diagnostic]:
    """Import and return the diagnostic class registered as ``name``."""
    try:
        target = DIAGNOSTICS[name]
    except KeyError:
        raise ValueError(f"unknown diagnostic {name!r}; known: {', '.join(sorted(DIAGNOSTICS))}") from None
    module, cls = target.split(":")
    return getattr(importlib.import_module(module), cls)


class SuiteConfig(BaseModel):
    """Which diagnostics run, their settings, and the alert policy.

    Round-trips through JSON, e.g. a ``--diagnostics-config`` file::

        {"enabled": ["nonfinite", "loss_spike"],
         "settings": {"loss_spike": {"z_threshold": 8.0}},
         "policy": {"cooldown_steps": 100}}

    Examples
    --------
    >>> cfg = SuiteConfig(enabled=["nonfinite"], settings={"nonfinite": {"prefixes": ["loss"]}})
    >>> SuiteConfig.model_validate_json(cfg.model_dump_json()) == cfg
    True
    """

    model_config = ConfigDict(extra="forbid", frozen=True)

    enabled: list[str] = Field(default_factory=lambda: list(DIAGNOSTICS))
    settings: dict[str, dict[str, Any]] = Field(default_factory=dict)
    policy: IncidentPolicyConfig = Field(default_factory=IncidentPolicyConfig)
    fusion: FusionConfig = Field(default_factory=FusionConfig)
    evidence_len: int = Field(default=32, ge=1, le=4096)

    @field_validator("enabled")
    @classmethod
    def _known_names(cls, names: list[str]) -> list[str]:
        unknown = [n for n in names if n not in DIAGNOSTICS]
        if unknown:
            raise ValueError(f"unknown diagnostics {unknown}; known: {sorted(DIAGNOSTICS)}")
        return names

    @field_validator("settings")
    @classmethod
    def _settings_for_known(cls, settings: dict[str, dict[str, Any]]) -> dict[str, dict[str, Any]]:
        unknown = [n for n in settings if n not in DIAGNOSTICS]
        if unknown:
            raise ValueError(f"settings for unknown diagnostics {unknown}; known: {sorted(DIAGNOSTICS)}")
        for name, raw in settings.items():
            try:
                diagnostic_class(name).config_class.model_validate(raw)
            except ValidationError as exc:
                problems = "; ".join(
                    f"settings.{name}.{'.'.join(map(str, e['loc']))}: {e['msg']}" for e in exc.errors()
                )
                raise ValueError(problems) from None
        return settings

    @model_validator(mode="after")
    def _settings_for_enabled(self) -> SuiteConfig:
        idle = [n for n in self.settings if n not in self.enabled]
        if idle:
            raise ValueError(f"settings given for diagnostics that are not enabled: {idle}")
        return self


class DiagnosticSuite:
    """Validated diagnostic classes and configs; builds a fresh monitor per run.

    ``project_models`` (a :class:`~runwatch.models.learned.project_models.ProjectModels`)
    holds models refitted per project; each monitor's diagnostics are bound to
    their run's project (:class:`~runwatch.models.base.RunContext`).

    Examples
    --------
    >>> suite = DiagnosticSuite(SuiteConfig(enabled=["nonfinite"]))
    >>> monitor = suite.monitor("run-1", project="vision")
    >>> [d.name for d in monitor.diagnostics], monitor.context.project
    (['nonfinite'], 'vision')
    """

    def __init__(self, config: SuiteConfig | None = None, project_models: Any = None) -> None:
        self.config = config or SuiteConfig()
        self.project_models = project_models
        self._entries: list[tuple[type[Diagnostic], DiagnosticConfig]] = []
        for name in self.config.enabled:
            cls = diagnostic_class(name)
            raw: Mapping[str, Any] = self.config.settings.get(name, {})
            cfg = cls.config_class.model_validate(raw)
            cls.prepare(cfg)
            self._entries.append((cls, cfg))

    @property
    def names(self) -> list[str]:
        return [cls.name for cls, _ in self._entries]

    def context(self, project: str) -> RunContext:
        """What a run of ``project`` is bound to (see :meth:`RunMonitor.bind`)."""
        return RunContext(project, self.project_models)

    def monitor(self, run_id: str, project: str = "") -> RunMonitor:
        return RunMonitor(
            run_id,
            [cls(cfg) for cls, cfg in self._entries],
            policy=self.config.policy,
            evidence_len=self.config.evidence_len,
            fusion=self.config.fusion,
            context=self.context(project),
        )
