"""Architecture advice: learn from past runs which edits of a model's architecture help, and suggest them.

Importing this package is cheap: submodules (and numpy, scikit-learn, torch or
NNI behind them) load on first use of a name, so ``import runwatch.nas`` works
without the ``nas`` extra installed.

Examples
--------
>>> import runwatch.nas as nas
>>> nas.infer_direction("val/acc")
'maximize'
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

# public name -> submodule that defines it
_EXPORTS = {
    "Block": "architecture",
    "Change": "architecture",
    "Genome": "architecture",
    "Diagnosis": "history",
    "RunObservation": "history",
    "SearchSpace": "space",
    "FeatureEncoder": "features",
    "run_features": "features",
    "PeerSummary": "evidence",
    "run_summary": "evidence",
    "Surrogate": "surrogate",
    "SurrogateConfig": "surrogate",
    "TargetTransform": "surrogate",
    "StabilityFix": "stability",
    "stability_fixes": "stability",
    "Seed": "seeding",
    "Finding": "seeding",
    "run_findings": "seeding",
    "seed_genomes": "seeding",
    "LossProgress": "progress",
    "loss_progress": "progress",
    "ArchSupport": "prior",
    "OutcomePrior": "prior",
    "PeerArchitecture": "transfer",
    "peer_architectures": "transfer",
    "Candidate": "search",
    "SearchConfig": "search",
    "search_candidates": "search",
    "Advisor": "advisor",
    "AdvisorConfig": "advisor",
    "Constraints": "advisor",
    "NoArchitectureError": "advisor",
    "NoSuggestionError": "advisor",
    "PredictedEffect": "advisor",
    "Suggestion": "advisor",
    "estimated_latency_ms": "advisor",
    "infer_direction": "advisor",
    "history_from_store": "observations",
    "observation_from_store": "observations",
    "observation_from_dict": "observations",
    "observation_to_dict": "observations",
}

__all__ = [
    "Advisor",
    "AdvisorConfig",
    "ArchSupport",
    "Block",
    "Candidate",
    "Change",
    "Constraints",
    "Diagnosis",
    "FeatureEncoder",
    "Finding",
    "Genome",
    "LossProgress",
    "NoArchitectureError",
    "NoSuggestionError",
    "OutcomePrior",
    "PeerArchitecture",
    "PeerSummary",
    "PredictedEffect",
    "RunObservation",
    "SearchConfig",
    "SearchSpace",
    "Seed",
    "StabilityFix",
    "Suggestion",
    "Surrogate",
    "SurrogateConfig",
    "TargetTransform",
    "estimated_latency_ms",
    "history_from_store",
    "infer_direction",
    "loss_progress",
    "observation_from_dict",
    "observation_from_store",
    "observation_to_dict",
    "peer_architectures",
    "run_features",
    "run_findings",
    "run_summary",
    "search_candidates",
    "seed_genomes",
    "stability_fixes",
]

if TYPE_CHECKING:
    from runwatch.nas.advisor import (
        Advisor,
        AdvisorConfig,
        Constraints,
        NoArchitectureError,
        NoSuggestionError,
        PredictedEffect,
        Suggestion,
        estimated_latency_ms,
        infer_direction,
    )
    from runwatch.nas.architecture import Block, Change, Genome
    from runwatch.nas.evidence import PeerSummary, run_summary
    from runwatch.nas.features import FeatureEncoder, run_features
    from runwatch.nas.history import Diagnosis, RunObservation
    from runwatch.nas.observations import (
        history_from_store,
        observation_from_dict,
        observation_from_store,
        observation_to_dict,
    )
    from runwatch.nas.prior import ArchSupport, OutcomePrior
    from runwatch.nas.progress import LossProgress, loss_progress
    from runwatch.nas.search import Candidate, SearchConfig, search_candidates
    from runwatch.nas.seeding import Finding, Seed, run_findings, seed_genomes
    from runwatch.nas.space import SearchSpace
    from runwatch.nas.stability import StabilityFix, stability_fixes
    from runwatch.nas.surrogate import Surrogate, SurrogateConfig, TargetTransform
    from runwatch.nas.transfer import PeerArchitecture, peer_architectures


def __getattr__(name: str) -> Any:
    module = _EXPORTS.get(name)
    if module is None:
        raise AttributeError(f"module 'runwatch.nas' has no attribute {name!r}")
    value = getattr(importlib.import_module(f"runwatch.nas.{module}"), name)
    globals()[name] = value  # later lookups skip __getattr__
    return value


def __dir__() -> list[str]:
    return sorted({*globals(), *__all__})
