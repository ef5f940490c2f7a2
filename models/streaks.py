"""Run lengths of consecutive hits, for patience rules that see a block of values at once.

>>> import numpy as np
>>> streak_counts(np.array([True, True, False, True]), carried=2).tolist()
[3, 4, 0, 1]
"""

from __future__ import annotations

import numpy as np


def streak_counts(hits: np.ndarray, carried: int = 0) -> np.ndarray:
    """Length of the run of ``True`` ending at each position; a run from the first position continues ``carried``.

    The same counts as ``count = count + 1 if hit else 0`` value by value, so a rule
    fed a run in blocks of any size sees the same streaks.

    >>> streak_counts(np.array([False, True, True]), carried=5).tolist()
    [0, 1, 2]
    >>> streak_counts(np.zeros(0, dtype=bool), carried=3).tolist()
    []
    """
    if not hits.any():  # the common case (nothing firing): every count is 0
        return np.zeros(len(hits), dtype=np.int64)
    index = np.arange(len(hits))
    last_miss = np.maximum.accumulate(np.where(hits, -1, index)) if len(hits) else index
    return np.where(hits, np.where(last_miss < 0, carried + index + 1, index - last_miss), 0)
