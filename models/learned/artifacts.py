"""Learned-detector artifacts: a versioned JSON config plus safetensors weights (no pickle).

An artifact is a folder with ``config.json`` (:class:`LearnedArtifactConfig`:
the feature list, every model's config, the calibrated thresholds and how it
was trained) and ``weights.safetensors`` (numpy arrays: the autoencoder's and
forecaster's weights and scalings, the run-outlier reference). The default
artifact ships inside the package (``runwatch/models/learned/default``).

Examples
--------
>>> art = load_artifact()                    # the shipped default
>>> art.config.format_version, art.config.features[0]
(1, 'loss_vs_start')
"""

from __future__ import annotations

import functools
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from pydantic import Field

from runwatch.models.base import DiagnosticConfig
from runwatch.models.learned.features import FEATURES
from runwatch.models.learned.forecaster import DivergenceForecaster, ForecasterConfig
from runwatch.models.learned.run_outlier import RunOutlierConfig, RunOutlierDetector, summary_names
from runwatch.models.learned.sequence_ae import SequenceAEConfig, SequenceAutoencoder

FORMAT_VERSION = 1
DEFAULT_ARTIFACT = Path(__file__).resolve().parent / "default"


class Thresholds(DiagnosticConfig):
    """Calibrated decision levels (each on its model's score, higher = more anomalous)."""

    sequence_alert: float = Field(..., description="autoencoder error that raises SEQUENCE_OUTLIER")
    sequence_gate: float = Field(..., description="autoencoder error above which a rule finding is not 'learned normal'")
    forecast_alert: float = Field(..., description="P(divergence within the longest horizon) that raises DIVERGENCE_PREDICTED")
    forecast_gate: float = Field(..., description="forecast probability above which a rule finding is not 'learned normal'")
    run_outlier_alert: float = Field(..., description="PyOD score that raises RUN_OUTLIER")


class LearnedArtifactConfig(DiagnosticConfig):
    """Everything needed to rebuild the learned detectors from their weights."""

    format_version: int = FORMAT_VERSION
    features: tuple[str, ...] = FEATURES
    sequence_ae: SequenceAEConfig
    forecaster: ForecasterConfig
    run_outlier: RunOutlierConfig
    thresholds: Thresholds
    prefix_checkpoints: tuple[int, ...] = (16, 32, 64, 128, 256, 512, 1024, 2048)
    sequence_every_steps: int = Field(1, ge=1, description="the autoencoder scores a window at most this often (steps)")
    training: dict[str, Any] = Field(default_factory=dict, description="provenance: data, split, command, counts")


@dataclass
class LearnedArtifact:
    """The fitted models and their config."""

    config: LearnedArtifactConfig
    sequence_ae: SequenceAutoencoder
    forecaster: DivergenceForecaster
    run_outlier: RunOutlierDetector

    def save(self, folder: str | Path) -> Path:
        from safetensors.numpy import save_file

        folder = Path(folder)
        folder.mkdir(parents=True, exist_ok=True)
        tensors = {**self.sequence_ae.tensors(), **self.forecaster.tensors(), **self.run_outlier.tensors()}
        save_file({k: v.astype("float64") for k, v in tensors.items()}, str(folder / "weights.safetensors"))
        (folder / "config.json").write_text(self.config.model_dump_json(indent=2) + "\n")
        return folder


class ArtifactError(ValueError, OSError):
    """An artifact that cannot be loaded; the message names the file and the reason.

    Also an OSError (as :class:`io.UnsupportedOperation` is both): a file that cannot be used, which
    ``runwatch serve`` reports as one ``error:`` line at start (exit 2) like its other unusable files,
    rather than a traceback.
    """


def load_artifact(folder: str | Path | None = None) -> LearnedArtifact:
    """Load an artifact folder (the shipped default when ``folder`` is None or empty)."""
    return _load(str(Path(folder).resolve()) if folder else str(DEFAULT_ARTIFACT))


@functools.lru_cache(maxsize=8)
def _load(folder: str) -> LearnedArtifact:
    from safetensors.numpy import load_file

    path = Path(folder)
    cfg_path, weights_path = path / "config.json", path / "weights.safetensors"
    for p in (cfg_path, weights_path):
        if not p.is_file():
            raise ArtifactError(f"learned artifact {folder}: {p.name} is missing")
    try:
        config = LearnedArtifactConfig.model_validate_json(cfg_path.read_text())
    except ValueError as exc:
        raise ArtifactError(f"learned artifact {cfg_path}: {exc}") from None
    if config.format_version != FORMAT_VERSION:
        raise ArtifactError(f"learned artifact {cfg_path}: format_version {config.format_version}, this runwatch reads {FORMAT_VERSION}")
    if tuple(config.features) != FEATURES:
        raise ArtifactError(f"learned artifact {cfg_path}: features differ from this runwatch's ({len(config.features)} vs {len(FEATURES)})")
    try:
        tensors = load_file(str(weights_path))
    except Exception as exc:  # noqa: BLE001 - a truncated or foreign file raises safetensors' own SafetensorError
        raise ArtifactError(f"learned artifact {weights_path}: not a readable safetensors file: {exc}") from None
    try:
        return LearnedArtifact(
            config,
            SequenceAutoencoder.from_tensors(config.sequence_ae, tensors),
            DivergenceForecaster.from_tensors(config.forecaster, tensors),
            RunOutlierDetector.from_tensors(config.run_outlier, tensors, summary_names(config.features)),
        )
    except (KeyError, ValueError, OSError, TypeError, IndexError) as exc:
        raise ArtifactError(f"learned artifact {weights_path}: {type(exc).__name__}: {exc}") from None
