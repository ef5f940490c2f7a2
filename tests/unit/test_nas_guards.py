"""The edit guard: no suggestion works against the run's own diagnosis."""

from __future__ import annotations

from runwatch.nas.architecture import Block, Genome
from runwatch.nas.guards import EditGuard
from runwatch.nas.history import Diagnosis, RunObservation
from runwatch.nas.space import SearchSpace, neighbours

BASE = Genome(
    64, 10, (Block("fc1", "linear", 128, "relu", dropout=0.2), Block("fc2", "linear", 128, "relu", dropout=0.2))
)


def guard_for(*diagnoses: Diagnosis) -> EditGuard:
    return EditGuard.for_run(RunObservation("r", BASE, diagnoses=list(diagnoses)))


def directions_allowed(guard: EditGuard) -> dict[str, set[str]]:
    """For every single edit of BASE: which (attribute, up/down) the guard lets through."""
    from runwatch.nas.search import edit_directions

    out: dict[str, set[str]] = {"allowed": set(), "refused": set()}
    for g in neighbours(BASE, SearchSpace()):
        for layer, attribute, way in edit_directions(BASE, g):
            out["allowed" if guard.allows(BASE, g) else "refused"].add(f"{layer}:{attribute}:{way}")
    return out


def test_overfitting_refuses_capacity_increases_and_less_dropout():
    seen = directions_allowed(guard_for(Diagnosis("overfitting", metric="val/loss")))
    assert {"fc1:width:up", "fc2:width:up", ":depth:up", "fc1:dropout:down"} <= seen["refused"]
    assert {"fc1:width:down", ":depth:down", "fc2:dropout:up", "fc1:normalization:layernorm"} <= seen["allowed"]


def test_underfitting_refuses_capacity_decreases_and_more_dropout():
    seen = directions_allowed(guard_for(Diagnosis("plateau", metric="loss")))
    assert {"fc1:width:down", ":depth:down", "fc2:dropout:up"} <= seen["refused"]
    assert {"fc1:width:up", ":depth:up", "fc1:dropout:down"} <= seen["allowed"]


def test_overfitting_wins_over_a_plateau():
    seen = directions_allowed(guard_for(Diagnosis("plateau", metric="val/loss"), Diagnosis("overfitting")))
    assert "fc1:width:up" in seen["refused"] and "fc1:width:down" in seen["allowed"]


def test_layer_findings_only_touch_their_layer():
    seen = directions_allowed(guard_for(Diagnosis("dead_units", layer="fc2"), Diagnosis("vanishing_gradient", "fc1")))
    assert {"fc2:width:up", ":depth:up", "fc1:dropout:up", "fc2:dropout:up"} <= seen["refused"]
    assert {"fc1:width:up", "fc2:width:down", ":depth:down", "fc1:dropout:down"} <= seen["allowed"]


def test_no_finding_refuses_nothing():
    seen = directions_allowed(guard_for())
    assert not seen["refused"] and len(seen["allowed"]) > 10
