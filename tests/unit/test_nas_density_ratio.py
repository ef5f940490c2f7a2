"""The density-ratio term of the surrogate: what the best runs share, weighted by cross-validation."""

from __future__ import annotations

import numpy as np
import pytest

from runwatch.nas.density_ratio import DensityRatio
from runwatch.nas.surrogate import Surrogate, SurrogateConfig


def test_ratio_prefers_what_the_best_runs_share_and_ignores_continuous_columns():
    rng = np.random.default_rng(0)
    n = 200
    op = rng.integers(0, 4, n)  # a categorical choice: 3 is what the best runs use
    width = rng.choice([16, 32, 64], n)
    noise = rng.normal(size=n)  # continuous: 200 distinct values, never used
    loss = 1.0 - 0.5 * (op == 3) + 0.05 * noise
    x = np.column_stack([op, width, noise]).astype(float)
    dr = DensityRatio(gamma=0.1).fit(x, loss, sign=1.0)
    assert [c for c, _, _ in dr.tables] == [0, 1]
    s = dr.score(np.array([[3, 32, 0.0], [0, 32, 0.0], [3, 32, 99.0]]))
    assert s[0] > 0 > s[1] and s[2] == pytest.approx(s[0])
    # an accuracy: higher is better, so the same data read with sign -1 prefers the other ops
    assert DensityRatio(gamma=0.1).fit(x, -loss, sign=-1.0).score(x[:1]) == pytest.approx(dr.score(x[:1]))


def test_unseen_values_and_tiny_histories_add_nothing():
    x = np.array([[0.0], [1.0]] * 10)
    z = np.array([0.1, 1.0] * 10)
    dr = DensityRatio(gamma=0.2).fit(x, z)
    assert dr.score(np.array([[7.0], [np.nan]])).tolist() == [0.0, 0.0]
    assert DensityRatio().fit(x[:4], z[:4]).tables == []
    with pytest.raises(ValueError, match="gamma"):
        DensityRatio(gamma=1.5)


def _cells(n: int, seed: int) -> tuple[list[dict[str, float]], np.ndarray]:
    """A cell-like space: 6 edges of 4 operations; a good cell has op 2 on most edges, op 0 breaks it."""
    rng = np.random.default_rng(seed)
    ops = rng.integers(0, 4, (n, 6))
    acc = 60 + 5 * (ops == 2).sum(1) - 6 * (ops == 0).sum(1) + 4 * ((ops == 2).sum(1) >= 5) + rng.normal(0, 1, n)
    rows = [{f"arch/e{e}_op{o}": float(ops[i, e] == o) for e in range(6) for o in range(4)} for i in range(n)]
    return rows, np.clip(acc, 1, 99) / 100


def test_the_weight_is_chosen_by_cross_validation_and_zero_switches_it_off():
    rows, y = _cells(300, 1)
    on = Surrogate(SurrogateConfig(n_members=32)).fit_rows(rows, y, "val/acc")
    off = Surrogate(SurrogateConfig(n_members=32, density_weights="0")).fit_rows(rows, y, "val/acc")
    assert off.density_weight == 0.0 and off._dr is None
    assert on.density_weight in (0.0, 0.25, 0.5, 1.0, 2.0)
    if on.density_weight > 0:
        assert on._dr is not None and on._dr.tables
    # the refit from JSON chooses the same weight and predicts the same
    again = Surrogate.from_dict(on.to_dict())
    assert again.density_weight == on.density_weight
    np.testing.assert_allclose(again.model_stats(rows[:20])[0], on.model_stats(rows[:20])[0])


def test_with_the_density_term_the_top_of_a_cell_space_is_found():
    # Cells whose best share an operation on most edges: trees fitted to every run rank the top coarsely,
    # the density ratio of the best 10 % orders it; cross-validation gives the term a weight here.
    rows, y = _cells(400, 5)
    space, truth = _cells(4000, 105)
    chosen = Surrogate(SurrogateConfig(n_members=32)).fit_rows(rows, y, "val/acc")
    plain = Surrogate(SurrogateConfig(n_members=32, density_weights="0")).fit_rows(rows, y, "val/acc")
    assert chosen.density_weight > 0
    regret = {
        name: truth.max() - truth[np.argsort(-s.model_stats(space)[0])[:3]].mean()
        for name, s in (("chosen", chosen), ("plain", plain))
    }
    assert regret["chosen"] < regret["plain"]


def test_a_bad_weight_list_names_the_field():
    rows, y = _cells(200, 4)
    with pytest.raises(ValueError, match="density_weights"):
        Surrogate(SurrogateConfig(n_members=8, density_weights="a,b")).fit_rows(rows, y, "val/acc")
    with pytest.raises(ValueError, match="density_weights"):
        Surrogate(SurrogateConfig(n_members=8, density_weights="-1")).fit_rows(rows, y, "val/acc")
