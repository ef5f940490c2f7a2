"""Which ``k`` candidates to try together: the best-ranked one, then the ones most likely to beat it where it fails.

A user who asks for ``k`` suggestions tries them all and keeps the best, so the list should maximise the
*best* of its outcomes, not list the ``k`` best-ranked candidates one by one: near-copies of the top
candidate (the same widening by 256 or by 384 units) all fail together when the surrogate is wrong about
it. The surrogate's members (its trees) are draws of what the outcomes could be, so the expected best of
a list is the mean over members of the list's minimum. :func:`batch_order` builds the list greedily: the
candidate ranked first by the risk-adjusted objective, then each time the candidate that lowers that
expected minimum most. It is the ensemble form of batch expected improvement ("q-EI" with the members as
posterior samples; cf. the kriging believer and local penalisation heuristics of batch Bayesian
optimisation): a candidate that the members think as good as the first but that wins in different
members is preferred to a slightly better-ranked copy of the first.

Only the ``pool`` best-ranked candidates are considered, so a candidate the risk-adjusted ranking
distrusts (far from every run of the history) is never taken for its spread alone.
"""

from __future__ import annotations

import numpy as np

__all__ = ["batch_order"]

DEFAULT_POOL = 60


def batch_order(ranking: np.ndarray, members: np.ndarray, k: int, pool: int = DEFAULT_POOL) -> list[int]:
    """Indices of ``k`` candidates to try together, in the order to show them.

    Parameters
    ----------
    ranking
        Each candidate's risk-adjusted objective, lower is better (``n``).
    members
        The surrogate members' predictions, lower is better, shape ``(m, n)``.
    k
        How many to return (fewer when there are fewer candidates).
    pool
        How many of the best-ranked candidates may be chosen.

    Examples
    --------
    Two members disagree about candidates 1 and 2; candidate 0 is ranked first. Candidate 1 is
    ranked above 2 but fails where 0 fails; 2 wins where 0 loses, so it comes second:

    >>> members = np.array([[0.0, 0.1, 1.0], [1.0, 1.1, 0.2]])
    >>> batch_order(np.array([0.50, 0.55, 0.60]), members, k=3)
    [0, 2, 1]
    >>> batch_order(np.array([0.50, 0.55, 0.60]), members, k=2, pool=2)  # 2 is outside the pool
    [0, 1]
    """
    ranking = np.asarray(ranking, dtype=float)
    members = np.asarray(members, dtype=float)
    order = np.lexsort((np.arange(ranking.size), ranking))[: max(pool, 1)]
    if k <= 0 or order.size == 0:
        return []
    sub = members[:, order]
    open_ = np.ones(order.size, dtype=bool)  # may still join the list
    picked: list[int] = []
    best = np.full(sub.shape[0], np.inf)
    while len(picked) < k and open_.any():
        expected = np.minimum(best[:, None], sub).mean(axis=0) if picked else np.zeros(order.size)
        expected[~open_] = np.inf
        j = int(np.argmin(expected))  # the first pick, and ties: the better-ranked one (argmin takes the first)
        picked.append(j)
        best = np.minimum(best, sub[:, j])
        open_[j] = False
    return [int(order[j]) for j in picked]
